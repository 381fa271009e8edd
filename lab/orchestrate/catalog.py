"""The catalog: every implementation the lab can run, declared once.

Standard library only (read it anywhere, generate CI matrices or compose files from it).

* ``ENTRIES``: name -> :class:`Entry` (image, server command, environment, whether it needs
  io_uring, one-line description, expected outcome, role).
* ``IMAGES``: image name -> :class:`ImageRecipe` (the Dockerfile under images/ building it).
* ``get(name)`` / ``resolve(names)`` look entries up; an unknown name raises
  :class:`UnknownImplementation`, whose message lists the known names.
* ``Entry.command_for(port)`` substitutes ``{port}`` in the server command.

``expected`` is what the lab predicts under the tester's kill order: ``pass`` (every stage
passes), ``ghost`` (a handoff lands on the previous server's dying listener), ``sigkill``
(the server outlives SIGTERM by 2 s where clients stay connected and is SIGKILLed).
``role``: ``control`` (must pass, or the lab itself is broken), ``positive-control``
(must show the ghost, or the lab cannot see the bug), ``subject`` (what is studied).

``lab list [--json]`` prints it; the JSON (consumed by CI to build a matrix) is a list of
objects with ``name``, ``image``, ``command``, ``env``, ``needs_io_uring``,
``description``, ``expected``, ``role``, ``dockerfile``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

DEFAULT_PORT = 6379
PORT_PLACEHOLDER = "{port}"

OCAML_IMAGE = "handoff-lab/ocaml"
PYTHON_IMAGE = "handoff-lab/python"
REDIS_IMAGE = "handoff-lab/redis"

EXPECTED_OUTCOMES = ("pass", "ghost", "sigkill")
ROLES = ("control", "positive-control", "subject")


@dataclass(frozen=True)
class ImageRecipe:
    """How one image is built: a Dockerfile under images/, context = the repository root."""

    image: str
    dockerfile: str
    description: str


@dataclass(frozen=True)
class Entry:
    """One implementation: what runs, where, and what the lab expects of it."""

    name: str
    image: str
    command: tuple[str, ...]
    description: str
    expected: str
    role: str
    env: dict[str, str] = field(default_factory=dict)
    needs_io_uring: bool = False

    def command_for(self, port: int = DEFAULT_PORT) -> list[str]:
        """The server command with ``{port}`` replaced by ``port``."""
        return [word.replace(PORT_PLACEHOLDER, str(port)) for word in self.command]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["command"] = list(self.command)
        data["dockerfile"] = IMAGES[self.image].dockerfile
        return data


IMAGES: dict[str, ImageRecipe] = {
    recipe.image: recipe
    for recipe in (
        ImageRecipe(OCAML_IMAGE, "images/ocaml.Dockerfile", "eio_server and lwt_server"),
        ImageRecipe(PYTHON_IMAGE, "images/python.Dockerfile", "python_server (asyncio)"),
        ImageRecipe(REDIS_IMAGE, "images/redis.Dockerfile", "the real redis-server"),
    )
}

URING = {"EIO_BACKEND": "io-uring"}  # forced: a blocked ring fails loudly, never falls back
POSIX = {"EIO_BACKEND": "posix"}


def _eio(*options: str) -> tuple[str, ...]:
    return ("eio_server", "--port", PORT_PLACEHOLDER, *options)


_ENTRIES: tuple[Entry, ...] = (
    Entry(
        "eio-uring",
        OCAML_IMAGE,
        _eio(),
        "eio on io_uring, no SIGTERM handler (the seed's server)",
        expected="ghost",
        role="subject",
        env=URING,
        needs_io_uring=True,
    ),
    Entry(
        "eio-posix",
        OCAML_IMAGE,
        _eio(),
        "eio on the posix backend, no SIGTERM handler (the sledgehammer)",
        expected="pass",
        role="subject",
        env=POSIX,
    ),
    Entry(
        "eio-uring-graceful",
        OCAML_IMAGE,
        _eio("--shutdown", "graceful"),
        "eio on io_uring, run_server ~stop on SIGTERM (the rubber mallet)",
        expected="sigkill",
        role="subject",
        env=URING,
        needs_io_uring=True,
    ),
    Entry(
        "eio-posix-graceful",
        OCAML_IMAGE,
        _eio("--shutdown", "graceful"),
        "eio on posix, run_server ~stop on SIGTERM: waits for connected clients",
        expected="sigkill",
        role="subject",
        env=POSIX,
    ),
    Entry(
        "eio-uring-prompt",
        OCAML_IMAGE,
        _eio("--shutdown", "prompt"),
        "eio on io_uring, SIGTERM cancels accept and closes the listener (the fix)",
        expected="pass",
        role="subject",
        env=URING,
        needs_io_uring=True,
    ),
    Entry(
        "eio-uring-reuseport",
        OCAML_IMAGE,
        _eio("--reuse-port"),
        "eio on io_uring with SO_REUSEPORT: coexists with the dying listener, no fix",
        expected="ghost",
        role="subject",
        env=URING,
        needs_io_uring=True,
    ),
    Entry(
        "lwt",
        OCAML_IMAGE,
        ("lwt_server", "--port", PORT_PLACEHOLDER),
        "Lwt, no SIGTERM handler: the listener closes when the process dies",
        expected="pass",
        role="subject",
    ),
    Entry(
        "lwt-graceful",
        OCAML_IMAGE,
        ("lwt_server", "--port", PORT_PLACEHOLDER, "--shutdown", "graceful"),
        "Lwt, Lwt_unix.on_signal then Lwt_io.shutdown_server",
        expected="pass",
        role="subject",
    ),
    Entry(
        "python",
        PYTHON_IMAGE,
        ("python3", "-m", "python_server", "--port", PORT_PLACEHOLDER),
        "the lab's asyncio server: closes its listener before exiting",
        expected="pass",
        role="control",
    ),
    Entry(
        "python-ghost",
        PYTHON_IMAGE,
        ("python3", "-m", "python_server", "--port", PORT_PLACEHOLDER, "--ghost-ms", "6"),
        "python_server whose listener outlives it by 6 ms: the bug, made deterministic",
        expected="ghost",
        role="positive-control",
    ),
    Entry(
        "redis",
        REDIS_IMAGE,
        ("redis-server", "--port", PORT_PLACEHOLDER, "--save", "", "--appendonly", "no"),
        "the real redis-server",
        expected="pass",
        role="control",
    ),
)

ENTRIES: dict[str, Entry] = {entry.name: entry for entry in _ENTRIES}


class UnknownImplementation(ValueError):
    """A name that is not in the catalog; the message lists the known names."""


def known_names() -> list[str]:
    return list(ENTRIES)


def get(name: str) -> Entry:
    """The entry called ``name``, or :class:`UnknownImplementation`."""
    try:
        return ENTRIES[name]
    except KeyError:
        raise UnknownImplementation(f"unknown implementation {name!r}; known: {', '.join(ENTRIES)}") from None


def resolve(names: Iterable[str]) -> list[Entry]:
    """Entries for ``names`` in the given order, duplicates dropped; all unknown names
    are reported at once."""
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in ENTRIES]
    if unknown:
        raise UnknownImplementation(
            f"unknown implementation{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; known: {', '.join(ENTRIES)}"
        )
    return [ENTRIES[name] for name in wanted]


def as_json() -> list[dict[str, object]]:
    return [entry.to_json() for entry in ENTRIES.values()]


# ---- `lab list` --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the catalog as a JSON list")


def run(args: argparse.Namespace) -> int:
    if args.json:
        json.dump(as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from tabulate import tabulate

    rows = [
        (
            entry.name,
            entry.role,
            entry.expected,
            "yes" if entry.needs_io_uring else "",
            " ".join(f"{k}={v}" for k, v in entry.env.items()),
            entry.image,
            entry.description,
        )
        for entry in ENTRIES.values()
    ]
    headers = ("name", "role", "expected", "io_uring", "env", "image", "description")
    print(tabulate(rows, headers=headers))
    return 0
