"""The server side of RESP2: split a request stream into commands, encode replies.

Requests are arrays of bulk strings (what every client library sends) or inline commands
(a plain line such as `PING\\r\\n`, what a person types into nc or telnet), as in Redis.
Limits and error wording follow Redis, so a client sees the messages it would see there.
"""

from __future__ import annotations

MAX_INLINE_BYTES = 64 * 1024  # Redis PROTO_INLINE_MAX_SIZE
MAX_ARRAY_LENGTH = 1024 * 1024  # Redis refuses more than this many arguments
MAX_BULK_BYTES = 512 * 1024 * 1024  # Redis proto-max-bulk-len default

CRLF = b"\r\n"


class ProtocolError(Exception):
    """The request stream cannot be parsed; the connection cannot be resynchronised."""


def _read_line(buf: bytes | bytearray, start: int) -> tuple[bytes | None, int]:
    """The line at `start` without its CRLF and the offset after it, or (None, start)."""
    end = buf.find(CRLF, start)
    if end < 0:
        if len(buf) - start > MAX_INLINE_BYTES:
            raise ProtocolError("too big inline request")
        return None, start
    return bytes(buf[start:end]), end + 2


def _parse_length(digits: bytes, what: str, maximum: int) -> int:
    # Strict decimal, like Redis' string2ll: no spaces, no '+', no '_' (int() allows those).
    body = digits[1:] if digits.startswith(b"-") else digits
    if not body or not body.isdigit() or len(body) > 18:
        raise ProtocolError(f"invalid {what} length")
    value = int(digits)
    if value > maximum:
        raise ProtocolError(f"invalid {what} length")
    return value


def parse_command(buf: bytes | bytearray, start: int = 0) -> tuple[list[bytes] | None, int]:
    """Parse one command from `buf[start:]`.

    Returns (arguments, offset after the command), or (None, start) while the command is
    incomplete. An empty command (`*0`, `*-1` or a blank inline line) yields an empty
    list, which Redis silently ignores. Raises ProtocolError on input that is invalid
    however many bytes follow.
    """
    if start >= len(buf):
        return None, start
    if buf[start : start + 1] != b"*":
        return _parse_inline(buf, start)
    header, pos = _read_line(buf, start)
    if header is None:
        return None, start
    count = _parse_length(header[1:], "multibulk", MAX_ARRAY_LENGTH)
    arguments: list[bytes] = []
    for _ in range(max(count, 0)):
        if pos >= len(buf):
            return None, start
        marker = buf[pos : pos + 1]
        if marker != b"$":
            raise ProtocolError(f"expected '$', got '{marker.decode('latin-1')}'")
        line, after_header = _read_line(buf, pos)
        if line is None:
            return None, start
        size = _parse_length(line[1:], "bulk", MAX_BULK_BYTES)
        if size < 0:
            raise ProtocolError("invalid bulk length")
        end = after_header + size
        if len(buf) < end + 2:
            return None, start
        if buf[end : end + 2] != CRLF:
            raise ProtocolError("expected CRLF after bulk string")
        arguments.append(bytes(buf[after_header:end]))
        pos = end + 2
    return arguments, pos


def _parse_inline(buf: bytes | bytearray, start: int) -> tuple[list[bytes] | None, int]:
    # Inline commands may end in a bare LF, as Redis accepts from telnet users.
    end = buf.find(b"\n", start)
    if end < 0:
        if len(buf) - start > MAX_INLINE_BYTES:
            raise ProtocolError("too big inline request")
        return None, start
    line = bytes(buf[start:end]).rstrip(b"\r")
    return line.split(), end + 1


def simple_string(text: str) -> bytes:
    return b"+" + text.encode() + CRLF


def error(message: str) -> bytes:
    # A RESP error is one line: a CR or LF inside would end it early and desynchronise.
    flat = message.replace("\r", " ").replace("\n", " ")
    return b"-" + flat.encode("utf-8", "replace") + CRLF


def integer(value: int) -> bytes:
    return b":" + str(value).encode() + CRLF


def bulk(value: bytes | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    return b"$" + str(len(value)).encode() + CRLF + value + CRLF
