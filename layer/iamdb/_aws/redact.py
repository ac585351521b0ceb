"""Take secrets out of botocore's (and urllib3's) DEBUG log records before any handler sees them.

With DEBUG logging on, botocore prints secrets through its own loggers. iamdb's own AWS
calls do not use botocore; botocore's default credential chain (iamdb's last resort), the real
pymongo-auth-aws (when the application imported it) and the application's own boto3 clients
do. Lines that can hold a secret (botocore 1.44, urllib3 2.x):

- ``botocore.endpoint``: ``Sending http request: <AWSPreparedRequest ... headers={...}>``
  (``X-Amz-Security-Token``, ``Authorization: ... Signature=<hex>``, SSO's
  ``x-amz-sso_bearer_token``, S3's SSE-C key headers); ``Making request for ... with params``
  (the request before signing: ``WebIdentityToken``, ``SAMLAssertion``, presigned URLs);
- ``botocore.auth``: ``CanonicalRequest`` (``x-amz-security-token:<token>`` header line, or
  ``X-Amz-Security-Token=<token>`` in a presigned URL's query), ``Signature:\\n<hex>``, SigV2's
  ``String to sign`` (``SecurityToken=``), HmacV1's (``x-amz-security-token:``);
- ``botocore.parsers``: ``Response body`` -- AssumeRole's XML ``<SecretAccessKey>`` and
  ``<SessionToken>``, JSON protocols' ``"SecretKey"``/``"secretAccessKey"``/``"sessionToken"``
  (Cognito, SSO), SSO-OIDC's ``"accessToken"``/``"refreshToken"``/``"clientSecret"``;
- ``botocore.awsrequest``: ``Rewinding stream: <body>`` (a request body, as above);
- ``botocore.utils``: IMDS's credential document (``'SecretAccessKey'``, ``'Token'``) when it
  carries an error code;
- ``urllib3.connectionpool``: request lines with the URL's query (presigned URLs).

botocore masks proxy passwords itself and pymongo-auth-aws logs nothing, so no ``password``
pattern. The access key id, operation names, hosts and URL paths stay readable.

:func:`install` puts one :class:`RedactingFilter` on each of those libraries' loggers. A
logger's filters see only records created on that very logger (not those propagated from its
children), so every module logger needs it, and loggers created after a call need another.
"""

from __future__ import annotations

import logging
import re
import threading

MARKER = "<redacted>"
"""What a secret is replaced with."""

ROOTS = ("botocore", "boto3", "urllib3", "pymongo_auth_aws")
"""The logger families :func:`install` filters (each name and its dotted children)."""

KNOWN_LOGGERS = (
    "botocore.auth",
    "botocore.awsrequest",
    "botocore.endpoint",
    "botocore.parsers",
    "botocore.utils",
    "urllib3.connectionpool",
)
"""Loggers that log secrets: :func:`install` creates them if botocore is not imported yet
(pymongo-auth-aws imports it only when a socket logs in), so they are filtered from birth."""

_NAMES = "|".join(
    (
        r"x-amz-security-token",
        r"security-?token",  # SigV2 query
        r"(?:aws_)?secret_?(?:access_?)?key",  # SecretAccessKey, SecretKey, aws_secret_access_key
        r"(?:aws_)?session_?token",
        r"token",  # IMDS's credential document
        r"(?:access|refresh|id)_?token",  # SSO-OIDC
        r"client_?secret",
        r"x-amz-sso_bearer_token",
        r"web_?identity_?token",
        r"saml_?assertion",
        r"x-amz(?:-copy-source)?-server-side-encryption-customer-key",
    )
)
_HEADERS = (
    r"x-amz-security-token|x-amz-sso_bearer_token"
    r"|x-amz(?:-copy-source)?-server-side-encryption-customer-key"
)
_VALUE = r"[^\s&'\",;<>]+"
_PATTERNS = (
    # 'X-Amz-Security-Token': b'...', "SessionToken": "...", 'SecretAccessKey': '...'
    re.compile(
        rf"""(?P<pre>(?P<kq>["'])(?:{_NAMES})(?P=kq)\s*:\s*b?(?P<vq>["']))"""
        r"""(?:\\.|(?!(?P=vq))[^\\])*""",
        re.IGNORECASE,
    ),
    # <SecretAccessKey>...</SecretAccessKey>
    re.compile(rf"(?P<pre><(?P<tag>(?:\w+:)?(?:{_NAMES}))>)[^<]*(?=</(?P=tag)>)", re.IGNORECASE),
    # X-Amz-Security-Token=..., X-Amz-Signature=..., Signature=<hex> (Authorization header)
    re.compile(rf"(?<![\w-])(?P<pre>(?:{_NAMES}|(?:x-amz-)?signature)=){_VALUE}", re.IGNORECASE),
    # x-amz-security-token:... (canonical request, string to sign)
    re.compile(rf"(?<![\w-])(?P<pre>(?:{_HEADERS}):[ \t]*){_VALUE}", re.IGNORECASE),
    # botocore.auth's "Signature:\n<hex>"
    re.compile(rf"(?<![\w-])(?P<pre>signature:\s*){_VALUE}", re.IGNORECASE),
    # Authorization: Bearer <token>
    re.compile(rf"(?P<pre>\bbearer\s+){_VALUE}", re.IGNORECASE),
    # HmacV1 (S3 SigV2): Authorization: AWS <access key id>:<signature>
    re.compile(r"(?P<pre>\bAWS [A-Z0-9]{16,128}:)[A-Za-z0-9+/=]+"),
)
_REPLACEMENT = r"\g<pre>" + MARKER
_UNFORMATTABLE = "[iamdb: arguments dropped, the message could not be formatted]"
_formatter = logging.Formatter()


def redact(text: str) -> str:
    """``text`` with every secret value the patterns know replaced by :data:`MARKER`."""
    for pattern in _PATTERNS:
        text = pattern.sub(_REPLACEMENT, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record in place: the formatted message, redacted, with no arguments.

    Never drops a record and never raises: a message that cannot be formatted is logged
    without its arguments, a message that cannot even be turned into text as a fixed notice.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record``'s message, exception text and stack; always keep the record."""
        try:
            _redact_record(record)
        except Exception:
            record.msg, record.args = _UNFORMATTABLE, ()
            record.exc_info = record.exc_text = record.stack_info = None
        return True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        message = f"{record.msg} {_UNFORMATTABLE}"
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


FILTER = RedactingFilter()
"""The one filter instance :func:`install` attaches."""

_lock = threading.Lock()


def install() -> None:
    """Attach :data:`FILTER` to every logger of :data:`ROOTS` that exists now.

    Idempotent and thread-safe; call it again after new loggers may have appeared (a client
    was created, a botocore module imported). Creates :data:`KNOWN_LOGGERS` first.
    """
    with _lock:
        for name in KNOWN_LOGGERS:
            logging.getLogger(name)
        for name, found in logging.root.manager.loggerDict.copy().items():
            if isinstance(found, logging.Logger) and _filtered(name):
                found.addFilter(FILTER)  # a no-op when already there


def _filtered(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in ROOTS)
