"""iamdb._aws.redact against botocore's real DEBUG output: no secret survives, the context does.

The records come from botocore itself: boto3 clients (STS AssumeRole over the query protocol
and XML, DynamoDB UpdateItem over JSON, Cognito and SSO returning credentials as JSON) call a
local stdlib HTTP server, a presigned URL is made, and pymongo-auth-aws signs its MONGODB-AWS
header. They are captured once with iamdb's filter detached (so they really hold the secrets),
then each test runs the filter on copies.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config

from iamdb._aws import redact as _redact

ACCESS_KEY = "ASIAFUNCTIONKEY00001"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+" + "Ab9/+x=" * 40 + "=="
ROLE_KEY = "ASIAMONGOROLEKEY0001"
ROLE_SECRET = "RoleSecret/+0123456789abcdefghijklmnopqrstu"
ROLE_TOKEN = "FwoGZXIvYXdzEBoaDHRoZVJvbGVUb2tlbi8rPQ/+" + "Rk9vYmFy+/=" * 20
SSO_TOKEN = "aoaAAAAAGZssobearertoken0123456789abcdef/+="
REGION = "us-east-1"
AUTHORIZATION = re.compile(r"Signature=([0-9a-f]{64})")
LOGGERS = ("botocore", "boto3", "urllib3", "pymongo_auth_aws")
PMA = "pymongo_auth_aws"

ASSUME_ROLE_XML = f"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <AssumedRoleId>AROAEXAMPLE:fn-1234</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/mongo/fn-1234</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{ROLE_KEY}</AccessKeyId>
      <SecretAccessKey>{ROLE_SECRET}</SecretAccessKey>
      <SessionToken>{ROLE_TOKEN}</SessionToken>
      <Expiration>2030-01-01T00:00:00Z</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"""
COGNITO_JSON = {
    "IdentityId": "us-east-1:identity",
    "Credentials": {
        "AccessKeyId": ROLE_KEY,
        "SecretKey": ROLE_SECRET,
        "SessionToken": ROLE_TOKEN,
        "Expiration": 1893456000,
    },
}
SSO_JSON = {
    "roleCredentials": {
        "accessKeyId": ROLE_KEY,
        "secretAccessKey": ROLE_SECRET,
        "sessionToken": ROLE_TOKEN,
        "expiration": 1893456000000,
    }
}


class FakeAws(http.server.BaseHTTPRequestHandler):
    """Answers STS, DynamoDB, Cognito and SSO with canned bodies; keeps each Authorization."""

    authorizations: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.authorizations.append(self.headers.get("Authorization") or "")
        target = self.headers.get("X-Amz-Target") or ""
        if target.startswith("DynamoDB"):
            self._answer("application/x-amz-json-1.0", {"Attributes": {"count": {"N": "1"}}})
        elif target.startswith("AWSCognitoIdentityService"):
            self._answer("application/x-amz-json-1.1", COGNITO_JSON)
        else:
            self._answer("text/xml", ASSUME_ROLE_XML)

    def do_GET(self) -> None:
        self._answer("application/json", SSO_JSON)

    def _answer(self, content_type: str, body: object) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "c6104cbe-af31-11e0-8154-cbc7ccf896c7")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Wire:
    """botocore's raw DEBUG records and every secret that went through botocore."""

    def __init__(self, records: list[logging.LogRecord], secrets: set[str]) -> None:
        self.records = records
        self.secrets = secrets

    def filtered(self) -> list[logging.LogRecord]:
        """Copies of the records, each run through iamdb's filter (which must keep it)."""
        copies = [logging.makeLogRecord(vars(record)) for record in self.records]
        assert all(_redact.FILTER.filter(copy) for copy in copies)
        return copies


def _loggers() -> list[logging.Logger]:
    return [
        found
        for found in logging.root.manager.loggerDict.copy().values()
        if isinstance(found, logging.Logger)
    ]


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    """Run botocore's code paths once, with DEBUG on and iamdb's filter off, and keep it all."""
    had_filter = [logger for logger in _loggers() if _redact.FILTER in logger.filters]
    for logger in had_filter:
        logger.removeFilter(_redact.FILTER)
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    capture = Capture()
    logging.getLogger().addHandler(capture)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    # The real pymongo-auth-aws is needed here, not iamdb's stand-in an earlier test may have
    # registered under its name; afterwards the stand-in is put back (see iamdb/_mongo/aws.py).
    stand_in = {m: sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] == PMA}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeAws)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        secrets = _call_botocore(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        logging.getLogger().removeHandler(capture)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for logger in had_filter:
            logger.addFilter(_redact.FILTER)
        for name in [m for m in sys.modules if m.split(".")[0] == PMA]:
            del sys.modules[name]
        sys.modules.update(stand_in)
    secrets |= {sig for auth in FakeAws.authorizations for sig in AUTHORIZATION.findall(auth)}
    yield Wire(capture.records, secrets)


def _call_botocore(url: str) -> set[str]:
    """Every path that signs or parses credentials; returns the secrets not known in advance."""
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=SESSION_TOKEN,
        region_name=REGION,
    )
    config = Config(retries={"total_max_attempts": 1})
    sts = session.client("sts", endpoint_url=url, config=config)
    got = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/mongo", RoleSessionName="fn")
    assert got["Credentials"]["SecretAccessKey"] == ROLE_SECRET
    dynamodb = session.client("dynamodb", endpoint_url=url, config=config)
    dynamodb.update_item(TableName="iamdb-throttle", Key={"pk": {"S": "db:5432#1"}})
    cognito = session.client("cognito-identity", endpoint_url=url, config=config)
    assert cognito.get_credentials_for_identity(IdentityId="us-east-1:identity")
    sso = session.client("sso", endpoint_url=url, config=config)
    sso.get_role_credentials(roleName="r", accountId="123456789012", accessToken=SSO_TOKEN)
    presigned = sts.generate_presigned_url("get_caller_identity")
    (presigned_signature,) = parse_qs(urlsplit(presigned).query)["X-Amz-Signature"]

    from pymongo_auth_aws.auth import AwsCredential, _aws_auth_header

    header = _aws_auth_header(
        AwsCredential(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), os.urandom(64), "sts.amazonaws.com"
    )
    return {
        SECRET_KEY,
        SESSION_TOKEN,
        ROLE_SECRET,
        ROLE_TOKEN,
        SSO_TOKEN,
        presigned_signature,
        *AUTHORIZATION.findall(header["a"]),
    }


def _text(record: logging.LogRecord) -> str:
    return logging.Formatter("%(name)s %(message)s").format(record)


def _leaks(records: list[logging.LogRecord], secrets: set[str]) -> list[str]:
    return [
        f"{record.name}: {secret[:6]}... in {_text(record)[:120]!r}"
        for record in records
        for secret in secrets
        if secret in _text(record) or secret in repr(record.args)
    ]


def test_botocore_debug_output_holds_the_secrets_without_the_filter(wire: Wire) -> None:
    """The detector is real: botocore's own records carry each secret but the secret key."""
    assert len(wire.secrets) == 9  # 5 known, STS's, DynamoDB's, presigned, pymongo-auth-aws's
    leaked = {s for s in wire.secrets if any(s in _text(r) for r in wire.records)}
    assert leaked == wire.secrets - {SECRET_KEY}  # botocore never logs the secret key itself
    names = {r.name for r in wire.records if _leaks([r], wire.secrets)}
    assert {"botocore.auth", "botocore.endpoint", "botocore.parsers"} <= names
    assert names <= set(_redact.KNOWN_LOGGERS)


def test_the_filter_leaves_no_secret_in_botocores_records(wire: Wire) -> None:
    records = wire.filtered()
    assert not _leaks(records, wire.secrets), "\n".join(_leaks(records, wire.secrets))
    assert all(record.args == () for record in records)


def test_the_filter_keeps_the_context(wire: Wire) -> None:
    """Operation names, URL paths, key ids and the request id stay readable."""
    text = "\n".join(_text(record) for record in wire.filtered())
    for kept in (
        "AssumeRole",
        "UpdateItem",
        "GetRoleCredentials",
        "/federation/credentials",
        f"Credential={ACCESS_KEY}/",
        f"<AccessKeyId>{ROLE_KEY}</AccessKeyId>",
        "SignedHeaders=",
        "c6104cbe-af31-11e0-8154-cbc7ccf896c7",
        "CanonicalRequest:",
    ):
        assert kept in text, kept
    for marked in (
        f"<SecretAccessKey>{_redact.MARKER}</SecretAccessKey>",
        f"'X-Amz-Security-Token': b'{_redact.MARKER}'",
        f"x-amz-security-token:{_redact.MARKER}",
        f"X-Amz-Security-Token={_redact.MARKER}",
        f"Signature={_redact.MARKER}",
        f"Signature:\n{_redact.MARKER}",
        f'"SecretKey": "{_redact.MARKER}"',
        f'"secretAccessKey": "{_redact.MARKER}"',
    ):
        assert marked in text, marked


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("headers={'X-Amz-Security-Token': b'TOKEN/+=', 'X-Amz-Date': b'2026'}", "TOKEN/+="),
        ("{'x-amz-security-token': 'TOKEN/+='}", "TOKEN/+="),
        ("host:sts\nx-amz-security-token:TOKEN/+=\n\nhost", "TOKEN/+="),
        ("/?Action=X&X-Amz-Security-Token=TOKEN%2F%2B&X-Amz-Date=1", "TOKEN%2F%2B"),
        ("SignatureVersion=2&SecurityToken=TOKEN%2F&Timestamp=1", "TOKEN%2F"),
        ("SignedHeaders=host;x-amz-date, Signature=0123abcdef'}>", "0123abcdef"),
        ("https://h/?X-Amz-Signature=0123abcdef&X-Amz-Date=1", "0123abcdef"),
        ("Signature:\n0123abcdef", "0123abcdef"),
        ("b'<SecretAccessKey>KEY/+=</SecretAccessKey>'", "KEY/+="),
        ("<a:SessionToken>TOKEN/+=</a:SessionToken>", "TOKEN/+="),
        ('b\'{"SecretAccessKey":"KEY/+=","SessionToken": "TOKEN/+="}\'', "KEY/+="),
        ('{"sessionToken":"TOKEN\\/+="}', "TOKEN\\/+="),
        ("{'aws_secret_access_key': 'KEY/+='}", "KEY/+="),
        ("aws_secret_access_key=KEY/+=", "KEY/+="),
        ("{'Code': 'x', 'Token': 'TOKEN/+=', 'SecretAccessKey': 'KEY'}", "TOKEN/+="),
        ("{'x-amz-sso_bearer_token': b'TOKEN/+='}", "TOKEN/+="),
        ("'Authorization': b'Bearer TOKEN/+='", "TOKEN/+="),
        ("'Authorization': b'AWS AKIAIOSFODNN7EXAMPLE:c2lnbmF0dXJl+/='", "c2lnbmF0dXJl+/="),
        ("'WebIdentityToken': 'eyJhbGciOi.eyJzdWIi.c2ln'", "eyJhbGciOi.eyJzdWIi.c2ln"),
        ('"accessToken":"TOKEN/+=","refreshToken":"R","clientSecret":"S"', "TOKEN/+="),
    ],
)
def test_each_form_of_secret_is_redacted(text: str, secret: str) -> None:
    redacted = _redact.redact(text)
    assert secret not in redacted and _redact.MARKER in redacted
    assert _redact.redact(redacted) == redacted  # stable: filtering twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "Making request for OperationModel(name=AssumeRole) with params: {'url_path': '/'}",
        "SignedHeaders=host;x-amz-date;x-amz-security-token",
        "host;x-amz-date;x-amz-security-token\ne3b0c44298fc1c149afbf4c8996fb924",
        "Calculating signature using v4 auth.",
        "Event needs-retry.sts.AssumeRole: calling handler <RetryHandler>",
        "'NextToken': 'page-2', 'ClientRequestToken': 'idem-1'",
        "Starting new HTTPS connection (1): sts.us-east-1.amazonaws.com:443",
    ],
)
def test_text_without_secrets_is_left_alone(text: str) -> None:
    assert _redact.redact(text) == text


def _record(msg: object, args: Any = (), exc_info: Any = None, **kw: Any) -> logging.LogRecord:
    return logging.LogRecord(
        "botocore.endpoint", logging.DEBUG, __file__, 1, msg, args, exc_info, **kw
    )


def test_records_with_bad_arguments_are_kept_without_them() -> None:
    record = _record("Signature=0123abcdef %s %s", ("only one",))
    assert _redact.FILTER.filter(record)
    message = record.getMessage()
    assert "0123abcdef" not in message and "Signature=" in message and "dropped" in message

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    record = _record(Unprintable())
    assert _redact.FILTER.filter(record)
    assert "could not be formatted" in record.getMessage() and record.args == ()


def test_mapping_arguments_are_formatted_then_redacted() -> None:
    record = _record("%(h)s", ({"h": {"X-Amz-Security-Token": b"TOKEN/+="}},))
    assert _redact.FILTER.filter(record)
    assert record.getMessage() == f"{{'X-Amz-Security-Token': b'{_redact.MARKER}'}}"


def test_exception_and_stack_text_are_redacted() -> None:
    try:
        raise ValueError("refused https://sts/?X-Amz-Security-Token=TOKEN%2F%2B")
    except ValueError:
        exc_info = sys.exc_info()
    record = _record("failed", exc_info=exc_info, sinfo="Stack: x-amz-security-token:TOKEN/+=")
    assert _redact.FILTER.filter(record)
    text = logging.Formatter().format(record)
    assert "TOKEN" not in text and "ValueError: refused" in text and "Stack:" in text


def test_a_bad_record_through_a_real_logger_is_logged_and_nothing_raises(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("botocore.iamdb_test_bad_args")
    _redact.install()
    capture = Capture()
    logger.addHandler(capture)
    try:
        logger.warning("%s and %s", "X-Amz-Security-Token=TOKEN%2F")
    finally:
        logger.removeHandler(capture)
    [record] = capture.records
    assert "TOKEN" not in logging.Formatter().format(record)
    assert "Logging error" not in capsys.readouterr().err


def test_install_filters_every_existing_logger_once_and_later_ones_on_the_next_call() -> None:
    import botocore.parsers  # noqa: F401  (a module logger that exists)

    early = logging.getLogger("urllib3.iamdb_test.deep.child")  # a PlaceHolder in between
    other = logging.getLogger("botocorex.iamdb_test")
    _redact.install()
    _redact.install()
    assert logging.getLogger("botocore.parsers").filters.count(_redact.FILTER) == 1
    assert early.filters.count(_redact.FILTER) == 1
    assert _redact.FILTER not in other.filters and _redact.FILTER not in logging.getLogger().filters
    assert all(_redact.FILTER in logging.getLogger(name).filters for name in _redact.KNOWN_LOGGERS)
    late = logging.getLogger("botocore.iamdb_test_late")
    assert _redact.FILTER not in late.filters  # created after: not seen yet
    _redact.install()
    assert late.filters.count(_redact.FILTER) == 1


def test_install_from_many_threads_attaches_one_filter() -> None:
    names = [f"boto3.iamdb_test_threads.{i}" for i in range(20)]
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for name in names:
            logging.getLogger(name)
            _redact.install()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(logging.getLogger(n).filters.count(_redact.FILTER) == 1 for n in names)
