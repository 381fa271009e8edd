"""The `lab` command: one argparse dispatcher, standard library only.

argparse rather than click/typer: `lab test` runs inside the images, whose python3 has no
pip packages, and one parser style for every subcommand keeps --help uniform. Each
subcommand's module is imported only when that subcommand runs, so the Docker-facing ones
(and their dependencies) never load inside a container.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

# name -> (module, one-line help). A module provides add_arguments(parser) and run(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "test": ("lab.harness.testcmd", "run the staged suite against a server command (no Docker)"),
    "sockets": ("lab.commands.sockets", "decode the kernel's TCP socket table"),
    "teardown": ("lab.commands.teardown_cmd", "measure SIGTERM -> exit -> listener gone, N times"),
    "list": ("lab.orchestrate.catalog", "list the implementations of the catalog"),
    "build": ("lab.orchestrate.images", "build the images (bootstrapping the base when absent)"),
    "doctor": ("lab.orchestrate.doctor", "check Docker, the kernel, compose and io_uring"),
    "run": ("lab.commands.run_cmd", "run the suite against one implementation in its container"),
    "compare": ("lab.commands.compare_cmd", "run every implementation in parallel containers"),
    "clean": ("lab.commands.clean_cmd", "remove what a killed run left behind"),
    "compose": ("lab.commands.compose_cmd", "generate compose.yaml from the catalog"),
    "report": ("lab.commands.report_cmd", "render results as a table, markdown, html or json"),
    "history": ("lab.commands.history_cmd", "list past runs and compare against a baseline"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line naming the fix (its default prints the whole usage
    first); subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lab",
        description="handoff-lab: why a server that passes by hand fails under a test harness",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module_name or not exc.name.startswith("lab")):
                sub.add_parser(name, help=f"{help_text} (unavailable here: {exc.name} missing)")
                continue
            raise
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in COMMANDS else None)
    args = parser.parse_args(args_list)
    handler = getattr(args, "handler", None)
    if handler is None:
        if args.command:
            print(f"lab {args.command}: error: not available in this environment "
                  "(install handoff-lab with its dependencies: pip install -e .)", file=sys.stderr)
            return 2
        parser.print_help()
        return 2
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
