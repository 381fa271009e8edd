"""One self-contained HTML file: no script, no stylesheet or image fetched from anywhere;
every plot is an inline base64 PNG, so the file opens offline and travels as one artifact.
"""

from __future__ import annotations

import base64
import html
import shlex

from lab.report import plots
from lab.report.build import IMAGE_COLUMNS, Report
from lab.report.table import HEADERS, cells

MAX_TIMELINES = 8  # one picture per failing implementation, at most this many

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.error td { background: #fbd5d5; }
tr.broken td { background: #fdecc8; }
tr.ok td { background: #e6f4e6; }
.banner { padding: 0.6em 1em; margin: 0.5em 0; border-radius: 4px; }
.bad { background: #fbd5d5; border: 1px solid #c00; }
.good { background: #e6f4e6; border: 1px solid #393; }
.note { color: #555; font-size: 13px; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; border: 1px solid #ddd; }
code, pre { background: #f6f6f6; padding: 2px 4px; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(headers: list[str], body: list[list[str]], row_classes: list[str] | None = None,
           table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    lines = []
    for i, line in enumerate(body):
        cls = f' class="{row_classes[i]}"' if row_classes else ""
        lines.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in line)
                     + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def render_html(report: Report, command: list[str] | None = None) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>handoff-lab report</title><style>{STYLE}</style></head><body>",
             "<h1>handoff-lab comparison</h1>",
             f"<p class='note'>generated {esc(report.generated_at)} from "
             f"{len(report.runs)} run(s): {esc(', '.join(r.run_id for r in report.runs))}</p>"]
    controls = report.controls
    if controls.ok:
        parts.append("<div class='banner good' id='controls'>Controls passed.</div>")
    else:
        parts.append("<div class='banner bad' id='controls'><b>Controls failed: the numbers "
                     "of this report cannot be trusted.</b><ul>"
                     + "".join(f"<li>{esc(p)}</li>" for p in controls.problems) + "</ul></div>")
    extra = [f"surprise: {s}" for s in controls.surprises] + [
        f"input error: {p.message}" for p in report.problems] + controls.notes
    if extra:
        parts.append("<ul class='note'>" + "".join(f"<li>{esc(x)}</li>" for x in extra)
                     + "</ul>")

    classes = ["error" if r.is_error else "broken" if (r.pass_rate or 0) < 1
               or r.sigkill_escalations or r.surprise else "ok" for r in report.rows]
    parts += ["<h2>Table</h2>",
              _table([h.replace("\n", " ") for h in HEADERS], [cells(r) for r in report.rows],
                     classes, table_id="comparison"),
              "<p class='note'>Times in ms after SIGTERM. Rows: broken first.</p>"]

    if report.comparisons is not None:
        from lab.report.history import RULES

        changed = [c for c in report.comparisons if c.status != "same"]
        same = [c.implementation for c in report.comparisons if c.status == "same"]
        lines = [[c.implementation, ch.verdict, ch.metric, ch.baseline, ch.current, ch.detail]
                 for c in changed for ch in c.changes if ch.verdict != "same"]
        lines += [[c.implementation, c.status, "", "", "", ""] for c in changed
                  if c.status in ("new", "gone")]
        flagged = [c.implementation for c in report.comparisons if c.status == "regression"]
        parts += ["<h2>Against the baseline</h2>",
                  f"<p class='note'>{esc(', '.join(str(p) for p in report.baseline_inputs))}"
                  "</p>",
                  f"<div class='banner {'bad' if flagged else 'good'}' id='regressions'>"
                  f"regressions beyond noise: {esc(', '.join(flagged) or 'none')}</div>"]
        if lines:
            parts.append(_table(["implementation", "verdict", "metric", "baseline", "current",
                                 "test"], lines,
                                ["broken" if x[1] == "regression" else "ok" for x in lines],
                                table_id="baseline"))
        if same:
            parts.append(f"<p class='note'>within noise on every metric: "
                         f"{esc(', '.join(same))}</p>")
        parts.append(f"<p class='note'>{esc(RULES)}</p>")

    parts += ["<h2>Teardown windows</h2>", _img(plots.teardown_strip(report.rows),
                                                "teardown windows per implementation"),
              "<h2>Pass rate by stage position</h2>",
              _img(plots.pass_by_position(report.rows), "pass rate by stage position")]

    pairs = []
    captions = []
    for row in report.rows:
        if len(pairs) >= MAX_TIMELINES or not (row.stages_passed < row.stages_run
                                               and row.handoffs):
            continue
        failing, passing = report.handoff_examples(row)
        if failing is None:
            continue
        pairs.append((row.implementation, failing, passing))
        detail = failing.stage.get("diagnosis") or failing.stage.get("error") or ""
        captions.append(f"<li><b>{esc(row.implementation)}</b>: {esc(failing.title)}: "
                        f"{esc(detail)}; beside "
                        f"{esc(passing.title) if passing else 'no passing handoff'}</li>")
    if pairs:
        parts += ["<h2>Handoff timelines</h2>", f"<ul class='note'>{''.join(captions)}</ul>",
                  _img(plots.handoff_timelines(pairs), "handoff timelines, failing beside "
                                                       "passing")]

    parts.append("<h2>Machine</h2>")
    for machine in report.machines():
        parts.append(f"<p class='note'>runs {esc(', '.join(machine['runs']))}</p>")
        parts.append(_table(["field", "value"], [[str(k), str(v)] for k, v in
                                                 sorted(machine["fingerprint"].items())]))
    if images := report.images():
        parts += ["<h2>Images</h2>", _table(IMAGE_COLUMNS, images)]
    commands = report.reproduce_commands() + ([shlex.join(command)] if command else [])
    parts += ["<h2>Reproduce</h2>", f"<pre>{esc(chr(10).join(commands))}</pre>",
              "</body></html>"]
    return "\n".join(parts)
