"""compose.yaml is generated from the catalog, valid for the installed compose, carries the
same hardening as `lab compare`, and (with Docker) `docker-compose up` of a subset writes the
same JSON files as `lab compare` of those entries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from lab.orchestrate import catalog, compose

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    """The v2 plugin if present, else Debian's docker-compose 1.x."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_committed_compose_matches_the_catalog() -> None:
    committed = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    assert committed == compose.render(), "compose.yaml is stale: run `lab compose` and commit it"


def test_one_service_per_entry_with_the_same_hardening() -> None:
    services = yaml.safe_load(compose.render())["services"]
    for name, entry in catalog.ENTRIES.items():
        service = services[name]
        assert service["image"] == entry.image
        assert service["network_mode"] == "none"
        assert service["init"] is True and service["read_only"] is True
        assert service["cap_drop"] == ["ALL"] and "cap_add" not in service
        assert service["user"] == "1000:1000"
        assert service["pids_limit"] > 0 and service["mem_limit"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert ("seccomp=unconfined" in service["security_opt"]) == entry.needs_io_uring
        assert service["command"][-len(entry.command):] == entry.command_for(catalog.DEFAULT_PORT)
        assert service["environment"] == entry.env
        assert any(v.endswith(":/out") for v in service["volumes"])
        server = services[f"{name}-server"]
        assert server["profiles"] == ["servers"]
        assert server["ports"][0].startswith("127.0.0.1:")
    ports = [services[f"{n}-server"]["ports"][0] for n in catalog.ENTRIES]
    assert len(set(ports)) == len(ports)


def test_the_installed_compose_accepts_it() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    done = subprocess.run([*command, "-f", str(ROOT / "compose.yaml"), "--profile", "servers",
                           "config", "-q"], capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_lab_compose_check_detects_drift(tmp_path: Path) -> None:
    stale = tmp_path / "compose.yaml"
    stale.write_text(compose.render().replace("pids_limit: 256", "pids_limit: 999", 1))
    run = [sys.executable, "-m", "lab", "compose", "--check", "--output", str(stale)]
    assert subprocess.run(run, cwd=ROOT, capture_output=True, check=False).returncode == 1
    write = [sys.executable, "-m", "lab", "compose", "--output", str(stale)]
    assert subprocess.run(write, cwd=ROOT, capture_output=True, check=False).returncode == 0
    assert subprocess.run(run, cwd=ROOT, capture_output=True, check=False).returncode == 0


def _shape(result: dict) -> dict:
    """What must agree between compose and lab compare (timings will not)."""
    return {
        "keys": sorted(result),
        "summary_keys": sorted(result["summary"]),
        "order": result["order"], "seed": result["seed"], "trials": result["trials_requested"],
        "stages": [[s["slug"] for s in t["stages"]] for t in result["trials"]],
        "stage_keys": sorted({k for t in result["trials"] for s in t["stages"] for k in s}),
        "complete": result["complete"],
    }


@pytest.mark.docker
@pytest.mark.slow
def test_compose_up_writes_what_lab_compare_writes(tmp_path: Path) -> None:
    from tests.test_run import ensure_images

    command = compose_command()
    if command is None:
        pytest.fail("Docker is reachable but no compose is installed (install docker-compose)")
    names = ["python", "redis"]
    ensure_images(names)
    compose_out = tmp_path / "compose-results"
    project = f"labtest{uuid.uuid4().hex[:8]}"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LAB_RESULTS": str(compose_out),
           "LAB_TRIALS": "1", "LAB_UNTIL": "wy1", "LAB_SEED": "9"}
    base = [*command, "-f", str(ROOT / "compose.yaml"), "-p", project]
    try:
        up = subprocess.run([*base, "up", "--no-color", compose.PREPARE_SERVICE, *names],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
                            check=False)
        assert up.returncode == 0, up.stdout + up.stderr
    finally:
        subprocess.run([*base, "down", "--remove-orphans"], capture_output=True, env=env,
                       cwd=ROOT, timeout=120, check=False)
    lab_out = tmp_path / "lab-results"
    done = subprocess.run([sys.executable, "-m", "lab", "compare", *names, "--trials", "1",
                           "--until", "wy1", "--seed", "9", "--out", str(lab_out), "--no-build"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in compose_out.glob("*.json")) == [f"{n}.json" for n in sorted(names)]
    for name in names:
        from_compose = json.loads((compose_out / f"{name}.json").read_text())
        from_lab = json.loads((lab_out / f"{name}.json").read_text())
        assert _shape(from_compose) == _shape(from_lab)
        assert from_compose["summary"]["stages_passed"] == 3


@pytest.mark.docker
def test_servers_profile_answers_redis_py() -> None:
    """Each server on its own host port, reachable by redis-py (and so redis-cli)."""
    import redis

    from tests.test_run import ensure_images

    command = compose_command()
    if command is None:
        pytest.fail("Docker is reachable but no compose is installed (install docker-compose)")
    names = ["python", "redis", "eio-uring-prompt"]
    ensure_images(names)
    project = f"labtest{uuid.uuid4().hex[:8]}"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    base = [*command, "-f", str(ROOT / "compose.yaml"), "-p", project, "--profile", "servers"]
    services = [f"{n}-server" for n in names]
    try:
        up = subprocess.run([*base, "up", "-d", *services], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=180, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        for name in names:
            port = compose.host_ports()[name]
            # RESP2: the lab's servers implement the course's commands, not HELLO 3.
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, protocol=2)
            for _ in range(50):  # the container was just started
                try:
                    assert client.ping() is True
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            else:
                pytest.fail(f"{name}-server did not answer on 127.0.0.1:{port}")
            assert client.set("fruit", "mango") is True
            assert client.get("fruit") == b"mango"
            assert client.echo("kiwi") == b"kiwi"
            client.close()
    finally:
        subprocess.run([*base, "down", "--remove-orphans"], capture_output=True, env=env,
                       cwd=ROOT, timeout=120, check=False)
