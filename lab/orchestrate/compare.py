"""`lab compare`: every implementation's suite in its own container, J at a time.

One run directory per compare (format in SCHEMA.md / the compare contract):
`summary.json`, `<IMPL>.json` mirrored while each suite runs, `logs/<IMPL>.log`.
Faults (a failed build, a container that dies, a harness past its wall-clock limit)
become that entry's error row; the other entries finish. Ctrl-C or SIGTERM stops and
removes every container of the run; a second one forces at once.
"""

from __future__ import annotations

import contextlib
import os
import platform
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import docker.errors
from rich.console import Console
from rich.live import Live
from rich.table import Table

from lab.orchestrate import catalog, images
from lab.orchestrate import clean as clean_mod
from lab.orchestrate.catalog import DEFAULT_PORT
from lab.orchestrate.run import (
    ALL_STAGES,
    RunError,
    RunOutcome,
    RunRequest,
    connect,
    run_container,
    seccomp_for,
    suite_args_from,
    wall_clock_limit,
    write_json_atomic,
)
from lab.report import aggregate
from lab.report import table as report_table

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_VERSION = 1
EXIT_OK, EXIT_PROBLEM, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Entry:
    """What compare needs of a catalog entry (the catalog owns the real records)."""

    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    needs_io_uring: bool
    description: str = ""
    expected: str | None = None


def load_catalog(port: int = DEFAULT_PORT) -> dict[str, Entry]:
    """The catalog's entries, their `{port}` resolved, by name."""
    return {
        name: Entry(name=e.name, image=e.image, command=e.command_for(port), env=dict(e.env),
                    needs_io_uring=e.needs_io_uring, description=e.description,
                    expected=e.expected)
        for name, e in catalog.ENTRIES.items()
    }


def resolve_names(requested: list[str], all_: bool, catalog: dict[str, Entry]) -> list[str]:
    if all_ and requested:
        raise RunError("give either --all or implementation names, not both")
    if all_:
        return list(catalog)
    if not requested:
        raise RunError(f"name implementations or use --all; known: {', '.join(catalog)}")
    unknown = [n for n in requested if n not in catalog]
    if unknown:
        raise RunError(
            f"unknown implementation {', '.join(unknown)}; known: {', '.join(catalog)}"
        )
    return list(dict.fromkeys(requested))


@dataclass
class CompareOptions:
    names: list[str]
    trials: int = 3
    order: str = "descending"
    seed: int | None = None
    jobs: int | None = None
    out: Path | None = None
    fmt: str = "table"
    pin: bool = False
    until: str | None = None
    stages: str | None = None
    timeout_s: float | None = None
    seccomp_profile: str | None = None
    build: bool = True
    argv: list[str] = field(default_factory=lambda: list(sys.argv))

    def validate(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise RunError(f"--jobs must be at least 1 (got {self.jobs})")
        if self.trials < 1:
            raise RunError(f"--trials must be at least 1 (got {self.trials})")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise RunError(f"--timeout must be positive (got {self.timeout_s})")
        if self.fmt not in ("table", "markdown"):
            raise RunError(f"--format must be table or markdown (got {self.fmt})")


# --- the machine fingerprint -------------------------------------------------------

def _command_output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = done.stdout.strip() or done.stderr.strip()
    return out.splitlines()[0] if done.returncode == 0 and out else None


def compose_version() -> str | None:
    """Whichever compose is installed: the v2 plugin first, then docker-compose 1.x."""
    for argv in (["docker", "compose", "version", "--short"],
                 ["docker-compose", "version", "--short"]):
        if shutil.which(argv[0]) is None:
            continue
        out = _command_output(argv)
        if out:
            return f"{argv[0] if argv[0] == 'docker-compose' else 'docker compose'} {out}"
    return None


def lab_revision() -> str | None:
    rev = _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"])
    if rev is None:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    return rev + ("-dirty" if dirty else "")


def fingerprint(client: docker.DockerClient) -> dict[str, Any]:
    try:
        version = client.version()
        docker_version = f"{version.get('Version')} (API {version.get('ApiVersion')})"
    except Exception:  # the fingerprint must not sink a run
        docker_version = None
    return {
        "kernel": platform.release(),
        "docker": docker_version,
        "compose": compose_version(),
        "cores": len(os.sched_getaffinity(0)),
        "lab_revision": lab_revision(),
        "python": platform.python_version(),
        "host": platform.node(),
    }


def image_labels(client: docker.DockerClient, image: str) -> dict[str, str]:

    try:
        return dict(client.images.get(image).labels or {})
    except docker.errors.DockerException:
        return {}


# --- building ----------------------------------------------------------------------

@dataclass
class BuildProblem:
    error: str
    tail: list[str] = field(default_factory=list)
    log_path: Path | None = None


Builder = Callable[[list[str], Callable[[str], None]], dict[str, BuildProblem | None]]


def default_builder(client: docker.DockerClient) -> Builder:
    """Build through lab.orchestrate.images (a failure is an outcome, not an exception).

    Always a build, never "only if missing": the images carry the harness, and an image
    built before an edit would silently run the old one. With nothing changed the layer
    cache makes this about 1 s for all three images (measured: `lab build --all` twice).
    """

    def build(names: list[str], log: Callable[[str], None]) -> dict[str, BuildProblem | None]:
        outcomes = images.ensure_images(names, log=log, client=client)
        return {
            name: None if o.ok else BuildProblem(o.error or "build failed", list(o.tail), o.log_path)
            for name, o in outcomes.items()
        }

    return build


# --- progress ----------------------------------------------------------------------

@dataclass
class Progress:
    name: str
    trials: int
    phase: str = "queued"  # queued | building | running | done | error | interrupted
    trial: int = 0
    stages_run: int = 0
    stages_passed: int = 0
    handoffs: dict[str, int] = field(default_factory=dict)
    started: float | None = None
    ended: float | None = None
    note: str = ""
    cpuset: str | None = None
    last_stage: str = ""  # e.g. "qq0 FAIL (ghost)": the harness saves each stage as the next starts

    def update_from(self, result: dict[str, Any]) -> None:
        summary = result.get("summary", {}) or {}
        trials = result.get("trials", []) or []
        self.trial = len(trials)
        stages = (trials[-1].get("stages") or []) if trials else []
        if stages:
            last = stages[-1]
            verdict = "pass" if last.get("passed") else "FAIL"
            kind = (last.get("handoff") or {}).get("kind")
            self.last_stage = f"{last.get('slug')} {verdict}" + (
                f" ({kind})" if kind and not last.get("passed") else "")
        self.stages_run = int(summary.get("stages_run", 0) or 0)
        self.stages_passed = int(summary.get("stages_passed", 0) or 0)
        self.handoffs = dict(summary.get("handoff_kinds", {}) or {})

    @property
    def failures(self) -> int:
        return self.stages_run - self.stages_passed

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.started

    def line(self) -> str:
        bits = [f"{self.name}: {self.phase}"]
        if self.stages_run:
            bits.append(f"trial {self.trial}/{self.trials}, {self.stages_passed}/"
                        f"{self.stages_run} stages passed, {self.failures} failed")
        if self.last_stage and self.phase == "running":
            bits.append(f"last stage {self.last_stage}")
        if self.note:
            bits.append(self.note)
        return ", ".join(bits)


class ProgressBoard:
    """Live per-implementation progress: a rich table on a terminal, plain event lines
    otherwise (CI logs)."""

    def __init__(self, names: list[str], trials: int, console: Console) -> None:
        self.rows = {n: Progress(n, trials) for n in names}
        self.console = console
        self.lock = threading.Lock()
        self.live_mode = console.is_terminal
        self._live: Any = None

    def __enter__(self) -> ProgressBoard:
        if self.live_mode:

            self._live = Live(self.render(), console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)
            self._live = None

    def render(self) -> Any:

        table = Table(title="lab compare", expand=False)
        for col in ("implementation", "state", "trial", "last stage", "stages passed/run",
                    "failed", "handoffs", "elapsed", "cpu"):
            table.add_column(col)
        with self.lock:
            for p in self.rows.values():
                style = {"error": "red", "interrupted": "yellow", "done": "green"}.get(p.phase)
                handoffs = ", ".join(f"{k} {v}" for k, v in sorted(p.handoffs.items()))
                table.add_row(
                    p.name, p.phase + (f" ({p.note})" if p.note else ""),
                    f"{p.trial}/{p.trials}", p.last_stage, f"{p.stages_passed}/{p.stages_run}",
                    str(p.failures) if p.stages_run else "", handoffs,
                    f"{p.elapsed():.0f} s" if p.started else "", p.cpuset or "",
                    style=style,
                )
        return table

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def event(self, name: str, **changes: Any) -> None:
        with self.lock:
            row = self.rows[name]
            before = (row.phase, row.trial)
            for key, value in changes.items():
                setattr(row, key, value)
            after = (row.phase, row.trial)
            text = row.line()
        if not self.live_mode and before != after:
            self.console.print(text, highlight=False, soft_wrap=True)

    def result(self, name: str, result: dict[str, Any]) -> None:
        with self.lock:
            row = self.rows[name]
            before = row.trial
            row.update_from(result)
            changed = row.trial != before
            text = row.line()
        if not self.live_mode and changed:
            self.console.print(text, highlight=False, soft_wrap=True)

    def say(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, highlight=False, soft_wrap=True)
        else:
            self.console.print(text, highlight=False, soft_wrap=True)


# --- signals -----------------------------------------------------------------------

class StopSwitch:
    """First SIGINT/SIGTERM: stop gracefully (every container gets `docker stop`);
    second: remove every container of the run at once."""

    def __init__(self, client: docker.DockerClient, run_id: str,
                 say: Callable[[str], None]) -> None:
        self.client = client
        self.run_id = run_id
        self.say = say
        self.stop = threading.Event()
        self.forced = threading.Event()
        self.signal_name: str | None = None
        self.building = False  # while True, the first signal interrupts the main thread
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            self.signal_name = name
            self.stop.set()
            if self.building:
                # A build streams in this (main) thread: leave it now; no container runs yet.
                self.say(f"{name}: abandoning the build")
                raise KeyboardInterrupt
            self.say(f"{name}: stopping the run's containers (again to force)")
            return
        if not self.forced.is_set():
            self.forced.set()
            self.say(f"{name} again: removing the run's containers now")
            threading.Thread(target=self.force_remove, daemon=True).start()

    def force_remove(self) -> None:
        with contextlib.suppress(Exception):
            clean_mod.remove_labelled(self.client, run_id=self.run_id)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSwitch]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)


# --- the run -----------------------------------------------------------------------

def new_run_id(base: Path) -> tuple[str, Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id, n = stamp, 1
    while (base / run_id).exists():
        n += 1
        run_id = f"{stamp}-{n}"
    return run_id, base / run_id


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class CompareRun:
    run_id: str
    run_dir: Path
    summary: dict[str, Any]
    outcomes: dict[str, RunOutcome]
    exit_code: int
    table: str = ""
    problems: list[str] = field(default_factory=list)


def run_compare(
    options: CompareOptions,
    catalog: dict[str, Entry],
    *,
    client: docker.DockerClient | None = None,
    builder: Builder | None = None,
    console: Console | None = None,
    results_root: Path | None = None,
) -> CompareRun:

    options.validate()
    console = console or Console(highlight=False, soft_wrap=True)
    client = client or connect()
    jobs = options.jobs or len(os.sched_getaffinity(0))
    seed = options.seed if options.seed is not None else random.randrange(1, 2**31)
    entries = [catalog[n] for n in options.names]
    seccomps = {e.name: seccomp_for(e.needs_io_uring, options.seccomp_profile) for e in entries}

    if options.out is not None:
        run_dir = options.out
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunError(f"--out {run_dir} exists and is not empty; give a new directory")
        run_id = f"{run_dir.name}-{random.randrange(16**6):06x}"
    else:
        run_id, run_dir = new_run_id(results_root or Path("results"))
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    staging_root = run_dir / ".staging"

    cores = sorted(os.sched_getaffinity(0))
    core_pool: queue.Queue[int] | None = None
    if options.pin:
        if len(cores) >= jobs:
            core_pool = queue.Queue()
            for core in cores[:jobs]:
                core_pool.put(core)
        else:
            console.print(f"--pin: {len(cores)} cores for {jobs} jobs, running unpinned "
                          "(use --jobs <= cores to pin)", soft_wrap=True)

    started_at = _utc_now()
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "compare",
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": None,
        "command": options.argv,
        "options": {"trials": options.trials, "order": options.order, "seed": seed,
                    "jobs": jobs, "pin": core_pool is not None,
                    "until": options.until, "stages": options.stages},
        "fingerprint": {},  # filled in by a thread: asking compose its version takes ~1 s
        "entries": {},
        "controls": {"ok": None, "problems": []},
    }
    for e in entries:
        summary["entries"][e.name] = {
            "status": "interrupted", "error": "not run", "image": e.image, "image_labels": {},
            "seccomp": seccomps[e.name].mode, "needs_io_uring": e.needs_io_uring,
            "expected": e.expected, "result_file": None, "log_file": f"logs/{e.name}.log",
            "wall_s": None, "overhead_s": None, "suite_s": None, "cpuset": None,
        }
    write_json_atomic(run_dir / "summary.json", summary)
    summary_lock = threading.Lock()

    def take_fingerprint() -> None:
        found = fingerprint(client)
        with summary_lock:
            summary["fingerprint"] = found
            write_json_atomic(run_dir / "summary.json", summary)

    fingerprint_thread = threading.Thread(target=take_fingerprint, daemon=True)
    fingerprint_thread.start()
    def count(n: int, noun: str) -> str:
        return f"{n} {noun}{'' if n == 1 else 's'}"

    console.print(f"lab compare: {count(len(entries), 'implementation')}, {count(options.trials, 'trial')}, "
                  f"order {options.order}, seed {seed}, {count(jobs, 'job')} -> {run_dir}", soft_wrap=True)

    outcomes: dict[str, RunOutcome] = {}
    board = ProgressBoard([e.name for e in entries], options.trials, console)
    switch = StopSwitch(client, run_id, board.say)
    suite_args = suite_args_from(order=options.order, seed=seed, until=options.until,
                                 stages=options.stages, trials=options.trials)
    n_stages = len(options.stages.split(",")) if options.stages else ALL_STAGES
    timeout_s = options.timeout_s or wall_clock_limit(options.trials, n_stages)

    def job(entry: Entry) -> RunOutcome:
        core = core_pool.get() if core_pool is not None else None
        try:
            board.event(entry.name, phase="running", started=time.monotonic(),
                        cpuset=None if core is None else str(core))
            req = RunRequest(
                impl=entry.name, image=entry.image, server_command=entry.command,
                env=entry.env, needs_io_uring=entry.needs_io_uring, suite_args=suite_args,
                run_id=run_id, staging_dir=staging_root / entry.name,
                log_path=run_dir / "logs" / f"{entry.name}.log",
                result_path=run_dir / f"{entry.name}.json", seccomp=seccomps[entry.name],
                timeout_s=timeout_s, cpuset=None if core is None else str(core),
            )
            outcome = run_container(client, req, stop=switch.stop,
                                    on_progress=lambda r: board.result(entry.name, r))
            phase = "done" if outcome.status == "ok" else outcome.status
            board.event(entry.name, phase=phase, ended=time.monotonic(),
                        note=(outcome.error or "")[:60] if outcome.status != "ok" else "")
            with summary_lock:
                summary["entries"][entry.name]["cpuset"] = req.cpuset
            return outcome
        finally:
            if core is not None and core_pool is not None:
                core_pool.put(core)

    with switch.installed(), board:
        # Build first (what is missing only); a failed build is that entry's row.
        build_errors: dict[str, BuildProblem | None] = {}
        if options.build:
            for e in entries:
                board.event(e.name, phase="building")
            build_log_path = run_dir / "logs" / "build.log"
            board.say(f"building images (cached: seconds; a first run bootstraps the Debian sid base: "
                      f"minutes); log: {build_log_path}")
            with build_log_path.open("a", encoding="utf-8") as build_log:
                def log(line: str) -> None:
                    build_log.write(line.rstrip("\n") + "\n")
                    build_log.flush()
                    # The base's own summary lines ("base method: debootstrap ...", "base
                    # images ready in 130 s") say why a first build takes minutes.
                    if line.startswith(("base method:", "base images ready")):
                        board.say(line.rstrip())
                switch.building = True
                try:
                    build_errors = (builder or default_builder(client))([e.name for e in entries], log)
                except KeyboardInterrupt:
                    build_errors = {}  # every entry is marked interrupted below
                except Exception as exc:  # a failed bootstrap is every row's fault
                    message = " ".join(str(exc).split())[:300] or type(exc).__name__
                    build_errors = {e.name: BuildProblem(message) for e in entries}
                finally:
                    switch.building = False
        runnable: list[Entry] = []
        for e in entries:
            problem = build_errors.get(e.name)
            if problem is not None:
                log_file = run_dir / "logs" / f"{e.name}.log"
                log_file.write_text(
                    f"[lab] build failed: {problem.error}\n"
                    + "".join(f"{line}\n" for line in problem.tail)
                    + (f"[lab] full build log: {problem.log_path}\n" if problem.log_path else ""),
                    encoding="utf-8")
                outcomes[e.name] = RunOutcome(
                    impl=e.name, status="error", error=f"build failed: {problem.error}"[:500],
                    exit_code=None, seccomp=seccomps[e.name].mode, result_path=None,
                    log_path=log_file, wall_s=0.0, overhead_s=None, suite_s=None)
                board.event(e.name, phase="error", note="build failed")
            elif switch.stop.is_set():
                outcomes[e.name] = _not_run(e, seccomps[e.name].mode, run_dir)
                board.event(e.name, phase="interrupted")
            else:
                board.event(e.name, phase="queued")
                runnable.append(e)

        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="lab-compare")
        futures: dict[str, Future[RunOutcome]] = {
            e.name: pool.submit(job, e) for e in sorted(runnable, key=expected_cost, reverse=True)
        }
        try:
            while not all(f.done() for f in futures.values()):
                if switch.forced.is_set():
                    break
                time.sleep(0.25)
                board.refresh()
        finally:
            pool.shutdown(wait=not switch.forced.is_set(), cancel_futures=True)
        for e in runnable:
            f = futures[e.name]
            if f.done() and not f.cancelled() and f.exception() is None:
                outcomes[e.name] = f.result()
            elif f.done() and not f.cancelled():
                exc = f.exception()
                outcomes[e.name] = RunOutcome(
                    impl=e.name, status="error", error=f"lab failed running it: {exc}"[:500],
                    exit_code=None, seccomp=seccomps[e.name].mode, result_path=None,
                    log_path=run_dir / "logs" / f"{e.name}.log", wall_s=0.0,
                    overhead_s=None, suite_s=None)
            else:
                outcomes[e.name] = _not_run(e, seccomps[e.name].mode, run_dir)
                board.event(e.name, phase="interrupted")

    # Whatever happened above, nothing of this run may stay behind.
    removed = clean_mod.remove_labelled(client, run_id=run_id)
    if removed:
        console.print(f"removed {len(removed)} leftover resources of run {run_id}", soft_wrap=True)
    with contextlib.suppress(OSError):
        shutil.rmtree(staging_root)

    fingerprint_thread.join(timeout=30)
    for e in entries:
        o = outcomes[e.name]
        record = summary["entries"][e.name]
        record.update({
            "status": o.status, "error": o.error,
            "image_labels": image_labels(client, e.image),
            "result_file": o.result_path.name if o.result_path is not None else None,
            "wall_s": o.wall_s, "overhead_s": o.overhead_s, "suite_s": o.suite_s,
            "overhead_parts": o.overhead_parts,
        })
    summary["finished_at"] = _utc_now()
    interrupted = switch.stop.is_set()

    # The summary must be on disk before the report reads the run directory.
    write_json_atomic(run_dir / "summary.json", summary)
    check = check_controls(run_dir)
    problems = list(check.problems)
    summary["controls"] = check.to_dict()
    write_json_atomic(run_dir / "summary.json", summary)

    table = render(run_dir, options.fmt)
    for line in check.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True,
                      style="bold red" if problems and not line.startswith("note") else None)
    console.print(table, highlight=False, markup=False, soft_wrap=True)
    for e in entries:
        o = outcomes[e.name]
        if o.status != "ok":
            console.print(f"{e.name}: {o.status}: {o.error} (log: {o.log_path})",
                          highlight=False, markup=False)
    console.print(f"results: {run_dir}", highlight=False, soft_wrap=True)

    if interrupted:
        code = EXIT_INTERRUPTED
    elif problems or any(o.status != "ok" for o in outcomes.values()):
        code = EXIT_PROBLEM
    else:
        code = EXIT_OK
    return CompareRun(run_id, run_dir, summary, outcomes, code, table, problems)


def expected_cost(entry: Entry) -> int:
    """Longest first, so J slots finish together: a SIGKILL escalation costs the tester's
    2 s grace, a ghost handoff the client's 2 s read timeout; the rest are quick."""
    return {"sigkill": 2, "ghost": 1}.get(entry.expected or "", 0)


def _not_run(e: Entry, seccomp_mode: str, run_dir: Path) -> RunOutcome:
    """An entry cut short by an interruption; what its suite had written is kept."""
    result = run_dir / f"{e.name}.json"
    started = result.is_file()
    return RunOutcome(
        impl=e.name, status="interrupted",
        error="interrupted while running (forced)" if started else "interrupted before it ran",
        exit_code=None, seccomp=seccomp_mode, result_path=result if started else None,
        log_path=run_dir / "logs" / f"{e.name}.log", wall_s=0.0, overhead_s=None, suite_s=None)


# --- the table and the controls (lab.report owns them) -----------------------------

def render(run_dir: Path, fmt: str) -> str:

    return report_table.render_table(aggregate.rows_from_run_dir(run_dir), fmt)


def check_controls(run_dir: Path) -> Any:
    """lab.report.aggregate's ControlCheck for this run directory."""

    return aggregate.check_controls(aggregate.rows_from_run_dir(run_dir))
