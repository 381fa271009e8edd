"""Run the staged suite against a server command: trials, orders, lifecycle, evidence.

For every stage: start a fresh server (no readiness wait), run the stage's checks with a
10 s limit, kill in the tester's order, and record what the kernel did around it:
the teardown window (SIGTERM -> reaped -> listener gone) and, for every stage after the
first of a trial, how its first dial was served (the handoff). The result JSON is
rewritten after every stage so a killed run keeps what it finished. Standard library only.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import random
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from lab.harness import stages as stage_table
from lab.harness.portwatch import PortWatch
from lab.harness.process import OUTPUT_PREFIX, SIGKILL_MESSAGE, ServerProcess, StartFailed, Termination
from lab.harness.results import (
    Handoff,
    RunResult,
    StageResult,
    Teardown,
    TimelineEvent,
    TrialResult,
    write_json_atomic,
)
from lab.harness.stages import STAGE_TIMEOUT_S, Stage, StageContext, StageFailure
from lab.harness.words import Words
from lab.observe.sockdiag import ListenerSampler

ORDERS = ("descending", "ascending", "shuffled")
BIND_ERROR_MARKERS = ("address already in use", "eaddrinuse", "errno 98")
TEARDOWN_SETTLE_S = 5.0
FIRST_DIAL_WAIT_S = 0.5  # at most this long before the JSON of the last stage is saved


class StageAborted(Exception):
    """The run cannot go on (the server command stopped being executable)."""


@dataclass
class SuiteOptions:
    command: list[str]
    port: int = 6379
    order: str = "descending"
    seed: int = 0
    until: str = "yz1"
    stages: list[str] | None = None
    trials: int = 1
    fail_fast: bool = False
    json_path: str | None = None
    timeline: bool = False
    env: dict[str, str] | None = None
    quiet: bool = False


def plan(options: SuiteOptions, trial_index: int) -> list[str]:
    """The stage order of one trial."""
    if options.stages:
        base = list(options.stages)
    else:
        slugs = list(stage_table.SLUGS)
        base = slugs[: slugs.index(options.until) + 1]
    if options.order == "descending":
        return list(reversed(base)) if not options.stages else base
    if options.order == "ascending":
        return base
    rng = random.Random(f"{options.seed}:{trial_index}")
    shuffled = list(base)
    rng.shuffle(shuffled)
    return shuffled


class Timeline:
    """Events with microsecond offsets from a base instant (the previous SIGTERM)."""

    def __init__(self, base_ns: int) -> None:
        self.base_ns = base_ns
        self.events: list[TimelineEvent] = []
        self._lock = threading.Lock()

    def add(self, event: str, detail: str = "", at_ns: int | None = None) -> None:
        at = time.monotonic_ns() if at_ns is None else at_ns
        with self._lock:
            if len(self.events) < 400:
                self.events.append(TimelineEvent((at - self.base_ns) // 1000, event, detail))

    def sorted(self) -> list[TimelineEvent]:
        with self._lock:
            return sorted(self.events, key=lambda e: e.t_us)


@dataclass
class _Previous:
    """What the previous stage left behind: its SIGTERM, reap and the watch on its port."""

    result: StageResult
    termination: Termination
    watch: PortWatch
    timeline_seed: list[tuple[str, str, int]] = field(default_factory=list)


class SuiteRunner:
    def __init__(self, options: SuiteOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self._print_lock = threading.Lock()
        self.words = Words(options.seed)
        self.result = RunResult(
            command=list(options.command),
            port=options.port,
            order=options.order,
            seed=options.seed,
            stages=plan(options, 0),
            trials_requested=options.trials,
            fail_fast=options.fail_fast,
            started_at=_utc_now(),
            environment=_environment(),
        )
        self.current_server: ServerProcess | None = None
        self._dirty = False
        self._pending_teardowns: list[_Previous] = []
        # A failing handoff printed (--timeline) before any handoff had passed: paired at
        # the end of the run with the first passing handoff that came later, if one did.
        self._unpaired_failure: StageResult | None = None
        self.start_error: str | None = None  # why the server command could not be started

    # -- output ---------------------------------------------------------------------------
    def say(self, line: str) -> None:
        if self.options.quiet:
            return
        with self._print_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def _save(self) -> None:
        self._dirty = False
        if self.options.json_path:
            write_json_atomic(self.options.json_path, self.result.to_json())

    # -- the run --------------------------------------------------------------------------
    def run(self) -> RunResult:
        try:
            for trial_index in range(self.options.trials):
                order = plan(self.options, trial_index)
                trial = TrialResult(index=trial_index, order=order)
                self.result.trials.append(trial)
                self.say(f"[lab] trial {trial_index + 1}/{self.options.trials}: {', '.join(order)}")
                previous: _Previous | None = None
                for position, slug in enumerate(order, start=1):
                    stage = stage_table.BY_SLUG[slug]
                    outcome, previous = self._run_stage(stage, position, previous, trial_index)
                    trial.stages.append(outcome)
                    # Saved once the next server is up and dialled: serialising here would
                    # sit between the reap and the next start, which the tester keeps empty.
                    self._dirty = True
                    if not outcome.passed and self.options.fail_fast:
                        break
                if previous is not None:
                    previous.watch.release()  # no next stage in this trial
                    self._pending_teardowns.append(previous)
                self._save()  # no dial is pending now: keep the trial's stages before settling
                self._settle_teardowns(wait_s=TEARDOWN_SETTLE_S)
                self._save()
                if self.options.fail_fast and not trial.all_passed:
                    break
            self.result.complete = True
            if self._unpaired_failure is not None:
                self._print_timeline_pair(self._unpaired_failure, at_end=True)
        except StageAborted as exc:  # the server command could not be started
            self.result.interrupted = True
            self.start_error = str(exc)
            self.say(f"[lab] stopped: {exc}")
        except KeyboardInterrupt:
            self.result.interrupted = True
            if self.current_server is not None:
                self.current_server.kill_now()
            self.say("[lab] interrupted: the server was killed, partial results kept")
        finally:
            # Whatever ended the run (an interrupt, a bug), no server outlives it.
            if self.current_server is not None:
                self.current_server.kill_now()
            self.result.finished_at = _utc_now()
            self._save()
        return self.result

    def _run_stage(
        self, stage: Stage, position: int, previous: _Previous | None, trial_index: int
    ) -> tuple[StageResult, _Previous]:
        tag = f"[tester::#{stage.slug.upper()}]"
        self.say(f"{tag} Running tests for {stage.title} (#{stage.slug}), trial {trial_index + 1} position {position}")
        base_ns = previous.termination.sigterm_at_ns if previous else time.monotonic_ns()
        timeline = Timeline(base_ns)
        if previous is not None:
            timeline.add("sigterm", "previous server", previous.termination.sigterm_at_ns)
            timeline.add("reaped", f"previous server, exit {previous.termination.exit_code}",
                         previous.termination.reaped_at_ns)
            watch = previous.watch
        else:
            watch = PortWatch(self.options.port).start()

        server = ServerProcess(
            list(self.options.command),
            env=self.options.env,
            on_line=lambda line: self.say(OUTPUT_PREFIX + line),
        )
        log: list[str] = []

        def tester_log(line: str) -> None:
            log.append(line)
            self.say(line)

        stop_flag = threading.Event()
        ctx = StageContext(
            slug=stage.slug,
            port=self.options.port,
            words=self.words,
            log=tester_log,
            event=timeline.add,
            should_stop=stop_flag.is_set,
        )
        failure: list[StageFailure] = []
        go = threading.Event()

        def body() -> None:
            go.wait()
            if stop_flag.is_set():
                return
            timeline.add("stage-started", stage.slug)
            try:
                stage.run(ctx)
            except StageFailure as exc:
                failure.append(exc)
            except OSError as exc:  # a socket error the stage did not expect
                failure.append(StageFailure([f"Error: {exc}"], f"unexpected socket error: {exc!r}"))
            except Exception:
                # After a timeout the runner closes the clients under the stage's feet; what
                # the abandoned stage trips over then is not news. Before that, it is a bug.
                if not stop_flag.is_set():
                    raise

        # The stage thread exists before the server does and is released right after the
        # exec, so nothing (thread start-up, the pipe watcher) sits between the start and
        # the first dial, as in the tester.
        worker = threading.Thread(target=body, name=f"stage-{stage.slug}", daemon=True)
        worker.start()
        self.say(f"{tag} $ {shlex.join(self.options.command)}")
        started = time.monotonic_ns()
        self.current_server = server  # from here on, a Ctrl-C kills it (no-op if unstarted)
        try:
            server.start(watch=False)
        except StartFailed as exc:
            stop_flag.set()
            go.set()
            failure.append(StageFailure([str(exc)], "the server command could not be executed"))
            raise StageAborted(str(exc)) from None
        go.set()
        timeline.add("process-started", f"pid {server.pid}", server.started_at_ns)
        if previous is not None:
            self._pending_teardowns.append(previous)
        # Bookkeeping waits until the first dial has gone out: the tester's dial follows the
        # start at once, and JSON serialising here delayed it by up to 8 ms (measured). So
        # does the pipe/exit watcher's thread start, which competed with the stage thread
        # for the GIL right on the reap -> dial path; an exit meanwhile stays a zombie, and
        # the watcher's pidfd still sees it.
        ctx.first_dial_done.wait(FIRST_DIAL_WAIT_S)
        server.watch()
        self._settle_teardowns(wait_s=0.0)
        if self._dirty:
            self._save()
        # The stage's 10 s run from its start, bookkeeping above included.
        worker.join(max(0.0, STAGE_TIMEOUT_S - (time.monotonic_ns() - started) / 1e9))
        timed_out = worker.is_alive()
        if timed_out:
            stop_flag.set()
            failure.append(StageFailure([f"timed out, test exceeded {STAGE_TIMEOUT_S:.0f} seconds"], "stage timeout"))
        io_uring = _holds_io_uring(server, self.options.port)

        # The evidence for this stage's handoff is complete once its first exchange ran.
        handoff = None
        if previous is not None:
            handoff = self._classify_handoff(ctx, server, watch, previous, timeline)
        watch.release()

        passed = not failure
        if passed:
            tester_log(f"{tag} Test passed.")
        else:
            for line in failure[0].lines:
                tester_log(f"{tag} {line}")
            tester_log(f"{tag} Test failed")
        diagnosis = failure[0].diagnosis if failure else None
        if handoff is not None and handoff.kind in ("ghost", "bind-failed") and not passed:
            diagnosis = f"{handoff.kind}: {handoff.evidence.get('explanation', '')} ({diagnosis})"
        if diagnosis and not passed:
            self.say(f"[lab] diagnosis: {diagnosis}")

        # The tester's kill order: rg2/wy1/zu2 keep their clients open while the server dies.
        if not stage.kill_before_close:
            ctx.close_all()
        termination, next_watch = self._terminate(server, tag)
        if termination.sigkill:
            tester_log(f"{tag} {SIGKILL_MESSAGE}")
        if stage.kill_before_close or timed_out:
            ctx.close_all()
        worker.join(1.0)
        duration_ms = (time.monotonic_ns() - started) / 1e6

        connected_at = next((a.at_ns for c in ctx.clients[:1] for a in c.attempts if a.result == "connected"), None)
        result = StageResult(
            slug=stage.slug,
            title=stage.title,
            position=position,
            passed=passed,
            error="\n".join(failure[0].lines) if failure else None,
            diagnosis=diagnosis,
            duration_ms=round(duration_ms, 3),
            server_output=list(server.output),
            log=log,
            exit_code=termination.exit_code,
            sigkill=termination.sigkill,
            io_uring=io_uring,
            first_connect_ms=None if connected_at is None else round((connected_at - server.started_at_ns) / 1e6, 3),
            handoff=handoff,
        )
        if self.options.timeline and handoff is not None and not passed:
            self._print_timeline_pair(result)
        self.current_server = None
        return result, _Previous(result, termination, next_watch)

    def _terminate(self, server: ServerProcess, tag: str) -> tuple[Termination, PortWatch]:
        self.say(f"{tag} Terminating program")
        with ListenerSampler(self.options.port) as sampler:
            old_inodes = frozenset(entry.inode for entry in sampler.sample())
        try:
            exit_fd: int | None = os.pidfd_open(server.pid)
        except ProcessLookupError:  # it already exited and was reaped
            exit_fd = None
        watch = PortWatch(self.options.port, old_inodes=old_inodes, exit_fd=exit_fd)
        termination = server.terminate(on_sigterm=lambda _at: watch.start())
        if not termination.sigkill:
            self.say(f"{tag} Program terminated successfully")
        return termination, watch

    def _settle_teardowns(self, wait_s: float) -> None:
        """Fill in the teardowns whose old listener is gone; with `wait_s`, wait for all.

        A lingering listener can outlive the next stage's start (that is the bug), so a
        stage's teardown is completed later, whenever its watch has seen the listener go.
        """
        still_open = []
        for previous in self._pending_teardowns:
            if wait_s > 0 or previous.watch.old_gone_at_ns is not None or not previous.watch.alive():
                self._finish_teardown(previous, wait_s)
                self._dirty = True
            else:
                still_open.append(previous)
        self._pending_teardowns = still_open

    def _finish_teardown(self, previous: _Previous, wait_s: float) -> None:
        """Fill the previous stage's teardown window once its old listener is gone."""
        if previous.result.teardown is not None:
            return
        watch = previous.watch
        gone_at = watch.wait_old_gone(wait_s) if wait_s > 0 else watch.old_gone_at_ns
        term = previous.termination
        if not watch.old_inodes:
            gone_at = None  # the server never listened (e.g. killed before its bind): no window
        gone_ms = None if gone_at is None else max(0.0, (gone_at - term.sigterm_at_ns) / 1e6)
        exit_ms = (term.reaped_at_ns - term.sigterm_at_ns) / 1e6
        # A ghost is only what was seen: an old listener still in a sample taken after the
        # reap. A listener last seen before the reap and missing from the next sample closed
        # somewhere in between, and the kernel closes a plain listener before it notifies the
        # parent (exit_files runs before exit_notify), so that is no ghost, however late the
        # next sample came on a loaded machine.
        # The exit as the watch thread saw it (same thread, same cadence as the listener
        # samples); the reaper thread's timestamp when the watch had no pidfd.
        exited_at = watch.exited_at_ns or term.reaped_at_ns
        seen_after_exit = watch.old_last_seen_at_ns is not None and watch.old_last_seen_at_ns >= exited_at
        if gone_at is None:
            ghost_ms = None
        elif seen_after_exit:
            ghost_ms = max(0.0, (gone_at - exited_at) / 1e6)
        else:
            ghost_ms = 0.0
        previous.result.teardown = Teardown(
            sigterm_to_exit_ms=round(exit_ms, 3),
            sigterm_to_listener_gone_ms=None if gone_ms is None else round(gone_ms, 3),
            ghost_ms=None if ghost_ms is None else round(ghost_ms, 3),
            sigkill=term.sigkill,
            listener_seen=bool(watch.old_inodes),
            listener_inodes=sorted(watch.old_inodes),
            samples=watch.samples,
            listener_outlived_watch=bool(watch.old_inodes) and gone_at is None,
        )

    def _classify_handoff(
        self,
        ctx: StageContext,
        server: ServerProcess,
        watch: PortWatch,
        previous: _Previous,
        timeline: Timeline,
    ) -> Handoff:
        if watch.old_gone_at_ns is not None:
            timeline.add("old-listener-gone", "", watch.old_gone_at_ns)
        if watch.new_up_at_ns is not None:
            timeline.add("new-listener-up", f"inode {sorted(watch.new_inodes)}", watch.new_up_at_ns)
        first = ctx.clients[0] if ctx.clients else None
        attempts = first.attempts if first else []
        connected = next((a for a in attempts if a.result == "connected"), None)
        exchange = ctx.first_exchange
        exited_early = not server.running() or (server.exit_code is not None)
        output = "\n".join(server.output).lower()
        bind_error = any(marker in output for marker in BIND_ERROR_MARKERS)
        evidence: dict[str, object] = {
            "first_dial": attempts[0].result if attempts else None,
            "dial_attempts": len(attempts),
            "old_listener_inodes": sorted(watch.old_inodes),
            "old_listener_gone_us": _offset_us(watch.old_gone_at_ns, timeline.base_ns),
            "new_listener_up_us": _offset_us(watch.new_up_at_ns, timeline.base_ns),
            "connected_us": _offset_us(connected.at_ns if connected else None, timeline.base_ns),
            "previous_reaped_us": _offset_us(previous.termination.reaped_at_ns, timeline.base_ns),
            "new_server_exited": exited_early,
            "new_server_exit_code": server.exit_code,
            "bind_error_in_output": bind_error,
            "first_reply": exchange.outcome.cause if exchange else None,
            "first_exchange_passed": exchange.passed if exchange else None,
        }
        old_alive = connected is not None and bool(watch.old_inodes) and watch.old_alive_at(connected.at_ns)
        new_up = connected is not None and watch.new_up_before(connected.at_ns)
        evidence["old_listener_alive_at_connect"] = old_alive
        evidence["new_listener_up_at_connect"] = new_up
        if connected is not None and old_alive and not (new_up and exchange is not None and exchange.passed):
            kind = "ghost"
            explanation = (
                "the first dial was accepted by the previous server's listener "
                f"(inode {sorted(watch.old_inodes)}), still in LISTEN "
                f"{_ms(watch.old_gone_at_ns, previous.termination.reaped_at_ns)} after its process was reaped"
            )
            if bind_error:
                explanation += "; the new server could not bind meanwhile (address in use) and exited"
        elif bind_error or (exited_early and server.exit_code not in (None, 0) and not new_up):
            kind = "bind-failed"
            explanation = (
                f"the new server exited (code {server.exit_code}) "
                + ("reporting the address in use" if bind_error else "before listening")
            )
        elif attempts and attempts[0].result != "connected" and connected is not None:
            kind = "refused"
            explanation = "refused while the new server started, then served by it"
        elif connected is not None and new_up:
            kind = "direct"
            explanation = "the new server was already listening at the first dial"
        else:
            kind = "unknown"
            explanation = "not enough evidence"
        evidence["explanation"] = explanation
        return Handoff(kind=kind, evidence=evidence, timeline=timeline.sorted())

    def _print_timeline_pair(self, failing: StageResult, at_end: bool = False) -> None:
        passing = next(
            (s for t in self.result.trials for s in t.stages
             if s.passed and s.handoff is not None and s.handoff.kind in ("refused", "direct")),
            None,
        )
        if passing is None and at_end:
            self.say("[lab] no handoff of this run passed: no passing timeline to set beside the failing one")
            return
        # Once a pair has been shown, the failure still waiting for one needs none.
        self._unpaired_failure = (self._unpaired_failure or failing) if passing is None else None
        self.say(f"[lab] timeline of the failing handoff into {failing.slug} "
                 + ("beside a passing one" if passing else "(no passing handoff yet to compare)"))
        for line in format_timelines(failing, passing):
            self.say("[lab] " + line)


def format_timelines(failing: StageResult, passing: StageResult | None) -> list[str]:
    """Two timelines side by side: the seed's log comparison, done by the tool."""
    left = [f"{e.t_us / 1000:9.3f} ms  {e.event} {e.detail}".rstrip()
            for e in (failing.handoff.timeline if failing.handoff else [])]
    right = [f"{e.t_us / 1000:9.3f} ms  {e.event} {e.detail}".rstrip()
             for e in (passing.handoff.timeline if passing and passing.handoff else [])]
    width = max([len(x) for x in left] + [30])
    head_left = f"FAILING {failing.slug} ({failing.handoff.kind if failing.handoff else '?'})"
    head_right = f"PASSING {passing.slug} ({passing.handoff.kind})" if passing and passing.handoff else ""
    lines = [f"{head_left:<{width}} | {head_right}"]
    for index in range(max(len(left), len(right))):
        a = left[index] if index < len(left) else ""
        b = right[index] if index < len(right) else ""
        lines.append(f"{a:<{width}} | {b}")
    return lines


def _holds_io_uring(server: ServerProcess, port: int) -> bool | None:
    """Whether the server (or any of its descendants) holds an io_uring fd right now.

    True: a ring is open. False: no ring, although the server already holds its listener
    on the port, so its event loop is up and would have opened one by now (eio sets the
    backend up before the program listens). None: not observable: the server is gone, or
    the stage ended before it listened (jm1 passes on a dial that a dying listener
    accepted, often before the new server has run a line), so "no ring yet" says nothing
    about its backend.
    """
    from lab.observe import procfs  # imported here: read /proc only when a server runs

    if not server.running():
        return None
    pids = list(dict.fromkeys([server.pid, *_descendants(server.pid)]))
    if any(procfs.holds_io_uring(pid) for pid in pids):
        return True
    with ListenerSampler(port) as sampler:
        listening = {entry.inode for entry in sampler.sample()}
    held = set().union(*(procfs.socket_inodes(pid) for pid in pids))
    return False if listening & held else None


def _descendants(pid: int) -> list[int]:
    """The server's descendants (a wrapper script's children may hold the ring).

    Read from /proc/PID/task/TID/children rather than by scanning every /proc/*/stat for
    the process group: the scan took 3.4 ms here, in every stage, on the harness's clock.
    """
    found: list[int] = []
    queue = [pid]
    while queue and len(found) < 256:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", encoding="ascii") as f:
                    children = [int(child) for child in f.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            queue.extend(children)
    return found


def _offset_us(at_ns: int | None, base_ns: int) -> int | None:
    return None if at_ns is None else (at_ns - base_ns) // 1000


def _ms(later_ns: int | None, earlier_ns: int) -> str:
    if later_ns is None:
        return "still"
    return f"{(later_ns - earlier_ns) / 1e6:.1f} ms"


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _environment() -> dict[str, object]:
    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "cores": os.cpu_count(),
        "in_container": os.path.exists("/.dockerenv"),
    }


Printer = Callable[[str], None]
