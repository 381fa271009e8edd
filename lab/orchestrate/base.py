"""The two base images every lab image is built FROM, made without a registry.

``ensure_bases(client, log=print)`` returns a :class:`BaseImages` naming
``handoff-lab/base-runtime:<hash>`` (minbase Debian sid + python3, redis-server and the
shared libraries the OCaml servers link, user ``lab`` uid 1000) and
``handoff-lab/base-build:<hash>`` (the same tree + OCaml, dune, eio, uring, Lwt, alcotest).
``<hash>`` is a content hash of the package lists and of this recipe, so editing either
makes new bases; the ``:latest`` tags follow the newest.

How the bases are made is chosen automatically and reported in ``BaseImages.method``:

* ``present``: both tagged images already exist;
* ``dockerfile``: ``debian:sid-slim`` is present locally or pullable, so
  ``images/base.Dockerfile`` builds both stages from it;
* ``debootstrap``: otherwise (no registry, the lab machines): ``debootstrap --variant=minbase
  sid`` into a temporary directory, apt-get inside the chroot (``--include`` cannot resolve
  OCaml's virtual ABI dependencies, and the sid mirror's Release may be expired, hence
  ``Acquire::Check-Valid-Until=false``), then each tree is imported as an image from a tar
  stream. Needs root and debootstrap; the Debian mirror is read from the host's apt sources
  (or ``LAB_DEBIAN_MIRROR``). The temporary directory is removed on every exit, Ctrl-C and
  SIGTERM included, after unmounting anything left mounted inside it.

Failures raise :class:`BaseImageError` whose message is one line naming the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

RUNTIME_REPOSITORY = "handoff-lab/base-runtime"
BUILD_REPOSITORY = "handoff-lab/base-build"
SUITE = "sid"
REGISTRY_BASE = "debian:sid-slim"
LAB_UID = 1000

# What the runtime images need: the harness (python3), the redis control, and the
# shared libraries eio_server (liburing) and lwt_server (libev) link against.
RUNTIME_PACKAGES: tuple[str, ...] = ("python3", "redis-server", "liburing2", "libev4t64")
BUILD_PACKAGES: tuple[str, ...] = (
    "ocaml",
    "ocaml-dune",
    "ocaml-findlib",
    "libeio-ocaml-dev",
    "liburing-ocaml-dev",
    "liblwt-ocaml-dev",
    "libalcotest-ocaml-dev",
)
# Image label -> Debian package whose version it records.
VERSION_PACKAGES: dict[str, str] = {
    "ocaml": "ocaml-base",
    "eio": "libeio-ocaml-dev",
    "lwt": "liblwt-ocaml-dev",
    "uring": "liburing-ocaml-dev",
    "dune": "ocaml-dune",
    "python": "python3",
    "redis": "redis-server",
}
PYTHON_VERSION_COMMAND = ("python3", "-c", "import platform; print(platform.python_version())")
# Bump when the recipe changes in a way the package lists do not show.
RECIPE_VERSION = 2

APT_OPTIONS = ("-o", "Acquire::Check-Valid-Until=false", "-o", "Dpkg::Use-Pty=0")
# Trimmed from the runtime tree: documentation and caches nobody reads in a container.
RUNTIME_PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
NEVER_IMPORT = ("proc", "sys", "dev", "run", "tmp", "var/lib/apt/lists", "var/cache/apt")

Log = Callable[[str], None]


class BaseImageError(RuntimeError):
    """A base image could not be made; the message is one line naming the fix."""


@dataclass
class BaseImages:
    """The base image references to build FROM, and how they came to exist."""

    runtime: str
    build: str
    method: str  # "present" | "dockerfile" | "debootstrap"
    content_hash: str
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    log_path: str | None = None

    def build_args(self) -> dict[str, str]:
        """Build arguments for the Dockerfiles in images/ (bases + version labels)."""
        args = {"BASE_RUNTIME": self.runtime, "BASE_BUILD": self.build}
        for name in VERSION_PACKAGES:
            args[f"{name.upper()}_VERSION"] = self.versions.get(name, "unknown")
        return args


def content_hash() -> str:
    """Hash of everything that decides the bases' content (12 hex digits)."""
    recipe = {
        "suite": SUITE,
        "runtime": RUNTIME_PACKAGES,
        "build": BUILD_PACKAGES,
        "uid": LAB_UID,
        "prune": RUNTIME_PRUNE,
        "recipe": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror URL, from LAB_DEBIAN_MIRROR or the apt sources."""
    override = os.environ.get("LAB_DEBIAN_MIRROR")
    if override:
        return override
    candidates: list[str] = []
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            if re.search(r"^Types:.*\bdeb\b", stanza, re.MULTILINE):
                match = re.search(r"^URIs:\s*(.+)$", stanza, re.MULTILINE)
                if match:
                    candidates.extend(match.group(1).split())
    legacy = [
        sources_dir / "sources.list",
        *sorted((sources_dir / "sources.list.d").glob("*.list")),
    ]
    for path in legacy:
        if path.exists():
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 2 and words[0] == "deb":
                    candidates.append(words[1])
    for uri in candidates:
        # The main archive, not debian-security or a third-party repository.
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise BaseImageError(
        f"no Debian mirror found in {sources_dir}/sources.list(.d): set LAB_DEBIAN_MIRROR=http://<mirror>/debian"
    )


def _image_exists(client: Any, reference: str) -> bool:
    try:
        client.api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def _labels(client: Any, reference: str) -> dict[str, str]:
    return client.api.inspect_image(reference).get("Config", {}).get("Labels") or {}


def _versions_from_labels(labels: dict[str, str]) -> dict[str, str]:
    return {name: labels[f"lab.version.{name}"] for name in VERSION_PACKAGES if f"lab.version.{name}" in labels}


def ensure_bases(client: Any, log: Log = print, log_dir: Path | None = None) -> BaseImages:
    """Return the base images, making them first if they are absent.

    ``client`` is a ``docker.DockerClient``; ``log`` receives progress lines; the full
    bootstrap output goes to ``log_dir/base-bootstrap.log`` (default results/build-logs).
    """
    digest = content_hash()
    runtime = f"{RUNTIME_REPOSITORY}:{digest}"
    build = f"{BUILD_REPOSITORY}:{digest}"
    if _image_exists(client, runtime) and _image_exists(client, build):
        # Bootstrapped bases carry their versions as labels; Dockerfile-built ones are asked.
        versions = _versions_from_labels(_labels(client, build)) or _installed_versions(client, build)
        log(f"base images present: {runtime}, {build}")
        return BaseImages(runtime, build, "present", digest, versions)
    log_dir = log_dir or Path("results/build-logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "base-bootstrap.log"
    started = time.monotonic()
    with log_path.open("w") as log_file:

        def both(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            log(line)

        if _registry_base_available(client, both):
            both(f"base method: dockerfile (FROM {REGISTRY_BASE})")
            versions = _build_from_registry(client, runtime, build, both)
            method = "dockerfile"
        else:
            both(f"base method: debootstrap ({REGISTRY_BASE} is neither present nor pullable)")
            versions = _bootstrap(client, runtime, build, both, log_file)
            method = "debootstrap"
    for reference in (runtime, build):
        repository = reference.split(":")[0]
        client.api.tag(reference, repository, "latest")
    seconds = time.monotonic() - started
    log(f"base images ready in {seconds:.0f} s ({method}): {runtime}, {build}")
    return BaseImages(runtime, build, method, digest, versions, seconds, str(log_path))


def _registry_base_available(client: Any, log: Log) -> bool:
    if _image_exists(client, REGISTRY_BASE):
        return True
    try:
        client.api.pull("debian", tag="sid-slim")
    except (docker.errors.APIError, OSError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        log(f"pulling {REGISTRY_BASE} failed: {first_line[:200]}")
        return False
    return True


def _build_from_registry(client: Any, runtime: str, build: str, log: Log) -> dict[str, str]:
    # images.py builds on this module; importing it here avoids the cycle.
    from lab.orchestrate.images import REPO_ROOT, stream_build

    dockerfile = "images/base.Dockerfile"
    build_args = {
        "RUNTIME_PACKAGES": " ".join(RUNTIME_PACKAGES),
        "BUILD_PACKAGES": " ".join(BUILD_PACKAGES),
        "LAB_UID": str(LAB_UID),
    }
    for target, tag in (("runtime", runtime), ("build", build)):
        stream_build(client, REPO_ROOT, dockerfile, tag, build_args, log=log, target=target, network=True)
    return _installed_versions(client, build)


def _installed_versions(client: Any, image: str) -> dict[str, str]:
    """The versions of VERSION_PACKAGES installed in ``image`` (dpkg-query in a container)."""
    # Labelled like every container the lab makes, so `lab clean` finds one a kill left.
    labels = {"lab.run-id": f"base-versions-{uuid.uuid4().hex[:12]}", "lab.impl": "base"}
    output = client.containers.run(
        image,
        ["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *VERSION_PACKAGES.values()],
        network_mode="none",
        remove=True,
        labels=labels,
    )
    versions = _parse_versions(output.decode())
    python = client.containers.run(image, list(PYTHON_VERSION_COMMAND), network_mode="none", remove=True,
                                   labels=labels)
    versions["python"] = python.decode().strip()
    return versions


def _parse_versions(dpkg_output: str) -> dict[str, str]:
    by_package = dict(line.split(" ", 1) for line in dpkg_output.splitlines() if " " in line)
    return {name: by_package.get(package, "unknown") for name, package in VERSION_PACKAGES.items()}


# ---- debootstrap -------------------------------------------------------------------


def _bootstrap(client: Any, runtime: str, build: str, log: Log, log_file: Any) -> dict[str, str]:
    if os.geteuid() != 0:
        raise BaseImageError(
            "bootstrapping the base images needs root (run `lab build` as root, "
            f"or provide {REGISTRY_BASE} to the engine)"
        )
    if shutil.which("debootstrap") is None:
        raise BaseImageError("debootstrap not found: install it with `apt-get install debootstrap`")
    mirror = debian_mirror()
    with _scratch_dir() as scratch:
        root = scratch / "root"
        log(f"debootstrap --variant=minbase {SUITE} {root} {mirror}")
        _run(["debootstrap", "--variant=minbase", SUITE, str(root), mirror], log, log_file)
        _prepare_chroot(root)
        _apt(root, ["update"], log, log_file)
        _apt(root, ["install", "-y", "--no-install-recommends", *RUNTIME_PACKAGES], log, log_file)
        _run(
            [
                "chroot",
                str(root),
                "useradd",
                "--uid",
                str(LAB_UID),
                "--create-home",
                "--shell",
                "/bin/sh",
                "lab",
            ],
            log,
            log_file,
        )
        runtime_tar = scratch / "runtime.tar"
        log("packing the runtime tree")
        _pack(root, runtime_tar, prune=RUNTIME_PRUNE)
        _apt(root, ["install", "-y", "--no-install-recommends", *BUILD_PACKAGES], log, log_file)
        versions = _parse_versions(
            _capture(
                [
                    "chroot",
                    str(root),
                    "dpkg-query",
                    "-W",
                    "-f=${Package} ${Version}\\n",
                    *VERSION_PACKAGES.values(),
                ]
            )
        )
        # Debian's python3 package version is not the interpreter's; record the interpreter.
        versions["python"] = _capture(["chroot", str(root), *PYTHON_VERSION_COMMAND]).strip()
        log("versions: " + ", ".join(f"{k}={v}" for k, v in versions.items()))
        build_tar = scratch / "build.tar"
        log("packing the build tree")
        _pack(root, build_tar, prune=())
        labels = {f"lab.version.{name}": value for name, value in versions.items()}
        labels["lab.base.method"] = "debootstrap"
        labels["lab.base.hash"] = content_hash()
        for tar_path, reference in ((runtime_tar, runtime), (build_tar, build)):
            log(f"importing {reference} ({tar_path.stat().st_size / 1e6:.0f} MB tar)")
            _import(client, tar_path, reference, labels)
    return versions


@contextlib.contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A temporary directory removed on any exit; SIGTERM is turned into SystemExit."""
    scratch = Path(tempfile.mkdtemp(prefix="handoff-lab-base-", dir="/var/tmp"))
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    with contextlib.suppress(ValueError):  # not the main thread: keep the handler
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield scratch
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        _unmount_below(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _unmount_below(directory: Path) -> None:
    """Unmount whatever debootstrap or apt left mounted inside ``directory``."""
    prefix = str(directory.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mount_point = line.split()[1].replace("\\040", " ")
        if mount_point.startswith(prefix):
            mounts.append(mount_point)
    for mount_point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], check=False)


def _prepare_chroot(root: Path) -> None:
    # Name resolution for apt, and no service starts (redis-server's postinst) in the chroot.
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)


def _apt(root: Path, arguments: list[str], log: Log, log_file: Any) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    _run(["chroot", str(root), "apt-get", *APT_OPTIONS, *arguments], log, log_file, env=env)


def _run(command: list[str], log: Log, log_file: Any, env: dict[str, str] | None = None) -> None:
    """Run ``command``, its output to the log file; the last lines go into the error."""
    log_file.write("$ " + " ".join(command) + "\n")
    log_file.flush()
    tail: list[str] = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            tail = [*tail[-7:], line.rstrip()]
        returncode = process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    log_file.flush()
    if returncode != 0:
        log(f"{command[0]} failed (exit {returncode}); last lines:")
        for line in tail:
            log("  " + line)
        raise BaseImageError(
            f"`{' '.join(command[:4])} ...` failed with exit {returncode}; "
            f"see {getattr(log_file, 'name', 'the bootstrap log')}"
        )


def _capture(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _pack(root: Path, destination: Path, prune: tuple[str, ...]) -> None:
    """Write ``root`` as an image tar, without pseudo-filesystems, caches and ``prune``."""
    skipped = {*NEVER_IMPORT, *prune}

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        relative = member.name[2:] if member.name.startswith("./") else member.name
        for directory in skipped:
            # The directory itself stays (an empty /proc is a mount point), its content goes.
            if relative.startswith(directory + "/"):
                return None
        if relative in {"etc/resolv.conf", "usr/sbin/policy-rc.d"}:
            return None
        return member

    with tarfile.open(destination, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(str(root), arcname=".", filter=keep)


def _import(client: Any, tar_path: Path, reference: str, labels: dict[str, str]) -> None:
    repository, tag = reference.split(":")
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["/bin/sh"]',
        *(f"LABEL {key}={json.dumps(value)}" for key, value in sorted(labels.items())),
    ]
    # From a file path, docker-py streams the tar with a Content-Length;
    # import_image_from_stream claims chunked encoding, which the engine then rejects.
    output = client.api.import_image(src=str(tar_path), repository=repository, tag=tag, changes=changes)
    if "error" in str(output).lower() and not _image_exists(client, reference):
        raise BaseImageError(f"importing {reference} failed: {str(output)[:300]}")
