"""Amazon DocumentDB's endpoints and what its clients need: the bundled RDS CAs, no retryable
writes.

DocumentDB presents certificates of the RDS CAs, not of public ones, and its engines before
8.0.2 (5.0 is the one with IAM logins) refuse every write that carries a retryable-write
``txnNumber`` (code 301), which pymongo sends by default. Endpoints are recognised by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from iamdb._core.env import RDS_CA_BUNDLE
from iamdb.errors import ConfigError

# DocumentDB's cluster, reader and instance endpoints: <name>.<cluster-|cluster-ro-|><id>. then
# <region>.docdb.amazonaws.com, or docdb.<region>.amazonaws.com.cn in China (Elastic clusters,
# docdb-elastic, have no IAM login and are left alone).
_DOCDB_HOST = re.compile(
    r"[^.]+\.[^.]+\.(?:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2})\.docdb\.amazonaws\.com"
    r"|docdb\.(?P<cn>cn(?:-[a-z]+)+-[0-9]{1,2})\.amazonaws\.com\.cn)\.?",
    re.IGNORECASE | re.ASCII,  # else [a-z] also matches U+017F, U+212A
)


# Regions whose "Amazon RDS <region> Root CA {RSA2048,RSA4096,ECC384} G1" the bundled
# rds-ca-bundle.pem holds (tests/unit/mongo/uri/test_documentdb_config.py reads them out of the
# bundle).
# China, GovCloud and regions newer than the bundle are not among them.
# fmt: off
RDS_BUNDLE_REGIONS = frozenset({
    "af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
    "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "ca-central-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
    "eu-west-1", "eu-west-2", "eu-west-3", "me-central-1", "me-south-1", "sa-east-1", "us-east-1",
    "us-east-2", "us-west-1", "us-west-2",
})
# fmt: on


def documentdb_region(host: str) -> str | None:
    """The region of an Amazon DocumentDB endpoint name, None for any other host."""
    match = _DOCDB_HOST.fullmatch(host)
    return None if match is None else (match["region"] or match["cn"]).lower()


def documentdb_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """What a DocumentDB client gets unless the URI (``options``, lower-case names) sets it.

    ``tlsCAFile``: DocumentDB presents certificates of the RDS CAs, not of public ones.
    ``retryWrites=false``: engines before 8.0.2 (5.0 is the one with IAM logins) refuse
    every write that carries a retryable-write ``txnNumber`` (code 301), and pymongo sends
    one by default.
    """
    implied = {"tlsCAFile": RDS_CA_BUNDLE, "retryWrites": False}
    return {key: value for key, value in implied.items() if key.lower() not in options}


def is_documentdb(var: str, names: Iterable[str], options: Mapping[str, Any]) -> bool:
    """Whether the hosts are DocumentDB endpoints (all of them or none), whose certificates
    the bundled RDS CA bundle can verify unless the URI gives its own ``tlsCAFile``."""
    regions = {documentdb_region(name) for name in names}
    if regions == {None}:
        return False
    if None in regions:
        raise ConfigError(
            var, "mixes Amazon DocumentDB endpoints with other hosts: list one cluster's endpoints"
        )
    missing = sorted(str(region) for region in regions - RDS_BUNDLE_REGIONS)
    if missing and "tlscafile" not in options:
        raise ConfigError(
            var,
            f"the bundled RDS CA bundle holds no CA of {missing[0]}, so DocumentDB's certificate "
            f"would fail verification: download AWS's certificate bundle for {missing[0]} and "
            "give its path as tlsCAFile=<path>",
        )
    return True
