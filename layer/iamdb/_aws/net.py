"""Where iamdb's AWS calls go and whom they trust: each service's endpoint as botocore resolves
it (:func:`resolve_endpoint`), URL settings checked and split (:func:`split_url`, for
``AWS_ENDPOINT_URL*`` and the container credentials URI), and the connection every request of
:mod:`iamdb._aws.http` starts from (:func:`connect`): TCP to one of the name's addresses and, for
HTTPS, TLS verified with :func:`tls_context`, all by a deadline.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit

from iamdb._core.env import REGION_VARS, aws_region
from iamdb.errors import ConfigError

_contexts: dict[str | None, ssl.SSLContext] = {}
# Each partition but "aws" (the rest), as botocore's partitions.json: region pattern, then
# (name, DNS suffix, dual-stack DNS suffix). boto3 refuses dual-stack endpoints where its
# endpoints.json has none (None here): in aws-iso-e and aws-iso-f, the rules notwithstanding.
_PARTITIONS = [
    (re.compile(pattern, re.ASCII), name, dns, dualstack)
    for pattern, name, dns, dualstack in (
        (r"cn-\w+-\d+", "aws-cn", "amazonaws.com.cn", "api.amazonwebservices.com.cn"),
        (r"us-gov-\w+-\d+", "aws-us-gov", "amazonaws.com", "api.aws"),
        (r"us-iso-\w+-\d+", "aws-iso", "c2s.ic.gov", "api.aws.ic.gov"),
        (r"us-isob-\w+-\d+", "aws-iso-b", "sc2s.sgov.gov", "api.aws.scloud"),
        (r"eu-isoe-\w+-\d+", "aws-iso-e", "cloud.adc-e.uk", None),
        (r"us-isof-\w+-\d+", "aws-iso-f", "csp.hci.ic.gov", None),
        (r"eusc-de-\w+-\d+", "aws-eusc", "amazonaws.eu", "api.amazonwebservices.eu"),
    )
]
_AWS = ["aws", "amazonaws.com", "api.aws"]
_ENDPOINT_VARS = (
    "AWS_ENDPOINT_URL",
    *REGION_VARS,
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
)


class AwsEndpoint(NamedTuple):
    """Where one service's calls go, and the region they are signed for."""

    scheme: str
    host: str
    port: int
    region: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def resolve_endpoint(service: str, environ: Mapping[str, str]) -> AwsEndpoint:
    """The endpoint boto3 would use for ``service`` (``dynamodb`` or ``sts``), validated.

    ``AWS_ENDPOINT_URL_<SERVICE>``, then ``AWS_ENDPOINT_URL`` (unless
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true); otherwise the regional endpoint of the
    region's partition as botocore's endpoint rules build it: ``<service>-fips`` with
    ``AWS_USE_FIPS_ENDPOINT`` (but GovCloud's regional endpoints are FIPS already), the
    partition's dual-stack domain (``api.aws``...) with ``AWS_USE_DUALSTACK_ENDPOINT``.
    Raises ConfigError naming the variable, before any call.
    """
    names = (f"AWS_ENDPOINT_URL_{service.upper()}", *_ENDPOINT_VARS)
    env = {var: environ[var] for var in names if var in environ}
    del environ  # a ConfigError's frames must not keep os.environ (it holds the secret key)
    region = aws_region(env)
    if not _flag(env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        for var in names[:2]:
            url = (env.get(var) or "").strip()
            if url:
                return _parse_endpoint_url(var, url, region)
    partition, dns, dualstack_dns = next(
        (found for pattern, *found in _PARTITIONS if pattern.fullmatch(region)), _AWS
    )
    fips, dualstack = _flag(env, "AWS_USE_FIPS_ENDPOINT"), _flag(env, "AWS_USE_DUALSTACK_ENDPOINT")
    if dualstack and dualstack_dns is None:
        why = f"boto3 knows no dual-stack {service} endpoint in {region} (partition {partition})"
        raise ConfigError("AWS_USE_DUALSTACK_ENDPOINT", f"{why}: unset it for this region")
    if fips and (dualstack or partition != "aws-us-gov"):  # GovCloud's own are FIPS already
        service = f"{service}-fips"
    return AwsEndpoint(
        "https", f"{service}.{region}.{dualstack_dns if dualstack else dns}", 443, region
    )


def _flag(environ: Mapping[str, str], var: str) -> bool:
    """A boolean setting read as botocore's ``ensure_boolean`` does: only ``true`` (any case)."""
    return (environ.get(var) or "").lower() == "true"


def _parse_endpoint_url(var: str, url: str, region: str) -> AwsEndpoint:
    parts, host, port = split_url(var, url)
    if (
        parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.port == 0
        or host.strip("abcdefghijklmnopqrstuvwxyz0123456789.-:") != ""
    ):
        shown = f"{parts.scheme}://{host}"  # neither userinfo nor the rest is repeated
        raise ConfigError(var, f"expected http(s)://host[:port] (no path), got {shown!r:.120}")
    if ":" in host:
        host = f"[{host}]"
    return AwsEndpoint(parts.scheme, host, port, region)


def connect(
    host: str,
    port: int,
    *,
    tls: bool,
    cafile: str | None,
    deadline: float,
    clock: Callable[[], float],
) -> socket.socket | str:
    """A socket connected to ``host:port`` by ``deadline`` (``clock`` seconds), TLS-verified
    for ``host`` when ``tls`` (trusting :func:`tls_context`); or why not, an error message.

    The addresses the name resolves to (a VPC interface endpoint has one per zone) are tried
    in turn, each with an equal share of the time left, so a black-holed one cannot take it
    all; the TLS handshake gets what remains (CPython bounds the whole handshake by the
    timeout, not each read). Resolving the name cannot be bounded through the socket API:
    the resolver's own timeouts apply (Lambda asks the VPC resolver, which caches AWS names).
    """
    why = "the name has no address"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        addresses, why = [], f"cannot resolve the name: {reason(exc)}"
    sock = None
    for tried, (family, kind, proto, _, address) in enumerate(addresses):
        left = deadline - clock()
        if left <= 0:
            why = "timed out (the deadline was reached)"
            break
        try:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(left / (len(addresses) - tried))  # a share for each address left
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            break
        except OSError as exc:
            why = reason(exc)
        if sock is not None:
            sock.close()
            sock = None
    if sock is None:
        count = f" ({len(addresses)} addresses)" if len(addresses) > 1 else ""
        return f"cannot connect to {host}:{port}{count}: {why}"
    return _handshake(sock, host, port, cafile, deadline - clock()) if tls else sock


def _handshake(
    sock: socket.socket, host: str, port: int, cafile: str | None, left: float
) -> socket.socket | str:
    """``sock`` with TLS verified for ``host``, the handshake done within ``left`` seconds."""
    secured: ssl.SSLSocket | None = None
    try:
        context = tls_context(cafile)
    except (OSError, ValueError) as exc:  # ssl.SSLError, FileNotFoundError, a NUL in the path
        context, why = None, f"cannot load the CA bundle {cafile or 'of the system'}: {reason(exc)}"
    if context is not None and left <= 0:
        why = "timed out (the deadline was reached)"
    elif context is not None:
        try:
            secured = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
            secured.settimeout(left)
            secured.do_handshake()
            return secured
        except (OSError, ValueError) as exc:  # ValueError: a name TLS refuses
            why = reason(exc)
    (secured or sock).close()
    return f"TLS with {host}:{port} failed: {why}"


def reason(exc: BaseException) -> str:
    """A socket or TLS error in a few words on one line (what messages quote of it)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:200]


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """The verifying TLS context for AWS endpoints, one per CA bundle (loading costs ms).

    ``cafile``: ``AWS_CA_BUNDLE`` when set (as botocore honours it); else the system's trust
    store; else, when the system has none (some minimal images), the CA bundle botocore
    ships, found without importing botocore.
    """
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
