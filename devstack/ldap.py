"""A minimal LDAPv3 server that lets PostgreSQL hand each login's token to the verifier.

PostgreSQL's ``ldap`` auth method in simple-bind mode (``ldapprefix``/``ldapsuffix``) opens
an LDAP connection per login and sends a simple BindRequest whose DN is
``ldapprefix + user name + ldapsuffix`` (concatenated verbatim: PostgreSQL neither escapes
nor restricts the user name in this mode; its character check applies only to
search+bind mode) and whose password is the client's cleartext password, here the RDS IAM
token. This server answers Bind with success (0) or invalidCredentials (49) according to
``verify(user, token)``, closes on Unbind, and answers anything else with a Notice of
Disconnection (RFC 4511 4.4.1). BER is encoded by hand; long-form lengths are handled since
tokens with a session token run to a few kilobytes.
"""

from __future__ import annotations

import io
import logging
import socketserver
import threading
from collections.abc import Callable
from typing import IO

log = logging.getLogger("devstack.ldap")

MAX_MESSAGE = 256 * 1024  # PostgreSQL's password packet is at most 64 KiB

# Tags (RFC 4511): universal, application and context-specific.
SEQUENCE, INTEGER, OCTET_STRING, ENUMERATED = 0x30, 0x02, 0x04, 0x0A
BIND_REQUEST, BIND_RESPONSE, UNBIND_REQUEST, EXTENDED_RESPONSE = 0x60, 0x61, 0x42, 0x78
AUTH_SIMPLE, RESPONSE_NAME = 0x80, 0x8A
# Result codes.
SUCCESS, PROTOCOL_ERROR, AUTH_METHOD_NOT_SUPPORTED, INVALID_CREDENTIALS = 0, 2, 7, 49
NOTICE_OF_DISCONNECTION = b"1.3.6.1.4.1.1466.20036"

Verify = Callable[[str, str], tuple[bool, str]]


class BerError(Exception):
    """The peer sent something that is not the BER we expect."""


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def _decode_length(first: int, more: Callable[[int], bytes]) -> int:
    if first < 0x80:
        return first
    count = first & 0x7F
    if not 1 <= count <= 4:
        raise BerError("unsupported length form")
    length = int.from_bytes(more(count), "big")
    if length > MAX_MESSAGE:
        raise BerError("message too long")
    return length


def read_message(stream: IO[bytes] | io.BufferedIOBase) -> tuple[int, bytes] | None:
    """Read one top-level TLV from ``stream``; None on a clean end of stream."""

    def exact(n: int) -> bytes:
        data = stream.read(n)
        if len(data) != n:
            raise BerError("truncated message")
        return data

    head = stream.read(1)
    if not head:
        return None
    length = _decode_length(exact(1)[0], exact)
    return head[0], exact(length)


def parse_items(data: bytes) -> list[tuple[int, bytes]]:
    """Split concatenated TLVs (the contents of a constructed value)."""
    stream = io.BytesIO(data)
    items: list[tuple[int, bytes]] = []
    while (item := read_message(stream)) is not None:
        items.append(item)
    return items


def bind_response(message_id: bytes, code: int, diagnostic: str) -> bytes:
    body = tlv(ENUMERATED, bytes([code])) + tlv(OCTET_STRING, b"")
    body += tlv(OCTET_STRING, diagnostic.encode())
    return tlv(SEQUENCE, tlv(INTEGER, message_id) + tlv(BIND_RESPONSE, body))


def notice_of_disconnection(diagnostic: str) -> bytes:
    body = tlv(ENUMERATED, bytes([PROTOCOL_ERROR])) + tlv(OCTET_STRING, b"")
    body += tlv(OCTET_STRING, diagnostic.encode()) + tlv(RESPONSE_NAME, NOTICE_OF_DISCONNECTION)
    return tlv(SEQUENCE, tlv(INTEGER, b"\x00") + tlv(EXTENDED_RESPONSE, body))


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30
    server: _Server

    def handle(self) -> None:
        try:
            while True:
                message = read_message(self.rfile)
                if message is None or not self._answer(message):
                    return
        except (BerError, OSError) as exc:
            log.info("LDAP connection dropped: %s", exc)

    def _answer(self, message: tuple[int, bytes]) -> bool:
        """Reply to one LDAPMessage; False when the connection should close."""
        tag, body = message
        items = parse_items(body) if tag == SEQUENCE else []
        if len(items) < 2 or items[0][0] != INTEGER:
            self.wfile.write(notice_of_disconnection("expected an LDAPMessage"))
            return False
        message_id, (op, payload) = items[0][1], items[1]
        if op == UNBIND_REQUEST:
            return False
        if op != BIND_REQUEST:
            self.wfile.write(notice_of_disconnection("only Bind and Unbind are supported"))
            return False
        code, diagnostic = self.server.bridge.bind(parse_items(payload))
        self.wfile.write(bind_response(message_id, code, diagnostic))
        return True


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    bridge: LdapBridge


class LdapBridge:
    """LDAP on 127.0.0.1:``port`` (0: any free port) whose binds ask ``verify(user, token)``."""

    def __init__(
        self, verify: Verify, *, prefix: str = "cn=", suffix: str = ",dc=iamdb", port: int = 0
    ) -> None:
        self._verify = verify
        self.prefix = prefix
        self.suffix = suffix
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.bridge = self
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="devstack-ldap", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def user_from_dn(self, dn: str) -> str | None:
        """Undo PostgreSQL's ``prefix + user + suffix`` (verbatim, no escaping)."""
        if len(dn) < len(self.prefix) + len(self.suffix) + 1:
            return None
        if not (dn.startswith(self.prefix) and dn.endswith(self.suffix)):
            return None
        return dn[len(self.prefix) : len(dn) - len(self.suffix)]

    def bind(self, fields: list[tuple[int, bytes]]) -> tuple[int, str]:
        """Result code and diagnostic message for a BindRequest's fields."""
        if len(fields) != 3 or fields[0] != (INTEGER, b"\x03") or fields[1][0] != OCTET_STRING:
            return PROTOCOL_ERROR, "expected an LDAPv3 BindRequest"
        if fields[2][0] != AUTH_SIMPLE:
            return AUTH_METHOD_NOT_SUPPORTED, "only simple bind is supported"
        user = self.user_from_dn(fields[1][1].decode("utf-8", "replace"))
        password = fields[2][1].decode("utf-8", "replace")
        if user is None or not password:
            return INVALID_CREDENTIALS, "unexpected DN or empty password"
        try:
            ok, reason = self._verify(user, password)
        except Exception:
            log.exception("verifier failed for user %s", user)
            return INVALID_CREDENTIALS, "verifier error"
        return (SUCCESS, "") if ok else (INVALID_CREDENTIALS, reason)
