"""What parallel `lab compare` costs and what it distorts.

Runs the same comparison (same entries, same seed) with --jobs 1 and --jobs N (default:
the cores), optionally a third time pinned (--pin), images warm, and prints:
- the wall time of each, and the parallel speedup (target >= 1.7 on 2 cores);
- the lab's overhead per container (create/start/remove/copy; target < 1 s, median);
- the ratio of the whole run's wall time to the sum of the suites' own run times;
- per implementation: pass rate and teardown medians (SIGTERM->exit, SIGTERM->listener
  gone, ghost window) under --jobs 1 and --jobs N, side by side.

    python benchmarks/compare.py                 # --all --trials 10 (about 15 min here)
    python benchmarks/compare.py --trials 3 python redis eio-uring
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.report import aggregate  # noqa: E402 - after the path set-up for a bare checkout

SPEEDUP_TARGET = 1.7
OVERHEAD_TARGET_S = 1.0


def compare(names: list[str], trials: int, jobs: int, seed: int, out: Path, *,
            pin: bool = False) -> dict[str, Any]:
    argv = [sys.executable, "-m", "lab", "compare", *(names or ["--all"]), "--trials", str(trials),
            "--jobs", str(jobs), "--seed", str(seed), "--out", str(out), "--no-build"]
    if pin:
        argv.append("--pin")
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"lab compare failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    summary = json.loads((out / "summary.json").read_text())
    rows = {r.impl: r for r in aggregate.rows_from_run_dir(out)}
    return {"wall_s": wall, "summary": summary, "rows": rows, "exit": done.returncode,
            "stdout": done.stdout}


def describe(label: str, run: dict[str, Any]) -> dict[str, float | None]:
    entries = run["summary"]["entries"].values()
    overheads = [e["overhead_s"] for e in entries if e.get("overhead_s") is not None]
    suites = [e["suite_s"] for e in entries if e.get("suite_s") is not None]
    errors = [name for name, e in run["summary"]["entries"].items() if e["status"] != "ok"]
    ratio = run["wall_s"] / sum(suites) if suites else None
    print(f"{label}: wall {run['wall_s']:.1f} s, sum of suites {sum(suites):.1f} s, "
          f"wall/sum {ratio:.2f}" if ratio else f"{label}: wall {run['wall_s']:.1f} s")
    if overheads:
        print(f"  overhead per container (create/start/remove/copy): median "
              f"{statistics.median(overheads):.2f} s, max {max(overheads):.2f} s "
              f"(target < {OVERHEAD_TARGET_S:.0f} s: "
              f"{'met' if statistics.median(overheads) < OVERHEAD_TARGET_S else 'MISSED'})")
    parts: dict[str, list[float]] = {}
    for e in entries:
        for key, value in (e.get("overhead_parts") or {}).items():
            parts.setdefault(key, []).append(value)
    if parts:
        print("  of which (medians): " + ", ".join(
            f"{key.removesuffix('_s')} {statistics.median(v):.2f} s" for key, v in parts.items()))
    if errors:
        print(f"  entries that did not finish: {', '.join(errors)}")
    controls = run["summary"]["controls"]
    if not controls.get("ok"):
        print(f"  controls: {'; '.join(controls.get('problems', []))}")
    return {"overhead_median": statistics.median(overheads) if overheads else None, "ratio": ratio}


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def side_by_side(runs: list[tuple[str, dict[str, Any]]]) -> None:
    from tabulate import tabulate

    names = list(runs[0][1]["rows"])
    headers = ["implementation"]
    for label, _ in runs:
        headers += [f"pass {label}", f"exit med {label}", f"gone med {label}",
                    f"ghost med {label}"]
    body = []
    for name in names:
        line = [name]
        for _, run in runs:
            row = run["rows"].get(name)
            if row is None or row.is_error:
                line += ["error", "", "", ""]
                continue
            rate = row.pass_rate
            line += ["-" if rate is None else f"{rate:.0%}", fmt(row.stat("exit_ms", "median")),
                     fmt(row.stat("listener_gone_ms", "median")), fmt(row.stat("ghost_ms", "median"))]
        body.append(line)
    print(tabulate(body, headers=headers, disable_numparse=True))
    print("(ms; pass = stages passed / run; exit = SIGTERM->exit, gone = SIGTERM->listener gone)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("impls", nargs="*", help="implementations (default: --all)")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--pin", action="store_true", help="also run --jobs N --pin")
    parser.add_argument("--keep", type=Path, help="keep the run directories under this path")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="lab-bench-compare-"))
    base.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    print(f"lab compare {' '.join(args.impls) or '--all'} --trials {args.trials}, seed {args.seed}, "
          f"{cores} cores, images warm (--no-build)")
    runs: list[tuple[str, dict[str, Any]]] = []
    # Parallel first: any one-off warm-up cost (page cache, python bytecode) lands on the
    # run that is supposed to be faster, so the speedup is not flattered.
    runs.append((f"j{args.jobs}", compare(args.impls, args.trials, args.jobs, args.seed,
                                          base / f"jobs{args.jobs}")))
    runs.append(("j1", compare(args.impls, args.trials, 1, args.seed, base / "jobs1")))
    if args.pin:
        runs.append((f"j{args.jobs}pin", compare(args.impls, args.trials, args.jobs, args.seed,
                                                 base / f"jobs{args.jobs}-pin", pin=True)))
    for label, run in runs:
        describe(f"--jobs {label[1:]}", run)
    speedup = runs[1][1]["wall_s"] / runs[0][1]["wall_s"]
    target = "met" if speedup >= SPEEDUP_TARGET else "MISSED"
    print(f"speedup --jobs {args.jobs} over --jobs 1: {speedup:.2f}x "
          f"(target >= {SPEEDUP_TARGET} on 2 cores: {target})")
    side_by_side(runs)
    print(f"run directories: {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
