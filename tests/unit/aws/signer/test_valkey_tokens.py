"""ElastiCache and MemoryDB tokens against botocore as the oracle: identical, byte for byte.

The oracle is what AWS's guides ("Authenticating with IAM", ElastiCache and MemoryDB) have users
write: botocore's ``SigV4QueryAuth`` of ``GET http://<cache name>/`` with params ``Action``,
``User`` and, for a serverless cache, ``ResourceType``, expires 900, the token being the URL
without its scheme. botocore's clock is frozen at the instant handed to iamdb.
"""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import generate_valkey_auth_token
from iamdb.errors import ConfigError

ACCESS_KEY = "ASIADEXAMPLE00000001"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+" + "Ab9/+x=" * 120 + "=="
INSTANT = datetime(2026, 11, 3, 12, 34, 56, 789, tzinfo=timezone.utc)


def botocore_token(
    cache: str,
    user: str,
    region: str,
    service: str,
    serverless: bool,
    session: bool,
    now: datetime,
    secret: str = SECRET_KEY,
) -> str:
    """The token as AWS's guide writes it, botocore's clock frozen at ``now``."""
    params = {"Action": "connect", "User": user}
    if serverless:
        params["ResourceType"] = "ServerlessCache"
    request = AWSRequest(method="GET", url=f"http://{cache}/", params=params)
    creds = BotoCredentials(ACCESS_KEY, secret, SESSION_TOKEN if session else None)
    frozen = now.astimezone(timezone.utc).replace(tzinfo=None)
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *args, **kwargs: frozen
    try:
        SigV4QueryAuth(creds, service, region, expires=900).add_auth(request)
    finally:
        botocore.auth.get_current_datetime = original
    url: str = request.url
    assert url.startswith("http://")
    return url[len("http://") :]


def iamdb_token(
    cache: str,
    user: str,
    region: str,
    service: str,
    serverless: bool,
    session: bool,
    now: datetime,
    secret: str = SECRET_KEY,
) -> str:
    creds = Credentials(ACCESS_KEY, secret, SESSION_TOKEN if session else None)
    return generate_valkey_auth_token(
        cache, user, region, service=service, serverless=serverless, credentials=creds, now=now
    )


CASES: list[tuple[str, str, str, str, bool]] = [
    ("my-cache", "iamdb-app", "us-east-1", "elasticache", False),
    ("my-cache", "iamdb-app", "us-east-1", "elasticache", True),  # ResourceType listed last
    ("my-cluster", "iamdb-app", "eu-west-1", "memorydb", False),
    ("My-Mixed-Case", "User1", "ap-southeast-2", "elasticache", False),  # host lower-cased
    ("c", "u", "cn-north-1", "elasticache", True),
    ("cache.with.dots", "user with spaces", "us-gov-west-1", "memorydb", False),
    ("under_score", "Ünïcödé-ユーザー-😀", "us-east-1", "elasticache", True),
    ("x" * 40, "a+b@c.d/e=f&g", "eusc-de-east-1", "elasticache", False),
]


@pytest.mark.parametrize("session", [False, True])
@pytest.mark.parametrize(("cache", "user", "region", "service", "serverless"), CASES)
def test_explicit_cases_equal_botocore(
    cache: str, user: str, region: str, service: str, serverless: bool, session: bool
) -> None:
    expected = botocore_token(cache, user, region, service, serverless, session, INSTANT)
    got = iamdb_token(cache, user, region, service, serverless, session, INSTANT)
    assert got == expected


def test_the_token_is_the_cache_name_then_the_query_aws_documents() -> None:
    token = iamdb_token("my-cache", "app", "us-east-1", "elasticache", True, True, INSTANT)
    assert token.startswith(
        "my-cache/?Action=connect&User=app&ResourceType=ServerlessCache&X-Amz-Algorithm="
    )
    assert "%2Felasticache%2Faws4_request&X-Amz-Date=20261103T123456Z&X-Amz-Expires=900&" in token
    assert token.index("X-Amz-Security-Token=") < token.index("&X-Amz-Signature=")


_CACHE_CHARS = string.ascii_letters + string.digits + "-._"
caches = st.text(_CACHE_CHARS, min_size=1, max_size=60).filter(lambda s: s[0] not in "._-")
users = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
regions = st.sampled_from(
    ["us-east-1", "us-west-2", "eu-central-1", "ap-northeast-3", "cn-northwest-1", "il-central-1"]
)
kinds = st.sampled_from([("elasticache", False), ("elasticache", True), ("memorydb", False)])
instants = st.datetimes(
    datetime(2000, 1, 1), datetime(2099, 12, 31), timezones=st.just(timezone.utc)
)
secrets = st.text(string.ascii_letters + string.digits + "/+=", min_size=1, max_size=60)


@settings(max_examples=400, deadline=None)
@given(caches, users, regions, kinds, st.booleans(), instants, secrets)
def test_random_inputs_equal_botocore(
    cache: str,
    user: str,
    region: str,
    kind: tuple[str, bool],
    session: bool,
    now: datetime,
    secret: str,
) -> None:
    service, serverless = kind
    expected = botocore_token(cache, user, region, service, serverless, session, now, secret)
    assert iamdb_token(cache, user, region, service, serverless, session, now, secret) == expected


def test_a_token_signed_a_second_later_differs() -> None:
    first = iamdb_token("c", "u", "us-east-1", "elasticache", False, False, INSTANT)
    later = iamdb_token(
        "c", "u", "us-east-1", "elasticache", False, False, INSTANT + timedelta(seconds=1)
    )
    assert first != later


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        ({"service": "rds-db"}, "service"),
        ({"service": "memorydb", "serverless": True}, "serverless"),
        ({"serverless": "yes"}, "serverless"),
        ({"cache_name": ""}, "hostname"),
        ({"cache_name": "a/b"}, "hostname"),
        ({"user": ""}, "user"),
        ({"user": "\ud800"}, "user"),
        ({"region": "US EAST"}, "region"),
    ],
)
def test_bad_arguments_are_config_errors_naming_them(kwargs: dict[str, Any], variable: str) -> None:
    args: dict[str, Any] = {"cache_name": "c", "user": "u", "region": "us-east-1"}
    args.update(kwargs)
    creds = Credentials(ACCESS_KEY, SECRET_KEY, None)
    with pytest.raises(ConfigError) as caught:
        generate_valkey_auth_token(
            args.pop("cache_name"), args.pop("user"), args.pop("region"), credentials=creds, **args
        )
    assert caught.value.variable == variable
