"""Result records of a suite run: plain dataclasses serialised to JSON.

The schema is documented in SCHEMA.md at the top of the repository; bump
SCHEMA_VERSION on any incompatible change. Standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class TimelineEvent:
    """One event of a handoff, `t_us` microseconds after the previous stage's SIGTERM
    (or after the new server's start when there was no previous stage)."""

    t_us: int
    event: str
    detail: str = ""


@dataclass
class Teardown:
    """What the kernel did after SIGTERM: all offsets in ms from the SIGTERM."""

    sigterm_to_exit_ms: float
    sigterm_to_listener_gone_ms: float | None
    ghost_ms: float | None
    sigkill: bool
    listener_seen: bool = False
    listener_inodes: list[int] = field(default_factory=list)
    samples: int = 0
    # The old listener was still in LISTEN when the watch ended (its deadline passed), so
    # the windows above are unknown, not small: a server that leaves a listener behind.
    listener_outlived_watch: bool = False


@dataclass
class Handoff:
    """How the first dial of a stage (after the first stage of a trial) was served."""

    kind: str  # refused | ghost | bind-failed | direct | unknown
    evidence: dict[str, Any] = field(default_factory=dict)
    timeline: list[TimelineEvent] = field(default_factory=list)


@dataclass
class StageResult:
    slug: str
    title: str
    position: int  # 1-based position within its trial
    passed: bool
    error: str | None  # the tester's message, verbatim
    diagnosis: str | None  # the lab's precise cause (EOF vs reset vs silence, and when)
    duration_ms: float
    server_output: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    exit_code: int | None = None
    sigkill: bool = False
    io_uring: bool | None = None
    first_connect_ms: float | None = None  # from the server's exec to the first accepted dial
    teardown: Teardown | None = None
    handoff: Handoff | None = None


@dataclass
class TrialResult:
    index: int
    order: list[str]
    stages: list[StageResult] = field(default_factory=list)

    @property
    def all_passed(self) -> bool:
        return len(self.stages) == len(self.order) and all(s.passed for s in self.stages)


@dataclass
class RunResult:
    command: list[str]
    port: int
    order: str
    seed: int
    stages: list[str]
    trials_requested: int
    fail_fast: bool
    started_at: str
    finished_at: str | None = None
    complete: bool = False
    interrupted: bool = False
    trials: list[TrialResult] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        stages = [s for t in self.trials for s in t.stages]
        passed = sum(1 for s in stages if s.passed)
        kinds: dict[str, int] = {}
        for s in stages:
            if s.handoff is not None:
                kinds[s.handoff.kind] = kinds.get(s.handoff.kind, 0) + 1
        return {
            "stages_run": len(stages),
            "stages_passed": passed,
            "pass_rate": (passed / len(stages)) if stages else None,
            "trials_run": len(self.trials),
            "trials_all_passed": sum(1 for t in self.trials if t.all_passed),
            "sigkill_escalations": sum(1 for s in stages if s.sigkill),
            "handoff_kinds": kinds,
        }

    def to_json(self) -> dict[str, Any]:
        trials = []
        for t in self.trials:
            d = asdict(t)
            d["all_passed"] = t.all_passed
            trials.append(d)
        body = {k: v for k, v in asdict(self).items() if k != "trials"}
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "suite",
            **body,
            "summary": self.summary(),
            "trials": trials,
        }


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Write JSON so a reader (or a crash) never sees a half-written file."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".lab-", suffix=".json", dir=directory)
    try:
        # mkstemp makes 0600; inside a container the harness runs as uid 1000 and the
        # host reads the staged file as whoever runs the lab (a CI runner is uid 1001).
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
