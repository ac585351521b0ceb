"""devstack's SnapStart support: the template flag, and the container credentials endpoint.

The endpoint (:mod:`devstack.sam.container_credentials`) is read by two independent clients:
iamdb's own (:class:`iamdb._aws.container.ContainerCredentials`) and botocore's
``ContainerProvider``. Both must get the served credentials, and neither without the token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import ContainerProvider

from devstack.aws import Credentials
from devstack.sam.container_credentials import CredentialsServer, serve_instead_of_keys
from devstack.sam.invoke import REPO
from devstack.sam.template import Template
from iamdb._aws.container import ContainerCredentials
from iamdb._aws.credentials import expiry_seconds
from iamdb._core.runtime import Runtime
from iamdb.errors import CredentialsError

EXPIRES = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
CREDS = Credentials(
    "ASIADEVSTACK00000001", "devstack-secret-key-0123", "devstack-token-" * 20, EXPIRES
)


def test_only_the_mongo_example_enables_snapstart() -> None:
    template = Template.load(REPO / "template.yaml")
    flags = {fid: template.function(fid).snapstart for fid in template.function_ids()}
    assert flags == {
        "PgExampleFunction": False,
        "MySqlExampleFunction": False,
        "MongoExampleFunction": True,
        "SqlAlchemyExampleFunction": False,
        "DsqlExampleFunction": False,
        "ValkeyExampleFunction": False,
    }


def test_snapstart_is_off_on_a_runtime_that_has_none() -> None:
    template = Template.load(REPO / "template.yaml", {"PythonRuntime": "python3.11"})
    assert not template.function("MongoExampleFunction").snapstart


def test_snapstart_flag_reads_apply_on(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n"
        + "".join(
            f"  F{i}:\n    Type: AWS::Serverless::Function\n    Properties:\n"
            f"      {{CodeUri: ., Handler: a.b, Runtime: python3.12{extra}}}\n"
            for i, extra in enumerate(
                ["", ", SnapStart: {ApplyOn: PublishedVersions}", ", SnapStart: {ApplyOn: None}"]
            )
        )
    )
    template = Template.load(path)
    assert [template.function(f"F{i}").snapstart for i in range(3)] == [False, True, False]


def _get(url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_endpoint_serves_the_credentials_to_the_token_only(caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="devstack"), CredentialsServer(CREDS) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, body = _get(server.url, server.token)
        assert status == 200
        assert body == {
            "AccessKeyId": CREDS.access_key,
            "SecretAccessKey": CREDS.secret_key,
            "Token": CREDS.token,
            "Expiration": "2030-01-02T03:04:05Z",
        }
        assert _get(server.url, None)[0] == 401
        assert _get(server.url, server.token + "x")[0] == 401
        assert _get(server.url.replace("/credentials", "/other"), server.token)[0] == 404
    assert CREDS.secret_key not in caplog.text and server.token not in caplog.text
    assert "refused" in caplog.text and f"served {CREDS.access_key}" in caplog.text


def test_each_server_has_its_own_token() -> None:
    with CredentialsServer(CREDS) as one, CredentialsServer(CREDS) as two:
        assert one.token != two.token and len(one.token) >= 32
        assert _get(one.url, two.token)[0] == 401


def test_iamdb_and_botocore_both_read_it() -> None:
    with CredentialsServer(CREDS) as server:
        ours = ContainerCredentials(Runtime(environ=server.environment(), clock=lambda: 0.0)).get()
        theirs = ContainerProvider(environ=server.environment()).load()
        assert theirs is not None
        frozen = theirs.get_frozen_credentials()
        for creds in (ours, frozen):
            assert (creds.access_key, creds.secret_key, creds.token) == (
                CREDS.access_key,
                CREDS.secret_key,
                CREDS.token,
            )
        assert theirs._expiry_time == EXPIRES
        with pytest.raises(CredentialsError):
            refused = {**server.environment(), "AWS_CONTAINER_AUTHORIZATION_TOKEN": "no"}
            ContainerCredentials(Runtime(environ=refused, clock=lambda: 0.0)).get()


def test_serving_instead_of_keys_moves_them_out_of_the_environment() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": CREDS.access_key,
        "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
        "AWS_SESSION_TOKEN": str(CREDS.token),
        "AWS_REGION": "us-east-1",
    }
    server = serve_instead_of_keys(env, {"AWS_CREDENTIAL_EXPIRATION": "2030-01-02T03:04:05Z"}, "f")
    assert server is not None
    try:
        assert set(env) == {
            "AWS_REGION",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        }
        status, body = _get(env["AWS_CONTAINER_CREDENTIALS_FULL_URI"], server.token)
        assert status == 200 and body["AccessKeyId"] == CREDS.access_key
        assert expiry_seconds(body["Expiration"]) == EXPIRES.timestamp()
    finally:
        server.stop()


def test_without_a_known_expiration_each_answer_says_one_hour_ahead() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIADEVSTACK", "AWS_SECRET_ACCESS_KEY": "s" * 20}
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    server = serve_instead_of_keys(env, {}, "f")
    assert server is not None
    try:
        _, body = _get(env["AWS_CONTAINER_CREDENTIALS_FULL_URI"], server.token)
    finally:
        server.stop()
    expires = expiry_seconds(body["Expiration"])
    assert expires is not None and expires >= (before + dt.timedelta(hours=1)).timestamp()
    assert "Token" not in body  # long-term keys have none


def test_no_keys_means_no_endpoint() -> None:
    env = {"AWS_REGION": "us-east-1"}
    assert serve_instead_of_keys(env, {}, "f") is None
    assert env == {"AWS_REGION": "us-east-1"}
