"""`lab clean [--run-id ID]`: remove every container, network and volume a lab run left
behind (all carry the label lab.run-id), and say what was removed."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", metavar="ID", help="only what this run left (default: all)")


def run(args: argparse.Namespace) -> int:
    from lab.orchestrate import clean
    from lab.orchestrate.run import RunError, connect

    try:
        client = connect()
    except RunError as exc:
        print(f"lab clean: error: {exc}", file=sys.stderr)
        return 2
    removed = clean.remove_labelled(client, run_id=args.run_id)
    for item in removed:
        print(f"removed {item}")
    scope = f"of run {args.run_id} " if args.run_id else ""
    print(f"lab clean: removed {len(removed)} labelled resource(s) {scope}"
          f"({sum(1 for r in removed if r.kind == 'container')} containers)")
    return 0
