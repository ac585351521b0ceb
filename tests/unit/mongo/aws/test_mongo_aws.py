"""iamdb's MONGODB-AWS signing against pymongo-auth-aws (botocore's SigV4) as the oracle.

pymongo-auth-aws runs in a child process: imported here, it would take the place of iamdb's
stand-in for the rest of the test session (see iamdb/_mongo/aws.py).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from iamdb._mongo import aws as _mongo_aws
from iamdb._mongo.aws import AwsCredential, auth_header, sts_region
from tests.paths import LAYER

INSTANT = datetime(2026, 12, 2, 17, 45, 9, tzinfo=timezone.utc)
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+" + "Ab9/+x=" * 100

ORACLE = r"""
import base64, datetime, json, sys
import botocore.auth
from pymongo_auth_aws.auth import AwsCredential, _aws_auth_header
case = json.loads(sys.argv[1])
instant = datetime.datetime.fromisoformat(case["now"]).replace(tzinfo=None)
botocore.auth.get_current_datetime = lambda *a, **k: instant
creds = AwsCredential(case["key"], case["secret"], case["token"])
print(json.dumps(_aws_auth_header(creds, base64.b64decode(case["nonce"]), case["host"])))
"""


def oracle(key: str, secret: str, token: str | None, nonce: bytes, host: str) -> object:
    case = {
        "key": key,
        "secret": secret,
        "token": token,
        "nonce": base64.b64encode(nonce).decode(),
        "host": host,
        "now": INSTANT.isoformat(),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    out = subprocess.run(
        [sys.executable, "-c", ORACLE, json.dumps(case)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    ("token", "host"),
    [
        (TOKEN, "sts.amazonaws.com"),
        (None, "sts.amazonaws.com"),
        (TOKEN, "sts.eu-west-3.amazonaws.com"),
        (TOKEN, "sts.cn-north-1.amazonaws.com.cn"),
        (None, "localhost"),
    ],
)
def test_signed_request_equals_pymongo_auth_aws(token: str | None, host: str) -> None:
    nonce = bytes(range(64))
    creds = AwsCredential("ASIAEXAMPLEKEY000000", SECRET, token)
    mine = auth_header(creds, nonce, host, now=INSTANT)
    assert mine == oracle("ASIAEXAMPLEKEY000000", SECRET, token, nonce, host)


def test_region_of_the_sts_host() -> None:
    assert sts_region("sts.amazonaws.com") == "us-east-1"
    assert sts_region("localhost") == "us-east-1"
    assert sts_region("sts.ap-south-2.amazonaws.com") == "ap-south-2"
    with pytest.raises(_mongo_aws.PyMongoAuthAwsError):
        sts_region("sts..amazonaws.com")
    with pytest.raises(_mongo_aws.PyMongoAuthAwsError):
        sts_region("x" * 256)


def test_install_gives_way_to_the_real_package_and_never_loads_boto3() -> None:
    child = (
        "import json, sys\n"
        "from iamdb._mongo import aws as _mongo_aws\n"
        "first = _mongo_aws.install()\n"
        "import pymongo_auth_aws\n"
        "from pymongo_auth_aws.auth import set_cached_credentials, set_use_cached_credentials\n"
        "print(json.dumps([first, pymongo_auth_aws is _mongo_aws, _mongo_aws.install(),"
        " sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore'))]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(LAYER)}
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True)
    assert json.loads(out.stdout) == [True, True, True, []]
    real_first = (
        "import pymongo_auth_aws\nfrom iamdb._mongo import aws as _mongo_aws\n"
        "print(_mongo_aws.install())"
    )
    out = subprocess.run(
        [sys.executable, "-c", real_first], env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False"  # the application's own import keeps serving


def test_conversation_checks_the_servers_nonce() -> None:
    import bson
    from bson.binary import Binary

    class Context(_mongo_aws.AwsSaslContext):
        def binary_type(self) -> type[Binary]:
            return Binary

        def bson_encode(self, doc: object) -> bytes:
            return bson.encode(doc)  # type: ignore[arg-type]

        def bson_decode(self, data: bytes) -> dict[str, object]:
            return bson.decode(data)

    ctx = Context(AwsCredential("ASIAEXAMPLEKEY000000", SECRET, TOKEN))
    first = bson.decode(ctx.step(None))
    assert first["p"] == 110 and len(first["r"]) == 32
    forged = bson.encode({"s": Binary(os.urandom(64)), "h": "sts.amazonaws.com"})
    with pytest.raises(_mongo_aws.PyMongoAuthAwsError, match="nonce"):
        ctx.step(forged)
    ctx = Context(AwsCredential("ASIAEXAMPLEKEY000000", SECRET, TOKEN))
    nonce = bson.decode(ctx.step(None))["r"] + os.urandom(32)
    second = bson.decode(ctx.step(bson.encode({"s": Binary(nonce), "h": "sts.amazonaws.com"})))
    assert second["t"] == TOKEN and second["a"].startswith("AWS4-HMAC-SHA256 Credential=ASIA")
    assert SECRET not in repr(ctx._credentials)
