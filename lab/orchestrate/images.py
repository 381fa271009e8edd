"""Building the lab's images through the Docker SDK, and `lab build`.

API for the other commands (``lab run``, ``lab compare``):

* ``connect() -> docker.DockerClient``: a pinged client, or :class:`EngineUnreachable` whose
  one-line message says where the engine was looked for (DOCKER_HOST or the unix socket).
* ``ensure_images(names, log=..., client=None, only_missing=False) -> dict[name,
  BuildOutcome]``: ``names`` are catalog entry names or image names; the bases are
  bootstrapped when absent, each image is built once (the builder's cache makes an
  unchanged rebuild take about a second) and every requested name maps to its image's
  outcome. A failed build is an outcome with ``ok=False`` and ``error`` set, never an
  exception; only an unreachable engine raises.
* ``build_image(client, image, dockerfile, bases, *, log=...) -> BuildOutcome``: one image
  from any Dockerfile (context = the repository root).
* ``stream_build(...)``: the low-level streaming build used by both.

Builds use the low-level ``APIClient.build(decode=True)`` so output streams live (the
high-level API returns only at the end), run with ``network_mode="none"`` (nothing is
fetched once the bases exist) and write their full log to
``results/build-logs/<image>.log`` (override with ``LAB_BUILD_LOG_DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from lab.orchestrate import catalog
from lab.orchestrate.base import BaseImageError, BaseImages, ensure_bases

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
STATUS_FILE = Path("/tmp/handoff-status.txt")
LOG_TAIL_LINES = 12

Log = Callable[[str], None]


class EngineUnreachable(RuntimeError):
    """The Docker engine could not be reached; the message says where it was looked for."""


class BuildFailed(RuntimeError):
    """A ``docker build`` failed; carries the last log lines and the log's path."""

    def __init__(self, message: str, tail: list[str], log_path: Path | None) -> None:
        super().__init__(message)
        self.tail = tail
        self.log_path = log_path


@dataclass
class BuildOutcome:
    """What became of one image: ``ok`` with its id, or ``error`` (one line) + log tail."""

    image: str
    ok: bool
    error: str | None = None
    image_id: str | None = None
    log_path: Path | None = None
    seconds: float = 0.0
    steps: int = 0
    cached_steps: int = 0
    tail: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.image}:latest"


def build_log_dir() -> Path:
    return Path(os.environ.get("LAB_BUILD_LOG_DIR", REPO_ROOT / "results" / "build-logs"))


def engine_location() -> str:
    """How the engine is looked for, in words, for error messages."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"{host} (from DOCKER_HOST)"
    return f"{DEFAULT_SOCKET} (the default socket; DOCKER_HOST is unset)"


def connect(timeout: int = 600) -> docker.DockerClient:
    """A client whose engine answered a ping, or :class:`EngineUnreachable`."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise EngineUnreachable(
            f"cannot reach the Docker engine at {engine_location()}: {reason[:200]}; "
            "start it (systemctl start docker) or point DOCKER_HOST at it"
        ) from None
    return client


def lab_revision() -> str:
    """The repository's git revision (``-dirty`` when the tree has changes), or unknown."""
    try:
        revision = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return revision + ("-dirty" if status.strip() else "")


def announce(message: str) -> None:
    """Append ``<time> message`` to the status file other sessions poll (best effort)."""
    with contextlib.suppress(OSError), STATUS_FILE.open("a") as status:
        status.write(f"{time.strftime('%H:%M:%S')} {message}\n")


_STEP = re.compile(r"^Step (\d+)/(\d+) :")


def stream_build(
    client: docker.DockerClient,
    context: Path,
    dockerfile: str,
    tag: str,
    build_args: dict[str, str],
    *,
    log: Log,
    target: str | None = None,
    network: bool = False,
    nocache: bool = False,
    log_path: Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[str, int, int]:
    """Build ``tag`` and return (image id, steps, cached steps); raise :class:`BuildFailed`.

    Every output line goes to ``log`` and to ``log_path``; ``on_step(n, total)`` is called
    at each Dockerfile step (for progress bars).
    """
    tail: list[str] = []
    image_id: str | None = None
    steps = cached = 0
    log_file = log_path.open("w") if log_path else None

    def emit(line: str) -> None:
        nonlocal steps, cached
        if log_file:
            log_file.write(line + "\n")
            log_file.flush()
        tail.append(line)
        del tail[:-LOG_TAIL_LINES]
        match = _STEP.match(line)
        if match:
            steps = int(match.group(1))
            if on_step:
                on_step(steps, int(match.group(2)))
        if line.strip() == "---> Using cache":
            cached += 1
        log(line)

    try:
        stream = client.api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            buildargs=build_args,
            target=target,
            network_mode=None if network else "none",
            decode=True,
            rm=True,
            forcerm=True,
            nocache=nocache,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        emit(line.rstrip())
            if "error" in chunk:
                emit("ERROR: " + str(chunk["error"]).strip())
                where = f"; full log: {log_path}" if log_path else ""
                raise BuildFailed(
                    f"building {tag} failed: {str(chunk['error']).strip()[:300]}{where}",
                    list(tail),
                    log_path,
                )
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = str(aux["ID"])
    except docker.errors.APIError as error:
        emit(f"ERROR: {error.explanation or error}")
        raise BuildFailed(f"building {tag} failed: {error.explanation or error}", list(tail), log_path) from None
    finally:
        if log_file:
            log_file.close()
    if image_id is None:
        image_id = client.api.inspect_image(tag)["Id"]
    return image_id, steps, cached


def build_image(
    client: docker.DockerClient,
    image: str,
    dockerfile: str,
    bases: BaseImages,
    *,
    log: Log = print,
    on_step: Callable[[int, int], None] | None = None,
) -> BuildOutcome:
    """Build ``image:latest`` from ``dockerfile`` (relative to the repository root)."""
    log_dir = build_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (image.replace("/", "_") + ".log")
    build_args = {**bases.build_args(), "LAB_REVISION": lab_revision()}
    started = time.monotonic()
    try:
        image_id, steps, cached = stream_build(
            client,
            REPO_ROOT,
            dockerfile,
            f"{image}:latest",
            build_args,
            log=log,
            log_path=log_path,
            on_step=on_step,
        )
    except BuildFailed as failure:
        return BuildOutcome(
            image,
            False,
            str(failure),
            None,
            log_path,
            time.monotonic() - started,
            tail=tuple(failure.tail),
        )
    outcome = BuildOutcome(image, True, None, image_id, log_path, time.monotonic() - started, steps, cached)
    announce(f"image {image} ready")
    return outcome


def images_for(names: Iterable[str]) -> dict[str, str]:
    """Map each requested name (catalog entry or image name) to its image name.

    Raises :class:`catalog.UnknownImplementation` naming the known entries.
    """
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    for name in names:
        if name in catalog.IMAGES:
            mapping[name] = name
        elif name in catalog.ENTRIES:
            mapping[name] = catalog.ENTRIES[name].image
        else:
            unknown.append(name)
    if unknown:
        catalog.resolve(unknown)  # raises with the list of known names
    return mapping


def ensure_images(
    names: Iterable[str],
    log: Log = print,
    client: docker.DockerClient | None = None,
    only_missing: bool = False,
    on_step: Callable[[str, int, int], None] | None = None,
) -> dict[str, BuildOutcome]:
    """Build (or, with ``only_missing``, just find) the images behind ``names``.

    Returns {requested name: BuildOutcome}; failures are outcomes, not exceptions.
    Raises only :class:`EngineUnreachable` and :class:`catalog.UnknownImplementation`.
    """
    mapping = images_for(names)
    client = client or connect()
    outcomes: dict[str, BuildOutcome] = {}
    wanted = list(dict.fromkeys(mapping.values()))
    if only_missing:
        for image in wanted:
            with contextlib.suppress(docker.errors.ImageNotFound):
                found = client.api.inspect_image(f"{image}:latest")
                outcomes[image] = BuildOutcome(image, True, image_id=found["Id"])
    missing = [image for image in wanted if image not in outcomes]
    if missing:
        try:
            bases = ensure_bases(client, log=log, log_dir=build_log_dir())
        except (BaseImageError, BuildFailed) as error:
            for image in missing:
                outcomes[image] = BuildOutcome(image, False, f"base images: {error}")
        except (subprocess.CalledProcessError, docker.errors.DockerException) as error:
            # A step of the bootstrap the engine or a tool refused: still an outcome.
            message = " ".join(str(error).split())[:300]
            for image in missing:
                outcomes[image] = BuildOutcome(image, False, f"base images: {message}")
        else:
            if bases.method != "present":
                announce(f"base-runtime ready ({bases.runtime}, made by {bases.method})")
            for image in missing:
                recipe = catalog.IMAGES[image]
                step_callback = (lambda n, total, image=image: on_step(image, n, total)) if on_step else None
                outcomes[image] = build_image(client, image, recipe.dockerfile, bases, log=log, on_step=step_callback)
    return {name: outcomes[image] for name, image in mapping.items()}


def image_size_mb(client: docker.DockerClient, reference: str) -> float:
    return float(client.api.inspect_image(reference)["Size"]) / 1e6


# ---- `lab build` ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "impls",
        nargs="*",
        metavar="IMPL",
        help="catalog entries or image names to build (see `lab list`)",
    )
    parser.add_argument("--all", action="store_true", help="build every image of the catalog")
    parser.add_argument("--quiet", action="store_true", help="no live build output, only results")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    if args.all == bool(args.impls):
        err.print("lab build: error: name implementations (see `lab list`) or pass --all")
        return 2
    names = list(catalog.IMAGES) if args.all else list(args.impls)
    try:
        images_for(names)
        client = connect()
    except (catalog.UnknownImplementation, EngineUnreachable) as error:
        print(f"lab build: error: {error}", file=sys.stderr)
        return 2
    console = Console()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def log(line: str) -> None:
        if not args.quiet:
            progress.console.print(line, markup=False, highlight=False, style="dim")

    def on_step(image: str, n: int, total: int) -> None:
        if image not in tasks:
            tasks[image] = progress.add_task(image, total=total, step="")
        progress.update(tasks[image], completed=n - 1, total=total, step=f"step {n}/{total}")

    with progress:
        outcomes = ensure_images(names, log=log, client=client, on_step=on_step)
        for image, task in tasks.items():
            done = next(o for o in outcomes.values() if o.image == image)
            progress.update(
                task, completed=progress.tasks[task].total if done.ok else None, step="done" if done.ok else "FAILED"
            )
    failed = False
    for outcome in {o.image: o for o in outcomes.values()}.values():
        if outcome.ok:
            size = image_size_mb(client, outcome.reference)
            console.print(
                f"[green]built[/] {outcome.reference} {size:.0f} MB in {outcome.seconds:.1f} s "
                f"({outcome.cached_steps}/{outcome.steps} steps cached); log: {outcome.log_path}"
            )
        else:
            failed = True
            for line in outcome.tail:
                err.print("  " + line, markup=False, highlight=False)
            err.print(f"[red]lab build: error:[/] {outcome.error}", highlight=False)
    return 1 if failed else 0
