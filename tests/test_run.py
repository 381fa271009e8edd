"""`lab run`: the hardening every container gets, the seccomp override only where the
catalog asks for it, and (with Docker) real runs of single implementations."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.orchestrate import catalog
from lab.orchestrate.run import (
    LABEL_IMPL,
    LABEL_RUN_ID,
    RunError,
    RunRequest,
    create_kwargs,
    io_uring_refusal,
    seccomp_for,
    suite_args_from,
)

ROOT = Path(__file__).resolve().parent.parent
DENY_IO_URING = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["io_uring_setup", "io_uring_enter", "io_uring_register"],
                  "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


def _request(tmp_path: Path, name: str, profile: str | None = None) -> RunRequest:
    entry = catalog.get(name)
    return RunRequest(
        impl=name, image=entry.image, server_command=entry.command_for(6379), env=dict(entry.env),
        needs_io_uring=entry.needs_io_uring, suite_args=suite_args_from(trials=2, seed=3),
        run_id="r1", staging_dir=tmp_path / "out", log_path=tmp_path / "x.log",
        result_path=tmp_path / "x.json", seccomp=seccomp_for(entry.needs_io_uring, profile),
        timeout_s=60,
    )


@pytest.mark.parametrize("name", list(catalog.ENTRIES))
def test_every_container_is_hardened(tmp_path: Path, name: str) -> None:
    kw = create_kwargs(_request(tmp_path, name))
    assert kw["network_mode"] == "none"
    assert kw["init"] is True
    assert kw["cap_drop"] == ["ALL"]
    assert "cap_add" not in kw
    assert "no-new-privileges" in kw["security_opt"]
    assert kw["read_only"] is True and "/tmp" in kw["tmpfs"]
    assert kw["user"] == "1000:1000"
    assert kw["pids_limit"] > 0 and kw["mem_limit"]
    assert kw["labels"] == {LABEL_RUN_ID: "r1", LABEL_IMPL: name}
    assert [v["bind"] for v in kw["volumes"].values()] == ["/out"]
    # The harness is the main process and the server its child, after "--".
    assert kw["entrypoint"] == ["python3", "-m", "lab", "test"]
    command = kw["command"]
    assert command[command.index("--json") + 1] == f"/out/{name}.json"
    assert command[command.index("--") + 1:] == catalog.get(name).command_for(6379)


@pytest.mark.parametrize("name", list(catalog.ENTRIES))
def test_seccomp_override_only_for_io_uring_entries(tmp_path: Path, name: str) -> None:
    kw = create_kwargs(_request(tmp_path, name))
    seccomp = [o for o in kw["security_opt"] if o.startswith("seccomp")]
    if catalog.get(name).needs_io_uring:
        assert seccomp == ["seccomp=unconfined"]
    else:
        assert seccomp == []


def test_seccomp_profile_is_passed_inline(tmp_path: Path) -> None:
    profile = tmp_path / "deny.json"
    profile.write_text(json.dumps(DENY_IO_URING, indent=2))
    choice = seccomp_for(True, str(profile))
    assert choice.mode == f"profile:{profile}"
    (opt,) = choice.security_opt
    assert json.loads(opt.removeprefix("seccomp=")) == DENY_IO_URING
    assert seccomp_for(False, str(profile)).security_opt == ()


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"syscalls": []}'])
def test_bad_seccomp_profile_is_one_line(tmp_path: Path, content: str) -> None:
    profile = tmp_path / "bad.json"
    profile.write_text(content)
    with pytest.raises(RunError) as info:
        seccomp_for(True, str(profile))
    assert "\n" not in str(info.value) and str(profile) in str(info.value)


def test_io_uring_refusal_is_recognised() -> None:
    lines = ["[your_program] Fatal error: exception Unix.Unix_error(Unix.EPERM, \"io_uring_queue_init\", \"\")"]
    assert io_uring_refusal(lines, None) is not None
    measured = ['[your_program] Fatal error: exception Failure("io_uring is not available (permission denied)")']
    assert io_uring_refusal(measured, None) is not None
    assert io_uring_refusal(["[your_program] eio_server: backend=linux shutdown=default"], None) is None


def lab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def test_unknown_implementation_lists_the_known_ones() -> None:
    done = lab("run", "nginx")
    assert done.returncode == 2
    assert "unknown implementation" in done.stderr and "eio-uring" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_unreachable_engine_is_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "lab", "run", "python"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False,
                          env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent.sock",
                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert "/nonexistent.sock" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --- with Docker ---------------------------------------------------------------------

def ensure_images(names: list[str]) -> None:
    """Build missing images once, even with several xdist workers asking at once."""
    from lab.orchestrate import images

    with open("/tmp/handoff-lab-test-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        outcomes = images.ensure_images(names, log=lambda line: None, only_missing=True)
    failed = {n: o.error for n, o in outcomes.items() if not o.ok}
    assert not failed, f"image builds failed: {failed}"


def labelled_containers() -> list[str]:
    import docker

    client = docker.from_env()
    return [c.name for c in client.containers.list(all=True, filters={"label": LABEL_RUN_ID})
            if c.labels.get(LABEL_RUN_ID, "").startswith("run-")]


def stages(result: dict) -> list[dict]:
    return [s for t in result["trials"] for s in t["stages"]]


@pytest.mark.docker
def test_run_python_passes_with_default_seccomp(tmp_path: Path) -> None:
    ensure_images(["python"])
    out = tmp_path / "python.json"
    done = lab("run", "python", "--until", "wy1", "--seed", "4", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[your_program]" in done.stdout  # the suite's output streamed through
    result = json.loads(out.read_text())
    assert result["complete"] and [s["slug"] for s in stages(result)] == ["wy1", "rg2", "jm1"]
    assert all(s["passed"] for s in stages(result))
    assert result["environment"]["container"]["seccomp"] == "default"
    assert all(s["io_uring"] is False for s in stages(result))
    # Its own container is gone (other tests' runs may be going on at the same time).
    assert result["environment"]["container"]["name"] not in labelled_containers()


@pytest.mark.docker
def test_run_prompt_uses_io_uring_unconfined(tmp_path: Path) -> None:
    ensure_images(["eio-uring-prompt"])
    out = tmp_path / "prompt.json"
    done = lab("run", "eio-uring-prompt", "--until", "zu2", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["environment"]["container"]["seccomp"] == "unconfined"
    assert all(s["passed"] and s["io_uring"] is True for s in stages(result))
    assert not any(s["sigkill"] for s in stages(result))


@pytest.mark.docker
def test_blocked_io_uring_fails_saying_so(tmp_path: Path) -> None:
    ensure_images(["eio-uring"])
    profile = tmp_path / "deny-io-uring.json"
    profile.write_text(json.dumps(DENY_IO_URING))
    out = tmp_path / "blocked.json"
    done = lab("run", "eio-uring", "--stages", "rg2", "--seccomp-profile", str(profile),
               "--json", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot use io_uring" in done.stderr
    assert f"profile:{profile}" in done.stderr
    result = json.loads(out.read_text())
    assert result["environment"]["container"]["seccomp"] == f"profile:{profile}"
    assert not all(s["passed"] for s in stages(result))
