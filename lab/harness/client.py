"""A RESP client with the CodeCrafters tester's dial and read semantics.

Dial: only a failed connect is retried (every 100 ms, up to 52 attempts); a connect that
any listener accepts, a dying one included, is final. Read: accumulate for up to 2 s until
a value decodes, ignoring EOF and resets, then decode what arrived. The message shown is
the tester's; the precise cause (EOF, ECONNRESET or silence, and when) is kept as
`ReadOutcome.cause` for the lab's diagnosis. Standard library only.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.harness import resp

DIAL_INTERVAL_S = 0.1
DIAL_ATTEMPTS = 52
READ_TIMEOUT_S = 2.0

EventSink = Callable[[str, str], None]  # (event, detail) -> None, timestamps added by sink


class DialFailed(Exception):
    pass


@dataclass
class DialAttempt:
    at_ns: int
    result: str  # connected | refused | <errno name>


@dataclass
class ReadOutcome:
    data: bytes
    cause: str  # value | eof | reset | silence | invalid
    first_byte_at_ns: int | None = None
    ended_at_ns: int | None = None  # when the read returned (after the tester's 2 s on EOF)
    closed_at_ns: int | None = None  # when the EOF or reset arrived


@dataclass
class Client:
    """One tester connection. `events` receives a timeline event for every step."""

    name: str
    port: int
    host: str = "localhost"
    events: EventSink | None = None
    sock: socket.socket | None = None
    attempts: list[DialAttempt] = field(default_factory=list)

    def _event(self, event: str, detail: str = "") -> None:
        if self.events is not None:
            self.events(event, f"{self.name}: {detail}" if detail else self.name)

    def dial(
        self,
        attempts: int = DIAL_ATTEMPTS,
        interval_s: float = DIAL_INTERVAL_S,
        should_stop: Callable[[], bool] | None = None,
        after_first_attempt: Callable[[], None] | None = None,
    ) -> None:
        """Connect, retrying only failed connects. Raises DialFailed after the last one."""
        last_error = ""
        for number in range(1, attempts + 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            started = time.monotonic_ns()
            try:
                # Resolve like net.Dial("tcp", "localhost:PORT") on these images: IPv4 first.
                sock.connect(("127.0.0.1" if self.host == "localhost" else self.host, self.port))
            except OSError as exc:
                sock.close()
                name = errno.errorcode.get(exc.errno or 0, str(exc))
                result = "refused" if exc.errno == errno.ECONNREFUSED else name
                self.attempts.append(DialAttempt(started, result))
                self._event("dial", f"attempt {number}: {result}")
                if number == 1 and after_first_attempt is not None:
                    after_first_attempt()
                last_error = str(exc)
                if should_stop is not None and should_stop():
                    break
                if number < attempts:
                    time.sleep(interval_s)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
            self.attempts.append(DialAttempt(started, "connected"))
            self._event("connected", f"attempt {number}, local port {sock.getsockname()[1]}")
            if after_first_attempt is not None:
                after_first_attempt()
            return
        raise DialFailed(last_error or "connection refused")

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except OSError as exc:
            # The tester ignores write errors too; the read will then see nothing.
            self._event("send-error", errno.errorcode.get(exc.errno or 0, str(exc)))
            return
        self._event("sent", f"{len(data)} bytes")

    def read(self, timeout_s: float = READ_TIMEOUT_S) -> ReadOutcome:
        """Accumulate bytes until one RESP value decodes or `timeout_s` passes."""
        assert self.sock is not None
        deadline = time.monotonic() + timeout_s
        buffer = b""
        cause = "silence"
        first_at: int | None = None
        closed_at: int | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                cause, closed_at = "reset", time.monotonic_ns()
                self._event("reset", "ECONNRESET")
                self._idle_until(deadline)
                break
            except OSError as exc:
                cause, closed_at = errno.errorcode.get(exc.errno or 0, "error").lower(), time.monotonic_ns()
                self._event("read-error", cause)
                self._idle_until(deadline)
                break
            if not chunk:
                cause, closed_at = "eof", time.monotonic_ns()
                self._event("eof", f"after {len(buffer)} bytes")
                # The tester keeps polling until its 2 s pass; nothing more can arrive
                # on a closed socket, so sleeping keeps its timing without burning CPU.
                self._idle_until(deadline)
                break
            if first_at is None:
                first_at = time.monotonic_ns()
            buffer += chunk
            self._event("received", f"{len(chunk)} bytes")
            try:
                resp.decode(buffer)
            except resp.IncompleteRESP:
                continue
            except resp.InvalidRESP:
                # More bytes cannot make it valid: stop early (the message is the same).
                cause = "invalid"
                break
            cause = "value"
            break
        return ReadOutcome(buffer, cause, first_at, time.monotonic_ns(), closed_at)

    @staticmethod
    def _idle_until(deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
