"""One HTTP/1.1 answer read from a socket, strictly, every receive given only the time left.

RFC 9112's rules, with nothing assumed of the sender: ASCII digits in the status and in
Content-Length (one value, duplicates equal), hex digits in chunk sizes, no Content-Length
beside Transfer-Encoding (anything but ``chunked`` refused), header names that are tokens,
no obs-fold, bare CR or control characters in a value (a bare LF ends a line, as the RFC
allows); at most 64 KiB of head (interim answers included) and 4 MiB of body. What breaks a
rule is a :class:`Failure`, never a ValueError; no remote byte is quoted in its message.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping

from iamdb._aws.net import reason

MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024
_CHUNK = 64 * 1024
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEX = b"0123456789abcdefABCDEF"
_CTL = bytes(range(32)).replace(b"\t", b"") + b"\x7f"
# What each kind of failure tells the reader to do.
NETWORK = "check the endpoint and the network path to it: VPC endpoint or NAT, security groups"
TRUST = "check the endpoint's certificate and the CAs trusted (AWS_CA_BUNDLE)"
SLOW = "the deadline was reached: check that the endpoint is reachable, or leave the call more time"
BROKEN = "something other than the endpoint answered: check the endpoint URL (a proxy? its port?)"
LOST = "the connection broke; the call may be made again"


class Failure(Exception):
    """Why a request failed, inside :mod:`iamdb._aws.http` only: its public methods make a
    TransportError of it. ``hint``: what to do about it; ``sent``: as TransportError's."""

    def __init__(self, why: str, hint: str, *, sent: bool) -> None:
        super().__init__(why)
        self.why, self.hint, self.sent = why, hint, sent


class Reader:
    """One answer read from a socket: every receive given only the time left."""

    def __init__(
        self, sock: socket.socket, where: str, deadline: float, clock: Callable[[], float]
    ) -> None:
        self._sock, self._where, self._deadline, self._clock = sock, where, deadline, clock
        self._buf = bytearray()
        self._got = False
        self._head_left = MAX_HEAD  # the heads of interim and final answers together

    @property
    def rest(self) -> bool:
        """Whether bytes beyond the answer arrived with it."""
        return bool(self._buf)

    def broken(self, why: str) -> Failure:
        return Failure(f"broken answer from {self._where}: {why}", BROKEN, sent=True)

    def head(self) -> tuple[int, bool, dict[str, str]]:
        """An answer's status, whether the connection stays open, and its fields (names in
        lower case; a field sent more than once joined with ", ", RFC 9110 5.3)."""
        version, _, rest = self._head_line().partition(b" ")
        code = rest[:3]
        if (
            version not in (b"HTTP/1.1", b"HTTP/1.0")
            or not (len(code) == 3 and code.isdigit() and rest[3:4] in (b"", b" "))
            or not b"100" <= code <= b"599"
        ):
            raise self.broken("not an HTTP/1.x status line")
        fields: dict[str, str] = {}
        while line := self._head_line():
            name, colon, value = line.partition(b":")
            value = value.strip(b" \t")
            if (
                not (colon and name)
                or name.translate(None, _TCHAR)
                or (len(value.translate(None, _CTL)) != len(value))
            ):
                raise self.broken("a malformed header line")
            key, text = name.decode().lower(), value.decode("latin-1")
            fields[key] = f"{fields[key]}, {text}" if key in fields else text
        tokens = {t.strip().lower() for t in fields.get("connection", "").split(",")}
        return int(code), version == b"HTTP/1.1" and "close" not in tokens, fields

    def body(self, method: str, status: int, fields: Mapping[str, str]) -> tuple[bytes, bool]:
        """The body and whether it was framed (False: it ended with the connection)."""
        coding, length = fields.get("transfer-encoding"), fields.get("content-length")
        if method == "HEAD" or status in (204, 304):
            return b"", True
        if coding is not None:
            if length is not None or coding.lower() != "chunked":
                raise self.broken("Transfer-Encoding other than chunked, or with Content-Length")
            return self._chunked(), True
        if length is None:
            return self._to_close(), False
        sizes = [part.strip(" \t") for part in length.split(",")]  # "5, 5": one length
        if not all(n.isascii() and n.isdigit() and len(n) <= 10 for n in sizes):
            raise self.broken("bad Content-Length")
        if len({int(n) for n in sizes}) != 1:
            raise self.broken("Content-Length with different values")
        if int(sizes[0]) > MAX_BODY:
            raise self.broken("Content-Length over 4 MiB")
        return self._exactly(int(sizes[0])), True

    def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = self._line(1024, "chunk size").partition(b";")[0].strip(b" \t")
            if not 0 < len(size) <= 16 or size.translate(None, _HEX):
                raise self.broken("bad chunk size")
            if not int(size, 16):
                break
            if len(body) + int(size, 16) > MAX_BODY:
                raise self.broken("answer too large")
            body += self._exactly(int(size, 16))
            if self._line(2, "chunk"):
                raise self.broken("a chunk longer than its size")
        trailers = MAX_HEAD
        while trailers > 0 and (line := self._line(trailers, "trailer")):
            trailers -= len(line) + 2
        return bytes(body)

    def _to_close(self) -> bytes:
        while self._more():
            if len(self._buf) > MAX_BODY:
                raise self.broken("answer too large")
        body = bytes(self._buf)
        self._buf.clear()
        return body

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._more():
                raise self._closed()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _head_line(self) -> bytes:
        line = self._line(self._head_left, "header")
        self._head_left -= len(line) + 2
        return line

    def _line(self, limit: int, what: str) -> bytes:
        """The next line without its end: CRLF, or a bare LF (RFC 9112 2.2)."""
        seen = 0
        while (end := self._buf.find(b"\n", seen)) < 0 and len(self._buf) <= limit:
            seen = len(self._buf)
            if not self._more():
                raise self._closed()
        if end < 0 or end > limit:
            raise self.broken(f"{what} too long")
        line = bytes(self._buf[:end]).removesuffix(b"\r")
        del self._buf[: end + 1]
        if b"\r" in line:
            raise self.broken("a bare CR")
        return line

    def _more(self) -> bool:
        """Receive what comes within the time left: False at the end of the connection."""
        left = self._deadline - self._clock()
        why = "timed out"
        if left > 0:
            try:
                self._sock.settimeout(left)
                data = self._sock.recv(_CHUNK)
            except OSError as exc:
                why = reason(exc)
            else:
                self._got = self._got or bool(data)
                self._buf += data
                return bool(data)
        if why == "timed out":
            raise Failure(f"no complete answer from {self._where} in time ({why})", SLOW, sent=True)
        raise Failure(f"reading from {self._where} failed: {why}", LOST, sent=True)

    def _closed(self) -> Failure:
        if self._got:
            return Failure(f"the connection to {self._where} closed mid-answer", LOST, sent=True)
        return Failure(f"{self._where} closed the connection, answering nothing", LOST, sent=True)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(text: str) -> float | None:
    """Epoch seconds of an HTTP ``Date`` (IMF-fixdate, ``Sun, 06 Nov 1994 08:49:37 GMT``, as
    AWS sends it); None when absent or another form. Own parser: ``email.utils`` costs ms."""
    from datetime import datetime, timezone

    parts = text.split()
    if len(parts) != 6 or parts[5] != "GMT" or parts[2] not in _MONTHS:
        return None
    day, year, clock = parts[1], parts[3], parts[4].split(":")
    numbers = [day, year, *clock]
    if len(clock) != 3 or not all(n.isascii() and n.isdigit() for n in numbers):
        return None
    try:
        instant = datetime(
            int(year),
            _MONTHS.index(parts[2]) + 1,
            int(day),
            int(clock[0]),
            int(clock[1]),
            int(clock[2]),
            tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    return instant.timestamp()
