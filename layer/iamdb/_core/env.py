"""Reading and validating settings: the environment snapshot, prefixes, values, regions.

Each rule lives here once so that ``get_pg``, ``get_mysql``, ``get_dsql``, ``get_mongo``, the
AWS calls and ``python -m iamdb check`` agree on it: which variables are read
(:func:`settings_environ`), an instance's prefix (:func:`instance_prefix`), text, numbers,
hosts, the AWS region (:func:`aws_region`) and CA files.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping

from iamdb.errors import ConfigError

# ASCII only: without re.ASCII, \d admits Arabic-Indic digits and IGNORECASE lets [a-z]
# match U+017F (long s) and U+212A (Kelvin sign).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}", re.ASCII)
# Two to four letters first: eusc-de-east-1 (the European Sovereign Cloud) is a region too.
REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-[0-9]{1,2}", re.ASCII)
REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")  # Lambda sets the first, the AWS CLI reads both
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?",
    re.ASCII,
)
_MAX_CA_BYTES = 10 * 1024 * 1024  # the RDS bundle is ~160 KiB
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RDS_CA_BUNDLE = os.path.join(_PACKAGE, "data", "rds-ca-bundle.pem")
"""The RDS (and RDS Proxy) CAs iamdb ships: what RDS and DocumentDB certificates chain to."""
INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)  # int() also reads Arabic digits and '1_0'
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)


_SETTINGS_NAMES = (
    *REGION_VARS,
    "AWS_LAMBDA_FUNCTION_NAME",  # how database sessions and STS sessions name the client
    "POWERTOOLS_METRICS_NAMESPACE",
    "SSL_CERT_FILE",  # OpenSSL's CA file override: DSQL's default CA store
)


def settings_environ(environ: Mapping[str, str] | None) -> dict[str, str]:
    """The variables the settings readers use (``IAMDB_*``, the region, the function name,
    Powertools' metrics namespace, ``SSL_CERT_FILE``) out of ``environ`` (None: ``os.environ``).

    Readers keep this copy in their frames, never ``os.environ``: a ConfigError's traceback
    is what a crash reporter serialises, locals included, and ``os.environ`` holds the
    function's secret key and session token.
    """
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k.startswith("IAMDB_") or k in _SETTINGS_NAMES}


def env_value(env: Mapping[str, str], var: str) -> str | None:
    """``var``'s value without surrounding blanks; None when unset or blank."""
    value = env.get(var)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_text(env: Mapping[str, str], var: str, *, required: bool, max_len: int) -> str | None:
    """A printable value of at most ``max_len`` characters (None when unset and optional)."""
    value = env_value(env, var)
    if value is None:
        if required:
            raise ConfigError(var, "is required and not set")
        return None
    if len(value) > max_len or not value.isprintable():
        raise ConfigError(var, f"expected at most {max_len} printable characters")
    return value


def env_flag(env: Mapping[str, str], var: str, default: bool) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case)."""
    value = env_value(env, var)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(var, f"expected true or false, got {value!r:.40}")


def env_number(
    env: Mapping[str, str],
    var: str,
    default: float,
    *,
    low: float,
    high: float,
    integer: bool = False,
) -> float:
    """An ASCII number from ``low`` to ``high`` (``default`` when unset)."""
    value = env_value(env, var)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    pattern = INTEGER if integer else _DECIMAL
    if len(value) > 40 or not pattern.fullmatch(value):  # ASCII: no 'nan', '1e9', '1_0'
        raise ConfigError(var, f"expected {kind} from {low:g} to {high:g}, got {value!r:.40}")
    number = int(value) if integer else float(value)
    if not low <= number <= high:
        raise ConfigError(var, f"expected {kind} from {low:g} to {high:g}, got {value!r:.40}")
    return number


def instance_prefix(kind: str, name: str | None, suffixes: Iterable[str]) -> str:
    """``IAMDB_PG_`` for the default instance, ``IAMDB_PG_<NAME>_`` for a named one (``kind``
    ``pg``, ``mysql``, ``dsql`` or ``mongo``; ``suffixes``: what the reader reads after it)."""
    if name is None:
        return f"IAMDB_{kind.upper()}_"
    return f"IAMDB_{kind.upper()}_{instance_name(name, suffixes).upper()}_"


def client_name(env: Mapping[str, str]) -> str:
    """How a database names this client's sessions: the function's name, else ``iamdb``."""
    return env_value(env, "AWS_LAMBDA_FUNCTION_NAME") or "iamdb"


def aws_region(
    env: Mapping[str, str],
    needed_for: str = "iamdb needs the region to call AWS",
    *,
    var: str | None = None,
) -> str:
    """``AWS_REGION`` (Lambda sets it), else ``AWS_DEFAULT_REGION``.

    ConfigError when neither holds a region: naming ``var`` when given (the setting the region
    stands in for, e.g. ``IAMDB_PG_REGION``) with ``needed_for`` as the message, else naming
    the region variable and saying it is needed ``needed_for``.
    """
    for region_var in REGION_VARS:
        value = env_value(env, region_var)
        if value is None:
            continue
        if is_region(value):
            return value
        if var is not None:
            break
        raise ConfigError(
            region_var, f"expected an AWS region such as 'us-east-1', got {value!r:.40}"
        )
    if var is not None:
        raise ConfigError(var, needed_for)
    raise ConfigError("AWS_REGION", f"not set: {needed_for}")


def instance_name(name: object, suffixes: Iterable[str]) -> str:
    """The canonical (lower-case) form of an instance name, or ConfigError ``name``.

    Names are case-insensitive because environment variables carry them upper-cased:
    ``get_pg("Reporting")`` and ``get_pg("reporting")`` both read ``IAMDB_PG_REPORTING_*``
    and are one instance. A name is refused when one of its variables would be another
    instance's: with the suffix ``IAM_HOST``, ``get_pg("iam")`` would read
    ``IAMDB_PG_IAM_HOST`` (the default instance's) as its ``HOST``, and ``get_pg("a_iam")``
    would read ``IAMDB_PG_A_IAM_HOST`` (instance ``a``'s).
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            "name", f"expected a letter then up to 31 letters, digits or '_', got {name!r:.40}"
        )
    upper = name.upper()
    names = set(suffixes)
    for suffix in names:
        head, _, tail = suffix.rpartition("_")
        while head:  # IAM_HOST: the name may not be IAM nor end in _IAM
            if tail in names and (upper == head or upper.endswith("_" + head)):
                raise ConfigError(
                    "name",
                    f"{name!r} is reserved: its {tail} variable would be "
                    f"the {suffix} variable of another instance",
                )
            head, _, rest = head.rpartition("_")
            tail = f"{rest}_{tail}"
    return name.lower()


def is_region(text: str) -> bool:
    """An AWS region name such as ``us-east-1`` (ASCII letters and digits only)."""
    return bool(REGION.fullmatch(text))


def env_host(env: Mapping[str, str], var: str) -> str:
    """A required host name or IP address."""
    value = env_value(env, var)
    if value is None:
        raise ConfigError(var, "is required and not set (the database host name or IP)")
    if not valid_host(value):
        raise ConfigError(var, f"expected a host name or IP address, got {value!r:.80}")
    return value


def is_ip(text: str) -> bool:
    """An IPv4 or IPv6 address (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def valid_host(text: str) -> bool:
    """A DNS host name or an IP address without an IPv6 scope id (that admits any text)."""
    if is_ip(text):
        return "%" not in text
    return bool(_HOSTNAME.fullmatch(text))


_good_ca_files: set[tuple[str, int, int]] = set()  # files that passed: path, size, hash(bytes)


def read_regular_file(path: str, limit: int) -> bytes | str:
    """The bytes of the regular file ``path``, at most ``limit`` of them; else why not.

    Never blocks and never reads without end: a FIFO is opened non-blocking and, like a
    device (``/dev/zero``), a directory or a socket, refused by ``fstat`` of the opened
    descriptor (a path swapped after a check would escape a ``stat`` before ``open``). The
    reason (a sentence fragment) names the path, never the content.
    """
    import stat

    shown = f"{path!r:.200}"
    if "\0" in path:
        return "a path cannot contain NUL"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot read {shown} ({exc.strerror or type(exc).__name__})"
    chunks: list[bytes] = []
    size, why = 0, None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) else None
            kind = kind or ("a directory" if stat.S_ISDIR(mode) else "not a file")
            why = f"{shown} is not a regular file ({kind})"
        while why is None and size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        why = f"cannot read {shown} ({exc.strerror or type(exc).__name__})"
    finally:
        os.close(fd)
    if why is None and size > limit:
        why = f"{shown} is larger than {limit} bytes"
    return b"".join(chunks) if why is None else why


def ca_file_problem(path: str) -> str | None:
    """Why ``path`` is not a usable PEM CA bundle, or None when it is one.

    Reads and loads it as the drivers will, so a missing, unreadable, empty or non-PEM
    file is a configuration error, not an ``ssl.SSLError`` after a token was signed; a FIFO,
    a device or a file over 10 MiB is refused without waiting or reading it all.
    """
    data = read_regular_file(path, _MAX_CA_BYTES)
    if isinstance(data, str):
        return data
    if not data.strip():
        return f"{path!r:.200} is empty"
    seen = (path, len(data), hash(data))
    if seen in _good_ca_files:  # a reset() (SnapStart restore) does not load it again
        return None
    import ssl  # only for a bundle the user chose: the bundled one is known good

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, ssl.SSLError):
        return f"{path!r:.200} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    _good_ca_files.add(seen)
    return None
