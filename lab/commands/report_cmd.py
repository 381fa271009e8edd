"""`lab report RESULTS... [--format table|markdown|html|json] [-o FILE] [--baseline DIR]`.

Reads run directories of `lab compare` (or directories holding them: results/, the
downloaded shards of the nightly matrix), merges them by implementation and machine, and
prints or writes the report.

Inputs that cannot be read (a truncated JSON, an unknown schema_version, a missing
summary.json) are each named in one line on stderr; the rest is still reported, and the
problems also appear in the report itself.

Exit status:
  0  the report was written
  2  bad usage, or not one input could be read
  3  --fail-on-control and a control misbehaved (the numbers cannot be trusted)
  4  --fail-on-regression and a regression beyond noise against --baseline
     (3 wins when both hold)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

FORMATS = ("table", "markdown", "html", "json")
EXIT_UNREADABLE = 2
EXIT_CONTROL = 3
EXIT_REGRESSION = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                        help="run directories of `lab compare`, or directories holding them")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="table",
                        help="table (terminal), markdown (for an issue), html (one "
                             "self-contained file), json (merged data with schema_version)")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write to FILE instead of standard output")
    parser.add_argument("--baseline", type=Path, action="append", metavar="DIR",
                        help="mark regressions/improvements against these results "
                             "(repeatable)")
    parser.add_argument("--fail-on-control", action="store_true",
                        help=f"exit {EXIT_CONTROL} when a control misbehaved")
    parser.add_argument("--require-controls", action="store_true",
                        help="a control (python, redis, python-ghost) missing from the "
                             "results is a control failure, not a note (for merged CI shards)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help=f"exit {EXIT_REGRESSION} on a regression beyond noise "
                             "against --baseline")


def _reproduce_argv(args: argparse.Namespace) -> list[str]:
    argv = ["lab", "report", *(str(p) for p in args.results), "--format", args.fmt]
    for base in args.baseline or []:
        argv += ["--baseline", str(base)]
    if args.output:
        argv += ["-o", str(args.output)]
    return argv


def _write(path: Path | None, text: str) -> None:
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    directory = path.resolve().parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lab-report-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # mkstemp creates 0600; a report is meant to be read by others.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run(args: argparse.Namespace) -> int:
    from lab.report.build import build_report, report_json
    from lab.report.history import regressions, render_comparisons

    if args.fmt == "html":
        # matplotlib takes about a second to import: do it while the result files are
        # parsed (worker processes do the parsing; this process mostly waits).
        from lab.report.plots import preload

        threading.Thread(target=preload, name="preload-matplotlib", daemon=True).start()
    report = build_report(list(args.results), args.baseline, require_controls=args.require_controls)
    for problem in report.problems:
        print(f"lab report: error: {problem.message}", file=sys.stderr)
    if not report.runs:
        print("lab report: error: no input could be read; give run directories written by "
              "`lab compare` (they hold summary.json)", file=sys.stderr)
        return EXIT_UNREADABLE
    if args.baseline and report.comparisons is None:
        print("lab report: error: the baseline could not be read, no comparison made",
              file=sys.stderr)

    if args.fmt == "table":
        from lab.report.table import render_table

        parts = [*report.controls.lines(), render_table(report.rows, "table")]
        if report.comparisons is not None:
            parts += ["", render_comparisons(report.comparisons)]
        text = "\n".join(parts)
    elif args.fmt == "markdown":
        from lab.report.markdown import render_markdown

        text = render_markdown(report, _reproduce_argv(args))
    elif args.fmt == "html":
        from lab.report.html import render_html

        text = render_html(report, _reproduce_argv(args))
    else:
        text = json.dumps(report_json(report), indent=1) + "\n"
    _write(args.output, text)
    if args.output:
        print(f"lab report: wrote {args.output} ({len(report.rows)} implementations from "
              f"{len(report.runs)} runs)", file=sys.stderr)

    if args.fail_on_control and not report.controls.ok:
        print("lab report: controls failed: " + "; ".join(report.controls.problems),
              file=sys.stderr)
        return EXIT_CONTROL
    if args.fail_on_regression:
        if args.baseline is None:
            print("lab report: note: --fail-on-regression without --baseline compares "
                  "nothing", file=sys.stderr)
        elif report.comparisons is not None and (found := regressions(report.comparisons)):
            print("lab report: regressions beyond noise: "
                  + ", ".join(c.implementation for c in found), file=sys.stderr)
            return EXIT_REGRESSION
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        print("lab report: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
