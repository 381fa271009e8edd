"""RESP2 codec with the CodeCrafters tester's strictness and wording.

`decode(data)` returns the first value and the number of bytes it used, or raises
`IncompleteRESP` (more bytes could still make it valid) or `InvalidRESP` (no suffix can).
The harness keeps reading while the error is `IncompleteRESP`, exactly as the tester
does, and renders either error with `render_decode_error`, which mirrors the tester's
"Received: ... ^ error" block. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

START_EXPECTED = "Expected start of a new RESP2 value (either +, -, :, $ or *)"


@dataclass(frozen=True)
class Value:
    """One RESP2 value. `data` is None for the null bulk string and the null array."""

    kind: str  # simple | error | integer | bulk | array
    data: Union[str, int, list[Value], None]  # noqa: UP007 (forward ref in a union)

    def describe(self) -> str:
        """Human wording used in mismatch messages, e.g. 'bulk string "PONG"'."""
        if self.data is None:
            return "null bulk string" if self.kind == "bulk" else "null array"
        names = {
            "simple": "simple string",
            "error": "error",
            "integer": "integer",
            "bulk": "bulk string",
            "array": "array",
        }
        if self.kind == "integer":
            return f"integer {self.data}"
        if self.kind == "array":
            assert isinstance(self.data, list)
            return f"array of {len(self.data)} element(s)"
        return f'{names[self.kind]} "{self.data}"'


def simple(text: str) -> Value:
    return Value("simple", text)


def error(text: str) -> Value:
    return Value("error", text)


def integer(number: int) -> Value:
    return Value("integer", number)


def bulk(text: str | None) -> Value:
    return Value("bulk", text)


def array(items: list[Value] | None) -> Value:
    return Value("array", items)


class RESPDecodeError(Exception):
    """A decode failure at byte `offset` of the received data."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class IncompleteRESP(RESPDecodeError):
    """The data is a valid prefix: more bytes may complete it."""


class InvalidRESP(RESPDecodeError):
    """No continuation can make the data valid."""


def encode(value: Value) -> bytes:
    """Strict encoder: refuses CR/LF inside simple strings and errors."""
    if value.kind in ("simple", "error"):
        assert isinstance(value.data, str)
        if "\r" in value.data or "\n" in value.data:
            raise ValueError(f"{value.kind} string cannot contain CR or LF: {value.data!r}")
        return (b"+" if value.kind == "simple" else b"-") + value.data.encode() + b"\r\n"
    if value.kind == "integer":
        assert isinstance(value.data, int)
        return b":%d\r\n" % value.data
    if value.kind == "bulk":
        if value.data is None:
            return b"$-1\r\n"
        assert isinstance(value.data, str)
        payload = value.data.encode()
        return b"$%d\r\n%s\r\n" % (len(payload), payload)
    if value.kind == "array":
        if value.data is None:
            return b"*-1\r\n"
        assert isinstance(value.data, list)
        return b"*%d\r\n" % len(value.data) + b"".join(encode(v) for v in value.data)
    raise ValueError(f"unknown RESP kind {value.kind!r}")


def command(*words: str) -> bytes:
    """Encode a client command as an array of bulk strings, as redis-cli sends it."""
    return encode(array([bulk(w) for w in words]))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def line(self, incomplete_message: str) -> bytes:
        end = self.data.find(b"\r\n", self.pos)
        if end < 0:
            raise IncompleteRESP(incomplete_message, len(self.data))
        text = self.data[self.pos : end]
        self.pos = end + 2
        return text


_DECIMAL = re.compile(rb"[+-]?[0-9]+")


def _atoi(text: bytes) -> int:
    """Go's strconv.Atoi, which the tester uses: an optional sign and ASCII digits only.
    Python's int() would also take b" 12 ", b"1_0" and non-ASCII digits."""
    if _DECIMAL.fullmatch(text) is None:
        raise ValueError(text)
    return int(text)


def _decode_at(reader: _Reader) -> Value:
    if reader.pos >= len(reader.data):
        raise IncompleteRESP(START_EXPECTED, reader.pos)
    first = reader.data[reader.pos : reader.pos + 1]
    start = reader.pos
    reader.pos += 1
    if first == b"+":
        return simple(reader.line("Expected \\r\\n at the end of a simple string").decode("utf-8", "replace"))
    if first == b"-":
        return error(reader.line("Expected \\r\\n at the end of an error").decode("utf-8", "replace"))
    if first == b":":
        text = reader.line("Expected \\r\\n at the end of an integer")
        try:
            return integer(_atoi(text))
        except ValueError:
            raise InvalidRESP(f"Invalid integer: {_quote(text)}", start + 1) from None
    if first == b"$":
        text = reader.line("Expected \\r\\n at the end of a bulk string length")
        try:
            length = _atoi(text)
        except ValueError:
            raise InvalidRESP(f"Invalid bulk string length: {_quote(text)}", start + 1) from None
        if length == -1:
            return bulk(None)
        if length < 0:
            raise InvalidRESP(f"Invalid bulk string length: {_quote(text)}", start + 1)
        available = len(reader.data) - reader.pos
        if available < length:
            raise IncompleteRESP(
                f"Expected {length} bytes in bulk string, got {available}", len(reader.data)
            )
        payload = reader.data[reader.pos : reader.pos + length]
        reader.pos += length
        tail = reader.data[reader.pos : reader.pos + 2]
        if tail != b"\r\n"[: len(tail)]:
            raise InvalidRESP("Expected \\r\\n at the end of a bulk string", reader.pos)
        if len(tail) < 2:
            raise IncompleteRESP("Expected \\r\\n at the end of a bulk string", len(reader.data))
        reader.pos += 2
        return bulk(payload.decode("utf-8", "replace"))
    if first == b"*":
        text = reader.line("Expected \\r\\n at the end of an array length")
        try:
            count = _atoi(text)
        except ValueError:
            raise InvalidRESP(f"Invalid array length: {_quote(text)}", start + 1) from None
        if count == -1:
            return array(None)
        if count < 0:
            raise InvalidRESP(f"Invalid array length: {_quote(text)}", start + 1)
        return array([_decode_at(reader) for _ in range(count)])
    raise InvalidRESP(
        f"{_quote(first)} is not a valid start of a RESP2 value (expected +, -, :, $ or *)", start
    )


def decode(data: bytes) -> tuple[Value, int]:
    """Decode the first value in `data`; return it and the bytes consumed."""
    reader = _Reader(data)
    value = _decode_at(reader)
    return value, reader.pos


def decode_exactly_one(data: bytes) -> Value:
    """Decode one value and require nothing after it (the tester's 'extra data' rule)."""
    value, used = decode(data)
    if used < len(data):
        raise InvalidRESP(f"Found extra data: {_quote(data[used:])}", used)
    return value


def _quote(data: bytes) -> str:
    """Render bytes as the tester does: a Go-style quoted string with \\r and \\n escaped."""
    out = []
    for byte in data:
        ch = chr(byte)
        if ch == "\r":
            out.append("\\r")
        elif ch == "\n":
            out.append("\\n")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


quote = _quote


def render_decode_error(data: bytes, err: RESPDecodeError) -> list[str]:
    """The tester's error block: the received bytes, a caret under the offending byte."""
    if not data:
        return ['Received: "" (no content received)', "           ^ error", f"Error: {err.message}"]
    prefix = "Received: "
    quoted = _quote(data)
    caret_col = len(prefix) + len(_quote(data[: err.offset])) - 1
    return [prefix + quoted, " " * caret_col + "^ error", f"Error: {err.message}"]
