"""Time to render the HTML report of 10 runs x 11 entries x 100 trials, and its size.

The runs are synthesised (lab.report.synth, the documented compare format written with the
harness's dataclasses) into a temporary directory, then `lab report ... --format html` runs
as a user runs it: a fresh process, so Python start-up and the matplotlib import count.
Targets: under 5 s and under 5 MB. Last line: `report_html_s=<s> report_html_mb=<mb>`.

    python benchmarks/report.py [--runs 10] [--trials 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.report.synth import PROFILES, write_run_dir

TARGET_S = 5.0
TARGET_MB = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="renders to time (median)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lab-bench-report-"))
    try:
        started = time.perf_counter()
        for i in range(args.runs):
            write_run_dir(workdir / "results", f"202612{i + 1:02d}T000000Z", trials=args.trials,
                          seed=i + 1)
        input_mb = sum(p.stat().st_size for p in workdir.rglob("*.json")) / 1e6
        print(f"synthesised {args.runs} runs x {len(PROFILES)} entries x {args.trials} trials "
              f"({input_mb:.1f} MB of JSON) in {time.perf_counter() - started:.1f} s")
        out = workdir / "report.html"
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "lab.commands.report_cmd", str(workdir / "results"),
                 "--format", "html", "-o", str(out)],
                capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                print(f"lab report failed: {proc.stderr.strip()}", file=sys.stderr)
                return 1
        seconds = statistics.median(times)
        megabytes = out.stat().st_size / 1e6
        print(f"render times: {', '.join(f'{t:.2f}' for t in times)} s "
              f"(median {seconds:.2f} s, target < {TARGET_S} s: "
              f"{'met' if seconds < TARGET_S else 'MISSED'})")
        print(f"report size: {megabytes:.2f} MB (target < {TARGET_MB} MB: "
              f"{'met' if megabytes < TARGET_MB else 'MISSED'})")
        print(f"report_html_s={seconds:.2f} report_html_mb={megabytes:.2f}")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
