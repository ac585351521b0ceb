"""Local AWS for devstack: moto (STS, IAM, DynamoDB) in-process, with signature checking on.

Setup mirrors what Lambda does for a function: an execution role is created and assumed,
and the resulting session credentials (``ASIA...`` + session token) are what the function,
and so iamdb, signs with. A long-term IAM user key (``AKIA...``) is created too, for tokens
signed with developer credentials.

Because moto runs in this process, :meth:`MotoAws.lookup` can read moto's own backends to
learn the secret behind an access key id; the token verifier needs exactly that. This is
moto's internal API (moto is pinned in pyproject.toml and the lookup is covered by tests).
A second account holds the data account's roles (:mod:`devstack.data_account`), which the
function may assume.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

from devstack import data_account
from devstack.procs import free_port, port_open, wait_until
from devstack.verifier import KeyInfo

REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"
ROLE_NAME = "iamdb-example-function"
SESSION_NAME = "iamdb-example-function"
USER_NAME = "iamdb-developer"
# The fleet-wide IAM login limiter's table (IAMDB_THROTTLE_TABLE): pk string, TTL expires_at.
THROTTLE_TABLE = "iamdb-throttle"
THROTTLE_TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{THROTTLE_TABLE}"
FUNCTION_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
# The role get_mongo() assumes; its ARN is the MongoDB user in $external.
MONGO_ROLE_NAME = "iamdb-mongo-access"
MONGO_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{MONGO_ROLE_NAME}"
# Roles for failure tests: assumable but no $external user; not trusting the function.
MONGO_UNLISTED_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/iamdb-mongo-unlisted"
MONGO_UNTRUSTED_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/iamdb-mongo-untrusted"

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
# What the example function may do. moto enforces this once auth is on: extend it here when
# the function needs more (e.g. DynamoDB).
FUNCTION_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "rds-db:connect",
            "Resource": f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:*/*",
        },
        {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"},
        # The fleet limiter: UpdateItem on its table only (THROTTLE_TABLE_ARN in the SAM
        # template). moto authorizes DynamoDB calls against resource "*" (its DynamoDB API
        # names no resource), so a table-scoped statement would deny everything here.
        {"Effect": "Allow", "Action": "dynamodb:UpdateItem", "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": f"arn:aws:iam::{ACCOUNT}:role/iamdb-mongo-*",
        },
        # the data account's roles (devstack.data_account.ROLE_PATTERN)
        {
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": data_account.ROLE_PATTERN,
        },
    ],
}


def _trusting(*principals: str) -> dict[str, Any]:
    """A trust policy admitting ``principals`` (moto needs an AWS principal in every one)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": list(principals)}, "Action": "sts:AssumeRole"}
        ],
    }


# Trust policy of the Mongo roles: admits the function's execution role. AWS matches the role
# ARN; moto compares principals as plain strings with the caller's session ARN, so both are
# listed.
MONGO_TRUST_POLICY = _trusting(
    FUNCTION_ROLE_ARN, f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE_NAME}/{SESSION_NAME}"
)


@dataclass(frozen=True)
class Credentials:
    """AWS credentials; ``token`` is None for long-term keys. The repr hides the secrets."""

    access_key: str
    secret_key: str
    token: str | None
    expiration: dt.datetime | None

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, expiration={self.expiration!r})"


def iso8601(instant: dt.datetime) -> str:
    """``2026-12-01T12:00:00Z``, as AWS writes ``Expiration``."""
    return instant.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class MotoAws:
    """moto's server on 127.0.0.1, set up like a Lambda function's account."""

    _set_up: tuple[Credentials, Credentials] | None = None
    """The credentials the first stack of this process set up in moto's shared state."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.region = REGION
        self.account = ACCOUNT
        self._server: Any = None
        self.function_credentials: Credentials | None = None
        self.developer_credentials: Credentials | None = None

    def start(self) -> None:
        """Start moto, create role + user while auth is off, then turn signature checks on."""
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        atomic_dynamodb_writes()
        data_account.cross_account_trust()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_until(lambda: port_open(self.port), 10, "moto")
        # moto's state is process-global: a second stack in this process (a test's own, beside
        # the session's) shares the accounts the first set up; resetting them would void the
        # first stack's credentials while it runs.
        if MotoAws._set_up is not None:
            self.function_credentials, self.developer_credentials = MotoAws._set_up
            return
        # The first: start clean, and with auth off for the setup calls.
        self._moto_api("reset", b"")
        self._moto_api("reset-auth", b"inf")
        self.function_credentials = self._assume_function_role()
        self.developer_credentials = self._developer_key()
        self._throttle_table()
        self._mongo_roles()
        data_iam = self.client("iam", self._account_credentials(data_account.DATA_ACCOUNT))
        data_account.create(data_iam, FUNCTION_ROLE_ARN, f"arn:aws:iam::{ACCOUNT}:user/{USER_NAME}")
        self._moto_api("reset-auth", b"0")
        MotoAws._set_up = (self.function_credentials, self.developer_credentials)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, service: str, credentials: Credentials | None = None) -> Any:
        """A boto3 client for ``service`` on moto (dummy credentials unless given)."""
        import boto3

        creds = credentials or Credentials("AKIADEVSTACKSETUP000", "setup", None, None)
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.token,
        )

    def lookup(self, access_key: str) -> KeyInfo | None:
        """The secret, session token and ARN moto holds for ``access_key`` (None if unknown)."""
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        if access_key.startswith("ASIA"):  # in the account of the role assumed
            for account in list(sts_backends):
                for role in list(sts_backends[account][PARTITION].assumed_roles):
                    if role.access_key_id == access_key:
                        expires = role.expiration.replace(tzinfo=dt.timezone.utc).timestamp()
                        return KeyInfo(
                            role.secret_access_key, role.session_token, role.arn, expires
                        )
            return None
        iam = iam_backends[ACCOUNT][PARTITION]
        key = iam.access_keys.get(access_key)
        if key is None or key.user_name is None or key.status != "Active":
            return None
        return KeyInfo(key.secret_access_key, None, iam.get_user(key.user_name).arn)

    def _moto_api(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/{path}",
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def _assume_function_role(self) -> Credentials:
        iam = self.client("iam")
        role = iam.create_role(
            RoleName=ROLE_NAME,
            AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
            MaxSessionDuration=43200,
        )["Role"]
        iam.put_role_policy(
            RoleName=ROLE_NAME,
            PolicyName="iamdb-example-function",
            PolicyDocument=json.dumps(FUNCTION_POLICY),
        )
        got = self.client("sts").assume_role(
            RoleArn=role["Arn"], RoleSessionName=SESSION_NAME, DurationSeconds=43200
        )["Credentials"]
        return Credentials(
            got["AccessKeyId"], got["SecretAccessKey"], got["SessionToken"], got["Expiration"]
        )

    def _account_credentials(self, account: str) -> Credentials:
        """Credentials in ``account`` (moto switches accounts on AssumeRole; auth is off)."""
        got = self.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/devstack-setup", RoleSessionName="setup"
        )["Credentials"]
        return Credentials(got["AccessKeyId"], got["SecretAccessKey"], got["SessionToken"], None)

    def _mongo_roles(self) -> None:
        iam = self.client("iam")
        for arn, trust in (
            (MONGO_ROLE_ARN, MONGO_TRUST_POLICY),
            (MONGO_UNLISTED_ROLE_ARN, MONGO_TRUST_POLICY),
            (MONGO_UNTRUSTED_ROLE_ARN, _trusting(f"arn:aws:iam::{ACCOUNT}:role/someone-else")),
        ):
            iam.create_role(
                RoleName=arn.rsplit("/", 1)[1],
                AssumeRolePolicyDocument=json.dumps(trust),
                MaxSessionDuration=43200,
            )

    def _throttle_table(self) -> None:
        """The fleet limiter's table, as the SAM template declares it (made while auth is off)."""
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName=THROTTLE_TABLE,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=THROTTLE_TABLE,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )
        # moto imports its expression parser on the first UpdateItem: pay that now, not when
        # a burst of cold environments sends thirty at once and some time out (fail open).
        dynamodb.update_item(
            TableName=THROTTLE_TABLE,
            Key={"pk": {"S": "devstack#warm-up"}},
            UpdateExpression="ADD n :one",
            ConditionExpression="attribute_not_exists(pk) OR n < :max",
            ExpressionAttributeValues={":one": {"N": "1"}, ":max": {"N": "10"}},
        )

    def _developer_key(self) -> Credentials:
        iam = self.client("iam")
        iam.create_user(UserName=USER_NAME)
        iam.put_user_policy(
            UserName=USER_NAME,
            PolicyName="iamdb-developer",
            PolicyDocument=json.dumps(FUNCTION_POLICY),
        )
        key = iam.create_access_key(UserName=USER_NAME)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"], None, None)


_WRITES = ("update_item", "put_item", "delete_item", "transact_write_items", "batch_write_item")
_write_lock = threading.RLock()


dynamodb_writes = 0
"""DynamoDB writes moto received since devstack started (successful or not): benches read it."""


def atomic_dynamodb_writes() -> None:
    """Make moto's DynamoDB writes atomic, as DynamoDB's are (idempotent), and count them.

    moto's threaded server runs concurrent requests on threads with no lock around an
    item's read-modify-write: 16 threads x 40 ``SET c = c + 1`` ended at 625-631 instead of
    640. The fleet limiter's slot counter relies on DynamoDB's atomic updates, so devstack
    serialises moto's writes (one lock for the whole backend: devstack's load is small).
    """
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITES:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_devstack_atomic", False):
            continue

        @functools.wraps(original)
        def atomic(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            global dynamodb_writes
            with _write_lock:
                dynamodb_writes += 1  # failed conditional writes count too, as DynamoDB bills
                return _original(self, *args, **kwargs)

        # a mark on the wrapper, so a second call does not wrap moto's method twice
        atomic._devstack_atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, atomic)


def rds_token(
    host: str, port: int, user: str, credentials: Credentials, region: str = REGION
) -> str:
    """An RDS IAM auth token signed by botocore (the reference implementation)."""
    client = _signing_client("rds", credentials, region)
    return str(
        client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user, Region=region)
    )


def dsql_token(
    host: str,
    credentials: Credentials,
    *,
    admin: bool,
    expires_in: int = 900,
    region: str = REGION,
) -> str:
    """An Aurora DSQL auth token signed by botocore: ``DbConnectAdmin`` when ``admin``."""
    client = _signing_client("dsql", credentials, region)
    sign = (
        client.generate_db_connect_admin_auth_token
        if admin
        else client.generate_db_connect_auth_token
    )
    return str(sign(Hostname=host, Region=region, ExpiresIn=expires_in))


@functools.lru_cache(maxsize=16)
def _signing_client(service: str, credentials: Credentials, region: str) -> Any:
    import botocore.session

    session = botocore.session.get_session()
    session.set_credentials(credentials.access_key, credentials.secret_key, credentials.token)
    return session.create_client(service, region_name=region)
