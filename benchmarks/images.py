"""Image build times and sizes: cold, warm, with and without the bases.

    python benchmarks/images.py              # warm rebuild + cold build (bases present) + sizes
    python benchmarks/images.py --bootstrap  # also: cold with the bases absent (debootstrap)
    python benchmarks/images.py --skip-cold  # only warm rebuilds and sizes

The shared ``handoff-lab/*`` images stay untouched (other runs may be using them): the
cold builds use ``nocache`` and write to ``handoff-lab-bench/*`` tags, and the
"bases absent" case bootstraps fresh bases under ``handoff-lab-bench/base-*``; all bench
tags are removed at the end, Ctrl-C included. The warm figure is the real
``lab build --all`` run twice (the first may pick up source changes, the second has none).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker.errors

from lab.orchestrate import base, catalog, images

BENCH_REPOSITORY = "handoff-lab-bench"


def quiet(_line: str) -> None:
    """Build output is not the figure; it is in the build logs."""


def timed_lab_build() -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "lab", "build", "--all", "--quiet"],
        check=True, capture_output=True, cwd=images.REPO_ROOT,
    )  # fmt: skip
    return time.monotonic() - started


def cold_builds(client: Any, bases: base.BaseImages, log_dir: Path, tags: list[str], suffix: str) -> float:
    """Build every catalog image without cache to bench tags; returns the total seconds."""
    build_args = {**bases.build_args(), "LAB_REVISION": images.lab_revision()}
    started = time.monotonic()
    for image, recipe in catalog.IMAGES.items():
        tag = f"{BENCH_REPOSITORY}/{image.split('/')[-1]}:{suffix}"
        tags.append(tag)
        images.stream_build(
            client, images.REPO_ROOT, recipe.dockerfile, tag, build_args,
            log=quiet, nocache=True, log_path=log_dir / f"{image.replace('/', '_')}.log",
        )  # fmt: skip
    return time.monotonic() - started


def bootstrap_bench_bases(client: Any, log_dir: Path, tags: list[str]) -> tuple[base.BaseImages, float]:
    runtime = f"{BENCH_REPOSITORY}/base-runtime:{base.content_hash()}"
    build = f"{BENCH_REPOSITORY}/base-build:{base.content_hash()}"
    tags += [runtime, build]
    started = time.monotonic()
    with (log_dir / "base-bootstrap.log").open("w") as log_file:
        versions = base._bootstrap(client, runtime, build, quiet, log_file)
    seconds = time.monotonic() - started
    return base.BaseImages(runtime, build, "debootstrap", base.content_hash(), versions), seconds


def size_mb(client: Any, reference: str) -> float:
    return float(client.api.inspect_image(reference)["Size"]) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", action="store_true",
                        help="also time a cold build with the bases absent (about 4 minutes)")  # fmt: skip
    parser.add_argument("--skip-cold", action="store_true", help="only the warm rebuilds and sizes")
    args = parser.parse_args()
    client = images.connect()
    bases = base.ensure_bases(client, log=quiet)
    tags: list[str] = []
    figures: list[tuple[str, str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="lab-bench-logs-") as logs:
            log_dir = Path(logs)
            first = timed_lab_build()
            # Other sessions may edit lab/ or commit between runs (a new lab.revision):
            # the minimum of three back-to-back runs is the no-change figure.
            warm = [timed_lab_build() for _ in range(3)]
            figures += [
                ("lab build --all, after source changes", f"{first:.1f} s"),
                ("lab build --all, warm (no change), min of 3", f"{min(warm):.1f} s"),
                ("lab build --all, warm runs", " ".join(f"{w:.1f}" for w in warm) + " s"),
            ]
            if not args.skip_cold:
                cold = cold_builds(client, bases, log_dir, tags, "cold")
                figures.append(("cold build of all images, bases present", f"{cold:.1f} s"))
            if args.bootstrap:
                bench_bases, bootstrap_s = bootstrap_bench_bases(client, log_dir, tags)
                cold_after = cold_builds(client, bench_bases, log_dir, tags, "cold-no-bases")
                figures += [
                    ("bootstrap of both bases (debootstrap)", f"{bootstrap_s:.1f} s"),
                    ("cold build of all images, bases absent", f"{bootstrap_s + cold_after:.1f} s"),
                ]
    finally:
        for tag in reversed(tags):
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(tag, force=True)
    for reference in (bases.runtime, bases.build, *(f"{i}:latest" for i in catalog.IMAGES)):
        figures.append((f"size {reference}", f"{size_mb(client, reference):.0f} MB"))
    width = max(len(label) for label, _ in figures)
    for label, value in figures:
        print(f"{label.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
