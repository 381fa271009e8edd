"""Stage runs per second and the harness's own overhead per stage.

Runs the suite in-process against python_server and against redis-server, at least 50
stage runs each, and reports per stage: wall time, and the harness overhead = wall time
minus what the harness does not control (the server's start until its listener is up,
the stage's mandated sleeps, the 2 s waits the tester itself mandates when no reply
comes, and the server's exit from SIGTERM to the reap). Medians and p95 in ms.
Target: harness overhead under 5 ms per stage. Also the harness's reap -> first dial
latency at each handoff (a lingering listener shorter than it goes unseen). The last
line holds the figures.

    python benchmarks/suite_overhead.py [--stage-runs 56]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.harness import stages as stage_table  # noqa: E402
from lab.harness.runner import SuiteOptions, SuiteRunner  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(name: str, command_for_port, stage_runs: int) -> dict[str, float]:
    port = free_port()
    trials = max(1, -(-stage_runs // len(stage_table.SLUGS)))
    options = SuiteOptions(command=command_for_port(port), port=port, trials=trials, quiet=True)
    started = time.monotonic()
    result = SuiteRunner(options).run()
    wall_s = time.monotonic() - started
    overheads, walls, reap_to_dial = [], [], []
    for trial in result.trials:
        for stage in trial.stages:
            if stage.handoff is not None:
                # The harness's own side of the tester's race: previous server reaped ->
                # first dial out. A lingering listener shorter than this goes unseen.
                times = {e.event: e.t_us for e in reversed(stage.handoff.timeline)}
                dials = [e.t_us for e in stage.handoff.timeline if e.event in ("dial", "connected")]
                if "reaped" in times and dials:
                    reap_to_dial.append((min(dials) - times["reaped"]) / 1000)
            sleeps = stage_table.BY_SLUG[stage.slug].mandated_sleep_s * 1000
            exit_ms = stage.teardown.sigterm_to_exit_ms if stage.teardown else 0.0
            # The server's start, exec to the first accepted dial (retries included): the
            # server's part, as is its exit.
            start_ms = stage.first_connect_ms or 0.0
            walls.append(stage.duration_ms)
            overheads.append(max(0.0, stage.duration_ms - sleeps - exit_ms - start_ms))
    runs = len(walls)
    passed = result.summary()["stages_passed"]
    figures = {
        "stage_runs": runs,
        "passed": passed,
        "stages_per_s": runs / wall_s,
        "wall_median_ms": statistics.median(walls),
        "overhead_median_ms": statistics.median(overheads),
        "overhead_p95_ms": p95(overheads),
        "reap_to_dial_median_ms": statistics.median(reap_to_dial),
        "reap_to_dial_max_ms": max(reap_to_dial),
    }
    print(f"{name:14s} " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage-runs", type=int, default=56)
    args = parser.parse_args()
    py = measure("python_server", lambda p: [sys.executable, "-m", "python_server", "--port", str(p)], args.stage_runs)
    redis = shutil.which("redis-server")
    if redis is None:
        print("redis-server not installed: apt-get install redis-server", file=sys.stderr)
        return 2
    rs = measure("redis-server", lambda p: [redis, "--port", str(p), "--save", "", "--appendonly", "no"],
                 args.stage_runs)
    print(
        f"python_stages_per_s={py['stages_per_s']:.1f} redis_stages_per_s={rs['stages_per_s']:.1f} "
        f"overhead_median_ms={statistics.median([py['overhead_median_ms'], rs['overhead_median_ms']]):.2f} "
        f"overhead_p95_ms={max(py['overhead_p95_ms'], rs['overhead_p95_ms']):.2f} target_ms=5 "
        f"reap_to_dial_median_ms={statistics.median([py['reap_to_dial_median_ms'], rs['reap_to_dial_median_ms']]):.2f} "
        f"reap_to_dial_max_ms={max(py['reap_to_dial_max_ms'], rs['reap_to_dial_max_ms']):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
