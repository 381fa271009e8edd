"""`lab test [options] -- CMD ARGS...`: the staged suite against any server command.

Standard library only: this is what runs inside every container.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys

from lab.harness import stages
from lab.harness.runner import ORDERS, SuiteOptions, SuiteRunner, format_timelines


class UsageError(Exception):
    """Bad input: the message is one line that names the fix."""


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite options, shared by `lab test`, `lab run` and `lab compare`."""
    parser.add_argument("--order", choices=ORDERS, default="descending",
                        help="descending (the tester's default: current stage first), "
                             "ascending (--previous), or shuffled (seeded)")
    parser.add_argument("--until", default="yz1", metavar="SLUG",
                        help="the current stage (default yz1): the run covers jm1..SLUG")
    parser.add_argument("--stages", metavar="A,B,C", help="an explicit list of stages, run in this order")
    parser.add_argument("--trials", type=int, default=1, metavar="N", help="repeat the sequence N times")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random words and shuffled orders")
    parser.add_argument("--fail-fast", action="store_true",
                        help="stop at the first failure, as the real tester does")
    parser.add_argument("--timeline", action="store_true",
                        help="for each failing handoff, print its timeline beside a passing one")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=6379, help="the port the server listens on (6379)")
    add_suite_arguments(parser)
    parser.add_argument("--json", metavar="PATH", help="write the result JSON here (rewritten after every stage)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("server_command", nargs=argparse.REMAINDER,
                        help="-- CMD ARGS... ({port} in them is replaced by the port)")


def validate_suite_options(args: argparse.Namespace) -> list[str] | None:
    """Check the suite options; return the explicit stage list (or None)."""
    known = ", ".join(stages.SLUGS)
    if args.until not in stages.BY_SLUG:
        raise UsageError(f"unknown stage {args.until!r} for --until; known stages: {known}")
    explicit = None
    if args.stages is not None:  # `--stages ""` is a mistake, not "every stage"
        explicit = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in explicit if s not in stages.BY_SLUG]
        if unknown or not explicit:
            raise UsageError(f"unknown stage {', '.join(unknown) or '(empty)'} in --stages; known stages: {known}")
    if args.trials < 1:
        raise UsageError(f"--trials must be at least 1 (got {args.trials})")
    return explicit


def _options(args: argparse.Namespace) -> SuiteOptions:
    explicit = validate_suite_options(args)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535 (got {args.port})")
    command = server_command(args.server_command, args.port, "lab test -- python -m python_server --port {port}")
    _check_port_free(args.port)
    return SuiteOptions(
        command=command, port=args.port, order=args.order, seed=args.seed, until=args.until,
        stages=explicit, trials=args.trials, fail_fast=args.fail_fast, json_path=args.json,
        timeline=args.timeline, quiet=args.quiet,
    )


def server_command(raw: list[str], port: int, example: str) -> list[str]:
    """The argv after `--`, with {port} replaced, checked to be executable."""
    command = list(raw)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError(f"no server command: put it after --, e.g. {example}")
    command = [part.replace("{port}", str(port)) for part in command]
    program = command[0]
    if os.sep in program:
        if not os.access(program, os.X_OK):
            raise UsageError(f"{program}: not found or not executable; check the path after --")
    elif shutil.which(program) is None:
        raise UsageError(f"{program}: command not found on PATH; give the full path after --")
    return command


def _check_port_free(port: int) -> None:
    from lab.observe.sockdiag import ListenerSampler

    with ListenerSampler(port) as sampler:
        listeners = sampler.sample()
    if listeners:
        owner = _owner_text({entry.inode for entry in listeners})
        raise UsageError(f"port {port} is already taken{owner}; stop it or pick another with --port")


def _owner_text(inodes: set[int]) -> str:
    try:
        from lab.observe import procfs

        owners = procfs.inode_owners(inodes)
    except (ImportError, AttributeError, OSError):
        return ""
    found = list(dict.fromkeys(f"{name} (pid {pid})" for entries in owners.values() for pid, name in entries))
    return f" by {', '.join(found)}" if found else ""


def run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
    except UsageError as exc:
        print(f"lab test: error: {exc}", file=sys.stderr)
        return 2
    if options.json_path:
        directory = os.path.dirname(os.path.abspath(options.json_path))
        if not os.path.isdir(directory):
            print(f"lab test: error: directory {directory} does not exist; create it or fix --json",
                  file=sys.stderr)
            return 2
    # A SIGTERM to the harness (docker stop, a CI timeout) is handled like Ctrl-C: kill the
    # server, keep the partial result.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        sys.setswitchinterval(0.0005)  # let the reaper and watcher threads wake promptly
        runner = SuiteRunner(options)
        result = runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = result.summary()
    print(
        f"[lab] {summary['stages_passed']}/{summary['stages_run']} stages passed, "
        f"{summary['trials_all_passed']}/{summary['trials_run']} trials all green"
        + (f", handoffs: {_kinds(summary['handoff_kinds'])}" if summary["handoff_kinds"] else "")
        + (f", {summary['sigkill_escalations']} SIGKILL escalation(s)" if summary["sigkill_escalations"] else "")
    )
    if options.json_path:
        print(f"[lab] result written to {options.json_path}")
    if runner.start_error is not None:  # bad input that only exec could tell
        print(f"lab test: error: {runner.start_error}; check the command after --", file=sys.stderr)
        return 2
    if result.interrupted:
        return 130
    all_green = summary["stages_run"] > 0 and summary["stages_passed"] == summary["stages_run"] and (
        summary["trials_run"] == options.trials
    ) and all(t.all_passed for t in result.trials)
    return 0 if all_green else 1


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


__all__ = ["UsageError", "add_arguments", "add_suite_arguments", "format_timelines", "run", "server_command",
           "validate_suite_options"]
