"""The teardown window: SIGTERM sent -> process reaped -> its listener gone.

Standard library only (it runs inside the images).

`ListenerWatch` follows the LISTEN sockets of one port from the SIGTERM on, on a
background thread, through the netlink sampler (lab.observe.sockdiag, ~30 us a
sample). It tracks the *old* server's listeners only: the ones present when it is
armed (a sample taken just before the SIGTERM) or, if it was not armed, at its first
sample after the SIGTERM. A listener that appears later (the next stage's server,
started while the old socket may still linger) is recorded as "other" and never
delays or fakes the old one's disappearance. Sockets are matched by inode and by
socket cookie (the cookie stays stable for the socket's whole life).

`teardown_from_watch` turns the timestamps into lab.harness.results.Teardown.

`probe` is `lab teardown`: start the server, dial and PING like a stage, SIGTERM,
measure the window, dial once right after the reap, repeat.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.harness.process import ServerProcess
from lab.harness.results import Teardown
from lab.observe import procfs
from lab.observe.sockdiag import Listener, ListenerSampler

DEFAULT_DEADLINE_S = 5.0
# How the watch thread is scheduled. Measured here (2 cores, kernel 6.18, python 3.11),
# error = first sample seeing no listener minus the moment a test server's child
# actually closed it (ground truth logged by the child), 12 trials each:
#   - idle machine, normal scheduling, back to back: one sample every ~25 us, error
#     within one or two samples. (A time.sleep(0) between samples would cost ~95 us by
#     itself: timer slack applies even to a zero sleep, so "back to back" means no sleep.)
#   - loaded machine (load average 7-8 on the 2 cores: other Docker runs), normal
#     scheduling, back to back: the CPU-bound thread is starved for ms at a time:
#     error median 1.3-5.6 ms, max 30 ms. nice -10 did not help much (2.4 ms median).
#   - loaded, SCHED_FIFO priority 1 with a 50 us sleep between samples (RT threads have
#     no timer slack; one sample every ~145 us, about a third of one core): error median
#     43-56 us, p90 ~120 us. With shorter sleeps (20-30 us) the RT thread starved the
#     reaper thread and the errors grew to tens of ms: 50 us it is.
# So the watch asks for SCHED_FIFO (best effort: a container without CAP_SYS_NICE says
# EPERM) and sleeps 50 us between samples; without it, it samples back to back.
REALTIME_PRIORITY = 1
REALTIME_PAUSE_S = 50e-6
NORMAL_PAUSE_S = 0.0
POST_REAP_DIAL_TIMEOUT_S = 1.0
PING = b"*1\r\n$4\r\nPING\r\n"
PONG = b"+PONG\r\n"


def try_realtime() -> bool:
    """Move the calling thread to SCHED_FIFO; False where that is not allowed (EPERM
    without CAP_SYS_NICE, as in a default container) or not available."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except OSError:
        return False
    return True


@dataclass
class ListenerWatch:
    """Samples a port's listeners from SIGTERM on until the old server's are all gone.

    Use: `watch.arm()` just before sending SIGTERM (records the old listeners), then
    `watch.start(sigterm_at_ns)` right after it (also fits ServerProcess.terminate's
    `on_sigterm` hook), then `watch.wait()` or `watch.stop()`.
    """

    port: int
    sigterm_at_ns: int | None = None
    track_inodes: frozenset[int] | None = None  # the old server's listeners, if known
    exclude_inodes: frozenset[int] = frozenset()  # never the old server's (a new server's)
    deadline_s: float = DEFAULT_DEADLINE_S  # after the SIGTERM
    realtime: bool = True  # try SCHED_FIFO for the watch thread (see REALTIME_PAUSE_S)
    pause_s: float | None = None  # None: REALTIME_PAUSE_S under SCHED_FIFO, else 0
    # Results, written by the watch thread (read them after wait() or stop()).
    armed_at_ns: int | None = None
    first_sample_at_ns: int | None = None
    last_sample_at_ns: int | None = None
    listener_seen: bool = False  # an old listener was seen (when armed or after SIGTERM)
    inodes_seen: set[int] = field(default_factory=set)
    cookies_seen: set[int] = field(default_factory=set)
    other_inodes: set[int] = field(default_factory=set)  # listeners that are not the old ones
    listener_gone_at_ns: int | None = None
    # The last sample that still saw an old listener: the disappearance happened between
    # it and listener_gone_at_ns (a gap that grows when the machine starves the thread).
    last_seen_at_ns: int | None = None
    samples: int = 0
    ended_by: str | None = None  # gone | deadline | stopped | error: ...
    scheduling: str = "normal"  # or "fifo" when the realtime request was granted
    max_gap_ns: int = 0
    _gaps_ns: list[int] = field(default_factory=list)
    _tracked_inodes: set[int] | None = None
    _tracked_cookies: set[int] = field(default_factory=set)
    _sampler: ListenerSampler | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.track_inodes is not None:
            self._tracked_inodes = set(self.track_inodes) - set(self.exclude_inodes)
            self.listener_seen = bool(self._tracked_inodes)

    # -- setup ---------------------------------------------------------------------------
    def _open(self) -> ListenerSampler:
        if self._sampler is None:
            self._sampler = ListenerSampler(self.port)
        return self._sampler

    def arm(self) -> set[int]:
        """Sample now, before the SIGTERM: the listeners found are the old server's."""
        listeners = self._open().sample()
        self.armed_at_ns = time.monotonic_ns()
        if self._tracked_inodes is None:
            self._tracked_inodes = set()
        for entry in listeners:
            if entry.inode not in self.exclude_inodes:
                self._tracked_inodes.add(entry.inode)
                self._tracked_cookies.add(entry.cookie)
        self.listener_seen = self.listener_seen or bool(self._tracked_inodes)
        return set(self._tracked_inodes)

    def start(self, sigterm_at_ns: int | None = None) -> ListenerWatch:
        """Start sampling on a background thread; call right after sending SIGTERM."""
        if self._thread is not None:
            raise RuntimeError("a ListenerWatch runs once")
        if sigterm_at_ns is not None:
            self.sigterm_at_ns = sigterm_at_ns
        elif self.sigterm_at_ns is None:
            self.sigterm_at_ns = time.monotonic_ns()
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"listener-watch-{self.port}", daemon=True)
        self._thread.start()
        return self

    # -- the loop ------------------------------------------------------------------------
    def _is_old(self, entry: Listener) -> bool:
        assert self._tracked_inodes is not None
        return entry.inode in self._tracked_inodes or entry.cookie in self._tracked_cookies

    def _schedule(self) -> float:
        """Ask for SCHED_FIFO for this thread; return the pause between samples."""
        if self.realtime and try_realtime():
            self.scheduling = "fifo"
        if self.pause_s is not None:
            return self.pause_s
        return REALTIME_PAUSE_S if self.scheduling == "fifo" else NORMAL_PAUSE_S

    def _run(self) -> None:
        assert self._sampler is not None and self.sigterm_at_ns is not None
        sampler = self._sampler
        deadline = self.sigterm_at_ns + int(self.deadline_s * 1e9)
        clock = time.monotonic_ns
        pause = self._schedule()
        previous_end: int | None = None
        try:
            while True:
                started = clock()
                listeners = sampler.sample()
                ended = clock()
                # The kernel looked somewhere inside the call: take its middle.
                at = (started + ended) // 2
                self.samples += 1
                if previous_end is not None:
                    gap = ended - previous_end
                    self._gaps_ns.append(gap)
                    self.max_gap_ns = max(self.max_gap_ns, gap)
                previous_end = ended
                if self.first_sample_at_ns is None:
                    self.first_sample_at_ns = at
                    if self._tracked_inodes is None:
                        # Not armed: whatever listens now, right after SIGTERM, is the old
                        # server's (the next one starts only after the reap).
                        self._tracked_inodes = {e.inode for e in listeners if e.inode not in self.exclude_inodes}
                        self._tracked_cookies = {e.cookie for e in listeners if e.inode not in self.exclude_inodes}
                self.last_sample_at_ns = at
                old_present = False
                for entry in listeners:
                    if self._is_old(entry):
                        old_present = True
                        self.listener_seen = True
                        self.last_seen_at_ns = at
                        self.inodes_seen.add(entry.inode)
                        self.cookies_seen.add(entry.cookie)
                    else:
                        self.other_inodes.add(entry.inode)
                if not old_present:
                    self.listener_gone_at_ns = at
                    self.ended_by = "gone"
                    return
                if self._stop.is_set():
                    self.ended_by = "stopped"
                    return
                if ended >= deadline:
                    self.ended_by = "deadline"
                    return
                if pause > 0:
                    time.sleep(pause)
        except OSError as exc:  # the netlink socket failed: report, never hang the caller
            self.ended_by = f"error: {exc}"
        finally:
            self._done.set()

    # -- results -------------------------------------------------------------------------
    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the watch ends (gone, deadline or stop); True if it ended."""
        if self._thread is None:
            return True
        return self._done.wait(timeout_s)

    def stop(self) -> None:
        """End the watch now (it keeps what it measured) and release the netlink socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.close()

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # the thread still samples; stop() closes after it
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None

    @property
    def tracked_inodes(self) -> set[int]:
        return set(self._tracked_inodes or ())

    @property
    def gone_uncertainty_us(self) -> float | None:
        """How long before listener_gone_at_ns the listener may already have gone."""
        if self.listener_gone_at_ns is None:
            return None
        since = self.last_seen_at_ns if self.last_seen_at_ns is not None else self.sigterm_at_ns
        assert since is not None
        return max(0, self.listener_gone_at_ns - since) / 1000.0

    @property
    def median_gap_us(self) -> float | None:
        """The sampling resolution actually achieved."""
        return statistics.median(self._gaps_ns) / 1000.0 if self._gaps_ns else None


def teardown_from_watch(sigterm_at_ns: int, reaped_at_ns: int, watch: ListenerWatch, sigkill: bool) -> Teardown:
    """The Teardown record of one stage end, in ms from the SIGTERM.

    `sigterm_to_listener_gone_ms` is None if the old listener outlived the watch
    (deadline or stop); its resolution is the watch's sample gap (median_gap_us).
    """
    exit_ms = (reaped_at_ns - sigterm_at_ns) / 1e6
    gone_ms: float | None = None
    ghost_ms: float | None = None
    if watch.listener_gone_at_ns is not None:
        gone_ms = max(0.0, (watch.listener_gone_at_ns - sigterm_at_ns) / 1e6)
        ghost_ms = max(0.0, (watch.listener_gone_at_ns - reaped_at_ns) / 1e6)
    return Teardown(
        sigterm_to_exit_ms=round(exit_ms, 3),
        sigterm_to_listener_gone_ms=None if gone_ms is None else round(gone_ms, 3),
        ghost_ms=None if ghost_ms is None else round(ghost_ms, 3),
        sigkill=sigkill,
        listener_seen=watch.listener_seen,
        listener_inodes=sorted(watch.tracked_inodes | watch.inodes_seen),
        samples=watch.samples,
    )


# -- the probe (`lab teardown`) -----------------------------------------------------------


class ProbeError(Exception):
    """The probe could not measure (server never listened, command failed to start)."""


@dataclass
class ProbeSample:
    trial: int
    sigterm_to_exit_ms: float
    sigterm_to_listener_gone_ms: float | None
    ghost_ms: float | None
    sigkill: bool
    post_reap_dial: str  # refused | accepted | timeout | not-reaped | <errno name>
    post_reap_dial_delay_us: float | None  # from the exit (reap) to the connect() call
    reaper_lag_us: float  # how much later the harness's reaper noticed the exit
    listener_seen: bool
    listener_inodes: list[int]
    samples: int
    sample_gap_us: float | None
    gone_uncertainty_us: float | None
    watch_scheduling: str
    io_uring: bool | None
    exit_code: int | None
    ping: str  # pong | <what came back instead>
    watch_ended_by: str | None


def dial_once(port: int, timeout_s: float = POST_REAP_DIAL_TIMEOUT_S) -> str:
    """One connect to 127.0.0.1:port: `accepted` (some listener completed the
    handshake), `refused`, `timeout` or the errno name."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    finally:
        sock.close()
    return "accepted"


class PostReapDialer:
    """Times the server's exit and dials once right after it, from its own (SCHED_FIFO
    when allowed) thread.

    The exit instant comes from a pidfd opened before the SIGTERM, which becomes
    readable when the process exits, i.e. when a prompt parent (the Go tester) reaps
    it. The harness's Python reaper thread can notice the same exit milliseconds late
    on a loaded machine (measured: up to 43 ms at load average 9 on 2 cores), which
    would both inflate "exit" and push the dial past a 6 ms ghost window; so the
    window and the dial use the pidfd, and the reaper's lag is recorded beside them.
    Without a pidfd the dial waits for ServerProcess's reap instead.
    """

    def __init__(self, server: ServerProcess, port: int, wait_s: float) -> None:
        self._server = server
        self._port = port
        self._wait_s = wait_s
        self.result = "not-reaped"
        self.exited_at_ns: int | None = None
        self.dialed_at_ns: int | None = None
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(server.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel, or already reaped)
            self._pidfd = None
        self._thread = threading.Thread(target=self._run, name="post-reap-dial", daemon=True)

    def start(self) -> PostReapDialer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try_realtime()
        try:
            if self._pidfd is not None:
                poller = select.poll()
                poller.register(self._pidfd, select.POLLIN)
                if poller.poll(int(self._wait_s * 1000)):
                    self.exited_at_ns = time.monotonic_ns()
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
        if self.exited_at_ns is None and not self._server.wait_exit(self._wait_s):
            return
        self.dialed_at_ns = time.monotonic_ns()
        self.result = dial_once(self._port)

    def join(self, timeout_s: float) -> str:
        self._thread.join(timeout_s)
        return self.result


def _ping(client_sock: socket.socket) -> str:
    client_sock.settimeout(2.0)
    client_sock.sendall(PING)
    received = b""
    try:
        while not received.endswith(b"\r\n"):
            chunk = client_sock.recv(64)
            if not chunk:
                break
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return "pong" if received == PONG else repr(received)


def _dial_with_retry(port: int, attempts: int = 52, interval_s: float = 0.1) -> socket.socket:
    """Connect like the tester: retry only a failed connect, every 100 ms, 52 times."""
    last = ""
    for _ in range(attempts):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError as exc:
            sock.close()
            last = str(exc)
            time.sleep(interval_s)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise ProbeError(f"nothing accepted a connection on 127.0.0.1:{port} in ~5 s ({last})")


def probe_once(
    command: list[str],
    port: int,
    trial: int = 0,
    env: dict[str, str] | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> ProbeSample:
    """One trial: start, dial + PING, SIGTERM, measure, dial right after the reap."""
    server = ServerProcess(list(command), env=env)
    server.start()
    client: socket.socket | None = None
    watch = ListenerWatch(port, deadline_s=deadline_s)
    try:
        try:
            client = _dial_with_retry(port)
        except ProbeError:
            output = " | ".join(server.output[-3:])
            server.terminate()
            raise ProbeError(
                f"trial {trial + 1}: the server never accepted on port {port}"
                + (f"; its last output: {output}" if output else "")
                + "; check that the command listens on --port"
            ) from None
        ping = _ping(client)
        io_uring = procfs.holds_io_uring(server.pid)
        watch.arm()
        # Grace (2 s) + the SIGKILL wait (1 s) bound the reap; then one more second.
        dialer = PostReapDialer(server, port, wait_s=4.0).start()
        termination = server.terminate(on_sigterm=watch.start)
        post_reap_dial = dialer.join(POST_REAP_DIAL_TIMEOUT_S + 2.0)
        reaped_at = termination.reaped_at_ns
        # The exit as the pidfd saw it; the reaper thread's timestamp only if that failed.
        exited_at = dialer.exited_at_ns if dialer.exited_at_ns is not None else reaped_at
        exited_at = min(exited_at, reaped_at)
        dial_delay_us = None if dialer.dialed_at_ns is None else round((dialer.dialed_at_ns - exited_at) / 1000.0, 1)
        watch.wait(deadline_s + 1.0)
        watch.stop()
        teardown = teardown_from_watch(termination.sigterm_at_ns, exited_at, watch, termination.sigkill)
        return ProbeSample(
            trial=trial,
            sigterm_to_exit_ms=teardown.sigterm_to_exit_ms,
            sigterm_to_listener_gone_ms=teardown.sigterm_to_listener_gone_ms,
            ghost_ms=teardown.ghost_ms,
            sigkill=teardown.sigkill,
            post_reap_dial=post_reap_dial,
            post_reap_dial_delay_us=dial_delay_us,
            reaper_lag_us=round((reaped_at - exited_at) / 1000.0, 1),
            listener_seen=teardown.listener_seen,
            listener_inodes=teardown.listener_inodes,
            samples=teardown.samples,
            sample_gap_us=None if watch.median_gap_us is None else round(watch.median_gap_us, 1),
            gone_uncertainty_us=None if watch.gone_uncertainty_us is None else round(watch.gone_uncertainty_us, 1),
            watch_scheduling=watch.scheduling,
            io_uring=io_uring,
            exit_code=termination.exit_code,
            ping=ping,
            watch_ended_by=watch.ended_by,
        )
    finally:
        if client is not None:
            client.close()
        watch.stop()
        server.kill_now()


def _nearest_rank(sorted_values: list[float], fraction: float) -> float:
    index = max(0, min(len(sorted_values) - 1, -(-len(sorted_values) * fraction // 1) - 1))
    return sorted_values[int(index)]


WINDOWS = ("sigterm_to_exit_ms", "sigterm_to_listener_gone_ms", "ghost_ms")


def summarize(samples: list[ProbeSample]) -> dict[str, Any]:
    """median / p95 / max per window (over trials where it was measured), and counts."""
    summary: dict[str, Any] = {"trials": len(samples)}
    for window in WINDOWS:
        values = sorted(v for s in samples if (v := getattr(s, window)) is not None)
        summary[window] = (
            {
                "median": round(statistics.median(values), 3),
                "p95": round(_nearest_rank(values, 0.95), 3),
                "max": round(values[-1], 3),
                "measured": len(values),
            }
            if values
            else {"median": None, "p95": None, "max": None, "measured": 0}
        )
    summary["post_reap_accepted"] = sum(1 for s in samples if s.post_reap_dial == "accepted")
    summary["post_reap_refused"] = sum(1 for s in samples if s.post_reap_dial == "refused")
    summary["sigkill"] = sum(1 for s in samples if s.sigkill)
    summary["io_uring"] = sum(1 for s in samples if s.io_uring)
    gaps = [s.sample_gap_us for s in samples if s.sample_gap_us is not None]
    summary["sample_gap_us_median"] = round(statistics.median(gaps), 1) if gaps else None
    summary["reaper_lag_us_median"] = round(statistics.median(s.reaper_lag_us for s in samples), 1) if samples else None
    summary["watch_scheduling"] = sorted({s.watch_scheduling for s in samples})
    return summary


def probe(
    command: list[str],
    port: int,
    trials: int,
    env: dict[str, str] | None = None,
    on_sample: Callable[[ProbeSample], None] | None = None,
) -> list[ProbeSample]:
    """`trials` probe_once runs on the same port, one after the other."""
    # Let the reaper, the dialer and the watch thread hand the GIL over promptly.
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        results = []
        for trial in range(trials):
            sample = probe_once(command, port, trial, env)
            results.append(sample)
            if on_sample is not None:
                on_sample(sample)
        return results
    finally:
        sys.setswitchinterval(previous_interval)


def environment_note() -> dict[str, Any]:
    return {"kernel": os.uname().release, "cores": os.cpu_count(), "pid": os.getpid()}
