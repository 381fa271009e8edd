"""Watch one port's LISTEN sockets across a stage handoff, on a background thread.

From the previous server's SIGTERM to the moment the next server's listener is up, the
watch samples the port's listeners (netlink sock_diag, ~20 us a sample) and records:
  - when the old listeners (the inodes present at SIGTERM) are all gone;
  - when a listener that is not one of them first appears (the new server's).
One thread does both so only one sampler competes with the servers for the two cores.
Standard library only.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass, field

from lab.observe.sockdiag import Listener, ListenerSampler
from lab.observe.teardown import try_realtime

SAMPLE_PAUSE_S = 0.0001  # 100 us between samples: well below the ms the windows need
DEFAULT_LIMIT_S = 15.0


@dataclass
class PortWatch:
    port: int
    old_inodes: frozenset[int] = frozenset()
    limit_s: float = DEFAULT_LIMIT_S
    # A pidfd of the dying server, owned by the watch: the exit is then timed by the same
    # thread and cadence as the listener, so `gone - exited` is not skewed by the GIL
    # delaying another thread's timestamp (seen as several ms on a loaded machine).
    exit_fd: int | None = None
    exited_at_ns: int | None = None
    old_gone_at_ns: int | None = None
    old_last_seen_at_ns: int | None = None  # the last sample that still showed an old listener
    new_up_at_ns: int | None = None
    new_inodes: set[int] = field(default_factory=set)
    samples: int = 0
    scheduling: str = "normal"
    first_sample_at_ns: int | None = None
    last_sample: list[Listener] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PortWatch:
        self._thread = threading.Thread(target=self._loop, name=f"portwatch-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        deadline = time.monotonic_ns() + int(self.limit_s * 1e9)
        poller = select.poll()
        if self.exit_fd is not None:
            poller.register(self.exit_fd, select.POLLIN)
        try:
            self._sample_until_done(deadline, poller)
        finally:
            if self.exit_fd is not None:
                os.close(self.exit_fd)

    def _sample_until_done(self, deadline: int, poller: select.poll) -> None:
        # SCHED_FIFO where allowed (root on a host; refused in a capability-less container):
        # under load it cut the watch's timing error from ms to ~50 us (lab.observe.teardown).
        self.scheduling = "fifo" if try_realtime() else "normal"
        with ListenerSampler(self.port) as sampler:
            while not self._stop.is_set():
                exited = self.exit_fd is not None and self.exited_at_ns is None and bool(poller.poll(0))
                listeners = sampler.sample()
                now = time.monotonic_ns()
                with self._lock:
                    if exited:
                        self.exited_at_ns = now
                    self.samples += 1
                    self.last_sample = listeners
                    if self.first_sample_at_ns is None:
                        self.first_sample_at_ns = now
                    inodes = {entry.inode for entry in listeners}
                    if self.old_gone_at_ns is None:
                        if inodes & self.old_inodes:
                            self.old_last_seen_at_ns = now
                        else:
                            self.old_gone_at_ns = now
                    fresh = {i for i in inodes if i not in self.old_inodes}
                    if fresh and self.new_up_at_ns is None:
                        self.new_up_at_ns = now
                        self.new_inodes |= fresh
                    done = (
                        self.old_gone_at_ns is not None
                        and (self.new_up_at_ns is not None or self._released.is_set())
                        and (self.exit_fd is None or self.exited_at_ns is not None)
                    )
                if done or now > deadline:
                    break
                time.sleep(SAMPLE_PAUSE_S)

    def snapshot(self) -> list[Listener]:
        with self._lock:
            return list(self.last_sample)

    def old_alive_at(self, at_ns: int) -> bool:
        with self._lock:
            return self.old_gone_at_ns is None or self.old_gone_at_ns > at_ns

    def new_up_before(self, at_ns: int) -> bool:
        with self._lock:
            return self.new_up_at_ns is not None and self.new_up_at_ns <= at_ns

    def wait_old_gone(self, timeout_s: float) -> int | None:
        """Block until the old listeners are gone (or the watch ends)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.old_gone_at_ns is not None:
                    return self.old_gone_at_ns
            if self._thread is None or not self._thread.is_alive():
                break
            time.sleep(0.001)
        with self._lock:
            return self.old_gone_at_ns

    def release(self) -> None:
        """The handoff is classified: stop once the old listener is gone, new one or not."""
        self._released.set()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
