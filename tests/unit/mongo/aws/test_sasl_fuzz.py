"""The MONGODB-AWS conversation against any server payload: a signed answer or an auth error.

The server's ``saslStart`` reply is remote input. Whatever its payload (not BSON, a document of
any shape, a nonce of any type or length, any STS host), iamdb's side of the conversation
answers the signed request or raises ``PyMongoAuthAwsError`` (which pymongo turns into an
authentication failure), never another exception; and nothing the error keeps alive holds the
secret key or the session token.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import bson
from bson.binary import Binary
from hypothesis import given, settings
from hypothesis import strategies as st

from iamdb._mongo import aws as _mongo_aws
from iamdb._mongo.aws import AwsCredential, PyMongoAuthAwsError
from tests.integration.kept_alive import kept_alive

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz" + "S" * 8
TOKEN = "IQoJb3JpZ2luX2VjEJr" + "T" * 60


class Context(_mongo_aws.AwsSaslContext):
    """pymongo's subclass: BSON from the bson package."""

    def binary_type(self) -> type[Binary]:
        return Binary

    def bson_encode(self, doc: Any) -> bytes:
        return bson.encode(doc)

    def bson_decode(self, data: bytes) -> Any:
        return bson.decode(data)


def started() -> tuple[Context, bytes]:
    ctx = Context(AwsCredential("ASIAEXAMPLEKEY000000", SECRET, TOKEN))
    nonce = bytes(bson.decode(ctx.step(None))["r"])
    return ctx, nonce


def answer(payload: bytes) -> None:
    ctx, _ = started()
    try:
        out = ctx.step(payload)
    except PyMongoAuthAwsError as exc:
        texts = [text for _, text in kept_alive(exc)]
        assert not [t for t in texts if SECRET in t or TOKEN in t]
    else:
        assert isinstance(out, bytes) and bson.decode(out)["a"].startswith("AWS4-HMAC-SHA256")


def text(max_size: int, *, key: bool = False) -> st.SearchStrategy[str]:
    """Text BSON can carry: no lone surrogates; keys without NUL."""
    return st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="\0" if key else ""),
        max_size=max_size,
    )


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | text(40)
    | st.binary(max_size=80),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(text(5, key=True), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_as_the_payload(payload: bytes) -> None:
    answer(payload)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["s", "h", "x", "r"]), values, max_size=4))
def test_any_document_as_the_payload(document: dict[str, Any]) -> None:
    answer(bson.encode(document))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=40), text(300))
def test_a_nonce_that_starts_right_and_any_sts_host(tail: bytes, host: str) -> None:
    ctx, nonce = started()
    payload = bson.encode({"s": Binary(nonce + tail), "h": host})
    with contextlib.suppress(PyMongoAuthAwsError):
        ctx.step(payload)


def test_a_good_payload_is_answered() -> None:
    ctx, nonce = started()
    good = bson.encode({"s": Binary(nonce + os.urandom(32)), "h": "sts.us-east-1.amazonaws.com"})
    assert bson.decode(ctx.step(good))["t"] == TOKEN
