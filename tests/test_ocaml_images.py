"""The images and the OCaml servers in them (Docker: marked `docker`).

Images are built once per session (a file lock keeps xdist workers from building, or
bootstrapping the bases, twice at the same time); builds that already exist are reused.
"""

from __future__ import annotations

import fcntl
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.orchestrate import base, catalog

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_SIZE_LIMIT_MB = 400
HARDENING: dict[str, Any] = {
    "network_mode": "none",
    "cap_drop": ["ALL"],
    "read_only": True,
    "tmpfs": {"/tmp": "rw,size=16m"},
    "init": True,
    "user": "1000:1000",
}

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from lab.orchestrate import images

    docker_client = images.connect()
    lock_path = Path("/tmp/handoff-lab-test-build.lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        outcomes = images.ensure_images(list(catalog.IMAGES), log=lambda _line: None,
                                        client=docker_client, only_missing=True)  # fmt: skip
    failed = {name: o.error for name, o in outcomes.items() if not o.ok}
    assert not failed, failed
    yield docker_client
    docker_client.close()


def run_container(
    client: Any, image: str, command: list[str], *, entrypoint: list[str] | None = None,
    env: dict[str, str] | None = None, security_opt: list[str] | None = None,
    user: str | None = "1000:1000", archive: tuple[str, bytes] | None = None,
    timeout: int = 300,
) -> tuple[int, str]:  # fmt: skip
    """Create, start, wait, collect the logs and always remove the container."""
    options = {**HARDENING, "user": user}
    if archive is not None:
        options["read_only"] = False
    container = client.containers.create(
        image, command, entrypoint=entrypoint, environment=env or {},
        security_opt=["no-new-privileges", *(security_opt or [])],
        labels={"lab.test": "test_ocaml_images"}, **options,
    )  # fmt: skip
    try:
        if archive is not None:
            container.put_archive(*archive)
        container.start()
        status = container.wait(timeout=timeout)
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return int(status["StatusCode"]), logs
    finally:
        container.remove(force=True)


def tar_of(directory: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=arcname,
                filter=lambda m: None if "/_build" in m.name else m)  # fmt: skip
    return buffer.getvalue()


def test_dune_test_passes_inside_the_build_image(client: Any) -> None:
    code, logs = run_container(
        client, f"{base.BUILD_REPOSITORY}:latest", ["dune", "test", "--root", "/src", "--force"],
        user=None, archive=("/", tar_of(ROOT / "ocaml", "src")),
    )  # fmt: skip
    assert code == 0, logs[-2000:]
    assert "Test Successful" in logs, logs[-2000:]


@pytest.mark.parametrize("image", sorted(catalog.IMAGES))
def test_images_record_versions_and_revision_and_run_as_lab(client: Any, image: str) -> None:
    config = client.api.inspect_image(f"{image}:latest")["Config"]
    labels = config.get("Labels") or {}
    for name in ("ocaml", "eio", "lwt", "python", "redis"):
        value = labels.get(f"lab.version.{name}", "")
        assert value and value != "unknown", (name, labels)
    assert labels["lab.version.ocaml"].startswith("5.")
    assert labels.get("lab.revision") not in (None, "", "unknown"), labels
    assert config.get("User") == "lab"
    assert config.get("Entrypoint") == ["python3", "-m", "lab", "test"]


def test_runtime_images_are_slim(client: Any) -> None:
    sizes = {image: client.api.inspect_image(f"{image}:latest")["Size"] / 1e6 for image in catalog.IMAGES}
    build = client.api.inspect_image(f"{base.BUILD_REPOSITORY}:latest")["Size"] / 1e6
    report = ", ".join(f"{name} {mb:.0f} MB" for name, mb in sizes.items())
    print(f"image sizes: {report}; toolchain base {build:.0f} MB")
    assert all(mb < RUNTIME_SIZE_LIMIT_MB for mb in sizes.values()), report
    assert all(mb < build / 2 for mb in sizes.values()), (report, build)


OCAML_ENTRIES = [name for name, e in catalog.ENTRIES.items() if e.image == catalog.OCAML_IMAGE]


@pytest.mark.parametrize("name", OCAML_ENTRIES)
def test_ocaml_entry_passes_a_stage_alone_on_its_backend(client: Any, name: str) -> None:
    entry = catalog.get(name)
    command = ["--stages", "yz1", "--", *entry.command_for(6379)]
    security = ["seccomp=unconfined"] if entry.needs_io_uring else []
    code, logs = run_container(client, entry.image, command, env=entry.env, security_opt=security)
    assert code == 0, logs[-3000:]
    if name.startswith("eio"):
        backend = "linux" if entry.needs_io_uring else "posix"
        assert f"eio_server: backend={backend} " in logs, logs[-3000:]


# Runs inside the OCaml image: one client connects and PINGs, then SIGTERM twice.
SIGTERM_SCRIPT = r"""
import json, os, signal, socket, subprocess, sys, time
command = sys.argv[1:]
server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
first_line = server.stdout.readline().strip()
client = socket.create_connection(("127.0.0.1", 6390))
client.sendall(b"*1\r\n$4\r\nPING\r\n")
reply = client.recv(64).decode()
sent = time.monotonic()
server.send_signal(signal.SIGTERM)
time.sleep(0.005)
if server.poll() is None:
    server.send_signal(signal.SIGTERM)
try:
    server.wait(1.0)
    alive_with_client = False
except subprocess.TimeoutExpired:
    alive_with_client = True
client.close()
try:
    code = server.wait(2.0)
except subprocess.TimeoutExpired:
    server.kill()
    code = "killed"
exit_ms = (time.monotonic() - sent) * 1000
try:
    socket.create_connection(("127.0.0.1", 6390), timeout=1).close()
    after = "accepted"
except ConnectionRefusedError:
    after = "refused"
print(json.dumps({"first_line": first_line, "reply": reply, "code": code,
                  "alive_with_client": alive_with_client, "exit_ms": exit_ms, "after": after}))
"""


def sigterm_twice(client: Any, entry_name: str) -> dict[str, Any]:
    entry = catalog.get(entry_name)
    security = ["seccomp=unconfined"] if entry.needs_io_uring else []
    code, logs = run_container(
        client, entry.image, ["-c", SIGTERM_SCRIPT, *entry.command_for(6390)],
        entrypoint=["python3"], env=entry.env, security_opt=security, timeout=60,
    )  # fmt: skip
    assert code == 0, logs
    return dict(json.loads(logs.strip().splitlines()[-1]))


def test_prompt_shutdown_closes_at_once_with_a_client_connected(client: Any) -> None:
    seen = sigterm_twice(client, "eio-uring-prompt")
    assert seen["first_line"].startswith("eio_server: backend=linux shutdown=prompt"), seen
    assert seen["reply"] == "+PONG\r\n"
    assert seen["alive_with_client"] is False and seen["code"] == 0, seen
    assert seen["after"] == "refused", seen


@pytest.mark.parametrize("name", ["eio-uring-graceful", "eio-posix-graceful"])
def test_graceful_waits_for_clients_and_survives_a_second_sigterm(client: Any, name: str) -> None:
    seen = sigterm_twice(client, name)
    # The rubber mallet: run_server's stop waits for the connected client...
    assert seen["alive_with_client"] is True, seen
    # ...and the second SIGTERM did not crash it: it exits cleanly once the client leaves.
    assert seen["code"] == 0, seen
    assert seen["after"] == "refused", seen


def test_lwt_graceful_shuts_the_server_down(client: Any) -> None:
    seen = sigterm_twice(client, "lwt-graceful")
    assert seen["first_line"] == "lwt_server: shutdown=graceful port=6390"
    assert seen["alive_with_client"] is False and seen["code"] == 0, seen


def test_forced_io_uring_fails_loudly_when_seccomp_blocks_it(client: Any) -> None:
    profile = json.loads((ROOT / "lab/seccomp/block-io-uring.json").read_text())
    entry = catalog.get("eio-uring")
    program, *arguments = entry.command_for(6379)
    code, logs = run_container(
        client, entry.image, arguments, entrypoint=[program], env=entry.env,
        security_opt=["seccomp=" + json.dumps(profile)], timeout=60,
    )  # fmt: skip
    assert code == 2, logs
    assert "io_uring is not available" in logs and "seccomp" in logs, logs


def test_doctor_measures_io_uring_in_containers(client: Any) -> None:
    from lab.orchestrate import doctor

    report = doctor.diagnose(client)
    assert report["engine"]["reachable"] and report["engine"]["init_binary"], report["engine"]
    probes = report["container_io_uring"]
    # The override the catalog asks for must give io_uring on a host that has it...
    if report["host_io_uring"]["works"]:
        assert probes["seccomp_unconfined"]["works"] is True, probes
    # ...and the probe must see a block when there is one (Docker >= 25's default).
    assert probes["blocking_profile"] == {"works": False, "errno": "EPERM"}, probes
    assert isinstance(probes["default_seccomp"]["works"], bool)


def test_a_failing_build_is_an_outcome_with_the_log_tail(client: Any, tmp_path: Path) -> None:
    from lab.orchestrate import images

    dockerfile = tmp_path / "broken.Dockerfile"
    dockerfile.write_text("ARG BASE_RUNTIME\nFROM ${BASE_RUNTIME}\nRUN echo about-to-fail-on-purpose && exit 3\n")
    bases = base.ensure_bases(client, log=lambda _line: None)
    outcome = images.build_image(client, "handoff-lab-test/broken", str(dockerfile), bases, log=lambda _line: None)
    assert outcome.ok is False
    assert outcome.error is not None and "handoff-lab-test/broken" in outcome.error
    assert "non-zero code: 3" in outcome.error
    assert outcome.log_path is not None and str(outcome.log_path) in outcome.error
    assert "about-to-fail-on-purpose" in outcome.log_path.read_text()
    assert any("about-to-fail-on-purpose" in line for line in outcome.tail)
