"""Everything one report shows, computed once for all output formats."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.report.aggregate import ControlCheck, Row, check_controls, rows_from_groups
from lab.report.history import Comparison, compare_rows
from lab.report.merge import Group, LoadProblem, Run, load_inputs, merge

REPORT_SCHEMA_VERSION = 1


# The image labels `lab build` writes (lab.version.NAME), in the order a reader wants them.
VERSION_LABELS = ("ocaml", "eio", "uring", "lwt", "dune", "python", "redis")
IMAGE_COLUMNS = ["implementation", "image", "seccomp", "versions (image labels)", "lab revision"]

@dataclass
class HandoffExample:
    """One stage's handoff, to be drawn or printed as a timeline."""

    label: str  # the implementation it comes from
    run_id: str
    trial: int
    stage: dict[str, Any]

    @property
    def title(self) -> str:
        s = self.stage
        kind = (s.get("handoff") or {}).get("kind", "?")
        verdict = "passed" if s.get("passed") else "FAILED"
        return (f"{self.label}: run {self.run_id} trial {self.trial} stage {s.get('slug')} "
                f"(position {s.get('position')}) {verdict}, handoff {kind}")

    @property
    def events(self) -> list[dict[str, Any]]:
        return list((self.stage.get("handoff") or {}).get("timeline") or [])


@dataclass
class Report:
    inputs: list[Path]
    runs: list[Run]
    problems: list[LoadProblem]
    groups: list[Group]
    rows: list[Row]
    controls: ControlCheck
    baseline_inputs: list[Path] = field(default_factory=list)
    baseline_rows: list[Row] | None = None
    comparisons: list[Comparison] | None = None
    generated_at: str = ""

    def group(self, row: Row) -> Group | None:
        for g in self.groups:
            if g.label == row.implementation:
                return g
        return None

    def images(self) -> list[list[str]]:
        """Per row: the image, the seccomp mode it ran under and the versions its labels
        record (what a runtime's maintainer asks first). Header is IMAGE_COLUMNS."""
        out = []
        for row in self.rows:
            group = self.group(row)
            metas = [e.meta for e in group.entries if e.meta] if group else []
            if not metas:
                continue
            meta = metas[-1]
            labels = meta.get("image_labels") or {}
            versions = ", ".join(f"{name} {labels[f'lab.version.{name}']}" for name in VERSION_LABELS
                                 if labels.get(f"lab.version.{name}") not in (None, "", "unknown"))
            seccomp = ", ".join(dict.fromkeys(str(m.get("seccomp") or "-") for m in metas))
            out.append([row.implementation, str(meta.get("image") or "-"), seccomp, versions or "-",
                        str(labels.get("lab.revision") or "-")])
        return out

    def reproduce_commands(self) -> list[str]:
        """The commands that produced the inputs (distinct), then this report's own."""
        seen: list[str] = []
        for run in self.runs:
            argv = run.summary.get("command")
            if isinstance(argv, list) and argv:
                text = shlex.join(str(a) for a in argv)
                if text not in seen:
                    seen.append(text)
        return seen

    def machines(self) -> list[dict[str, Any]]:
        """Distinct fingerprints, with the runs measured on each."""
        out: dict[str, dict[str, Any]] = {}
        for run in self.runs:
            fp = run.fingerprint
            key = repr(sorted(fp.items()))
            out.setdefault(key, {"fingerprint": fp, "runs": []})["runs"].append(run.run_id)
        return list(out.values())

    def handoff_examples(self, row: Row) -> tuple[HandoffExample | None,
                                                  HandoffExample | None]:
        """A failing handoff of `row` (a ghost first) and a passing one beside it: of the
        same implementation when it has one, else of a clean control."""
        group = self.group(row)
        if group is None:
            return None, None
        failing = _find_handoff(group, passed=False)
        passing = _find_handoff(group, passed=True)
        if passing is None:
            for other in sorted(self.groups, key=lambda g: g.impl not in ("redis", "python")):
                if other is not group and (passing := _find_handoff(other, passed=True)):
                    break
        return failing, passing


def _find_handoff(group: Group, *, passed: bool) -> HandoffExample | None:
    fallback = None
    for entry in group.entries:
        for trial in (entry.suite or {}).get("trials", []):
            for stage in trial.get("stages", []):
                handoff = stage.get("handoff")
                if not isinstance(handoff, dict) or bool(stage.get("passed")) != passed:
                    continue
                if not handoff.get("timeline"):
                    continue
                example = HandoffExample(group.label, entry.run_id, int(trial.get("index", 0)),
                                         stage)
                # A refused dial is the typical passing handoff; a ghost the typical failure.
                if handoff.get("kind") == ("refused" if passed else "ghost"):
                    return example
                fallback = fallback or example
    return fallback


def build_report(inputs: list[Path], baseline: list[Path] | None = None,
                 require_controls: bool = False) -> Report:
    runs, problems = load_inputs(inputs)
    groups = merge(runs)
    rows = rows_from_groups(groups)
    report = Report(inputs=inputs, runs=runs, problems=problems, groups=groups, rows=rows,
                    controls=check_controls(rows, require=require_controls),
                    generated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    if baseline:
        base_runs, base_problems = load_inputs(baseline)
        report.problems += [LoadProblem(p.path, f"baseline: {p.message}") for p in base_problems]
        report.baseline_inputs = list(baseline)
        if base_runs:
            report.baseline_rows = rows_from_groups(merge(base_runs))
            report.comparisons = compare_rows(report.baseline_rows, rows)
    return report


def report_json(report: Report) -> dict[str, Any]:
    """The merged data of the JSON report (lab/schema/report.schema.json)."""
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "report",
        "generated_at": report.generated_at,
        "inputs": [
            {"path": str(run.path), "run_id": run.run_id,
             "started_at": run.summary.get("started_at"),
             "command": run.summary.get("command"), "fingerprint": run.fingerprint,
             "entries": sorted(run.entries)}
            for run in report.runs
        ],
        "problems": [{"path": str(p.path), "message": p.message} for p in report.problems],
        "controls": report.controls.to_dict(),
        "rows": [r.to_dict() for r in report.rows],
        "baseline": None if report.comparisons is None else {
            "inputs": [str(p) for p in report.baseline_inputs],
            "comparisons": [c.to_dict() for c in report.comparisons],
        },
    }
