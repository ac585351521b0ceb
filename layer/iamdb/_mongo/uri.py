"""``IAMDB_MONGO_URI``: read by pymongo's own parser first, then held to iamdb's rules.

Everything is checked at configuration time, before AssumeRole or any socket:

- pymongo's ``parse_uri`` (``warn=False``): whatever pymongo would refuse, warn about or
  silently ignore (an unknown option, ``serverSelectionTimeoutMS=abc``, ``/app%24x``,
  ``directConnection=true&loadBalanced=true``) is a :class:`ConfigError`. ``mongodb+srv://``
  is parsed as ``mongodb://`` with its ``srv*`` options apart: parse_uri would ask DNS.
- No credentials in the URI; ``authMechanism``/``authSource`` only as iamdb sets them.
- TLS is on unless the URI says ``tls=false``, and plaintext only ever reaches loopback:
  ``tls=false`` takes exactly one loopback host and no ``replicaSet``, ``loadBalanced`` or
  ``mongodb+srv://``, and iamdb connects with ``directConnection=true``, so pymongo never
  follows the member list a server reports (and never sends it the login in plaintext).
- No option that turns a certificate, host-name or revocation check off, whatever its case
  (pymongo expands ``tlsInsecure``; ``ssl`` is its alias of ``tls``; pymongo 3's ``ssl_*``
  names are refused by name). Files named by ``tlsCAFile``, ``tlsCertificateKeyFile`` and
  ``tlsCRLFile`` are loaded as pymongo will load them.
- Amazon DocumentDB endpoints (``*.docdb.amazonaws.com``; China:
  ``*.docdb.<region>.amazonaws.com.cn``) are recognised here: the client then trusts the
  bundled RDS CA bundle and makes no retryable writes unless the URI says otherwise
  (:mod:`iamdb._mongo.documentdb` holds those rules); a region whose CAs the bundle lacks
  needs ``tlsCAFile``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iamdb._core.env import ca_file_problem, is_ip, read_regular_file, valid_host
from iamdb._mongo.documentdb import is_documentdb
from iamdb.errors import ConfigError

EXTERNAL = "$external"
MECHANISM = "MONGODB-AWS"
_SCHEMES = ("mongodb://", "mongodb+srv://")
_SRV_ONLY = ("srvservicename", "srvmaxhosts", "srvallowedhostssuffix")
_FORBIDDEN = {
    "authmechanismproperties": "iamdb passes the session token itself",
    "username": "iamdb logs in with MONGODB-AWS; no user name belongs in the URI",
    "password": "iamdb logs in with MONGODB-AWS; no password belongs in the URI",
    # pymongo 3 spellings (pymongo 4 no longer reads them) of the checks refused below
    "ssl_cert_reqs": "it turns certificate verification off",
    "ssl_match_hostname": "it turns host-name verification off",
    "tlsdisablecertificaterevocationcheck": "it turns revocation checking off",
}
# As pymongo reads them (tlsInsecure expanded): each true turns a check of the server off.
_WEAKENING = {
    "tlsinsecure": "certificate and host-name verification",
    "tlsallowinvalidcertificates": "certificate verification",
    "tlsallowinvalidhostnames": "host-name verification",
    "tlsdisableocspendpointcheck": "the certificate revocation (OCSP) check",
}
_MAX_DATABASE = 63


@dataclass(frozen=True)
class MongoUri:
    """What iamdb needs to know of a checked URI."""

    srv: bool
    hosts: tuple[str, ...]  # "host:port" ("[::1]:27017"); mongodb+srv://: the SRV name
    database: str
    options: Mapping[str, Any] = field(repr=False)  # pymongo's values, lower-case names
    tls: bool
    documentdb: bool = False  # every host is an Amazon DocumentDB endpoint


def split_query(query: str) -> list[str]:
    """The ``key=value`` parts of a URI's options, split as pymongo splits them."""
    if not query:
        return []
    return query.split("&" if "&" in query else ";")


def parse_uri(var: str, uri: str | None) -> MongoUri:
    """Check a credential-free MongoDB URI; ConfigError naming ``var`` when it is not one."""
    if uri is None:
        raise ConfigError(var, "is required and not set (mongodb://host/database?options)")
    if not uri.isprintable():  # pymongo ignores an option whose value it cannot read
        raise ConfigError(var, "expected printable characters only (no control characters)")
    if not uri.startswith(_SCHEMES):
        raise ConfigError(var, "expected a mongodb:// or mongodb+srv:// URI")
    srv = uri.startswith("mongodb+srv://")
    rest = uri.partition("://")[2]
    location, _, query = rest.partition("?")
    hostpart = location.partition("/")[0]
    if "@" in hostpart:
        raise ConfigError(
            var, "must not contain a user name or password: iamdb logs in with MONGODB-AWS"
        )
    if srv and ("," in hostpart or ":" in hostpart):
        raise ConfigError(var, "mongodb+srv:// takes exactly one host name and no port")
    parts = split_query(query)
    _check_names(var, parts)
    _check_files(var, parts)
    srv_parts = [p for p in parts if p.partition("=")[0].lower() in _SRV_ONLY]
    plain = [p for p in parts if p not in srv_parts] if srv else parts
    parsed, srv_options = _pymongo_parse(var, location, plain, srv_parts)
    options = {key.lower(): value for key, value in parsed["options"].items()}
    options.update(srv_options)
    hosts = _hosts(var, parsed["nodelist"], srv)
    documentdb = is_documentdb(var, (host for host, _ in parsed["nodelist"]), options)
    result = MongoUri(
        srv, hosts, _database(var, parsed), options, options.get("tls", True), documentdb
    )
    _check_auth(var, options)
    _check_tls(var, result)
    _check_pool(var, options)
    return result


def _check_names(var: str, parts: list[str]) -> None:
    """Refusals by option name, before pymongo reads (and maybe echoes) the values."""
    seen: set[str] = set()
    for part in parts:
        key = part.partition("=")[0].lower()
        if key in _FORBIDDEN:
            raise ConfigError(var, f"remove {key}: {_FORBIDDEN[key]}")
        if key in seen and key != "readpreferencetags":  # pymongo keeps the last one, warning
            raise ConfigError(var, f"option {key} is given twice")
        seen.add(key)


_FILES = ("tlscafile", "tlscertificatekeyfile", "tlscrlfile")
_MAX_FILE_BYTES = 10 * 1024 * 1024


def _check_files(var: str, parts: list[str]) -> None:
    """The files the URI names, read as iamdb reads a CA file (a regular file, bounded), before
    pymongo's parser opens them itself: a FIFO there would hang it."""
    from urllib.parse import unquote_plus

    for part in parts:
        key, _, value = part.partition("=")
        if key.lower() in _FILES and value:
            problem = read_regular_file(unquote_plus(value), _MAX_FILE_BYTES)
            if isinstance(problem, str):
                raise ConfigError(var, f"{key}: {problem}")


def _pymongo_parse(
    var: str, location: str, parts: list[str], srv_parts: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    from iamdb._core.deps import requires

    with requires("mongo", var):
        from pymongo import uri_parser
        from pymongo.errors import ConfigurationError
    sep = ";" if ";" in "".join(parts + srv_parts) else "&"
    try:
        parsed = uri_parser.parse_uri(f"mongodb://{location}?{sep.join(parts)}", warn=False)
        srv_options = uri_parser.split_options(sep.join(srv_parts), warn=False) if srv_parts else {}
    except (ConfigurationError, ValueError, TypeError, OSError) as exc:
        problem = f"{exc}"[:300]  # pymongo never names an unknown key: it may be a secret
    else:
        return parsed, {key.lower(): value for key, value in srv_options.items()}
    raise ConfigError(var, f"pymongo refuses it: {problem}")  # outside except: no __context__


def _hosts(var: str, nodelist: list[tuple[str, int | None]], srv: bool) -> tuple[str, ...]:
    hosts = []
    for host, port in nodelist:
        if port is None or not valid_host(host):  # a Unix socket, an IPv6 scope id
            raise ConfigError(var, f"expected host[:port] entries, got {host!r:.80}")
        hosts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return (nodelist[0][0],) if srv else tuple(hosts)


def _database(var: str, parsed: Mapping[str, Any]) -> str:
    database, collection = parsed.get("database"), parsed.get("collection")
    if not database or collection is not None or len(database) > _MAX_DATABASE:
        raise ConfigError(
            var,
            "expected the database name (1-63 characters, no '.') in the path: "
            "mongodb://host/<database>",
        )
    return str(database)


def _check_auth(var: str, options: Mapping[str, Any]) -> None:
    mechanism = options.get("authmechanism")
    if mechanism is not None and mechanism != MECHANISM:
        raise ConfigError(var, f"authMechanism must be {MECHANISM} (or absent), got {mechanism!r}")
    source = options.get("authsource")
    if source is not None and source != EXTERNAL:
        raise ConfigError(var, f"authSource must be {EXTERNAL} (or absent), got {source!r:.40}")
    for key, value in options.items():
        if isinstance(value, str) and not value.isprintable():  # appname=%00
            raise ConfigError(var, f"{key}: expected printable characters only")


def _check_pool(var: str, options: Mapping[str, Any]) -> None:
    """What pymongo checks only when it makes the client (after AssumeRole): the pool's sizes."""
    low, high = options.get("minpoolsize"), options.get("maxpoolsize")
    if low is not None and high is not None and high != 0 and low > high:
        raise ConfigError(var, f"minPoolSize={low} is larger than maxPoolSize={high}")


def _check_tls(var: str, uri: MongoUri) -> None:
    options = uri.options
    if uri.srv and (
        options.get("directconnection")
        or (options.get("loadbalanced") and "srvmaxhosts" in options)
    ):  # what parse_uri would refuse for mongodb+srv:// (parsed here as mongodb://)
        raise ConfigError(
            var,
            "mongodb+srv:// cannot go with directConnection=true, nor "
            "loadBalanced=true with srvMaxHosts",
        )
    for key, what in _WEAKENING.items():
        if options.get(key) is True:
            raise ConfigError(var, f"{key}=true would turn {what} off: iamdb refuses it")
    if uri.tls:
        _check_tls_files(var, options)
        return
    # Plaintext: one loopback host, reached directly (no discovery of other members).
    if uri.srv or len(uri.hosts) != 1 or not is_loopback(uri.hosts[0]):
        raise ConfigError(
            var,
            "tls=false: plaintext is allowed to a single loopback host only (localhost, "
            "127.0.0.1, [::1]); TLS is required for every other host",
        )
    for key in ("replicaset", "loadbalanced"):
        if options.get(key):
            raise ConfigError(var, f"tls=false cannot go with {key}: plaintext goes to one host")
    if options.get("directconnection") is False:
        raise ConfigError(
            var,
            "tls=false needs directConnection=true (iamdb's default there): otherwise "
            "the login could follow a member list to other hosts in plaintext",
        )
    tls_options = sorted(key for key in options if key.startswith("tls") and key != "tls")
    if tls_options:
        raise ConfigError(var, f"tls=false with TLS options ({', '.join(tls_options)})")


def _check_tls_files(var: str, options: Mapping[str, Any]) -> None:
    """Load the files pymongo will load, so a bad one fails here rather than after STS."""
    import ssl

    ca = options.get("tlscafile")
    problem = None if ca is None else ca_file_problem(str(ca))
    if problem is not None:
        raise ConfigError(var, f"tlsCAFile: expected a PEM CA bundle: {problem}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    certfile, crlfile = options.get("tlscertificatekeyfile"), options.get("tlscrlfile")
    try:
        if certfile is not None:
            what = f"tlsCertificateKeyFile {str(certfile)!r:.200}"
            password = options.get("tlscertificatekeyfilepassword")
            context.load_cert_chain(str(certfile), password=password)
        if crlfile is not None:
            what = f"tlsCRLFile {str(crlfile)!r:.200}"
            context.load_verify_locations(str(crlfile))
    except (OSError, ssl.SSLError, ValueError) as exc:
        problem = f"cannot load {what} ({type(exc).__name__})"
    if problem is not None:
        raise ConfigError(var, problem)


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, from a ``host:port`` entry."""
    name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0]
    if name == "localhost":
        return True
    if not is_ip(name):
        return False
    import ipaddress

    return ipaddress.ip_address(name).is_loopback
