"""Unusable credentials are refused where they come from, and no error keeps a secret alive.

A control or non-ASCII character in ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` or
``AWS_SESSION_TOKEN`` used to reach the signer and the HTTP client, where the
``UnicodeEncodeError`` held the whole request head (session token included). The resolver
now refuses them: a ConfigError naming the variable, never repeating the value; an error that
passes through the resolver keeps neither the environment nor a secret in any frame (walked
with :func:`tests.integration.kept_alive.kept_alive`, as a crash reporter does).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from botocore.credentials import ReadOnlyCredentials

import iamdb
from iamdb._aws import signer as _signer
from iamdb._aws.chain import CredentialResolver
from iamdb._aws.credentials import as_credentials
from iamdb._core.runtime import Runtime
from iamdb.errors import ConfigError, IamDbError
from tests.integration.kept_alive import kept_alive

IAMDB = str(Path(iamdb.__file__).parent)
KEY = "AKIDEXAMPLE00000001"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+sessiontoken=="
VARS = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}
SUFFIXES = {
    "lf": "\n",
    "crlf": "\r\nX-Injected: 1",
    "nul": "\x00",
    "tab": "\t",
    "del": "\x7f",
    "latin1": "\xe9",
    "nbsp": "\xa0",
    "non-latin1": "\u0100",
    "line-separator": "\u2028",
    "surrogate": "\udc80",
    "emoji": "\U0001f511",
}


def _failure(call: Callable[[], object]) -> IamDbError:
    """The error of ``call()``, its traceback starting at iamdb's first frame: the frames
    above (this test's, which hold every secret) are the caller's, not iamdb's."""
    try:
        call()
    except IamDbError as exc:
        error = exc
    else:
        raise AssertionError("no error")
    tb = error.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(IAMDB):
        tb = tb.tb_next
    return error.with_traceback(tb)


def _leaks(exc: BaseException, *secrets: str) -> list[str]:
    return [p for p, text in kept_alive(exc) if any(s in text for s in secrets)]


@pytest.mark.parametrize("suffix", list(SUFFIXES))
@pytest.mark.parametrize("var", list(VARS))
def test_a_variable_with_unusable_characters_is_refused(var: str, suffix: str) -> None:
    env = {**VARS, var: VARS[var] + SUFFIXES[suffix]}
    error = _failure(CredentialResolver(Runtime(environ=env)).resolve)
    assert isinstance(error, ConfigError) and error.variable == var
    assert "printable ASCII" in str(error)
    assert _leaks(error, SECRET, TOKEN) == []


def test_a_change_to_an_unusable_value_is_seen_and_a_fix_too() -> None:
    env = dict(VARS)
    resolver = CredentialResolver(Runtime(environ=env))
    good = resolver.resolve()
    env["AWS_SESSION_TOKEN"] = TOKEN + "\n"
    assert isinstance(_failure(resolver.resolve), ConfigError)
    env["AWS_SESSION_TOKEN"] = TOKEN
    assert resolver.resolve() == good


@pytest.mark.parametrize("secret", [None, ""])
def test_a_key_without_its_secret_keeps_no_token_alive(secret: str | None) -> None:
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SESSION_TOKEN": TOKEN}
    if secret is not None:
        env["AWS_SECRET_ACCESS_KEY"] = secret
    error = _failure(CredentialResolver(Runtime(environ=env)).resolve)
    assert isinstance(error, ConfigError) and error.variable == "AWS_SECRET_ACCESS_KEY"
    assert _leaks(error, TOKEN) == []


@pytest.mark.parametrize(
    "values",
    [("", SECRET, TOKEN), (KEY, SECRET, 42), (KEY, None, TOKEN), (None, SECRET, TOKEN)],
    ids=["empty-key", "number-token", "no-secret", "no-key"],
)
def test_as_credentials_errors_keep_no_secret_alive(values: tuple[object, ...]) -> None:
    """Credentials handed in by the caller: checked for shape only (the signer presigns any
    Unicode secret as botocore does), and the error keeps neither secret alive."""
    error = _failure(lambda: as_credentials(ReadOnlyCredentials(*values)))
    assert isinstance(error, ConfigError) and error.variable == "credentials"
    assert _leaks(error, SECRET, TOKEN) == []


@pytest.mark.parametrize("var", list(VARS))
def test_the_signer_gets_a_config_error_not_an_encoding_error(
    var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: what the environment holds never reaches the signer's encoding."""
    for name, value in VARS.items():
        monkeypatch.setenv(name, value + ("\u2028" if name == var else ""))
    monkeypatch.setattr(_signer._chain, "default_resolver", CredentialResolver())
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    error = _failure(
        lambda: _signer.generate_db_auth_token("db.example.com", 5432, "app", "us-east-1", now=now)
    )
    assert isinstance(error, ConfigError) and error.variable == var
