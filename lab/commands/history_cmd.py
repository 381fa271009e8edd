"""`lab history [--results DIR] [--baseline DIR]`: the runs kept under results/.

One line per run (date, lab revision, entries, pass rate per implementation). With
--baseline, every pass-rate cell is marked against the baseline ("!" regression,
"+" improvement beyond noise: see lab.report.history for the rule), and the newest run's
comparison is printed in full. Exit 0; 2 when the results directory holds no readable run;
4 with --fail-on-regression when the newest run regressed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_REGRESSION = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                        help="where `lab compare` keeps its runs (results/)")
    parser.add_argument("--baseline", type=Path, action="append", metavar="DIR",
                        help="results to compare every run against (repeatable)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help=f"exit {EXIT_REGRESSION} when the newest run regressed")


def run(args: argparse.Namespace) -> int:
    from lab.report.history import (
        RULES,
        compare_rows,
        list_runs,
        render_comparisons,
        render_history,
    )
    from lab.report.merge import load_inputs, merge

    if not args.results.is_dir():
        print(f"lab history: error: {args.results}: no such directory (run `lab compare` "
              "first, or give --results DIR)", file=sys.stderr)
        return 2
    infos, problems = list_runs(args.results)
    for problem in problems:
        print(f"lab history: error: {problem.message}", file=sys.stderr)
    if not infos:
        print(f"lab history: error: no readable run under {args.results} (run `lab compare`)",
              file=sys.stderr)
        return 2
    marks: dict[str, dict[str, str]] = {}
    newest_comparison = None
    if args.baseline:
        from lab.report.aggregate import rows_from_groups

        base_runs, base_problems = load_inputs(list(args.baseline))
        for problem in base_problems:
            print(f"lab history: error: baseline: {problem.message}", file=sys.stderr)
        if not base_runs:
            print("lab history: error: the baseline could not be read", file=sys.stderr)
            return 2
        base_rows = rows_from_groups(merge(base_runs))
        for info in infos:
            comparisons = compare_rows(base_rows, info.rows)
            marks[str(info.path)] = {
                c.implementation: "!" if c.status == "regression" else "+"
                for c in comparisons if c.status in ("regression", "improvement")}
            newest_comparison = comparisons
    print(render_history(infos, marks))
    if newest_comparison is not None:
        print(f"\n! regression, + improvement beyond noise against "
              f"{', '.join(str(b) for b in args.baseline)}; {RULES}")
        print(f"\nnewest run {infos[-1].run.run_id} against the baseline:")
        print(render_comparisons(newest_comparison))
        if args.fail_on_regression and any(c.status == "regression"
                                           for c in newest_comparison):
            return EXIT_REGRESSION
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab history", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        print("lab history: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
