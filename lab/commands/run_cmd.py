"""`lab run IMPL [suite options] [--json PATH] [--seccomp-profile FILE]`: the suite
against one implementation, inside its hardened container. Exits like `lab test`:
0 iff every stage of every trial passed, 1 otherwise, 2 on bad input, 130 interrupted."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from lab.harness.testcmd import UsageError, add_suite_arguments, validate_suite_options
from lab.orchestrate import catalog  # standard library only, like this module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("impl", metavar="IMPL", help="an implementation of the catalog (lab list)")
    parser.add_argument("--port", type=int, default=6379,
                        help="the port inside the container (6379; its network is its own)")
    add_suite_arguments(parser)
    parser.add_argument("--json", metavar="PATH",
                        help="write the result JSON here (updated after every stage)")
    parser.add_argument("--seccomp-profile", metavar="FILE",
                        help="seccomp profile for entries that need io_uring "
                             "(default: unconfined, for those entries only)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="wall-clock limit of the container (default: from the trials)")
    parser.add_argument("--no-build", action="store_true",
                        help="do not build a missing image; fail instead")


def run(args: argparse.Namespace) -> int:
    # The Docker SDK loads only when a Docker command runs (lab.cli stays stdlib-only).
    from lab.orchestrate.run import RunError

    try:
        explicit = validate_suite_options(args)
        entry = catalog.get(args.impl)
        if not 0 < args.port < 65536:
            raise UsageError(f"--port must be in 1..65535 (got {args.port})")
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError(f"--timeout must be positive (got {args.timeout})")
        if args.json:
            directory = Path(args.json).resolve().parent
            if not directory.is_dir():
                raise UsageError(f"directory {directory} does not exist; create it or fix --json")
        return _run(args, entry, explicit)
    except (UsageError, catalog.UnknownImplementation, RunError) as exc:
        print(f"lab run: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, entry: catalog.Entry, explicit: list[str] | None) -> int:
    from lab.orchestrate import compare, run

    seccomp = run.seccomp_for(entry.needs_io_uring, args.seccomp_profile)
    client = run.connect()
    name = entry.name
    if not args.no_build:
        problem = compare.default_builder(client)([name], lambda line: print(line, flush=True))[name]
        if problem is not None:
            tail = "".join(f"  {line}\n" for line in problem.tail[-8:])
            print(f"{tail}lab run: {name}: build failed: {problem.error}", file=sys.stderr)
            return 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"run-{stamp}-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="lab-run-"))
    result_path = Path(args.json).resolve() if args.json else work / "result" / f"{name}.json"
    stages_count = len(explicit) if explicit else run.ALL_STAGES
    request = run.RunRequest(
        impl=name,
        image=entry.image,
        server_command=entry.command_for(args.port),
        env=dict(entry.env),
        needs_io_uring=entry.needs_io_uring,
        suite_args=run.suite_args_from(
            port=args.port, order=args.order, seed=args.seed, until=args.until,
            stages=args.stages, trials=args.trials, fail_fast=args.fail_fast,
            timeline=args.timeline),
        run_id=run_id,
        staging_dir=work / "out",
        # Next to the JSON when there is one, so the error's "see LOG" stays true.
        log_path=result_path.with_suffix(".log") if args.json else work / "container.log",
        result_path=result_path,
        seccomp=seccomp,
        timeout_s=args.timeout or run.wall_clock_limit(args.trials, stages_count),
    )
    print(f"[lab] {name}: image {request.image}, seccomp {seccomp.mode}, network none, "
          f"user {run.CONTAINER_USER}", flush=True)
    switch = compare.StopSwitch(client, run_id, lambda text: print(f"[lab] {text}", flush=True))
    try:
        with switch.installed():
            outcome = run.run_container(client, request, stop=switch.stop,
                                        on_line=lambda line: print(line, flush=True))
    finally:
        compare.clean_mod.remove_labelled(client, run_id=run_id)
        shutil.rmtree(work, ignore_errors=True)
    where = f", result {result_path}" if args.json and outcome.result_path else ""
    print(f"[lab] {name}: {outcome.status}, seccomp {outcome.seccomp}, "
          f"{outcome.wall_s:.1f} s{where}", flush=True)
    if outcome.status == "interrupted":
        return 130
    if outcome.status != "ok":
        print(f"lab run: {name}: {outcome.error}", file=sys.stderr)
        return 1
    return 0 if outcome.all_passed else 1
