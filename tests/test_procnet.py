"""The /proc/net/tcp{,6} decoder and `lab sockets`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.observe import procfs, procnet
from tests.conftest import free_port
from tests.harness_util import ROOT, env

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
SEED_LISTENER = "0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1635131"
SEED_TIME_WAIT = "1: 0100007F:C6D8 0100007F:18EB 06 00000000:00000000 03:0000176F 00000000 0 0 0"


def lab(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env(),
        check=False,
    )


def test_seed_listener_row_decodes() -> None:
    row = procnet.parse_row(SEED_LISTENER)
    assert row.family == socket.AF_INET
    assert row.local == "127.0.0.1:6379"
    assert row.remote == "0.0.0.0:0"
    assert row.state == "LISTEN"
    assert row.inode == 1635131
    assert (row.tx_queue, row.rx_queue, row.timer, row.timer_ticks) == (0, 0, 0, 0)
    assert row.timer_kind == "none"


def test_seed_time_wait_row_decodes() -> None:
    row = procnet.parse_row(SEED_TIME_WAIT)
    assert row.slot == 1
    assert (row.local_address, row.local_port) == ("127.0.0.1", 50904)
    assert (row.remote_address, row.remote_port) == ("127.0.0.1", 6379)
    assert row.state == "TIME_WAIT"
    assert row.timer == 3 and row.timer_kind == "time_wait"
    assert row.timer_ticks == 0x176F
    assert row.inode == 0


def test_table_with_header_keeps_both_seed_rows() -> None:
    rows = procnet.parse_table(HEADER + SEED_LISTENER + "\n" + SEED_TIME_WAIT + "\n")
    assert [r.state for r in rows] == ["LISTEN", "TIME_WAIT"]
    assert procnet.select(rows, state=procnet.state_code("time_wait")) == [rows[1]]
    assert procnet.select(rows, port=50904) == [rows[1]]


def test_every_state_code_has_its_kernel_name() -> None:
    expected = [
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ]
    for code, name in enumerate(expected, start=1):
        line = SEED_LISTENER.replace(" 0A ", f" {code:02X} ")
        assert procnet.parse_row(line).state == name
        assert procnet.state_code(name.lower()) == code


def test_ipv6_word_layout() -> None:
    # ::1 is printed as four little-endian words: the last word 0x00000001 -> 01000000.
    assert procnet.decode_address("00000000000000000000000001000000") == (socket.AF_INET6, "::1")
    # 2001:db8::ff00:42:8329 -> words 20010db8 00000000 0000ff00 00428329, each byte-swapped.
    assert procnet.decode_address("B80D01200000000000FF000029834200") == (socket.AF_INET6, "2001:db8::ff00:42:8329")
    assert procnet.decode_address("0000000000000000FFFF00000100007F") == (socket.AF_INET6, "::ffff:127.0.0.1")


@pytest.mark.parametrize(
    "line",
    [
        "0: 0100007F:18EB 00000000:0000 0A",  # truncated
        "0: 0100007G:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
        "0: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
        "0 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
        "0: 0100007F:18EB 00000000:0000 0A 00000000 00:00000000 00000000 0 0 1",
        "0: 01007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
    ],
)
def test_malformed_line_names_the_line(line: str) -> None:
    with pytest.raises(ValueError, match="malformed socket-table line") as info:
        procnet.parse_row(line)
    assert line.strip() in str(info.value)


def _rows_on(port: int, path: str) -> list[procnet.TcpRow]:
    with open(path, encoding="ascii") as f:
        return procnet.select(procnet.parse_table(f.read()), port=port)


def test_real_ipv6_rows_decode() -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    listener.bind(("::1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    client = socket.create_connection(("::1", port))
    served, _ = listener.accept()
    try:
        rows = _rows_on(port, procnet.PROC_NET_TCP6)
        by_state = {(r.state, r.local_port): r for r in rows}
        listen_row = by_state[("LISTEN", port)]
        assert listen_row.family == socket.AF_INET6
        assert listen_row.local == f"[::1]:{port}"
        assert listen_row.remote == "[::]:0"
        assert listen_row.inode == os.fstat(listener.fileno()).st_ino
        client_port = client.getsockname()[1]
        outgoing = by_state[("ESTABLISHED", client_port)]
        assert (outgoing.remote_address, outgoing.remote_port) == ("::1", port)
        assert outgoing.inode == os.fstat(client.fileno()).st_ino
        incoming = by_state[("ESTABLISHED", port)]
        assert incoming.remote_port == client_port
    finally:
        for sock in (served, client, listener):
            sock.close()


def test_ipv4_mapped_client_on_dual_stack_listener() -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    try:
        rows = _rows_on(port, procnet.PROC_NET_TCP6)
        incoming = [r for r in rows if r.state == "ESTABLISHED" and r.local_port == port]
        assert incoming and incoming[0].remote_address == "::ffff:127.0.0.1"
        assert incoming[0].local_address == "::ffff:127.0.0.1"
    finally:
        for sock in (served, client, listener):
            sock.close()


def test_saved_tcp6_copy_decodes_with_from(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.bind(("::1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        saved = tmp_path / "tcp6"
        saved.write_text(Path(procnet.PROC_NET_TCP6).read_text())
    finally:
        listener.close()
    result = lab("sockets", "--from", str(saved), "--port", str(port), "--state", "LISTEN")
    assert result.returncode == 0, result.stderr
    assert f"[::1]:{port}" in result.stdout and "LISTEN" in result.stdout


def test_lab_sockets_from_seed_copy(tmp_path: Path) -> None:
    saved = tmp_path / "tcp"
    saved.write_text(HEADER + SEED_LISTENER + "\n" + SEED_TIME_WAIT + "\n")
    everything = lab("sockets", "--from", str(saved))
    assert everything.returncode == 0, everything.stderr
    assert "127.0.0.1:6379" in everything.stdout and "1635131" in everything.stdout
    time_wait = lab("sockets", "--from", str(saved), "--state", "time_wait")
    assert time_wait.returncode == 0
    assert "TIME_WAIT" in time_wait.stdout and "LISTEN" not in time_wait.stdout
    assert "127.0.0.1:50904" in time_wait.stdout


def test_lab_sockets_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad_state = lab("sockets", "--state", "listening")
    assert bad_state.returncode == 2
    assert bad_state.stderr.count("\n") == 1 and "listen" in bad_state.stderr
    missing = lab("sockets", "--from", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    garbage = tmp_path / "garbage"
    garbage.write_text("this is not a socket table\n")
    malformed = lab("sockets", "--from", str(garbage))
    assert malformed.returncode == 2
    assert malformed.stderr.count("\n") == 1 and "this is not a socket table" in malformed.stderr


def test_lab_sockets_live_shows_owner_process() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        result = lab("sockets", "--port", str(port), "--state", "listen")
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert f"127.0.0.1:{port}" in result.stdout
    assert f"{os.getpid()}/{procfs.process_name(os.getpid())}" in result.stdout


def test_lab_sockets_watch_prints_changes_and_exits_0_on_ctrl_c() -> None:
    port = free_port()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "lab", "sockets", "--watch", "--interval-ms", "20", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env(),
    )
    listener: socket.socket | None = None
    try:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            if line.startswith("-- watching"):
                break
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        deadline = time.monotonic() + 10
        seen = ""
        while time.monotonic() < deadline:
            seen = watcher.stdout.readline()
            if " + " in seen:
                break
        assert f"127.0.0.1:{port}" in seen and "LISTEN" in seen
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=10)
        assert watcher.returncode == 0
        assert "Traceback" not in stderr
    finally:
        if listener is not None:
            listener.close()
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
