"""One comparison row per implementation, and the checks of the lab's own controls.

Stable API (the compare command calls these; keep the names and meanings):

- `rows_from_run_dir(path) -> list[Row]`: the rows of one `lab compare` run directory,
  sorted broken-first. Raises `ValueError` (one line naming the file) only when the
  directory's summary.json cannot be read; an unreadable per-implementation result file
  becomes an error row.
- `rows_from_groups(groups) -> list[Row]`: the same for merged inputs (lab.report.merge).
- `check_controls(rows) -> ControlCheck`: whether the instrument can be trusted.
  `redis` and `python` must pass every stage with a ghost window of zero; a measured
  window of at most `GHOST_ZERO_MS` (0.2 ms: the sampler's resolution plus scheduling
  jitter) counts as zero. `python-ghost` must be caught: at least one failed stage, and
  every failed handoff classified `ghost`. Controls absent from the rows are only noted
  (a CI shard holds one entry). An entry whose catalog `expected` outcome disagrees with
  what happened is a *surprise*: reported, but it does not fail the controls.
- `render_table(rows, fmt)` lives in lab.report.table.

Row semantics: `backend` comes from the stages' `io_uring` flag (the io_uring fd seen in
/proc/PID/fd): "io_uring" when every flag that is known is true, "posix" when all are
false, "mixed" when both occur, "unknown" when none is known. `ghost_failures` and
`bind_failed_failures` count handoffs of that kind whose stage failed; `ghost_handoffs`
counts every handoff classified ghost (a ghost that happened to pass jm1 included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.report.merge import Group, LoadProblem, load_run_dir, merge

GHOST_ZERO_MS = 0.2
CLEAN_CONTROLS = ("redis", "python")
GHOST_CONTROL = "python-ghost"


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Row:
    """One implementation (on one machine), every merged trial counted."""

    implementation: str  # display label: impl, or "impl @ host" when machines differ
    impl: str
    status: str = "ok"  # ok | error | interrupted
    error: str | None = None
    log_path: str | None = None
    backend: str = "unknown"
    stages_run: int = 0
    stages_passed: int = 0
    trials_run: int = 0
    trials_all_passed: int = 0
    handoffs: int = 0
    handoff_kinds: dict[str, int] = field(default_factory=dict)
    ghost_failures: int = 0
    bind_failed_failures: int = 0
    ghost_handoffs: int = 0
    sigkill_escalations: int = 0
    listeners_outlived_watch: int = 0  # teardowns whose listener was still open at the end
    exit_ms: list[float] = field(default_factory=list)
    listener_gone_ms: list[float] = field(default_factory=list)
    ghost_ms: list[float] = field(default_factory=list)
    expected: str | None = None
    surprise: str | None = None
    runs: int = 0
    notes: list[str] = field(default_factory=list)
    position_stats: dict[int, list[int]] = field(default_factory=dict)  # pos -> [passed, run]

    @property
    def pass_rate(self) -> float | None:
        return self.stages_passed / self.stages_run if self.stages_run else None

    @property
    def is_error(self) -> bool:
        return self.status == "error"

    def stat(self, name: str, how: str) -> float | None:
        values: list[float] = getattr(self, name)
        if how == "median":
            return percentile(values, 50)
        if how == "p95":
            return percentile(values, 95)
        if how == "max":
            return max(values) if values else None
        raise ValueError(f"unknown statistic {how!r}")

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """Plain data for the JSON report (see lab/schema/report.schema.json)."""
        out: dict[str, Any] = {
            "implementation": self.implementation,
            "impl": self.impl,
            "status": self.status,
            "error": self.error,
            "log_path": self.log_path,
            "backend": self.backend,
            "stages_run": self.stages_run,
            "stages_passed": self.stages_passed,
            "pass_rate": self.pass_rate,
            "trials_run": self.trials_run,
            "trials_all_passed": self.trials_all_passed,
            "handoffs": self.handoffs,
            "handoff_kinds": dict(self.handoff_kinds),
            "ghost_failures": self.ghost_failures,
            "bind_failed_failures": self.bind_failed_failures,
            "ghost_handoffs": self.ghost_handoffs,
            "sigkill_escalations": self.sigkill_escalations,
            "listeners_outlived_watch": self.listeners_outlived_watch,
            "sigterm_to_exit_ms": self._summary("exit_ms", ("median", "p95")),
            "sigterm_to_listener_gone_ms": self._summary(
                "listener_gone_ms", ("median", "p95", "max")),
            "ghost_window_ms": self._summary("ghost_ms", ("median", "max")),
            "expected": self.expected,
            "surprise": self.surprise,
            "runs": self.runs,
            "notes": list(self.notes),
            "pass_by_position": {str(p): {"passed": v[0], "run": v[1]}
                                 for p, v in sorted(self.position_stats.items())},
        }
        if samples:
            out["samples"] = {"sigterm_to_exit_ms": self.exit_ms,
                              "sigterm_to_listener_gone_ms": self.listener_gone_ms,
                              "ghost_ms": self.ghost_ms}
        return out

    def _summary(self, name: str, hows: tuple[str, ...]) -> dict[str, Any]:
        values: list[float] = getattr(self, name)
        return {"n": len(values), **{how: self.stat(name, how) for how in hows}}


def backend_of(flags: list[bool | None]) -> str:
    known = {f for f in flags if f is not None}
    if not known:
        return "unknown"
    if known == {True}:
        return "io_uring"
    if known == {False}:
        return "posix"
    return "mixed"


def row_from_group(group: Group) -> Row:
    """Aggregate every trial of every entry in the group."""
    row = Row(implementation=group.label or group.impl, impl=group.impl,
              expected=group.expected, runs=len(group.entries))
    errors = [e for e in group.entries if e.status == "error" or e.load_error]
    for entry in group.entries:
        if entry.status == "interrupted":
            row.notes.append(f"run {entry.run_id} was interrupted (partial trials counted)")
    logs = [e.log_path for e in errors if e.log_path] or [
        e.log_path for e in group.entries if e.log_path]
    row.log_path = logs[0] if logs else None
    if errors:
        first = errors[0]
        row.error = first.error or f"status {first.status} without an error message"
    if not group.suites:
        row.status = "error" if errors else (
            "interrupted" if any(e.status == "interrupted" for e in group.entries) else "error")
        if row.error is None:
            row.error = "no result file"
        return row
    if errors:  # it faulted after writing some stages (timeout, refused ring, killed)
        row.notes.append(f"{len(errors)} of {len(group.entries)} runs failed: {row.error} "
                         f"(log: {row.log_path})")
    flags: list[bool | None] = []
    for trial in group.trials:
        row.trials_run += 1
        if trial.get("all_passed"):
            row.trials_all_passed += 1
        for stage in trial.get("stages", []):
            _count_stage(row, stage, flags)
    row.backend = backend_of(flags)
    if row.listeners_outlived_watch:
        row.notes.append(f"{row.listeners_outlived_watch} listener(s) still open when the teardown "
                         "watch ended (windows unknown, not counted in the medians)")
    return row


def _count_stage(row: Row, stage: dict[str, Any], flags: list[bool | None]) -> None:
    passed = bool(stage.get("passed"))
    row.stages_run += 1
    row.stages_passed += passed
    position = int(stage.get("position") or 0)
    cell = row.position_stats.setdefault(position, [0, 0])
    cell[0] += passed
    cell[1] += 1
    flags.append(stage.get("io_uring"))
    if stage.get("sigkill"):
        row.sigkill_escalations += 1
    teardown = stage.get("teardown")
    if isinstance(teardown, dict):
        # Its windows are unknown (None) and drop out of the statistics, so it is counted.
        row.listeners_outlived_watch += bool(teardown.get("listener_outlived_watch"))
        for key, target in (("sigterm_to_exit_ms", row.exit_ms),
                            ("sigterm_to_listener_gone_ms", row.listener_gone_ms),
                            ("ghost_ms", row.ghost_ms)):
            value = teardown.get(key)
            if isinstance(value, int | float):
                target.append(float(value))
    handoff = stage.get("handoff")
    if isinstance(handoff, dict):
        kind = str(handoff.get("kind") or "unknown")
        row.handoffs += 1
        row.handoff_kinds[kind] = row.handoff_kinds.get(kind, 0) + 1
        if kind == "ghost":
            row.ghost_handoffs += 1
        if not passed:
            if kind == "ghost":
                row.ghost_failures += 1
            elif kind == "bind-failed":
                row.bind_failed_failures += 1


def sort_rows(rows: list[Row]) -> list[Row]:
    """Broken first: errors, then lowest pass rate, then most SIGKILL escalations, then
    the biggest ghost window (median, then max)."""
    def key(row: Row) -> tuple[Any, ...]:
        rate = row.pass_rate if row.pass_rate is not None else -1.0
        # A row that faulted, wholly or after some stages, comes before any that ran clean.
        return (not row.is_error, row.error is None, rate, -row.sigkill_escalations,
                -(row.stat("ghost_ms", "median") or 0.0), -(row.stat("ghost_ms", "max") or 0.0),
                row.implementation)
    return sorted(rows, key=key)


def judge_expected(row: Row) -> str | None:
    """A surprise message when the catalog's `expected` outcome did not happen.

    Understood outcomes: "pass" (every stage passes, no ghost window above zero),
    "ghost" (a failed ghost handoff), "bind-failed", "fail" (some stage fails),
    "sigkill"/"escalation" (some SIGTERM escalates to SIGKILL), "error". Several may be
    joined with "+" or ","; each must hold. Anything else is noted, never a surprise.
    """
    if not row.expected:
        return None
    wanted = [w.strip().lower() for w in row.expected.replace("+", ",").split(",") if w.strip()]
    misses: list[str] = []
    for want in wanted:
        if want == "error":
            ok = row.is_error
        elif row.is_error:
            ok = False
        elif want in ("pass", "passes", "green", "clean"):
            ok = row.pass_rate == 1.0 and (row.stat("ghost_ms", "max") or 0.0) <= GHOST_ZERO_MS
        elif want == "ghost":
            ok = row.ghost_failures > 0
        elif want == "bind-failed":
            ok = row.bind_failed_failures > 0
        elif want in ("fail", "fails", "flaky"):
            ok = row.pass_rate is not None and row.pass_rate < 1.0
        elif want in ("sigkill", "escalation", "escalations"):
            ok = row.sigkill_escalations > 0
        else:
            row.notes.append(f"expected outcome {want!r} not understood by the report")
            continue
        if not ok:
            misses.append(want)
    if not misses:
        return None
    return f"expected {row.expected!r}, observed {describe_outcome(row)}"


def describe_outcome(row: Row) -> str:
    if row.is_error:
        return "an error"
    parts = [f"pass rate {format_rate(row.pass_rate)}"]
    if row.ghost_failures:
        parts.append(f"{row.ghost_failures} ghost failures")
    if row.bind_failed_failures:
        parts.append(f"{row.bind_failed_failures} bind-failed failures")
    if row.sigkill_escalations:
        parts.append(f"{row.sigkill_escalations} SIGKILL escalations")
    return ", ".join(parts)


def format_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}" if rate in (0.0, 1.0) else f"{rate:.1%}"


def rows_from_groups(groups: list[Group]) -> list[Row]:
    rows = [row_from_group(g) for g in groups]
    for row in rows:
        row.surprise = judge_expected(row)
    return sort_rows(rows)


def rows_from_run_dir(path: str | Path) -> list[Row]:
    """Rows of one compare run directory, broken first (see the module docstring)."""
    problems: list[LoadProblem] = []
    run = load_run_dir(Path(path), problems)
    if run is None:
        raise ValueError(problems[0].message if problems else f"{path}: unreadable")
    return rows_from_groups(merge([run]))


@dataclass
class ControlCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)  # a control misbehaved
    surprises: list[str] = field(default_factory=list)  # expected outcome did not happen
    notes: list[str] = field(default_factory=list)  # informative only

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "surprises": self.surprises,
                "notes": self.notes}

    def lines(self) -> list[str]:
        """What to print above the table."""
        out = []
        if self.problems:
            out.append("CONTROLS FAILED: the numbers of this run cannot be trusted")
            out += [f"  - {p}" for p in self.problems]
        out += [f"surprise: {s}" for s in self.surprises]
        out += [f"note: {n}" for n in self.notes]
        return out


def check_controls(rows: list[Row], require: bool = False) -> ControlCheck:
    """Check the controls among `rows` (see the module docstring for the rules).

    With `require`, a control with no row at all is a problem, not a note: a nightly
    whose control job died before writing a shard must not pass its gate.
    """
    check = ControlCheck(ok=True)
    by_impl: dict[str, list[Row]] = {}
    for row in rows:
        by_impl.setdefault(row.impl, []).append(row)
    for name in CLEAN_CONTROLS:
        for row in by_impl.get(name, []):
            check.problems += _clean_control_problems(row)
    for row in by_impl.get(GHOST_CONTROL, []):
        check.problems += _ghost_control_problems(row)
    missing = [n for n in (*CLEAN_CONTROLS, GHOST_CONTROL) if n not in by_impl]
    if missing and require:
        check.problems.append(f"controls missing from these results: {', '.join(missing)} "
                              "(their runs wrote no result)")
    elif missing:
        check.notes.append(f"controls not in these results (not checked): {', '.join(missing)}")
    check.notes.append(f"a ghost window of at most {GHOST_ZERO_MS} ms counts as zero "
                       "(sampler resolution and scheduling jitter)")
    for row in rows:
        if row.surprise:
            check.surprises.append(f"{row.implementation}: {row.surprise}")
    check.ok = not check.problems
    return check


def _clean_control_problems(row: Row) -> list[str]:
    name = row.implementation
    if row.is_error:
        return [f"{name} (control) did not run: {row.error} (log: {row.log_path})"]
    problems = []
    if row.error is not None:  # partial results: the run faulted after some stages
        problems.append(f"{name} (control) faulted: {row.error} (log: {row.log_path})")
    if row.stages_run == 0:
        problems.append(f"{name} (control) ran no stage")
    elif row.stages_passed != row.stages_run:
        problems.append(f"{name} (control) failed {row.stages_run - row.stages_passed} of "
                        f"{row.stages_run} stages; it must pass everything")
    if not row.ghost_ms:
        problems.append(f"{name} (control): no ghost window was measured, so zero cannot be "
                        "confirmed (is the teardown observer working?)")
    elif (worst := max(row.ghost_ms)) > GHOST_ZERO_MS:
        problems.append(f"{name} (control) showed a ghost window of {worst:.2f} ms "
                        f"(> {GHOST_ZERO_MS} ms)")
    if row.ghost_handoffs:
        problems.append(f"{name} (control) had {row.ghost_handoffs} handoffs classified ghost")
    if row.listeners_outlived_watch:
        problems.append(f"{name} (control): {row.listeners_outlived_watch} listener(s) outlived "
                        "the teardown watch")
    return problems


def _ghost_control_problems(row: Row) -> list[str]:
    name = row.implementation
    if row.is_error:
        return [f"{name} (control) did not run: {row.error} (log: {row.log_path})"]
    if row.error is not None:
        return [f"{name} (control) faulted: {row.error} (log: {row.log_path})"]
    failed = row.stages_run - row.stages_passed
    if failed == 0:
        return [f"{name} (control) was not caught: all {row.stages_run} stages passed, "
                "the ghost listener went unnoticed"]
    if row.ghost_failures == 0:
        return [f"{name} (control) failed {failed} stages but no failed handoff was "
                f"classified ghost (kinds: {row.handoff_kinds or 'none'})"]
    other = failed - row.ghost_failures
    if other:
        return [f"{name} (control): {other} of {failed} failed stages were not classified "
                "ghost"]
    return []
