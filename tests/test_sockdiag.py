"""The netlink LISTEN sampler against real listeners."""

from __future__ import annotations

import os
import socket

import pytest

from lab.observe.sockdiag import MODES, ListenerSampler

DUMP_MODES = [mode for mode in MODES if mode != "exact"]


def _listen(family: int, address: str, port: int = 0, backlog: int = 5) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    sock.listen(backlog)
    return sock


@pytest.mark.parametrize("mode", MODES)
def test_finds_ipv4_and_ipv6_listeners_and_not_after_close(mode: str) -> None:
    v4 = _listen(socket.AF_INET, "127.0.0.1", backlog=5)
    port = v4.getsockname()[1]
    v6 = _listen(socket.AF_INET6, "::1", port, backlog=7)
    with ListenerSampler(port, mode=mode) as sampler:
        found = {entry.family: entry for entry in sampler.sample()}
        assert set(found) == {socket.AF_INET, socket.AF_INET6}
        assert found[socket.AF_INET].address == "127.0.0.1"
        assert found[socket.AF_INET6].address == "::1"
        assert found[socket.AF_INET].inode == os.fstat(v4.fileno()).st_ino
        assert found[socket.AF_INET6].inode == os.fstat(v6.fileno()).st_ino
        assert {e.port for e in found.values()} == {port}
        assert (found[socket.AF_INET].wqueue, found[socket.AF_INET6].wqueue) == (5, 7)
        assert found[socket.AF_INET].uid == os.getuid()
        v4.close()
        assert [e.family for e in sampler.sample()] == [socket.AF_INET6]
        v6.close()
        assert sampler.sample() == []


@pytest.mark.parametrize("mode", DUMP_MODES)
def test_other_ports_and_connections_are_not_reported(mode: str) -> None:
    watched = _listen(socket.AF_INET, "127.0.0.1")
    other = _listen(socket.AF_INET, "127.0.0.1")
    port = watched.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = watched.accept()
    try:
        with ListenerSampler(port, mode=mode) as sampler:
            found = sampler.sample()
        assert [e.inode for e in found] == [os.fstat(watched.fileno()).st_ino]
    finally:
        for sock in (served, client, watched, other):
            sock.close()


def test_rqueue_is_the_accept_queue_and_cookie_is_stable() -> None:
    listener = _listen(socket.AF_INET, "127.0.0.1", backlog=8)
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        with ListenerSampler(port, families=(socket.AF_INET,)) as sampler:
            first = sampler.sample()
            second = sampler.sample()
        assert len(first) == 1
        assert first[0].rqueue == 3  # three handshakes done, none accepted yet
        assert first[0].cookie != 0 and first[0].cookie == second[0].cookie
    finally:
        for sock in (*clients, listener):
            sock.close()


def test_dual_stack_listener_is_reported_once_as_ipv6() -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        with ListenerSampler(port) as sampler:
            found = sampler.sample()
        assert [(e.family, e.address) for e in found] == [(socket.AF_INET6, "::")]
    finally:
        listener.close()


def test_one_netlink_socket_serves_many_samples() -> None:
    listener = _listen(socket.AF_INET, "127.0.0.1")
    port = listener.getsockname()[1]
    try:
        with ListenerSampler(port) as sampler:
            fds_before = len(os.listdir("/proc/self/fd"))
            for _ in range(500):
                assert len(sampler.sample()) == 1
            assert len(os.listdir("/proc/self/fd")) == fds_before
    finally:
        listener.close()


def test_bad_arguments_and_closed_sampler() -> None:
    with pytest.raises(ValueError, match="port"):
        ListenerSampler(0)
    with pytest.raises(ValueError, match="mode"):
        ListenerSampler(6379, mode="fast")
    sampler = ListenerSampler(6379)
    sampler.close()
    with pytest.raises(ValueError, match="closed"):
        sampler.sample()
