"""`lab teardown [--trials N] [--port P] [--json PATH] -- CMD ARGS...`: the teardown probe.

Per trial: start the server, dial (retrying like the tester) and PING, SIGTERM the pid
and its group, then measure SIGTERM -> reaped, SIGTERM -> its listener gone, the ghost
window (listener gone minus reaped) and dial once right after the reap (`accepted`
means a dying listener completed the handshake). `{port}` in CMD is replaced by the
port. It is a probe, not a test: exit 0 once measured, whatever it measured.
Standard library only (the summary is plain text), so it also runs in the images.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import asdict
from typing import Any

from lab.harness.process import StartFailed
from lab.harness.results import SCHEMA_VERSION, write_json_atomic
from lab.harness.testcmd import UsageError, server_command
from lab.observe import procfs
from lab.observe.sockdiag import ListenerSampler
from lab.observe.teardown import WINDOWS, ProbeError, ProbeSample, probe, summarize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trials", type=int, default=10, metavar="N", help="how many start/PING/SIGTERM cycles (default 10)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=6379,
        metavar="P",
        help="the port the server listens on (default 6379); {port} in CMD is replaced by it",
    )
    parser.add_argument("--json", metavar="PATH", help="write samples and summary as JSON here")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("server_command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")


def _command(args: argparse.Namespace) -> list[str]:
    return server_command(
        args.server_command, args.port, "lab teardown --port 6379 -- python3 -m python_server --port {port}"
    )


def _validate(args: argparse.Namespace) -> list[str]:
    if args.trials < 1:
        raise UsageError(f"--trials must be at least 1 (got {args.trials})")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535 (got {args.port})")
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(directory):
            raise UsageError(f"directory {directory} does not exist; create it or fix --json")
    command = _command(args)
    with ListenerSampler(args.port) as sampler:
        listeners = sampler.sample()
    if listeners:
        owners = procfs.inode_owners({entry.inode for entry in listeners})
        named = [f"{name} (pid {pid})" for entries in owners.values() for pid, name in entries]
        by = f" by {', '.join(named)}" if named else ""
        raise UsageError(f"port {args.port} is already taken{by}; stop it or pick another with --port")
    return command


def _sample_line(sample: ProbeSample) -> str:
    def ms(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:7.3f}"

    extra = []
    if sample.sigkill:
        extra.append("SIGKILL")
    if sample.io_uring:
        extra.append("io_uring")
    if sample.ping != "pong":
        extra.append(f"PING got {sample.ping}")
    if sample.watch_ended_by not in ("gone", None):
        extra.append(f"watch {sample.watch_ended_by}")
    return (
        f"trial {sample.trial + 1:3d}: exit {ms(sample.sigterm_to_exit_ms)} ms  "
        f"listener gone {ms(sample.sigterm_to_listener_gone_ms)} ms  "
        f"ghost {ms(sample.ghost_ms)} ms  post-reap dial {sample.post_reap_dial}"
        + (f"  [{', '.join(extra)}]" if extra else "")
    )


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'window (ms from SIGTERM)':30} {'median':>9} {'p95':>9} {'max':>9}"]
    labels = {
        "sigterm_to_exit_ms": "SIGTERM -> exit (reap)",
        "sigterm_to_listener_gone_ms": "SIGTERM -> listener gone",
        "ghost_ms": "ghost (gone - reaped)",
    }
    for window in WINDOWS:
        stats = summary[window]

        def cell(key: str, stats: dict[str, Any] = stats) -> str:
            return "n/a" if stats[key] is None else f"{stats[key]:.3f}"

        lines.append(f"{labels[window]:30} {cell('median'):>9} {cell('p95'):>9} {cell('max'):>9}")
    lines.append(
        f"post-reap dials accepted by a dying listener: {summary['post_reap_accepted']}"
        f"/{summary['trials']}; SIGKILL escalations: {summary['sigkill']}; "
        f"io_uring fd held: {summary['io_uring']}/{summary['trials']}; "
        f"sample gap median: {summary['sample_gap_us_median']} us; "
        f"harness reaper lag median: {summary['reaper_lag_us_median']} us"
    )
    return "\n".join(lines)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    try:
        command = _validate(args)
    except UsageError as exc:
        print(f"lab teardown: error: {exc}", file=sys.stderr)
        return 2
    on_sample = None if args.quiet else (lambda sample: print(_sample_line(sample), flush=True))
    # A SIGTERM to the probe (a CI timeout) ends it like Ctrl-C: the server is killed.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        samples = probe(command, args.port, args.trials, on_sample=on_sample)
    except StartFailed as exc:
        print(f"lab teardown: error: {exc}", file=sys.stderr)
        return 2
    except ProbeError as exc:
        print(f"lab teardown: could not measure: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = summarize(samples)
    print(format_summary(summary))
    if args.json:
        write_json_atomic(
            args.json,
            {
                "schema_version": SCHEMA_VERSION,
                "kind": "teardown",
                "command": command,
                "port": args.port,
                "trials": args.trials,
                "environment": {"kernel": os.uname().release, "cores": os.cpu_count()},
                "samples": [asdict(sample) for sample in samples],
                "summary": summary,
            },
        )
        print(f"result written to {args.json}")
    return 0
