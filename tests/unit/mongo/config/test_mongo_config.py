"""get_mongo()'s configuration, RoleSessionName, AssumeRole's retries and the swap logic.

No network: STS is a scripted stand-in for iamdb's AWS client and the MongoDB client factory
is a stub.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree

import pytest

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.credentials import Credentials
from iamdb._aws.sts import Lease, assume_role, session_name
from iamdb._core.invocation import Deadline
from iamdb._core.runtime import Runtime
from iamdb._mongo.admin import connection_string
from iamdb._mongo.client import client_options
from iamdb._mongo.config import MongoConfig, load_mongo_config
from iamdb._mongo.handle import MongoHandle
from iamdb.errors import AuthError, ConfigError, ConnectError, CredentialsError
from tests.fakes import FakeTime, RecordingProbe, ScriptedSts, runtime, sts_error

MONGO_START = 1_000_000.0

ROLE = "arn:aws:iam::123456789012:role/MongoAccess"
BASE = {
    "IAMDB_MONGO_URI": "mongodb://db.example.com:27017/app?retryWrites=true",
    "IAMDB_MONGO_ROLE_ARN": ROLE,
    "AWS_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "ASIAFUNCTIONKEY00000",
    "AWS_SECRET_ACCESS_KEY": "function-secret",
    "AWS_SESSION_TOKEN": "function-token",
}


def cfg(**changes: str | None) -> MongoConfig:
    env = {**BASE, **changes}
    return load_mongo_config(None, {k: v for k, v in env.items() if v is not None})


# -- configuration ---------------------------------------------------------------------------


def test_defaults() -> None:
    c = cfg()
    assert (c.hosts, c.database, c.srv, c.tls) == (("db.example.com:27017",), "app", False, True)
    assert (c.role_arn, c.session_seconds, c.refresh_seconds) == (ROLE, 3600, 300)
    assert c.external_id is None and c.label == "mongo"


def test_named_instance_reads_its_own_prefix() -> None:
    env = {
        "IAMDB_MONGO_REPORTS_URI": "mongodb+srv://cluster0.abcde.mongodb.net/reports",
        "IAMDB_MONGO_REPORTS_SESSION_SECONDS": "900",
        "IAMDB_MONGO_REPORTS_REFRESH_SECONDS": "120",
    }
    c = load_mongo_config("reports", env)
    assert (c.prefix, c.label, c.srv, c.tls, c.role_arn) == (
        "IAMDB_MONGO_REPORTS_",
        "mongo:reports",
        True,
        True,
        None,
    )
    assert (c.session_seconds, c.refresh_seconds) == (900, 120)


@pytest.mark.parametrize(
    ("changes", "variable", "fragment"),
    [
        ({"IAMDB_MONGO_URI": None}, "IAMDB_MONGO_URI", "required"),
        ({"IAMDB_MONGO_URI": "postgres://h/app"}, "IAMDB_MONGO_URI", "mongodb://"),
        ({"IAMDB_MONGO_URI": "mongodb://u:p@h/app"}, "IAMDB_MONGO_URI", "password"),
        ({"IAMDB_MONGO_URI": "mongodb://h"}, "IAMDB_MONGO_URI", "database"),
        ({"IAMDB_MONGO_URI": "mongodb://h/"}, "IAMDB_MONGO_URI", "database"),
        ({"IAMDB_MONGO_URI": "mongodb://h:99999/app"}, "IAMDB_MONGO_URI", "pymongo refuses"),
        ({"IAMDB_MONGO_URI": "mongodb://%2Ftmp%2Fm.sock/app"}, "IAMDB_MONGO_URI", "host[:port]"),
        ({"IAMDB_MONGO_URI": "mongodb+srv://a,b/app"}, "IAMDB_MONGO_URI", "exactly one"),
        (
            {"IAMDB_MONGO_URI": "mongodb://h/app?authMechanism=SCRAM-SHA-256"},
            "IAMDB_MONGO_URI",
            "MONGODB-AWS",
        ),
        ({"IAMDB_MONGO_URI": "mongodb://h/app?authSource=admin"}, "IAMDB_MONGO_URI", "$external"),
        ({"IAMDB_MONGO_URI": "mongodb://h/app?tls=false"}, "IAMDB_MONGO_URI", "TLS"),
        ({"IAMDB_MONGO_URI": "mongodb://h/app?tlsInsecure=true"}, "IAMDB_MONGO_URI", "off"),
        (
            {"IAMDB_MONGO_URI": "mongodb://h/app?tlsAllowInvalidCertificates=true"},
            "IAMDB_MONGO_URI",
            "certificate verification off",
        ),
        (
            {"IAMDB_MONGO_URI": "mongodb://h/app?tlsAllowInvalidHostnames=true"},
            "IAMDB_MONGO_URI",
            "host-name verification off",
        ),
        (
            {"IAMDB_MONGO_URI": "mongodb://h/app?tlsDisableOCSPEndpointCheck=true"},
            "IAMDB_MONGO_URI",
            "revocation",
        ),
        (
            {"IAMDB_MONGO_URI": "mongodb://h/app?tlsDisableCertificateRevocationCheck=false"},
            "IAMDB_MONGO_URI",
            "revocation",
        ),
        ({"IAMDB_MONGO_URI": "mongodb://h/app?ssl_cert_reqs=0"}, "IAMDB_MONGO_URI", "certificate"),
        (
            {"IAMDB_MONGO_URI": "mongodb://h/app?serverSelectionTimeoutMS=abc"},
            "IAMDB_MONGO_URI",
            "serverselectiontimeoutms",
        ),
        ({"IAMDB_MONGO_URI": "mongodb://h/app%24x"}, "IAMDB_MONGO_URI", "database"),
        ({"IAMDB_MONGO_URI": "mongodb://h/app?bogus=1"}, "IAMDB_MONGO_URI", "Unknown option"),
        ({"IAMDB_MONGO_URI": "mongodb://h/app?w=1&W=2"}, "IAMDB_MONGO_URI", "twice"),
        ({"AWS_REGION": "us-east-\u0661"}, "AWS_REGION", "region"),
        (
            {"IAMDB_MONGO_URI": "mongodb://h/app?authMechanismProperties=AWS_SESSION_TOKEN:x"},
            "IAMDB_MONGO_URI",
            "session token",
        ),
        ({"IAMDB_MONGO_ROLE_ARN": "MongoAccess"}, "IAMDB_MONGO_ROLE_ARN", "role ARN"),
        (
            {"IAMDB_MONGO_ROLE_ARN": "arn:aws:iam::123456789012:user/bob"},
            "IAMDB_MONGO_ROLE_ARN",
            "role ARN",
        ),
        ({"IAMDB_MONGO_SESSION_SECONDS": "600"}, "IAMDB_MONGO_SESSION_SECONDS", "900 to 43200"),
        ({"IAMDB_MONGO_SESSION_SECONDS": "1h"}, "IAMDB_MONGO_SESSION_SECONDS", "integer"),
        ({"IAMDB_MONGO_REFRESH_SECONDS": "10"}, "IAMDB_MONGO_REFRESH_SECONDS", "30 to"),
        ({"IAMDB_MONGO_REFRESH_SECONDS": "3400"}, "IAMDB_MONGO_REFRESH_SECONDS", "3300"),
        ({"IAMDB_MONGO_EXTERNAL_ID": "x"}, "IAMDB_MONGO_EXTERNAL_ID", "2-1224"),
        ({"IAMDB_MONGO_EXTERNAL_ID": "bad id!"}, "IAMDB_MONGO_EXTERNAL_ID", "2-1224"),
        (
            {"IAMDB_MONGO_EXTERNAL_ID": "abc", "IAMDB_MONGO_ROLE_ARN": None},
            "IAMDB_MONGO_EXTERNAL_ID",
            "ROLE_ARN",
        ),
        ({"AWS_REGION": None}, "AWS_REGION", "STS"),
    ],
)
def test_bad_settings_name_the_variable(
    changes: dict[str, str | None], variable: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(**changes)
    assert info.value.variable == variable
    assert fragment in str(info.value)


def test_bad_instance_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_mongo_config("9lives", BASE)
    assert info.value.variable == "name"


def test_tls_is_on_unless_the_uri_says_tls_false() -> None:
    for uri in ("mongodb://[::1]:27017/app", "mongodb://localhost/app", "mongodb://10.0.0.5/app"):
        c = cfg(IAMDB_MONGO_URI=uri)
        assert c.tls is True
        assert client_options(c, Credentials("AKIA1", "s"))["tls"] is True


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://localhost/app?tls=false",
        "mongodb://127.0.0.1:27018/app?ssl=false",
        "mongodb://[::1]:27017/app?tls=false&directConnection=true",
    ],
)
def test_plaintext_goes_directly_to_one_loopback_host(uri: str) -> None:
    c = cfg(IAMDB_MONGO_URI=uri)
    assert c.tls is False and len(c.hosts) == 1
    kwargs = client_options(c, Credentials("AKIA1", "s"))
    assert kwargs.get("directConnection", c.options.get("directconnection")) is True
    assert "directConnection=true" in connection_string(
        c, Lease(Credentials("AKIA1", "s"), 0, ROLE)
    )


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("mongodb://localhost:27017,127.0.0.1:27018/app?tls=false", "single loopback host"),
        ("mongodb://10.0.0.5/app?tls=false", "single loopback host"),
        ("mongodb://localhost./app?tls=false", "single loopback host"),
        ("mongodb+srv://localhost/app?tls=false", "single loopback host"),
        ("mongodb://localhost/app?tls=false&replicaSet=rs0", "replicaset"),
        ("mongodb://localhost/app?tls=false&loadBalanced=true", "loadbalanced"),
        ("mongodb://localhost/app?tls=false&directConnection=false", "directConnection=true"),
        ("mongodb://localhost/app?tls=false&tlsAllowInvalidHostnames=false", "TLS options"),
    ],
)
def test_plaintext_anywhere_else_is_refused(uri: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(IAMDB_MONGO_URI=uri)
    assert info.value.variable == "IAMDB_MONGO_URI" and fragment in str(info.value)


def test_a_larger_min_pool_size_raises_the_default_max() -> None:
    c = cfg(IAMDB_MONGO_URI="mongodb://db.example.com/app?minPoolSize=10")
    assert client_options(c, Credentials("AKIA1", "s"))["maxPoolSize"] == 10


# -- client options ----------------------------------------------------------------------------


def test_client_options_lambda_defaults_and_explicit_credentials() -> None:
    creds = Credentials("ASIAROLEKEY", "role-secret", "role-token")
    kwargs = client_options(replace(cfg(), client_name="orders-api"), creds)
    assert kwargs == {
        "maxPoolSize": 4,
        "maxIdleTimeMS": 60_000,
        "serverSelectionTimeoutMS": 5_000,
        "connectTimeoutMS": 5_000,
        "appname": "orders-api",
        "tls": True,
        "username": "ASIAROLEKEY",
        "password": "role-secret",
        "authMechanism": "MONGODB-AWS",
        "authSource": "$external",
        "authMechanismProperties": {"AWS_SESSION_TOKEN": "role-token"},
    }


def test_the_appname_is_the_function_name_of_the_registrys_environment() -> None:
    """Read at configuration time from the environment given (not os.environ at connect)."""
    from iamdb._registry import Registry

    environ = {**BASE, "AWS_LAMBDA_FUNCTION_NAME": "orders-api"}
    handle = Registry(runtime=Runtime(environ=environ)).mongo_handle()
    assert client_options(handle.cfg, Credentials("AKIA1", "s"))["appname"] == "orders-api"
    assert client_options(cfg(), Credentials("AKIA1", "s"))["appname"] == "iamdb"


def test_uri_options_override_the_defaults() -> None:
    uri = "mongodb://db.example.com/app?maxpoolsize=50&appName=mine&TLS=true&maxIdleTimeMS=1"
    uri += "&SERVERSELECTIONTIMEOUTMS=7000"
    kwargs = client_options(cfg(IAMDB_MONGO_URI=uri), Credentials("AKIA1", "s"))
    for key in ("maxPoolSize", "appname", "tls", "maxIdleTimeMS", "authMechanismProperties"):
        assert key not in kwargs
    assert "serverSelectionTimeoutMS" not in kwargs and kwargs["connectTimeoutMS"] == 5_000


def test_connection_string_quotes_the_credentials() -> None:
    creds = Credentials("ASIAROLEKEY", "se/cr+et", "to/ken+with=chars")
    lease = Lease(creds, 0.0, ROLE)
    uri = connection_string(cfg(IAMDB_MONGO_URI="mongodb://h1,h2:27018/app?w=majority"), lease)
    assert uri.startswith("mongodb://ASIAROLEKEY:se%2Fcr%2Bet@h1,h2:27018/app?w=majority&")
    assert "authMechanism=MONGODB-AWS&authSource=%24external&tls=true" in uri
    token = uri.rsplit("AWS_SESSION_TOKEN:", 1)[1]
    assert "/" not in token and unquote(token) == "to/ken+with=chars"


# -- RoleSessionName and STS retries --------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("orders-api", "orders-api-0123abcd"),
        (None, "iamdb-0123abcd"),
        ("", "iamdb-0123abcd"),
        ("my func/v2:prod", "my-func-v2-prod-0123abcd"),
        ("a" * 80, "a" * 55 + "-0123abcd"),
    ],
)
def test_session_name(function: str | None, expected: str) -> None:
    assert session_name(function, "0123abcd") == expected


def test_session_names_are_valid_and_unique() -> None:
    names = {session_name("fn-" + "x" * 70) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert re.fullmatch(r"[\w+=,.@-]{2,64}", name)


def assume(
    fake: ScriptedSts, t: FakeTime, *, env: Mapping[str, str] = BASE, external_id: str | None = None
) -> Lease:
    return assume_role(
        fake,  # type: ignore[arg-type]
        runtime(dict(env), t, random=0.5),
        ROLE,
        duration_seconds=3600,
        external_id=external_id,
        deadline=t.now + 10,
    )


def test_assume_role_retries_throttling_then_succeeds() -> None:
    t = FakeTime()
    fake = ScriptedSts(sts_error("Throttling", 400), sts_error("x", 503), 5000.0)
    got = assume(fake, t, external_id="ext-1")
    assert got.credentials.access_key == "ASIAKEY1" and got.expires_at == 5000.0
    assert t.sleeps == pytest.approx([0.2, 0.35])  # decorrelated jitter, random fixed at 0.5
    call = fake.calls[0]
    assert call["RoleArn"] == ROLE and call["ExternalId"] == "ext-1"
    assert call["DurationSeconds"] == "3600"
    assert re.fullmatch(r"[\w+=,.@-]{2,64}", call["RoleSessionName"])
    assert "secret-1" not in repr(got) and "token-1" not in repr(got)


def test_assume_role_gives_up_at_the_deadline() -> None:
    t = FakeTime()
    fake = ScriptedSts(*[sts_error("Throttling", 400)] * 100)
    with pytest.raises(ConnectError) as info:
        assume(fake, t)
    assert sum(t.sleeps) <= 10 and len(fake.calls) == len(t.sleeps) + 1
    assert ROLE in str(info.value) and "Throttling" in str(info.value)


def test_access_denied_names_the_role_and_the_trust_policy() -> None:
    fake = ScriptedSts(sts_error("AccessDenied", 403))
    with pytest.raises(AuthError) as info:
        assume(fake, FakeTime())
    assert len(fake.calls) == 1  # not retried
    assert ROLE in str(info.value) and "trust policy" in str(info.value)


def test_bad_function_credentials() -> None:
    with pytest.raises(CredentialsError):
        assume(ScriptedSts(sts_error("InvalidClientTokenId", 403)), FakeTime())


def test_an_answer_without_credentials_is_a_connect_error() -> None:
    class Empty(ScriptedSts):
        def sts(self, params: Mapping[str, str], deadline: float) -> ElementTree.Element:
            text = "<AssumeRoleResponse><AssumeRoleResult/></AssumeRoleResponse>"
            return ElementTree.fromstring(text)

    with pytest.raises(ConnectError, match="unreadable"):
        assume(Empty(), FakeTime())


def test_session_name_comes_from_the_function_name() -> None:
    fake = ScriptedSts(5000.0)
    assume(fake, FakeTime(), env={**BASE, "AWS_LAMBDA_FUNCTION_NAME": "orders-api"})
    assert fake.calls[0]["RoleSessionName"].startswith("orders-api-")


# -- the swap -----------------------------------------------------------------------------------


class StubClient:
    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.closed = False

    def close(self) -> None:
        self.closed = True


def handle_with(
    *script: Exception | float, fail_login: bool = False, pings: list[str | None] | None = None
) -> tuple[MongoHandle, FakeTime, list[StubClient]]:
    """A handle over stub clients; ``pings``: what each liveness check answers (None: alive)."""
    clock = FakeTime(MONGO_START)
    made: list[StubClient] = []

    def opener(cfg: MongoConfig, lease: Lease, until: Any) -> Any:
        if fail_login:
            raise AuthError("refused")
        made.append(StubClient(lease))
        return made[-1]

    def checker(client: Any, until: Any) -> str | None:
        checked.append(client)
        return None if pings is None else pings.pop(0)

    checked: list[Any] = []

    rt = runtime(dict(BASE), clock)
    handle = MongoHandle(
        cfg(),
        aws=ScriptedSts(*script),  # type: ignore[arg-type]
        resolver=CredentialResolver(Runtime(environ=BASE)),
        runtime=rt,
        deadline=Deadline(clock.clock),
        probe=RecordingProbe(),  # type: ignore[arg-type]
        idle_seconds=30.0,
        opener=opener,
        checker=checker,
    )
    handle.checked = checked  # type: ignore[attr-defined]
    return handle, clock, made


def test_swap_before_expiry_and_close_the_old_client_on_the_next_call() -> None:
    start = MONGO_START
    handle, clock, made = handle_with(start + 3600, start + 7200)
    first = handle.get()
    clock.now += 3299  # 301 s left: still outside the refresh window
    assert handle.get() is first
    clock.now += 2  # 299 s left
    second = handle.get()
    assert second is not first and not made[0].closed  # the old one may be mid-cursor
    assert handle.get() is second and made[0].closed
    # One swap: a second client on renewed credentials (the metrics a swap counts).
    probe = handle.probe
    assert isinstance(probe, RecordingProbe)
    assert probe["ConnectionsOpened"] == 2 and probe["CredentialRefreshes"] == 2


def test_failed_refresh_keeps_the_old_client_while_it_is_valid() -> None:
    start = MONGO_START
    handle, clock, _ = handle_with(start + 3600, sts_error("AccessDenied", 403), start + 7200)
    first = handle.get()
    clock.now += 3400  # 200 s left
    assert handle.get() is first  # AccessDenied: logged, the current client still works
    clock.now += 5  # retried only after a pause: no STS call on every get()
    assert handle.get() is first
    clock.now += 10
    assert handle.get() is not first


def test_expired_credentials_are_never_handed_out() -> None:
    start = MONGO_START
    handle, clock, _ = handle_with(start + 3600, sts_error("AccessDenied", 403))
    handle.get()
    clock.now += 3590  # 10 s left: too little to fall back on
    with pytest.raises(AuthError):
        handle.get()


def test_credentials_that_expire_too_soon_are_refused() -> None:
    handle, _, made = handle_with(MONGO_START + 200)
    with pytest.raises(AuthError) as info:
        handle.get()
    assert "REFRESH_SECONDS" in str(info.value) and not made


def test_close_closes_everything() -> None:
    start = MONGO_START
    handle, clock, made = handle_with(start + 3600, start + 7200)
    handle.get()
    clock.now += 3400
    handle.get()
    handle.close()
    assert all(c.closed for c in made) and handle.lease is None


def test_one_mongo_instance_whatever_the_spelling() -> None:
    from iamdb._registry import Registry

    environ = {**BASE, "IAMDB_MONGO_REPORTS_URI": "mongodb://db.example.com/reports"}
    registry = Registry(runtime=Runtime(environ=environ))
    try:
        handle = registry.mongo_handle("reports")
        assert registry.mongo_handle("REPORTS") is handle and handle.cfg.name == "reports"
    finally:
        registry.reset()


# -- liveness after a freeze ------------------------------------------------------------------


def test_a_client_idle_past_the_limit_is_shown_to_answer_before_it_is_handed_out() -> None:
    handle, clock, _ = handle_with(MONGO_START + 3600, pings=[None])
    first = handle.get()
    clock.now += 29
    assert handle.get() is first and handle.checked == []  # type: ignore[attr-defined]
    clock.now += 31  # frozen a while: its sockets may have died
    assert handle.get() is first and handle.checked == [first]  # type: ignore[attr-defined]
    clock.now += 1
    assert handle.get() is first and len(handle.checked) == 1  # type: ignore[attr-defined]


def test_a_client_that_does_not_answer_in_time_is_a_connect_error() -> None:
    handle, clock, _ = handle_with(MONGO_START + 3600, pings=["ServerSelectionTimeoutError: x"])
    handle.get()
    clock.now += 60
    with pytest.raises(ConnectError, match=r"did not answer a ping .* after 60 s idle") as info:
        handle.get()
    assert info.value.engine == "mongo" and info.value.__context__ is None
