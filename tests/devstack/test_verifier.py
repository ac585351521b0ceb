"""devstack's token verifier against tokens signed by botocore, with a fake clock and key store.

RDS tokens (service ``rds-db``, ``host:port``) and Aurora DSQL tokens (service ``dsql``, no
port, ``DbConnectAdmin`` for ``admin``) alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from urllib.parse import parse_qsl, urlencode

import botocore.auth
import botocore.session
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.verifier import DSQL, KeyInfo, Verifier, iam_identity

HOST = "mydb.c0abc.us-east-1.rds.amazonaws.com"
PORT = 5432
REGION = "us-east-1"
T0 = dt.datetime(2026, 11, 24, 12, 0, 0)  # naive UTC, as botocore uses it
NOW = T0.replace(tzinfo=dt.timezone.utc).timestamp()

LONG = Credentials("AKIAEXAMPLELONGTERM1", "long/term+secret/key0000000000000000000")
SESSION = Credentials(
    "ASIAEXAMPLESESSION01", "session+secret/key00000000000000000000", "tok/+=" * 60
)
KEYS = {
    LONG.access_key: KeyInfo(LONG.secret_key, None, "arn:aws:iam::123456789012:user/dev"),
    SESSION.access_key: KeyInfo(
        SESSION.secret_key, SESSION.token, "arn:aws:sts::123456789012:assumed-role/r/s", NOW + 3600
    ),
}


@pytest.fixture(autouse=True)
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: T0)


def sign(
    user: str = "app",
    *,
    host: str = HOST,
    port: int = PORT,
    region: str = REGION,
    service: str = "rds-db",
    creds: Credentials = SESSION,
    expires: int = 900,
) -> str:
    """A token made the way botocore's generate_db_auth_token makes it, with every knob exposed."""
    request = AWSRequest(
        method="GET", url=f"https://{host}:{port}/", params={"Action": "connect", "DBUser": user}
    )
    SigV4QueryAuth(creds, service, region, expires=expires).add_auth(request)
    return str(request.prepare().url)[len("https://") :]


def make(clock: list[float] | None = None, *, iam_rate: float | None = None) -> Verifier:
    now = clock if clock is not None else [NOW]
    verifier = Verifier(KEYS.get, clock=lambda: now[0])
    verifier.register_server("pg", HOST, PORT, REGION, iam_rate)
    return verifier


def reason(token: str, user: str = "app", clock: list[float] | None = None) -> str:
    verdict = make(clock).verify("pg", user, token)
    assert verdict.ok == (verdict.reason == "ok")
    return verdict.reason


def replace_param(token: str, name: str, value: str) -> str:
    head, _, query = token.partition("?")
    pairs = [(k, value if k == name else v) for k, v in parse_qsl(query)]
    return head + "?" + urlencode(pairs)


def test_sign_matches_botocore_generate_db_auth_token() -> None:
    session = botocore.session.get_session()
    session.set_credentials(SESSION.access_key, SESSION.secret_key, SESSION.token)
    client = session.create_client("rds", region_name=REGION)
    reference = client.generate_db_auth_token(HOST, PORT, "app", REGION)
    assert reference == sign()
    assert reason(reference) == "ok"


@pytest.mark.parametrize("creds", [LONG, SESSION], ids=["long-term", "session"])
def test_valid_token_is_accepted(creds: Credentials) -> None:
    verifier = make()
    assert verifier.verify("pg", "app", sign(creds=creds)).ok
    assert [(e.server, e.user, e.ok, e.reason, e.access_key) for e in verifier.events] == [
        ("pg", "app", True, "ok", creds.access_key)
    ]


def test_host_is_case_insensitive() -> None:
    assert reason(sign(host=HOST.upper())) == "ok"


def test_tampered_signature() -> None:
    token = sign()
    sig = dict(parse_qsl(token.partition("?")[2]))["X-Amz-Signature"]
    flipped = ("0" if sig[-1] != "0" else "1") + sig[1:]
    assert reason(token.replace(sig, flipped)) == "bad signature"


def test_tampered_dbuser_breaks_the_signature() -> None:
    assert reason(replace_param(sign("app"), "DBUser", "admin"), user="admin") == "bad signature"


@pytest.mark.parametrize(
    ("token_kw", "user", "expected"),
    [
        ({}, "admin", "wrong user"),
        ({"host": "other.c0abc.us-east-1.rds.amazonaws.com"}, "app", "wrong host"),
        ({"host": "127.0.0.1"}, "app", "wrong host"),
        ({"port": 5433}, "app", "wrong port"),
        ({"region": "eu-west-1"}, "app", "wrong region"),
        ({"service": "rds"}, "app", "wrong service"),
        ({"expires": 901}, "app", "bad expiry"),
        ({"creds": Credentials("AKIAUNKNOWNKEY000000", "x" * 40)}, "app", "unknown access key"),
    ],
)
def test_refusals(token_kw: dict[str, object], user: str, expected: str) -> None:
    assert reason(sign(**token_kw), user=user) == expected  # type: ignore[arg-type]


def test_wrong_or_missing_session_token() -> None:
    wrong = Credentials(SESSION.access_key, SESSION.secret_key, "not-the-session-token")
    missing = Credentials(SESSION.access_key, SESSION.secret_key)
    extra = Credentials(LONG.access_key, LONG.secret_key, "unexpected")
    for creds in (wrong, missing, extra):
        assert reason(sign(creds=creds)) == "wrong session token"


def test_expired_credentials() -> None:
    expired = KeyInfo(SESSION.secret_key, SESSION.token, "arn:aws:sts::1:assumed-role/r/s", NOW - 1)
    verifier = Verifier({SESSION.access_key: expired}.get, clock=lambda: NOW)
    verifier.register_server("pg", HOST, PORT, REGION)
    assert verifier.verify("pg", "app", sign()).reason == "credentials expired"


def test_token_lifetime_with_skew() -> None:
    token = sign()
    assert reason(token, clock=[NOW + 900 + 300]) == "ok"
    assert reason(token, clock=[NOW + 900 + 301]) == "expired"
    assert reason(sign(expires=60), clock=[NOW + 361]) == "expired"
    assert reason(token, clock=[NOW - 300]) == "ok"
    assert reason(token, clock=[NOW - 301]) == "future-dated"


def test_scope_date_must_match_x_amz_date() -> None:
    token = sign()
    cred = dict(parse_qsl(token.partition("?")[2]))["X-Amz-Credential"]
    assert (
        reason(replace_param(token, "X-Amz-Credential", cred.replace("20261124", "20261123")))
        == "wrong scope date"
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: "",
        lambda t: "not a token",
        lambda t: t.replace("/?", "?"),
        lambda t: t.replace(f":{PORT}/", "/"),
        lambda t: t.replace("Action=connect", "Action=login"),
        lambda t: t.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=host%3Bx-amz-date"),
        lambda t: t.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA1"),
        lambda t: t.replace("X-Amz-Date=", "X-Amz-Date=x"),
        lambda t: t + "&DBUser=app",
        lambda t: t + "&Extra=1",
        lambda t: t.replace("&X-Amz-Expires=900", ""),
        lambda t: t.replace("aws4_request", "aws5_request"),
    ],
)
def test_malformed(mutate: object) -> None:
    assert reason(mutate(sign())) == "malformed"  # type: ignore[operator]


def test_unknown_server() -> None:
    assert make().verify("mysql", "app", sign()).reason == "unknown server"


def test_rate_limit_counts_only_new_tokens() -> None:
    clock = [NOW]
    verifier = make(clock, iam_rate=2)
    first, second, third = sign("u1"), sign("u2"), sign("u3")
    assert verifier.verify("pg", "u1", first).ok
    assert verifier.verify("pg", "u2", second).ok
    assert verifier.verify("pg", "u3", third).reason == "throttled"
    for _ in range(5):  # reusing accepted tokens is never throttled and never counted
        assert verifier.verify("pg", "u1", first).ok
    assert verifier.verify("pg", "app", sign("app", creds=LONG)).reason == "throttled"
    clock[0] += 0.5
    assert verifier.verify("pg", "u3", third).reason == "throttled"
    clock[0] += 0.5  # the first two accepts leave the rolling second
    assert verifier.verify("pg", "u3", third).ok
    assert verifier.verify("pg", "u2", second).ok


def test_rate_limit_is_thread_safe() -> None:
    verifier = make(iam_rate=5)
    tokens = [(f"user{i}", sign(f"user{i}")) for i in range(20)]
    results: list[bool] = []
    lock = threading.Lock()

    def login(user: str, token: str) -> None:
        ok = verifier.verify("pg", user, token).ok
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=login, args=pair) for pair in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True] * 5


def test_refusals_are_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devstack.verifier")
    verifier = make([NOW + 5000])
    tokens = [sign(), sign("x"), sign(host="evil.example.com"), sign(creds=LONG)]
    for token in tokens:
        assert not verifier.verify("pg", "app", token).ok
    assert len(caplog.records) == len(tokens)
    secrets = [SESSION.token, SESSION.secret_key, LONG.secret_key]
    for token in tokens:
        query = dict(parse_qsl(token.partition("?")[2]))
        secrets += [token, query["X-Amz-Signature"]]
    for record in caplog.records:
        text = record.getMessage()
        assert record.name == "devstack.verifier" and record.levelno == logging.INFO
        assert "server=pg" in text and "user=app" in text and "access_key=A" in text
        for secret in secrets:
            assert secret not in text
    assert all(secret not in repr(list(verifier.events)) for secret in secrets)
    assert SESSION.secret_key not in repr(KEYS[SESSION.access_key])


# --- Aurora DSQL ------------------------------------------------------------------------

DSQL_HOST = "iamdbdevstack0000000000000.dsql.us-east-1.on.aws"
SESSION_ROLE = "arn:aws:iam::123456789012:role/r"  # the role behind SESSION's assumed-role ARN


def sign_dsql(
    action: str = "DbConnectAdmin",
    *,
    host: str = DSQL_HOST,
    port: int | None = None,
    region: str = REGION,
    service: str = "dsql",
    creds: Credentials = SESSION,
    expires: int = 900,
    extra: dict[str, str] | None = None,
) -> str:
    """A token made the way botocore's dsql client makes it, with every knob exposed."""
    netloc = host if port is None else f"{host}:{port}"
    request = AWSRequest(
        method="GET", url=f"https://{netloc}/", params={"Action": action, **(extra or {})}
    )
    SigV4QueryAuth(creds, service, region, expires=expires).add_auth(request)
    return str(request.prepare().url)[len("https://") :]


def make_dsql(clock: list[float] | None = None, grants: list[str] | None = None) -> Verifier:
    now = clock if clock is not None else [NOW]
    verifier = Verifier(KEYS.get, clock=lambda: now[0])
    verifier.register_server("pg", HOST, PORT, REGION)
    verifier.register_server(
        "dsql",
        DSQL_HOST,
        None,
        REGION,
        kind=DSQL,
        iam_grants={"app": [SESSION_ROLE] if grants is None else grants},
    )
    return verifier


def dsql_reason(token: str, user: str = "admin", clock: list[float] | None = None) -> str:
    verdict = make_dsql(clock).verify("dsql", user, token)
    assert verdict.ok == (verdict.reason == "ok")
    return verdict.reason


def test_sign_dsql_matches_botocores_dsql_client() -> None:
    session = botocore.session.get_session()
    session.set_credentials(SESSION.access_key, SESSION.secret_key, SESSION.token)
    client = session.create_client("dsql", region_name=REGION)
    admin = client.generate_db_connect_admin_auth_token(DSQL_HOST, REGION, ExpiresIn=3600)
    assert admin == sign_dsql("DbConnectAdmin", expires=3600)
    assert client.generate_db_connect_auth_token(DSQL_HOST, REGION) == sign_dsql("DbConnect")
    assert dsql_reason(admin) == "ok"


@pytest.mark.parametrize("creds", [LONG, SESSION], ids=["long-term", "session"])
def test_dsql_admin_logs_in_with_db_connect_admin(creds: Credentials) -> None:
    verifier = make_dsql()
    assert verifier.verify("dsql", "admin", sign_dsql(creds=creds)).ok
    assert [(e.server, e.user, e.ok) for e in verifier.events] == [("dsql", "admin", True)]


def test_dsql_action_must_match_the_role() -> None:
    assert dsql_reason(sign_dsql("DbConnect"), user="admin") == "wrong action"
    assert dsql_reason(sign_dsql("DbConnectAdmin"), user="app") == "wrong action"
    assert dsql_reason(sign_dsql("DbConnect"), user="app") == "ok"
    assert dsql_reason(sign_dsql("connect"), user="app") == "malformed"


def test_dsql_custom_roles_need_an_iam_grant() -> None:
    """``AWS IAM GRANT app TO '<role ARN>'``: the session's role is granted, a user is not."""
    assert dsql_reason(sign_dsql("DbConnect", creds=LONG), user="app") == "no IAM grant"
    verifier = make_dsql(grants=["arn:aws:iam::123456789012:user/dev"])
    assert verifier.verify("dsql", "app", sign_dsql("DbConnect", creds=LONG)).ok
    assert verifier.verify("dsql", "app", sign_dsql("DbConnect")).reason == "no IAM grant"
    assert verifier.verify("dsql", "other", sign_dsql("DbConnect")).reason == "no IAM grant"
    assert verifier.verify("dsql", "admin", sign_dsql(creds=LONG)).ok  # admin needs none


def test_iam_identity_of_a_principal() -> None:
    assert iam_identity("arn:aws:sts::123456789012:assumed-role/r/s") == SESSION_ROLE
    assert iam_identity("arn:aws-cn:sts::1:assumed-role/a/b") == "arn:aws-cn:iam::1:role/a"
    assert iam_identity("arn:aws:iam::1:user/dev") == "arn:aws:iam::1:user/dev"


def test_rds_and_dsql_tokens_are_refused_at_each_others_endpoints() -> None:
    verifier = make_dsql()
    rds_token = sign("admin", host=DSQL_HOST, port=5432)  # even signed for the DSQL name
    assert verifier.verify("dsql", "admin", rds_token).reason == "wrong service"
    assert verifier.verify("pg", "app", sign_dsql("DbConnect", host=HOST)).reason == (
        "wrong service"
    )
    rds_shaped = sign("admin", host=DSQL_HOST, port=5432, service="dsql")
    assert verifier.verify("dsql", "admin", rds_shaped).reason == "wrong port"


@pytest.mark.parametrize(
    ("token_kw", "expected"),
    [
        ({"host": "other0000000000000000000000.dsql.us-east-1.on.aws"}, "wrong host"),
        ({"port": 443}, "wrong port"),  # DSQL signs no port, not even HTTPS's own
        ({"region": "us-east-2"}, "wrong region"),
        ({"service": "rds-db"}, "wrong service"),
        ({"expires": 604_801}, "bad expiry"),
        ({"extra": {"DBUser": "admin"}}, "malformed"),
        ({"creds": Credentials("AKIAUNKNOWNKEY000000", "x" * 40)}, "unknown access key"),
    ],
)
def test_dsql_refusals(token_kw: dict[str, object], expected: str) -> None:
    assert dsql_reason(sign_dsql(**token_kw)) == expected  # type: ignore[arg-type]


def test_dsql_lifetime_comes_from_x_amz_expires() -> None:
    week = sign_dsql(expires=604_800, creds=LONG)  # SESSION's credentials end after an hour
    assert dsql_reason(week, clock=[NOW + 604_800 + 300]) == "ok"
    assert dsql_reason(week, clock=[NOW + 604_800 + 301]) == "expired"
    hour = sign_dsql(expires=3600)
    assert dsql_reason(hour, clock=[NOW + 3600]) == "ok"
    assert dsql_reason(hour, clock=[NOW + 3600 + 301]) == "expired"
    assert dsql_reason(sign_dsql(), clock=[NOW + 1201]) == "expired"


def test_dsql_tampered_action_breaks_the_signature() -> None:
    token = sign_dsql("DbConnect").replace("Action=DbConnect&", "Action=DbConnectAdmin&")
    assert dsql_reason(token) == "bad signature"


def test_authorize_is_asked_for_the_iam_action_of_the_token() -> None:
    asked: list[tuple[str, str, str, str]] = []

    def authorize(principal: str, server: str, user: str, action: str) -> tuple[bool, str]:
        asked.append((principal, server, user, action))
        return user != "app", "policy says no"

    verifier = Verifier(KEYS.get, clock=lambda: NOW, authorize=authorize)
    verifier.register_server("pg", HOST, PORT, REGION)
    verifier.register_server("dsql", DSQL_HOST, None, REGION, kind=DSQL)
    assert verifier.verify("pg", "other", sign("other")).ok
    assert verifier.verify("dsql", "admin", sign_dsql()).ok
    assert verifier.verify("dsql", "app", sign_dsql("DbConnect")).reason == "not authorized"
    arn = KEYS[SESSION.access_key].arn
    assert asked == [
        (arn, "pg", "other", "rds-db:connect"),
        (arn, "dsql", "admin", "dsql:DbConnectAdmin"),
        (arn, "dsql", "app", "dsql:DbConnect"),
    ]


def test_register_server_checks_the_kind() -> None:
    verifier = Verifier(KEYS.get)
    with pytest.raises(ValueError):
        verifier.register_server("dsql", DSQL_HOST, 5432, REGION, kind=DSQL)
    with pytest.raises(ValueError):
        verifier.register_server("pg", HOST, None, REGION)
    with pytest.raises(ValueError):
        verifier.register_server("pg", HOST, PORT, REGION, iam_grants={"app": ["arn"]})


def test_dsql_rate_limit_counts_new_tokens() -> None:
    verifier = make_dsql()
    verifier.set_iam_rate("dsql", 1)
    first = sign_dsql()
    assert verifier.verify("dsql", "admin", first).ok
    assert verifier.verify("dsql", "admin", first).ok  # reused: not counted
    assert verifier.verify("dsql", "admin", sign_dsql(expires=901)).reason == "throttled"
