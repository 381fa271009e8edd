"""python_server as a real client library sees it: redis-py (the `redis` package).

redis-py parses replies strictly and sends its own handshake (CLIENT SETINFO, whose
error it ignores), so this checks the wire format from an independent implementation.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_banner(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> str:
    assert process.stdout is not None
    fd, line, deadline = process.stdout.fileno(), b"", time.monotonic() + timeout_s
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line.decode()


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "python_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
        cwd=ROOT,
    )
    try:
        banner = wait_for_banner(process)
        assert banner.startswith(f"python_server: listening on 127.0.0.1:{port}"), banner
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


@pytest.fixture
def client(server_port: int) -> Iterator[redis.Redis]:
    connection = redis.Redis(port=server_port, protocol=2, socket_timeout=5)
    try:
        yield connection
    finally:
        connection.close()


def test_ping(client: redis.Redis) -> None:
    assert client.ping() is True


def test_ping_with_a_message_echoes_it(server_port: int) -> None:
    # Below Redis.ping(), whose response callback turns any reply into a bool.
    connection = redis.Connection(port=server_port, protocol=2, socket_timeout=5)
    try:
        connection.send_command("PING", "grape")
        assert connection.read_response() == b"grape"
    finally:
        connection.disconnect()


def test_echo(client: redis.Redis) -> None:
    assert client.echo("blueberry") == b"blueberry"
    assert client.echo(b"\r\n\x00 binary \xff") == b"\r\n\x00 binary \xff"


def test_set_and_get(client: redis.Redis) -> None:
    assert client.set("redis-py:fruit", "apricot") is True
    assert client.get("redis-py:fruit") == b"apricot"
    assert client.set("redis-py:fruit", "fig") is True  # overwrite
    assert client.get("redis-py:fruit") == b"fig"


def test_get_of_a_missing_key_is_none(client: redis.Redis) -> None:
    assert client.get("redis-py:never-set") is None


def test_set_px_expires(client: redis.Redis) -> None:
    assert client.set("redis-py:px", "lime", px=100) is True
    assert client.get("redis-py:px") == b"lime"
    time.sleep(0.15)
    assert client.get("redis-py:px") is None


def test_set_ex_expires(client: redis.Redis) -> None:
    assert client.set("redis-py:ex", "plum", ex=1) is True
    time.sleep(0.5)
    assert client.get("redis-py:ex") == b"plum"  # EX is seconds, not milliseconds
    time.sleep(0.6)
    assert client.get("redis-py:ex") is None


def test_unknown_command_is_a_response_error(client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="unknown command 'HGETALL'"):
        client.execute_command("HGETALL", "x")
    assert client.ping() is True  # the connection is still usable


def test_invalid_expiry_is_a_response_error(client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        client.set("redis-py:bad", "v", px=0)


def test_pipeline_replies_arrive_in_order(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for index in range(200):
        pipe.set(f"redis-py:pipe:{index}", str(index))
        pipe.get(f"redis-py:pipe:{index}")
    replies = pipe.execute()
    assert replies[0::2] == [True] * 200
    assert replies[1::2] == [str(index).encode() for index in range(200)]


def test_a_large_value_round_trips(client: redis.Redis) -> None:
    value = os.urandom(3 * 1024 * 1024)  # several reads on the server side
    assert client.set("redis-py:large", value) is True
    assert client.get("redis-py:large") == value


def test_concurrent_clients_see_each_others_writes(server_port: int) -> None:
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        connection = redis.Redis(port=server_port, protocol=2, socket_timeout=5)
        try:
            for step in range(50):
                connection.set(f"redis-py:worker:{number}", f"{step}")
                assert connection.get(f"redis-py:worker:{number}") == f"{step}".encode()
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    reader = redis.Redis(port=server_port, protocol=2, socket_timeout=5)
    with contextlib.closing(reader):
        assert [reader.get(f"redis-py:worker:{number}") for number in range(8)] == [b"49"] * 8
