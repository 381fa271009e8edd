"""Run history and baseline comparison: what changed beyond the noise of the samples.

How "beyond noise" is decided (also printed with every comparison, see `RULES`):

- pass rate: stages passed / stages run on each side, each with its 95 % Wilson score
  interval. A change counts only when the two intervals do not overlap (a conservative
  two-proportion rule: 70/70 against 35/70 is a change, 70/70 against 68/70 is noise).
- ghost window: every measured ghost_ms sample of each side, compared with a two-sided
  Mann-Whitney U test (normal approximation, tie-corrected). A change counts only when
  p < 0.01 AND the medians differ by more than 0.2 ms (the zero tolerance of the controls,
  so a statistically clear but physically meaningless shift is not flagged). Each side
  needs at least 5 samples, else "too few samples".
- SIGKILL escalations: escalated stages / stages run, with the same Wilson rule as the
  pass rate.

Direction: a lower pass rate, a longer ghost window or more escalations is a regression;
the opposite is an improvement. Identical inputs never differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.report.aggregate import GHOST_ZERO_MS, Row, format_rate, percentile, rows_from_groups
from lab.report.merge import LoadProblem, Run, find_run_dirs, load_run_dir, merge

Z95 = 1.959963984540054
MWU_ALPHA = 0.01
MIN_SAMPLES = 5
RULES = (
    "noise rule: pass rate and SIGKILL escalation rate change only when their 95% Wilson "
    f"intervals do not overlap; ghost window changes only when a two-sided Mann-Whitney U "
    f"test gives p < {MWU_ALPHA} and the medians differ by more than {GHOST_ZERO_MS} ms "
    f"(at least {MIN_SAMPLES} samples each side)"
)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion; (0, 1) when n is 0."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation with tie
    correction and continuity correction). 1.0 when every value is tied."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    combined = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    n = n1 + n2
    rank_sum_a = 0.0
    tie_term = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and combined[j + 1][0] == combined[i][0]:
            j += 1
        average_rank = (i + j) / 2 + 1
        tied = j - i + 1
        tie_term += tied**3 - tied
        rank_sum_a += average_rank * sum(1 for k in range(i, j + 1) if combined[k][1] == 0)
        i = j + 1
    u = rank_sum_a - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return 1.0
    z = (abs(u - mean) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


@dataclass
class Change:
    metric: str  # pass_rate | ghost_window | escalations
    verdict: str  # regression | improvement | same | no-data
    baseline: str
    current: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Comparison:
    implementation: str
    status: str  # regression | improvement | same | new | gone | no-data
    changes: list[Change] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"implementation": self.implementation, "status": self.status,
                "changes": [c.to_dict() for c in self.changes]}


def _proportion_change(metric: str, base: tuple[int, int], cur: tuple[int, int],
                       higher_is_better: bool) -> Change:
    (bk, bn), (ck, cn) = base, cur
    if bn == 0 or cn == 0:
        return Change(metric, "no-data", f"{bk}/{bn}", f"{ck}/{cn}", "no stages on one side")
    blo, bhi = wilson(bk, bn)
    clo, chi = wilson(ck, cn)
    detail = (f"Wilson 95%: baseline [{blo:.3f}, {bhi:.3f}], current [{clo:.3f}, {chi:.3f}]")
    base_text = f"{bk}/{bn} ({format_rate(bk / bn)})"
    cur_text = f"{ck}/{cn} ({format_rate(ck / cn)})"
    if chi < blo:
        went_up = False
    elif clo > bhi:
        went_up = True
    else:
        return Change(metric, "same", base_text, cur_text, detail + ": overlap, noise")
    better = went_up == higher_is_better
    return Change(metric, "improvement" if better else "regression", base_text, cur_text,
                  detail + ": no overlap")


def _ghost_change(base: list[float], cur: list[float]) -> Change:
    bmed, cmed = percentile(base, 50), percentile(cur, 50)
    base_text = "-" if bmed is None else f"median {bmed:.2f} ms (n={len(base)})"
    cur_text = "-" if cmed is None else f"median {cmed:.2f} ms (n={len(cur)})"
    if len(base) < MIN_SAMPLES or len(cur) < MIN_SAMPLES or bmed is None or cmed is None:
        return Change("ghost_window", "no-data", base_text, cur_text, "too few samples")
    p = mann_whitney_p(base, cur)
    detail = f"Mann-Whitney U p={p:.3g}, median shift {cmed - bmed:+.2f} ms"
    if p >= MWU_ALPHA or abs(cmed - bmed) <= GHOST_ZERO_MS:
        return Change("ghost_window", "same", base_text, cur_text, detail + ": noise")
    verdict = "regression" if cmed > bmed else "improvement"
    return Change("ghost_window", verdict, base_text, cur_text, detail)


def compare_rows(baseline: list[Row], current: list[Row]) -> list[Comparison]:
    """Per implementation: pass rate, ghost window and escalations against the baseline."""
    def keyed(rows: list[Row]) -> dict[str, Row]:
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.impl] = counts.get(r.impl, 0) + 1
        # Match by implementation name unless one side measured it on several machines.
        return {(r.impl if counts[r.impl] == 1 else r.implementation): r for r in rows}

    base, cur = keyed(baseline), keyed(current)
    out: list[Comparison] = []
    for name in sorted(set(base) | set(cur)):
        if name not in base:
            out.append(Comparison(name, "new"))
            continue
        if name not in cur:
            out.append(Comparison(name, "gone"))
            continue
        b, c = base[name], cur[name]
        if b.is_error or c.is_error:
            out.append(Comparison(name, "no-data", [Change(
                "pass_rate", "no-data", "error" if b.is_error else format_rate(b.pass_rate),
                "error" if c.is_error else format_rate(c.pass_rate), "an error row on one side")]))
            continue
        changes = [
            _proportion_change("pass_rate", (b.stages_passed, b.stages_run),
                               (c.stages_passed, c.stages_run), higher_is_better=True),
            _ghost_change(b.ghost_ms, c.ghost_ms),
            _proportion_change("escalations", (b.sigkill_escalations, b.stages_run),
                               (c.sigkill_escalations, c.stages_run), higher_is_better=False),
        ]
        verdicts = {ch.verdict for ch in changes}
        status = ("regression" if "regression" in verdicts else
                  "improvement" if "improvement" in verdicts else "same")
        out.append(Comparison(name, status, changes))
    return out


def regressions(comparisons: list[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.status == "regression"]


def render_comparisons(comparisons: list[Comparison], fmt: str = "table", *,
                       full: bool = False) -> str:
    """Changed metrics per implementation (every metric with `full`), then the noise rule.
    Implementations whose every metric stayed within noise are named on one line."""
    from tabulate import tabulate

    lines = []
    unchanged = []
    for comp in comparisons:
        if comp.status in ("new", "gone"):
            lines.append([comp.implementation, comp.status.upper(), "", "", "", ""])
        if comp.status == "same" and not full:
            unchanged.append(comp.implementation)
            continue
        for ch in comp.changes:
            if ch.verdict == "same" and not full:
                continue
            mark = ch.verdict.upper() if ch.verdict in ("regression", "improvement") else (
                ch.verdict)
            lines.append([comp.implementation, mark, ch.metric, ch.baseline, ch.current,
                          ch.detail])
    flagged = [c.implementation for c in comparisons if c.status == "regression"]
    improved = [c.implementation for c in comparisons if c.status == "improvement"]
    out = [f"regressions beyond noise: {', '.join(flagged) or 'none'}; "
           f"improvements: {', '.join(improved) or 'none'}"]
    if lines:
        out.append(tabulate(lines, headers=["implementation", "verdict", "metric", "baseline",
                                            "current", "test"],
                            tablefmt="github" if fmt == "markdown" else "simple",
                            disable_numparse=True))
    if unchanged:
        out.append(f"within noise on every metric: {', '.join(unchanged)}")
    out.append(RULES)
    return ("\n\n" if fmt == "markdown" else "\n").join(out)


@dataclass
class RunInfo:
    path: Path
    run: Run
    rows: list[Row]

    @property
    def date(self) -> str:
        return str(self.run.summary.get("started_at") or "?")

    @property
    def revision(self) -> str:
        return str(self.run.fingerprint.get("lab_revision") or "?")


def list_runs(results_dir: Path) -> tuple[list[RunInfo], list[LoadProblem]]:
    """Every run directory under `results_dir`, oldest first."""
    problems: list[LoadProblem] = []
    infos = []
    for run_dir in find_run_dirs(results_dir):
        run = load_run_dir(run_dir, problems)
        if run is not None:
            infos.append(RunInfo(run_dir, run, rows_from_groups(merge([run]))))
    infos.sort(key=lambda i: (i.date, i.path.name))
    return infos, problems


def render_history(infos: list[RunInfo],
                   marks: dict[str, dict[str, str]] | None = None) -> str:
    """Rows = runs, one pass-rate column per implementation. `marks[run path][impl]` is a
    suffix such as "!" (regression) or "+" (improvement) against a baseline."""
    from tabulate import tabulate

    impls = sorted({r.impl for i in infos for r in i.rows})
    lines = []
    for info in infos:
        by_impl = {r.impl: r for r in info.rows}
        run_marks = (marks or {}).get(str(info.path), {})
        cells = []
        for impl in impls:
            row = by_impl.get(impl)
            text = "" if row is None else "ERR" if row.is_error else format_rate(row.pass_rate)
            cells.append(text + run_marks.get(impl, ""))
        errors = sum(1 for r in info.rows if r.is_error)
        lines.append([info.run.run_id, info.date, info.revision,
                      f"{len(info.rows)}" + (f" ({errors} err)" if errors else ""), *cells])
    return tabulate(lines, headers=["run", "started", "revision", "entries", *impls],
                    tablefmt="simple", disable_numparse=True)
