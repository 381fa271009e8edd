"""Shared fixtures: free ports, the Docker gate, and server cleanup.

Docker tests are marked `docker`. They skip only when the engine is unreachable and
LAB_REQUIRE_DOCKER is not "1"; CI sets it so a missing engine fails instead.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PYTHON = sys.executable


def free_port() -> int:
    """A port nobody listens on right now (each xdist worker asks for its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


def docker_reachable() -> tuple[bool, str]:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    ok, why = docker_reachable()
    if not ok:
        if os.environ.get("LAB_REQUIRE_DOCKER") == "1":
            pytest.fail(f"LAB_REQUIRE_DOCKER=1 but the Docker engine is unreachable: {why}")
        pytest.skip(f"Docker engine unreachable ({why}); set LAB_REQUIRE_DOCKER=1 to fail instead")
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every docker-marked test gets the gate, so none can forget it.
    for item in items:
        if item.get_closest_marker("docker") is not None and "docker_engine" not in getattr(item, "fixturenames", []):
            item.fixturenames.append("docker_engine")  # type: ignore[attr-defined]
