"""`lab compare [--all | IMPL...]`: every implementation in its own container, J at a
time, one table at the end. Exit 0: the comparison ran and the controls behaved;
1: a control misbehaved or an entry faulted (its row says why); 2: bad input or no
engine; 130: interrupted (what finished is kept)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lab.harness.runner import ORDERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("impls", nargs="*", metavar="IMPL", help="implementations (lab list)")
    parser.add_argument("--all", action="store_true", help="every implementation of the catalog")
    parser.add_argument("--trials", type=int, default=3, metavar="N",
                        help="trials per implementation (3)")
    parser.add_argument("--order", choices=ORDERS, default="descending",
                        help="stage order of every suite (descending, as the tester)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="one seed for every suite (default: random, recorded)")
    parser.add_argument("--until", metavar="SLUG", help="last stage (default yz1)")
    parser.add_argument("--stages", metavar="A,B", help="an explicit stage list")
    parser.add_argument("--jobs", "-j", type=int, metavar="J",
                        help="containers at a time (default: the number of cores, "
                             f"{len(os.sched_getaffinity(0))})")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="results directory (default results/<UTC timestamp>/)")
    parser.add_argument("--format", dest="fmt", choices=("table", "markdown"), default="table",
                        help="the final table: plain text or markdown for an issue")
    parser.add_argument("--pin", action="store_true",
                        help="pin each container to its own core (when cores >= jobs)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="wall-clock limit per container (default: from the trials)")
    parser.add_argument("--seccomp-profile", metavar="FILE",
                        help="seccomp profile for the io_uring entries (default unconfined)")
    parser.add_argument("--no-build", action="store_true", help="do not build missing images")


def run(args: argparse.Namespace) -> int:
    # Docker SDK, rich and the report load only when this command runs.
    from lab.harness.testcmd import UsageError, validate_suite_options
    from lab.orchestrate import compare
    from lab.orchestrate.run import RunError, load_seccomp_profile

    try:
        if args.until is not None or args.stages is not None:
            probe = argparse.Namespace(until=args.until or "yz1", stages=args.stages,
                                       trials=args.trials)
            validate_suite_options(probe)
        catalog = compare.load_catalog()
        names = compare.resolve_names(args.impls, args.all, catalog)
        if args.seccomp_profile:
            load_seccomp_profile(args.seccomp_profile)
        options = compare.CompareOptions(
            names=names, trials=args.trials, order=args.order, seed=args.seed,
            jobs=args.jobs, out=args.out, fmt=args.fmt, pin=args.pin, until=args.until,
            stages=args.stages, timeout_s=args.timeout, seccomp_profile=args.seccomp_profile,
            build=not args.no_build, argv=["lab", *sys.argv[1:]],
        )
        options.validate()
        client = compare.connect()
        return compare.run_compare(options, catalog, client=client).exit_code
    except (UsageError, RunError) as exc:
        print(f"lab compare: error: {exc}", file=sys.stderr)
        return 2
