"""Where iamdb's AWS calls go and whom they trust: endpoint URL settings checked and split
(:func:`split_url`, for ``AWS_ENDPOINT_URL*`` and the container credentials URI), and the
verifying TLS context of every HTTPS connection :mod:`iamdb._http` opens (:func:`tls_context`).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from urllib.parse import SplitResult, urlsplit

from iamdb.errors import ConfigError

_contexts: dict[str | None, ssl.SSLContext] = {}


def tls_context(environ: Mapping[str, str]) -> ssl.SSLContext:
    """The verifying TLS context for AWS endpoints, one per CA bundle (loading costs ms).

    ``AWS_CA_BUNDLE`` when set (as botocore honours it); else the system's trust store; else,
    when the system has none (some minimal images), the CA bundle botocore ships, found
    without importing botocore.
    """
    cafile = (environ.get("AWS_CA_BUNDLE") or "").strip() or None
    found = _contexts.get(cafile)
    if found is None:
        found = ssl.create_default_context(cafile=cafile)
        if cafile is None and not found.cert_store_stats().get("x509_ca"):
            bundled = _botocore_bundle()
            if bundled is not None:
                found.load_verify_locations(cafile=bundled)
        found.minimum_version = ssl.TLSVersion.TLSv1_2
        _contexts[cafile] = found
    return found


def _botocore_bundle() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("botocore")  # finds the package, does not import it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = os.path.join(location, "cacert.pem")
        if os.path.isfile(candidate):
            return candidate
    return None


def split_url(var: str, url: str) -> tuple[SplitResult, str, int]:
    """``url`` (the value of setting ``var``) split for a connection: (parts, host, port).

    ConfigError naming ``var`` unless it is an ASCII http(s) URL with a host and a valid
    port; a password in the URL is never repeated in the message. Callers add their rules.
    """
    shown = re.sub(r"//[^/?#]*@", "//<userinfo>@", url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    host = "" if parts is None else parts.hostname or ""
    if parts is None or parts.scheme not in ("http", "https") or not host or not url.isascii():
        raise ConfigError(var, f"expected an http(s) URL, got {shown!r:.120}")
    return parts, host, port or (443 if parts.scheme == "https" else 80)
