"""Synthetic compare run directories, in exactly the documented format.

Real runs come from `lab compare`; until those exist (and for tests and benchmarks that
must not need Docker) this module writes `results/<run id>/summary.json`, `<IMPL>.json`
and `logs/<IMPL>.log` built from the harness's own result dataclasses
(lab.harness.results), so the files cannot drift from the schema the harness writes.

Each implementation follows a `Profile`: how often a handoff lands on a ghost listener,
how long the listener outlives the process, whether SIGTERM escalates to SIGKILL. The
numbers follow FACTS.md section 3 (io_uring listener gone ~5 ms after SIGTERM, posix
~0.3 ms). Everything is driven by a seeded random generator: same seed, same files.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab.harness.results import (
    Handoff,
    RunResult,
    StageResult,
    Teardown,
    TimelineEvent,
    TrialResult,
    write_json_atomic,
)

# Course order of the CodeCrafters Redis stages (FACTS.md section 2).
STAGES = ["jm1", "rg2", "wy1", "zu2", "qq0", "la7", "yz1"]
TITLES = {
    "jm1": "Bind to a port",
    "rg2": "Respond to PING",
    "wy1": "Respond to multiple PINGs",
    "zu2": "Handle concurrent clients",
    "qq0": "Implement the ECHO command",
    "la7": "Implement the SET & GET commands",
    "yz1": "Expiry",
}
# Stages that leave their clients connected while the server is killed.
CLIENTS_LEFT_OPEN = {"rg2", "wy1", "zu2"}
GHOST_ERROR = 'Received: "" (no content received)'


@dataclass(frozen=True)
class Profile:
    """How one synthetic implementation behaves."""

    io_uring: bool | None = False
    exit_ms: float = 0.3  # SIGTERM -> reaped, typical
    ghost_ms: float = 0.0  # listener outlives the process by about this much
    ghost_probability: float = 0.0  # chance that a handoff dials into the ghost
    bind_failed_probability: float = 0.0  # chance the next server cannot bind
    sigkill_open_clients: bool = False  # graceful shutdown waits for connected clients
    expected: str | None = "pass"
    needs_io_uring: bool = False
    status: str = "ok"  # ok | error | interrupted
    error: str | None = None


PROFILES: dict[str, Profile] = {
    "eio-uring": Profile(
        io_uring=True, ghost_ms=4.9, ghost_probability=0.9, expected="ghost",
        needs_io_uring=True,
    ),
    "eio-posix": Profile(),
    "eio-uring-graceful": Profile(
        io_uring=True, ghost_ms=4.5, ghost_probability=0.3, sigkill_open_clients=True,
        expected="sigkill", needs_io_uring=True,
    ),
    "eio-posix-graceful": Profile(sigkill_open_clients=True, expected="sigkill"),
    "eio-uring-prompt": Profile(io_uring=True, needs_io_uring=True),
    "eio-uring-reuseport": Profile(
        io_uring=True, ghost_ms=4.8, ghost_probability=0.45, expected="ghost",
        needs_io_uring=True,
    ),
    "lwt": Profile(),
    "lwt-graceful": Profile(),
    "python": Profile(),
    "python-ghost": Profile(ghost_ms=6.0, ghost_probability=1.0, expected="ghost"),
    "redis": Profile(),
}

DEFAULT_FINGERPRINT: dict[str, Any] = {
    "kernel": "6.18.0-synthetic",
    "docker": "20.10.24",
    "compose": "docker-compose version 1.29.2",
    "cores": 2,
    "lab_revision": "synthetic",
    "python": "3.11.2",
    "host": "synth-host",
}


def descending_order(current: str = "yz1") -> list[str]:
    """`codecrafters test`: the current stage first, then each earlier one down to jm1."""
    return list(reversed(STAGES[: STAGES.index(current) + 1]))


def _timeline(kind: str, exit_ms: float, gone_ms: float, rng: random.Random) -> list[
    TimelineEvent
]:
    """Events of a handoff, microseconds after the previous stage's SIGTERM."""
    reaped = int(exit_ms * 1000)
    gone = int(gone_ms * 1000)
    start = reaped + rng.randint(30, 80)
    dial = start + rng.randint(40, 120)
    events = [
        TimelineEvent(0, "sigterm", "previous server"),
        TimelineEvent(reaped, "reaped", "previous server exited"),
        TimelineEvent(start, "next-start", "new server exec'd"),
        TimelineEvent(dial, "dial", "tester connects"),
    ]
    if kind == "ghost":
        events += [
            TimelineEvent(dial + 40, "connected", "handshake completed by the dying listener"),
            TimelineEvent(dial + 90, "sent", "*1\\r\\n$4\\r\\nPING\\r\\n"),
            TimelineEvent(max(gone, dial + 150), "listener-gone", "old LISTEN socket closed"),
            TimelineEvent(max(gone, dial + 150) + 20, "reset", "connection reset by peer"),
            TimelineEvent(max(gone, dial + 150) + 400, "listening", "new server bound"),
        ]
    elif kind == "bind-failed":
        events += [
            TimelineEvent(dial + 40, "connected", "dying listener"),
            TimelineEvent(dial + 60, "bind-failed", "EADDRINUSE"),
            TimelineEvent(max(gone, dial + 150), "listener-gone", "old LISTEN socket closed"),
            TimelineEvent(max(gone, dial + 150) + 20, "reset", "connection reset by peer"),
        ]
    else:
        # A refused dial happens only once the old listener is gone.
        dial = max(dial, gone + rng.randint(20, 60))
        events[3] = TimelineEvent(dial, "dial", "tester connects")
        events.insert(2, TimelineEvent(gone, "listener-gone", "old LISTEN socket closed"))
        events += [
            TimelineEvent(dial + 30, "refused", "nothing listening yet; retry in 100 ms"),
            TimelineEvent(dial + 300, "listening", "new server bound"),
            TimelineEvent(dial + 100_000, "connected", "new server accepted"),
        ]
    events.sort(key=lambda e: e.t_us)
    return events


def synth_suite(
    profile: Profile, trials: int, seed: int, *, order: list[str] | None = None
) -> RunResult:
    """One suite run of `trials` trials; fail-fast like the tester (stops at a failure)."""
    rng = random.Random(seed)
    order = order or descending_order()
    run = RunResult(
        command=["synthetic-server", "--port", "6379"],
        port=6379,
        order="descending",
        seed=seed,
        stages=list(order),
        trials_requested=trials,
        fail_fast=True,
        started_at="2026-12-03T21:15:00Z",
        finished_at="2026-12-03T21:20:00Z",
        complete=True,
        environment={"synthetic": True},
    )
    for index in range(trials):
        trial = TrialResult(index=index, order=list(order))
        for position, slug in enumerate(order, start=1):
            handoff = None
            passed = True
            error = None
            diagnosis = None
            if position > 1:
                roll = rng.random()
                if roll < profile.bind_failed_probability:
                    kind = "bind-failed"
                elif roll < profile.bind_failed_probability + profile.ghost_probability:
                    kind = "ghost"
                else:
                    kind = "refused"
                prev = trial.stages[-1].teardown
                assert prev is not None
                timeline = _timeline(
                    kind,
                    prev.sigterm_to_exit_ms,
                    prev.sigterm_to_listener_gone_ms or prev.sigterm_to_exit_ms,
                    rng,
                )
                handoff = Handoff(kind=kind, evidence={"synthetic": True}, timeline=timeline)
                if kind != "refused":
                    passed = False
                    error = GHOST_ERROR if kind == "ghost" else "bind: address already in use"
                    diagnosis = f"{kind}: the previous server's listener was still open"
            sigkill = profile.sigkill_open_clients and slug in CLIENTS_LEFT_OPEN
            exit_ms = 2000.0 + rng.uniform(1, 5) if sigkill else rng.lognormvariate(0, 0.3) * (
                profile.exit_ms
            )
            ghost = max(0.0, rng.gauss(profile.ghost_ms, profile.ghost_ms * 0.25)) if (
                profile.ghost_ms
            ) else rng.uniform(0.0, 0.05)
            teardown = Teardown(
                sigterm_to_exit_ms=round(exit_ms, 3),
                sigterm_to_listener_gone_ms=round(exit_ms + ghost, 3),
                ghost_ms=round(ghost, 3),
                sigkill=sigkill,
                listener_seen=True,
                listener_inodes=[1_000_000 + index * 10 + position],
                samples=rng.randint(20, 200),
            )
            trial.stages.append(
                StageResult(
                    slug=slug,
                    title=TITLES[slug],
                    position=position,
                    passed=passed,
                    error=error,
                    diagnosis=diagnosis,
                    duration_ms=round(rng.uniform(5, 120), 2),
                    server_output=["[your_program] listening on 6379"],
                    log=[f"[tester::#{slug}] Running tests for Stage #{position}"],
                    exit_code=-9 if sigkill else 0,
                    sigkill=sigkill,
                    io_uring=profile.io_uring,
                    teardown=teardown,
                    handoff=handoff,
                )
            )
            if not passed:
                break
        run.trials.append(trial)
    return run


def write_run_dir(
    root: Path,
    run_id: str = "20261203T211500Z",
    *,
    impls: list[str] | None = None,
    trials: int = 5,
    seed: int = 1,
    profiles: dict[str, Profile] | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Path:
    """Write one compare run directory `root/run_id` and return its path.

    `profiles` overrides or adds to PROFILES; an entry whose profile has status "error"
    gets no result file, only an error and a log, as a failed build does in `lab compare`.
    """
    table = {**PROFILES, **(profiles or {})}
    names = impls if impls is not None else list(PROFILES)
    run_dir = root / run_id
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    for offset, name in enumerate(names):
        profile = table[name]
        log_file = f"logs/{name}.log"
        (run_dir / log_file).write_text(f"synthetic container output of {name}\n")
        result_file = None
        if profile.status != "error":
            result_file = f"{name}.json"
            suite = synth_suite(profile, trials, seed * 1000 + offset)
            suite.interrupted = profile.status == "interrupted"
            write_json_atomic(str(run_dir / result_file), suite.to_json())
        entries[name] = {
            "status": profile.status,
            "error": profile.error,
            "image": f"handoff-lab/{name}:synthetic",
            "image_labels": {"lab.revision": "synthetic"},
            "seccomp": "unconfined" if profile.needs_io_uring else "default",
            "needs_io_uring": profile.needs_io_uring,
            "expected": profile.expected,
            "result_file": result_file,
            "log_file": log_file,
            "wall_s": round(trials * 0.8, 2),
            "overhead_s": 0.4,
        }
    summary = {
        "schema_version": 1,
        "kind": "compare",
        "run_id": run_id,
        "started_at": _iso_from_run_id(run_id),
        "finished_at": _iso_from_run_id(run_id),
        "command": ["lab", "compare", *names, "--trials", str(trials), "--seed", str(seed)],
        "options": {"trials": trials, "order": "descending", "seed": seed, "jobs": 2,
                    "pin": False},
        "fingerprint": {**DEFAULT_FINGERPRINT, **(fingerprint or {})},
        "entries": entries,
        "controls": {"ok": True, "problems": []},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return run_dir


def _iso_from_run_id(run_id: str) -> str:
    """20261203T211500Z -> 2026-12-03T21:15:00Z (other ids: a fixed date)."""
    if len(run_id) == 16 and run_id[8] == "T" and run_id.endswith("Z"):
        d, t = run_id[:8], run_id[9:15]
        return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}Z"
    return "2026-12-03T21:15:00Z"


def with_profile(name: str, **changes: Any) -> dict[str, Profile]:
    """A `profiles` override changing some fields of one built-in profile."""
    return {name: replace(PROFILES[name], **changes)}
