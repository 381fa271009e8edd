"""The comparison table (tabulate). Stable API: `render_table(rows, fmt)`.

Columns (issue 5): implementation | backend | stages passed/run | pass rate | trials all
green | failed handoffs ghost / bind-failed | ghost handoffs | SIGTERM->exit median/p95 |
SIGTERM->listener gone median/p95/max | ghost window median/max | SIGKILL | notes.
Times are milliseconds. Error rows show the error and the log path in the notes column.
"""

from __future__ import annotations

from lab.report.aggregate import Row, format_rate

# Two-line headers keep the terminal table narrow; markdown joins the lines.
HEADERS = [
    "implementation",
    "backend\n(io_uring fd)",
    "stages\npassed/run",
    "pass\nrate",
    "trials\nall green",
    "failed handoffs\nghost / bind-failed",
    "ghost\nhandoffs",
    "SIGTERM->exit ms\nmed / p95",
    "SIGTERM->listener gone\nms med / p95 / max",
    "ghost window ms\nmed / max",
    "SIGKILL\nescalations",
    "notes",
]
FORMATS = {"table": "simple", "markdown": "github", "html": "html"}


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def cells(row: Row) -> list[str]:
    """The table cells of one row, as text."""
    notes = list(row.notes)
    if row.surprise:
        notes.insert(0, f"SURPRISE: {row.surprise}")
    if row.is_error:
        return [row.implementation, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-",
                "; ".join([f"ERROR: {row.error}", f"log: {row.log_path}", *notes])]
    if row.status == "interrupted" and not row.stages_run:
        notes.insert(0, "interrupted before any stage finished")
    return [
        row.implementation,
        row.backend,
        f"{row.stages_passed}/{row.stages_run}",
        format_rate(row.pass_rate),
        f"{row.trials_all_passed}/{row.trials_run}",
        f"{row.ghost_failures} / {row.bind_failed_failures}",
        str(row.ghost_handoffs),
        f"{ms(row.stat('exit_ms', 'median'))} / {ms(row.stat('exit_ms', 'p95'))}",
        " / ".join(ms(row.stat("listener_gone_ms", h)) for h in ("median", "p95", "max")),
        f"{ms(row.stat('ghost_ms', 'median'))} / {ms(row.stat('ghost_ms', 'max'))}",
        str(row.sigkill_escalations),
        "; ".join(notes),
    ]


def render_table(rows: list[Row], fmt: str = "table") -> str:
    """Render rows (already sorted by lab.report.aggregate) as a plain-text table
    (fmt="table") or a GitHub markdown table (fmt="markdown")."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; choose one of {sorted(FORMATS)}")
    from tabulate import tabulate  # lazily: the harness side never needs it

    body = [cells(r) for r in rows]
    headers = HEADERS
    if fmt != "table":
        headers = [h.replace("\n", " ") for h in HEADERS]
    if fmt == "markdown":
        # A "|" inside a cell would split it into two columns.
        body = [[c.replace("|", "\\|") for c in line] for line in body]
    return tabulate(body, headers=headers, tablefmt=FORMATS[fmt], disable_numparse=True)
