"""Credential resolution: environment first, botocore's chain only without it; no secret leaks."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from botocore.credentials import ReadOnlyCredentials

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.credentials import Credentials, as_credentials
from iamdb._core.runtime import Runtime
from iamdb.errors import ConfigError, CredentialsError

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+sessiontoken=="
ENV = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET}

# Every variable botocore's chain could otherwise pick up from the test machine.
_CHAIN_VARIABLES = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
]


@pytest.fixture
def aws_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """Empty temp config/credentials files for botocore, and no instance metadata."""
    for name in _CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config, creds = tmp_path / "config", tmp_path / "credentials"
    config.write_text("")
    creds.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return config, creds


def _profile(path: Path, key: str, secret: str) -> None:
    path.write_text(f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")


# --- environment ----------------------------------------------------------------------


def test_environment_credentials() -> None:
    creds = CredentialResolver(Runtime(environ={**ENV, "AWS_SESSION_TOKEN": TOKEN})).resolve()
    assert (creds.access_key, creds.secret_key, creds.token) == ("AKIDEXAMPLE", SECRET, TOKEN)


def test_empty_session_token_means_none() -> None:
    assert (
        CredentialResolver(Runtime(environ={**ENV, "AWS_SESSION_TOKEN": ""})).resolve().token
        is None
    )
    assert CredentialResolver(Runtime(environ=ENV)).resolve().token is None


def test_environment_is_read_on_every_call() -> None:
    env = dict(ENV)
    resolver = CredentialResolver(Runtime(environ=env))
    first = resolver.resolve()
    assert resolver.resolve() is first  # unchanged: same object, fingerprint computed once
    env.update(AWS_ACCESS_KEY_ID="AKIDROTATED", AWS_SESSION_TOKEN=TOKEN)
    rotated = resolver.resolve()
    assert (rotated.access_key, rotated.token) == ("AKIDROTATED", TOKEN)


def test_none_reads_os_environ_live(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = CredentialResolver()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFIRST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert resolver.resolve().access_key == "AKIDFIRST"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECOND")
    assert resolver.resolve().access_key == "AKIDSECOND"


@pytest.mark.parametrize("secret", [None, ""])
def test_partial_environment_names_the_missing_variable(secret: str | None) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SESSION_TOKEN": TOKEN}
    if secret is not None:
        env["AWS_SECRET_ACCESS_KEY"] = secret
    with pytest.raises(ConfigError) as info:
        CredentialResolver(Runtime(environ=env)).resolve()
    assert info.value.variable == "AWS_SECRET_ACCESS_KEY"
    assert TOKEN not in str(info.value)


def test_environment_wins_over_profiles_and_needs_no_botocore(
    aws_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _profile(aws_files[1], "AKIDPROFILE", "profile-secret")
    monkeypatch.setitem(sys.modules, "botocore.session", None)  # any import would fail
    assert CredentialResolver(Runtime(environ=ENV)).resolve().access_key == "AKIDEXAMPLE"


# --- botocore's chain -----------------------------------------------------------------


def test_botocore_chain_when_environment_is_absent(aws_files: tuple[Path, Path]) -> None:
    _profile(aws_files[1], "AKIDPROFILE", "profile-secret")
    creds = CredentialResolver(Runtime(environ={})).resolve()
    assert (creds.access_key, creds.secret_key, creds.token) == (
        "AKIDPROFILE",
        "profile-secret",
        None,
    )


def test_empty_access_key_counts_as_absent(aws_files: tuple[Path, Path]) -> None:
    _profile(aws_files[1], "AKIDPROFILE", "profile-secret")
    assert (
        CredentialResolver(Runtime(environ={"AWS_ACCESS_KEY_ID": ""})).resolve().access_key
        == "AKIDPROFILE"
    )


def test_botocore_object_is_created_once_until_reset(aws_files: tuple[Path, Path]) -> None:
    _profile(aws_files[1], "AKIDFIRST", "first-secret")
    resolver = CredentialResolver(Runtime(environ={}))
    assert resolver.resolve().access_key == "AKIDFIRST"
    _profile(aws_files[1], "AKIDSECOND", "second-secret")
    assert resolver.resolve().access_key == "AKIDFIRST"  # static profile credentials: kept
    resolver.reset()
    assert resolver.resolve().access_key == "AKIDSECOND"


def test_refreshable_credentials_refresh_on_every_resolve(
    aws_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A credential_process whose credentials are always near expiry: botocore refreshes
    them on each ``get_frozen_credentials()``, so each resolve sees a new key."""
    counter = tmp_path / "count"
    counter.write_text("0")
    script = tmp_path / "process.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import datetime, json, pathlib
            counter = pathlib.Path({str(counter)!r})
            n = int(counter.read_text()) + 1
            counter.write_text(str(n))
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
            print(json.dumps({{"Version": 1, "AccessKeyId": f"ASIAPROCESS{{n:09d}}",
                "SecretAccessKey": f"secret-{{n}}", "SessionToken": f"token-{{n}}",
                "Expiration": expires.isoformat()}}))
            """
        )
    )
    aws_files[0].write_text(f"[default]\ncredential_process = {sys.executable} {script}\n")
    resolver = CredentialResolver(Runtime(environ={}))
    keys = [resolver.resolve().access_key for _ in range(3)]
    assert len(set(keys)) == 3
    assert all(k.startswith("ASIAPROCESS") for k in keys)


def test_nothing_found_says_where_it_looked(aws_files: tuple[Path, Path]) -> None:
    with pytest.raises(CredentialsError) as info:
        CredentialResolver(Runtime(environ={})).resolve()
    message = str(info.value)
    assert "AWS_ACCESS_KEY_ID" in message and "botocore" in message


def test_botocore_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botocore.session", None)
    with pytest.raises(CredentialsError, match="botocore is not installed"):
        CredentialResolver(Runtime(environ={})).resolve()


# --- values and reprs -----------------------------------------------------------------


def test_repr_shows_the_access_key_only() -> None:
    creds = Credentials("AKIDEXAMPLE", SECRET, TOKEN)
    assert (
        repr(creds) == "Credentials(access_key='AKIDEXAMPLE', secret_key=<hidden>, token=<hidden>)"
    )
    assert repr(Credentials("AKIDEXAMPLE", SECRET)).endswith("token=None)")
    for text in (repr(creds), str(creds), repr([creds]), f"{creds}"):
        assert SECRET not in text and TOKEN not in text
        assert creds.fingerprint() not in text


def test_fingerprint_tells_secret_and_token_changes_apart() -> None:
    base = Credentials("AKID", SECRET, TOKEN)
    assert base.fingerprint() == Credentials("AKID", SECRET, TOKEN).fingerprint()
    assert base.fingerprint() == Credentials("AKIDOTHER", SECRET, TOKEN).fingerprint()
    others = [
        Credentials("AKID", SECRET + "x", TOKEN),
        Credentials("AKID", SECRET, TOKEN + "x"),
        Credentials("AKID", SECRET, None),
        Credentials("AKID", SECRET, ""),
        Credentials("AKID", SECRET + "t", None),  # no ambiguity between secret and token
    ]
    prints = {c.fingerprint() for c in [base, *others]}
    assert len(prints) == len(others) + 1
    assert all(len(p) == 64 and SECRET not in p for p in prints)


def test_as_credentials_accepts_botocore_objects() -> None:
    creds = as_credentials(ReadOnlyCredentials("AKID", SECRET, TOKEN))
    assert creds == Credentials("AKID", SECRET, TOKEN)
    same = Credentials("AKID", SECRET)
    assert as_credentials(same) is same


@pytest.mark.parametrize(
    "obj",
    [
        object(),
        ReadOnlyCredentials("", SECRET, None),
        ReadOnlyCredentials("AKID", None, None),
        ReadOnlyCredentials("AKID", SECRET, 42),
    ],
)
def test_as_credentials_rejects_incomplete_objects(obj: object) -> None:
    with pytest.raises(ConfigError) as info:
        as_credentials(obj)
    assert info.value.variable == "credentials"
    assert SECRET not in str(info.value)
