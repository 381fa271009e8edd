"""A markdown report ready to paste into an issue on a runtime's tracker."""

from __future__ import annotations

import shlex

from lab.report.build import IMAGE_COLUMNS, HandoffExample, Report
from lab.report.history import render_comparisons
from lab.report.table import render_table


def _esc(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def timeline_table(failing: HandoffExample | None, passing: HandoffExample | None) -> str:
    """The two timelines side by side: one event per line, times in ms after SIGTERM."""
    left = failing.events if failing else []
    right = passing.events if passing else []
    lines = ["| failing: t (ms) | event | passing: t (ms) | event |",
             "|---:|---|---:|---|"]
    for i in range(max(len(left), len(right))):
        cells = []
        for events in (left, right):
            if i < len(events):
                ev = events[i]
                detail = f" ({ev['detail']})" if ev.get("detail") else ""
                cells += [f"{float(ev.get('t_us', 0)) / 1000:.3f}",
                          _esc(f"{ev.get('event')}{detail}")]
            else:
                cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: Report, command: list[str] | None = None) -> str:
    out = ["# handoff-lab comparison", ""]
    if not report.controls.ok:
        out += ["> **Controls failed: the numbers of this report cannot be trusted.**", ""]
    for line in report.controls.lines():
        out.append(f"- {_esc(line.strip().lstrip('- '))}")
    for problem in report.problems:
        out.append(f"- input error: {_esc(problem.message)}")
    out += ["", render_table(report.rows, "markdown"), "",
            "Times in ms after SIGTERM; ghost window = how long the listening socket outlived "
            "the process. Rows: broken first.", ""]
    if report.comparisons is not None:
        out += ["## Against the baseline", "",
                f"Baseline: {', '.join(f'`{p}`' for p in report.baseline_inputs)}", "",
                render_comparisons(report.comparisons, "markdown"), ""]
    out += ["## Machine", ""]
    for machine in report.machines():
        fp = machine["fingerprint"]
        out.append(f"Runs {', '.join(machine['runs'])}:")
        out.append("")
        out += ["| field | value |", "|---|---|"]
        out += [f"| {_esc(k)} | {_esc(v)} |" for k, v in sorted(fp.items())]
        out.append("")
    if images := report.images():
        out += ["## Images", "", "| " + " | ".join(IMAGE_COLUMNS) + " |",
                "|" + "---|" * len(IMAGE_COLUMNS)]
        out += ["| " + " | ".join(_esc(cell) for cell in line) + " |" for line in images]
        out.append("")
    out += ["## Reproduce", "", "```sh"]
    out += report.reproduce_commands()
    if command:
        out.append(shlex.join(command))
    out += ["```", ""]
    failing_rows = [r for r in report.rows if r.ghost_failures or r.bind_failed_failures
                    or (r.handoffs and r.stages_passed < r.stages_run)]
    if failing_rows:
        out += ["## Handoff timelines", ""]
    for row in failing_rows:
        failing, passing = report.handoff_examples(row)
        if failing is None:
            continue
        out += [f"### {row.implementation}", "",
                f"- failing: {_esc(failing.title)}"]
        if failing.stage.get("error"):
            out.append(f"  - tester: `{_esc(failing.stage['error'])}`")
        if failing.stage.get("diagnosis"):
            out.append(f"  - lab: {_esc(failing.stage['diagnosis'])}")
        out.append(f"- passing: {_esc(passing.title) if passing else 'none found'}")
        out += ["", timeline_table(failing, passing), ""]
    return "\n".join(out).rstrip() + "\n"
