"""The server process lifecycle, as the CodeCrafters tester runs it.

One fresh process per stage in its own process group; stdout and stderr read line by
line; at the end SIGTERM to the pid and the group, wait for EOF on both pipes and the
reap, and after 2 s SIGKILL with the tester's message. `start()` returns right after
exec: there is no readiness wait. Standard library only.

Timestamps are `time.monotonic_ns()`. The reap is observed by a thread blocked in
waitpid(), so `reaped_at_ns` is when the kernel reported the exit, not when a polling
loop next looked (Popen.wait polls with sleeps of up to 50 ms: far too coarse here).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SIGTERM_GRACE_S = 2.0
SIGKILL_MESSAGE = "program failed to exit in 2 seconds after receiving sigterm"
OUTPUT_PREFIX = "[your_program] "

LineSink = Callable[[str], None]


class StartFailed(Exception):
    """The command could not be executed at all (not found, not executable)."""


@dataclass
class Termination:
    sigterm_at_ns: int
    reaped_at_ns: int
    exit_code: int | None  # negative: killed by that signal
    sigkill: bool
    pipes_closed_at_ns: int | None = None


@dataclass
class ServerProcess:
    command: list[str]
    env: dict[str, str] | None = None
    on_line: LineSink | None = None
    output: list[str] = field(default_factory=list)
    started_at_ns: int = 0
    reaped_at_ns: int | None = None
    exit_code: int | None = None
    _popen: subprocess.Popen[bytes] | None = None
    _reaped: threading.Event = field(default_factory=threading.Event)
    _io_thread: threading.Thread | None = None
    _pipes_closed: threading.Event = field(default_factory=threading.Event)
    _pipes_closed_at_ns: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int:
        assert self._popen is not None
        return self._popen.pid

    def start(self, watch: bool = True) -> None:
        """Exec the server. With watch=False call watch() soon after (the pipes fill)."""
        try:
            self._popen = subprocess.Popen(  # argv list, never a shell
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                process_group=0,  # own group, like the tester's Setpgid
            )
        except OSError as exc:  # missing, not executable, a directory, no shebang (ENOEXEC)
            raise StartFailed(f"cannot run {self.command[0]!r}: {exc.strerror or exc}") from None
        self.started_at_ns = time.monotonic_ns()
        if watch:
            self.watch()

    def watch(self) -> None:
        """Start reading the pipes and waiting for the exit."""
        assert self._popen is not None
        # One thread watches both pipes and the exit (a pidfd), instead of three threads:
        # every thread start costs GIL hand-offs right on the reap -> next dial path,
        # measured at 1-3 ms under load on these 2 cores.
        self._io_thread = threading.Thread(target=self._watch, name=f"server-{self._popen.pid}", daemon=True)
        self._io_thread.start()

    def _watch(self) -> None:
        popen = self._popen
        assert popen is not None and popen.stdout is not None and popen.stderr is not None
        pidfd = os.pidfd_open(popen.pid)
        pending: dict[int, bytes] = {popen.stdout.fileno(): b"", popen.stderr.fileno(): b""}
        with selectors.DefaultSelector() as selector:
            for fd in pending:
                selector.register(fd, selectors.EVENT_READ)
            selector.register(pidfd, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select():
                    if key.fd == pidfd:
                        self._reap()
                        selector.unregister(pidfd)
                        os.close(pidfd)
                        continue
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                        self._emit(pending.pop(key.fd), final=True)
                        continue
                    rest = self._emit(pending[key.fd] + chunk, final=False)
                    pending[key.fd] = rest
                if not pending and self._pipes_closed_at_ns is None:
                    self._pipes_closed_at_ns = time.monotonic_ns()
                    self._pipes_closed.set()
        popen.stdout.close()
        popen.stderr.close()

    def _emit(self, data: bytes, final: bool) -> bytes:
        *lines, rest = data.split(b"\n")
        if final and rest:
            lines.append(rest)
            rest = b""
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            with self._lock:
                self.output.append(line)
            if self.on_line is not None:
                self.on_line(line)
        return rest

    def _reap(self) -> None:
        assert self._popen is not None
        _, status = os.waitpid(self._popen.pid, 0)
        self.reaped_at_ns = time.monotonic_ns()
        self.exit_code = os.waitstatus_to_exitcode(status)
        # Tell Popen the child is gone so it never waits on a recycled pid.
        self._popen.returncode = self.exit_code
        self._reaped.set()

    def running(self) -> bool:
        return not self._reaped.is_set()

    def wait_exit(self, timeout_s: float) -> bool:
        return self._reaped.wait(timeout_s)

    def _signal(self, signum: int) -> None:
        # Once reaped, the pid may belong to someone else: only the group is signalled then
        # (a group id stays reserved while any member lives, so it cannot be reused).
        sends = [lambda: os.killpg(self.pid, signum)]
        if self.running():
            sends.insert(0, lambda: os.kill(self.pid, signum))
        for send in sends:
            try:
                send()
            except (ProcessLookupError, PermissionError):
                pass

    def terminate(
        self,
        grace_s: float = SIGTERM_GRACE_S,
        on_sigterm: Callable[[int], None] | None = None,
    ) -> Termination:
        """SIGTERM pid and group, wait for pipe EOF and the reap; SIGKILL after `grace_s`."""
        sigterm_at = time.monotonic_ns()
        self._signal(signal.SIGTERM)
        if on_sigterm is not None:
            on_sigterm(sigterm_at)
        deadline = time.monotonic() + grace_s
        sigkill = not self._wait_all(deadline)
        if sigkill:
            self._signal(signal.SIGKILL)
            # A grandchild may still hold the pipes: after the group kill give it a moment.
            self._wait_all(time.monotonic() + 1.0)
        self._reaped.wait()
        assert self.reaped_at_ns is not None
        return Termination(sigterm_at, self.reaped_at_ns, self.exit_code, sigkill, self._pipes_closed_at_ns)

    def _wait_all(self, deadline: float) -> bool:
        """Wait for EOF on both pipes and the reap, as the tester does, until `deadline`."""
        self._pipes_closed.wait(max(0.0, deadline - time.monotonic()))
        self._reaped.wait(max(0.0, deadline - time.monotonic()))
        return self._reaped.is_set() and self._pipes_closed.is_set()

    def kill_now(self) -> None:
        """Ctrl-C path: no grace, take the whole group down."""
        if self._popen is not None and self.running():
            self._signal(signal.SIGKILL)
            self._reaped.wait(2.0)
