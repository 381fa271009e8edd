"""`lab doctor`: can this machine run the lab, and can its containers use io_uring?

Checks: the kernel; io_uring on the host (``kernel.io_uring_disabled`` and a real
``io_uring_setup`` call); the Docker engine (version, API, docker-init for ``init=True``);
io_uring in a container with the engine's default seccomp profile and with
``seccomp=unconfined`` (same hardening as ``lab run`` otherwise); the compose front-ends
installed (``docker compose`` v2 plugin, ``docker-compose`` v1); the lab's images.

The io_uring probe is python ctypes calling ``syscall(425 = io_uring_setup, 4, params)``:
python3 is in every lab image, so the probe needs no compiler and no extra image.
Docker >= 25 blocks io_uring in the default profile (moby PR 46762); older engines, like
Debian's 20.10, may still allow it, which is why it is measured rather than assumed.

``diagnose(client=None) -> dict`` returns the findings; ``run`` prints them (``--json``).
Exit code 0 when the engine is reachable and io_uring works wherever the catalog needs it
(with the override), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

IO_URING_PROBE = r"""
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
fd = libc.syscall(425, 4, params)  # io_uring_setup(entries=4, &params)
if fd >= 0:
    os.close(fd)
    print(json.dumps({"works": True, "errno": None}))
else:
    code = ctypes.get_errno()
    print(json.dumps({"works": False, "errno": errno.errorcode.get(code, str(code))}))
"""


def probe_host() -> dict[str, Any]:
    """io_uring_setup on this host, plus the kernel's io_uring_disabled switch."""
    result = _run_probe([sys.executable, "-c", IO_URING_PROBE])
    disabled = Path("/proc/sys/kernel/io_uring_disabled")
    with contextlib.suppress(OSError):
        result["io_uring_disabled_sysctl"] = int(disabled.read_text().strip())
    return result


def _run_probe(command: list[str]) -> dict[str, Any]:
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        return dict(json.loads(output.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        return {"works": False, "errno": None, "error": str(error)[:200]}


BLOCKING_PROFILE = Path(__file__).resolve().parent.parent / "seccomp" / "block-io-uring.json"


def probe_container(client: Any, image: str, seccomp: str | None) -> dict[str, Any]:
    """Run the probe in a container hardened like ``lab run``'s.

    ``seccomp``: None (the engine's default profile), ``"unconfined"``, or a profile's JSON.
    """
    import docker.errors

    security_opt = ["no-new-privileges"]
    if seccomp is not None:
        security_opt.append(f"seccomp={seccomp}")
    container = None
    try:
        container = client.containers.create(
            image,
            entrypoint=["python3", "-c", IO_URING_PROBE],
            command=[],
            user="1000:1000",
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=security_opt,
            read_only=True,
            init=True,
            # Labelled like every container the lab makes, so `lab clean` finds it if
            # doctor is killed mid-probe.
            labels={"lab.doctor": "1", "lab.run-id": f"doctor-{uuid.uuid4().hex[:12]}", "lab.impl": "doctor"},
        )
        container.start()
        status = container.wait(timeout=60)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace").strip()
        if status.get("StatusCode") != 0:
            return {"works": False, "errno": None, "error": output[-300:]}
        return dict(json.loads(output.splitlines()[-1]))
    except (docker.errors.DockerException, ValueError, IndexError, OSError) as error:
        return {"works": False, "errno": None, "error": str(error).splitlines()[0][:300]}
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)


def compose_versions() -> dict[str, str | None]:
    """Which compose front-ends answer `version` (None: not installed)."""
    found: dict[str, str | None] = {}
    for label, command in (
        ("docker compose", ["docker", "compose", "version", "--short"]),
        ("docker-compose", ["docker-compose", "version", "--short"]),
    ):
        if shutil.which(command[0]) is None:
            found[label] = None
            continue
        try:
            output = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            found[label] = None
            continue
        found[label] = output.stdout.strip() if output.returncode == 0 else None
    return found


def _probe_image(client: Any) -> str | None:
    """An image with python3 to probe in: a lab base or image, whichever exists."""
    import docker.errors

    from lab.orchestrate import catalog
    from lab.orchestrate.base import RUNTIME_REPOSITORY

    for reference in (f"{RUNTIME_REPOSITORY}:latest", *(f"{i}:latest" for i in catalog.IMAGES)):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.api.inspect_image(reference)
            return reference
    return None


def diagnose(client: Any | None = None) -> dict[str, Any]:
    """Everything `lab doctor` reports, as a dict (see the module docstring)."""
    from lab.orchestrate import catalog
    from lab.orchestrate.images import EngineUnreachable, connect, engine_location

    report: dict[str, Any] = {
        "kernel": platform.release(),
        "cores": len(_cpus()),
        "host_io_uring": probe_host(),
        "compose": compose_versions(),
        "engine": {"reachable": False, "location": engine_location()},
    }
    try:
        client = client or connect(timeout=120)
    except EngineUnreachable as error:
        report["engine"]["error"] = str(error)
        return report
    version = client.version()
    info = client.info()
    report["engine"] = {
        "reachable": True,
        "location": engine_location(),
        "version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "init_binary": info.get("InitBinary") or None,
        "init_commit": (info.get("InitCommit") or {}).get("ID"),
        "seccomp": "name=seccomp" in " ".join(info.get("SecurityOptions") or []),
    }
    images = {}
    for image in catalog.IMAGES:
        try:
            images[image] = round(float(client.api.inspect_image(f"{image}:latest")["Size"]) / 1e6)
        except Exception:
            images[image] = None
    report["images_mb"] = images
    probe_image = _probe_image(client)
    report["probe_image"] = probe_image
    if probe_image is None:
        report["container_io_uring"] = {"error": "no lab image to probe in: run `lab build --all` first"}
    else:
        report["container_io_uring"] = {
            "default_seccomp": probe_container(client, probe_image, None),
            "seccomp_unconfined": probe_container(client, probe_image, "unconfined"),
            # The Docker >= 25 situation, reproduced: shows the probe does see a block.
            "blocking_profile": probe_container(
                client, probe_image, json.dumps(json.loads(BLOCKING_PROFILE.read_text()))
            ),
        }
    return report


def _cpus() -> set[int]:
    return os.sched_getaffinity(0)


def _describe_probe(result: dict[str, Any]) -> str:
    if result.get("works"):
        return "works"
    if result.get("errno"):
        return f"blocked ({result['errno']})"
    return f"unknown ({result.get('error', 'no output')})"


def healthy(report: dict[str, Any]) -> bool:
    """The engine answers, and io_uring works in a container with the lab's override."""
    container = report.get("container_io_uring") or {}
    unconfined = container.get("seccomp_unconfined") or {}
    return bool(report["engine"].get("reachable")) and bool(unconfined.get("works"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args: argparse.Namespace) -> int:
    report = diagnose()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if healthy(report) else 1
    host = report["host_io_uring"]
    lines = [
        ("kernel", f"{report['kernel']} ({report['cores']} cores usable)"),
        (
            "io_uring on the host",
            _describe_probe(host)
            + (
                f", kernel.io_uring_disabled={host['io_uring_disabled_sysctl']}"
                if "io_uring_disabled_sysctl" in host
                else ""
            ),
        ),
    ]
    engine = report["engine"]
    if engine.get("reachable"):
        lines.append(("docker", f"{engine['version']} (API {engine['api_version']}) at {engine['location']}"))
        lines.append(("docker-init (init=True)", engine.get("init_binary") or "MISSING"))
        container = report["container_io_uring"]
        if "error" in container:
            lines.append(("io_uring in a container", container["error"]))
        else:
            lines.append(("io_uring, default seccomp", _describe_probe(container["default_seccomp"])))
            lines.append(("io_uring, seccomp=unconfined", _describe_probe(container["seccomp_unconfined"])))
            lines.append(
                (
                    "io_uring, block-io-uring.json",
                    _describe_probe(container["blocking_profile"]) + " (the Docker >= 25 case)",
                )
            )
            lines.append(("probed in", report["probe_image"]))
        for image, size in report["images_mb"].items():
            lines.append((f"image {image}", f"{size} MB" if size is not None else "not built"))
    else:
        lines.append(("docker", engine.get("error", "unreachable")))
    for label, value in report["compose"].items():
        lines.append((label, value or "not installed"))
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label.ljust(width)}  {value}")
    if engine.get("reachable") and not healthy(report):
        print(
            "lab doctor: io_uring does not work even with seccomp=unconfined: the "
            "io_uring entries (eio-uring*) will fail; check kernel.io_uring_disabled",
            file=sys.stderr,
        )
    return 0 if healthy(report) else 1
