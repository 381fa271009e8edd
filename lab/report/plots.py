"""matplotlib figures of the HTML report, returned as PNG bytes.

matplotlib is imported inside each function (with the Agg backend: no display needed),
so only the HTML path pays for it.
"""

from __future__ import annotations

import io
from typing import Any

from lab.report.aggregate import Row, percentile
from lab.report.build import HandoffExample

TEARDOWN_PANELS = (
    ("exit_ms", "SIGTERM -> process reaped (ms)"),
    ("listener_gone_ms", "SIGTERM -> listener gone (ms)"),
    ("ghost_ms", "ghost window: listener outlives process (ms)"),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def preload() -> None:
    """Import matplotlib ahead of time (from a background thread)."""
    _pyplot()


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def teardown_strip(rows: list[Row]) -> bytes:
    """Every teardown sample of every implementation as a dot (strip plot with jitter), the
    median as a black bar. Symmetric-log x axis: 0.02 ms and a 2 s SIGKILL both show."""
    plt = _pyplot()
    import numpy as np

    rows = [r for r in rows if not r.is_error]
    labels = [r.implementation for r in rows]
    height = max(2.5, 0.42 * len(rows) + 1.2)
    fig, axes = plt.subplots(1, 3, figsize=(15, height), sharey=True)
    jitter = np.random.default_rng(0)  # fixed seed: the same data draws the same picture
    for ax, (attr, title) in zip(axes, TEARDOWN_PANELS, strict=True):
        for y, row in enumerate(rows):
            values: list[float] = getattr(row, attr)
            if not values:
                ax.text(0, y, "no samples", va="center", fontsize=7, color="grey")
                continue
            # numpy arrays: a Python list goes through masked-array conversion per element.
            xs = np.asarray(values, dtype=float)
            ys = y + jitter.uniform(-0.28, 0.28, len(values))
            # Line2D markers, not scatter: Agg stamps one marker image, ~10x faster with
            # the 10^5 samples of a long history.
            ax.plot(xs, ys, linestyle="none", marker="o", markersize=2.2, alpha=0.35,
                    markeredgewidth=0, rasterized=True,
                    color="tab:red" if row.ghost_failures else "tab:blue")
            median = percentile(values, 50)
            ax.plot([median, median], [y - 0.38, y + 0.38], color="black", linewidth=2)
        _symlog_ms(ax, max((max(getattr(r, attr)) for r in rows if getattr(r, attr)),
                           default=1.0))
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=8)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)
    fig.suptitle("Teardown windows, every sample (red: implementations with ghost failures; "
                 "bar: median)", fontsize=10)
    # Fixed margins instead of bbox_inches="tight", which renders the figure twice.
    fig.subplots_adjust(left=0.12, right=0.99, top=1 - 0.55 / height, bottom=0.35 / height,
                        wspace=0.06)
    return _png(fig)


def pass_by_position(rows: list[Row]) -> bytes:
    """Pass rate of the stages at each position of a trial: where the second stage (the
    first server-to-server handoff) loses, the second column turns red."""
    plt = _pyplot()
    rows = [r for r in rows if not r.is_error and r.position_stats]
    positions = sorted({p for r in rows for p in r.position_stats})
    if not rows or not positions:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no stages ran", ha="center", va="center")
        ax.axis("off")
        return _png(fig)
    grid = [[(r.position_stats[p][0] / r.position_stats[p][1]) if p in r.position_stats
             and r.position_stats[p][1] else float("nan") for p in positions] for r in rows]
    width, height = 1.1 * len(positions) + 3.5, 0.42 * len(rows) + 1.4
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for y, row in enumerate(rows):
        for x, p in enumerate(positions):
            passed, run = row.position_stats.get(p, [0, 0])
            if run:
                ax.text(x, y, f"{passed / run:.0%}\n{passed}/{run}", ha="center", va="center",
                        fontsize=7)
    ax.set_xticks(range(len(positions)), [str(p) for p in positions])
    ax.set_yticks(range(len(rows)), [r.implementation for r in rows], fontsize=8)
    ax.set_xlabel("stage position within a trial (2 = first handoff to a new server)")
    ax.set_title("Pass rate by stage position", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    fig.subplots_adjust(left=1.9 / width, right=0.97, top=1 - 0.35 / height,
                        bottom=0.6 / height)
    return _png(fig)


def handoff_timelines(pairs: list[tuple[str, HandoffExample, HandoffExample | None]]) -> bytes:
    """One panel per implementation: two lanes of events (SIGTERM, reaped, listener gone,
    dial, connect, reset...) on one time axis, ms after the previous server's SIGTERM; the
    failing handoff in red above a passing one in green. One figure for all panels: each
    matplotlib figure costs a full render, and the report must stay fast."""
    plt = _pyplot()
    if not pairs:
        pairs = []
    fig, axes = plt.subplots(max(1, len(pairs)), 1, figsize=(13, 0.6 + 1.9 * max(1, len(pairs))),
                             squeeze=False)
    for ax, (label, failing, passing) in zip(axes[:, 0], pairs, strict=False):
        lanes = [(e, c) for e, c in ((failing, "tab:red"), (passing, "tab:green")) if e]
        for lane, (example, color) in enumerate(lanes):
            events = example.events
            times = [float(ev.get("t_us", 0)) / 1000 for ev in events]
            ax.plot(times, [lane] * len(times), color=color, alpha=0.4, linewidth=1)
            ax.scatter(times, [lane] * len(times), color=color, s=24, zorder=3)
            for i, (t, ev) in enumerate(zip(times, events, strict=True)):
                ax.annotate(str(ev.get("event")), (t, lane), xytext=(0, (7, -12, 16)[i % 3]),
                            textcoords="offset points", fontsize=7, ha="center")
        _symlog_ms(ax, max((float(ev.get("t_us", 0)) / 1000 for e, _ in lanes
                            for ev in e.events), default=1.0))
        ax.set_yticks(range(len(lanes)), ["failing" if e is failing else "passing"
                                          for e, _ in lanes], fontsize=8)
        ax.set_ylim(-0.8, len(lanes) - 0.2)
        ax.set_title(_short(f"{label} | failing: {failing.title} | passing: "
                            f"{passing.title if passing else 'none found'}", 150), fontsize=8,
                     loc="left")
    if not pairs:
        axes[0, 0].text(0.5, 0.5, "no failing handoff", ha="center", va="center")
        axes[0, 0].axis("off")
    axes[-1, 0].set_xlabel("ms after the previous server's SIGTERM (linear below 1 ms, log above)")
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.35 / fig.get_figheight(),
                        bottom=0.45 / fig.get_figheight(), hspace=0.75)
    return _png(fig)


def _symlog_ms(ax: Any, upper: float) -> None:
    """Symmetric-log millisecond axis from 0 to a bit beyond `upper`, with a few labelled
    decades and no minor ticks (tick labels dominate the render time)."""
    from matplotlib.ticker import NullLocator

    right = max(2.0, upper * 1.4)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(0, right)
    ticks = [t for t in (0, 0.5, 1, 10, 100, 1000, 10000, 100000) if t <= right]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(axis="x", alpha=0.3)


def _short(text: str, width: int = 60) -> str:
    """Wrap a lane title onto two lines so the axis labels stay readable."""
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width)
    return text[:cut] + "\n" + text[cut + 1:]
