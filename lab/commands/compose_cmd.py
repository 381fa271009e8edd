"""`lab compose [--check] [--output FILE]`: write compose.yaml from the catalog."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="where to write (default: compose.yaml at the repository root)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the file differs from the catalog")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")


def run(args: argparse.Namespace) -> int:
    from lab.orchestrate import compose

    path = args.output or compose.COMPOSE_FILE
    text = compose.render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"lab compose: error: cannot read {path}: {exc.strerror}; run lab compose",
                  file=sys.stderr)
            return 1
        if current != text:
            print(f"lab compose: {path} differs from the catalog; run lab compose", file=sys.stderr)
            return 1
        print(f"lab compose: {path} matches the catalog")
        return 0
    if not path.parent.is_dir():
        print(f"lab compose: error: directory {path.parent} does not exist", file=sys.stderr)
        return 2
    changed = compose.write(path)
    print(f"lab compose: {'wrote' if changed else 'unchanged'} {path}")
    return 0
