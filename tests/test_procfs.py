"""/proc/PID/fd readers, including io_uring detection with a real C fixture."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.observe import procfs
from tests.conftest import free_port
from tests.harness_util import FIXTURES, ROOT, env

URING_SOURCE = FIXTURES / "uring_listener.c"


def _must_not_skip() -> bool:
    return os.environ.get("LAB_REQUIRE_DOCKER") == "1" or os.environ.get("CI") == "true"


def build_uring_listener(directory: Path) -> Path:
    """Compile tests/fixtures/uring_listener.c; skip visibly (fail in CI) without liburing."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    problem = None
    if compiler is None:
        problem = "no C compiler (cc) on PATH"
    elif not Path("/usr/include/liburing.h").exists():
        problem = "liburing-dev is not installed (apt-get install liburing-dev)"
    if problem is not None:
        if _must_not_skip():
            pytest.fail(f"the io_uring fixture cannot be built: {problem}")
        pytest.skip(f"io_uring fixture not built: {problem}")
    assert compiler is not None
    binary = directory / "uring_listener"
    build = subprocess.run(
        [compiler, "-O2", "-Wall", "-Werror", "-o", str(binary), str(URING_SOURCE), "-luring"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert build.returncode == 0, f"cc failed:\n{build.stderr}"
    return binary


def wait_listening(process: subprocess.Popen[bytes], port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listened on {port} within {timeout_s} s")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_io_uring_fixture_is_detected(tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    binary = build_uring_listener(tmp_path)
    port = free_port()
    server = subprocess.Popen([str(binary), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started.append(server)
    wait_listening(server, port)
    assert procfs.holds_io_uring(server.pid) is True


def test_python_server_holds_no_io_uring(started: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "python_server", "--port", str(port)], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL
    )
    started.append(server)
    wait_listening(server, port)
    assert procfs.holds_io_uring(server.pid) is False


def test_gone_process_reports_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert procfs.holds_io_uring(child.pid) is None
    assert procfs.socket_inodes(child.pid) == set()
    assert procfs.process_name(child.pid) is None


def test_socket_inodes_and_owners_of_our_own_listener() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        inode = os.fstat(listener.fileno()).st_ino
        assert inode in procfs.socket_inodes(os.getpid())
        name = procfs.process_name(os.getpid())
        assert name
        owners = procfs.inode_owners({inode})
        assert owners == {inode: [(os.getpid(), name)]}
        assert (os.getpid(), name) in procfs.inode_owners()[inode]
    finally:
        listener.close()
    assert inode not in procfs.socket_inodes(os.getpid())
