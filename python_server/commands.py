"""The commands python_server understands, with Redis' replies and error wording."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from python_server import resp

_INTEGER = re.compile(rb"-?[0-9]{1,19}")
_INT64_MAX = 2**63 - 1


def _now_ms() -> float:
    # Monotonic: a wall-clock step must not expire (or revive) keys.
    return time.monotonic() * 1000.0


class Store:
    """Keys with optional expiry deadlines (monotonic ms), expired lazily on read."""

    def __init__(self, clock: Callable[[], float] = _now_ms) -> None:
        self._clock = clock
        self._values: dict[bytes, bytes] = {}
        self._deadlines: dict[bytes, float] = {}

    def set(self, key: bytes, value: bytes, ttl_ms: int | None) -> None:
        self._values[key] = value
        if ttl_ms is None:
            self._deadlines.pop(key, None)
        else:
            self._deadlines[key] = self._clock() + ttl_ms

    def get(self, key: bytes) -> bytes | None:
        deadline = self._deadlines.get(key)
        if deadline is not None and self._clock() >= deadline:
            del self._values[key]
            del self._deadlines[key]
            return None
        return self._values.get(key)


def _wrong_arity(name: str) -> bytes:
    return resp.error(f"ERR wrong number of arguments for '{name}' command")


def _ping(_store: Store, args: list[bytes]) -> bytes:
    if len(args) == 1:
        return resp.simple_string("PONG")
    if len(args) == 2:
        return resp.bulk(args[1])
    return _wrong_arity("ping")


def _echo(_store: Store, args: list[bytes]) -> bytes:
    if len(args) != 2:
        return _wrong_arity("echo")
    return resp.bulk(args[1])


def _get(store: Store, args: list[bytes]) -> bytes:
    if len(args) != 2:
        return _wrong_arity("get")
    return resp.bulk(store.get(args[1]))


def _set(store: Store, args: list[bytes]) -> bytes:
    if len(args) < 3:
        return _wrong_arity("set")
    key, value, options = args[1], args[2], args[3:]
    ttl_ms: int | None = None
    index = 0
    while index < len(options):
        option = options[index].upper()
        if option not in (b"EX", b"PX") or ttl_ms is not None or index + 1 >= len(options):
            return resp.error("ERR syntax error")
        amount_text = options[index + 1]
        if not _INTEGER.fullmatch(amount_text) or abs(int(amount_text)) > _INT64_MAX:
            return resp.error("ERR value is not an integer or out of range")
        amount = int(amount_text)
        ttl_ms = amount * 1000 if option == b"EX" else amount
        if amount <= 0 or ttl_ms > _INT64_MAX:
            return resp.error("ERR invalid expire time in 'set' command")
        index += 2
    store.set(key, value, ttl_ms)
    return resp.simple_string("OK")


Handler = Callable[[Store, list[bytes]], bytes]

COMMANDS: dict[bytes, Handler] = {
    b"PING": _ping,
    b"ECHO": _echo,
    b"SET": _set,
    b"GET": _get,
}


def _quote_args(args: list[bytes]) -> str:
    # Redis shows each argument (cut at 128 bytes) in single quotes after the name.
    shown = [arg[:128].decode("utf-8", "replace") for arg in args]
    return "".join(f"'{text}' " for text in shown)


def execute(store: Store, args: list[bytes]) -> bytes:
    """The encoded reply to one non-empty command."""
    handler = COMMANDS.get(args[0].upper())
    if handler is None:
        name = args[0][:128].decode("utf-8", "replace")
        return resp.error(f"ERR unknown command '{name}', with args beginning with: {_quote_args(args[1:])}")
    return handler(store, args)
