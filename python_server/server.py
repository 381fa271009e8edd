"""python_server: the lab's reference server and its positive control.

Normal mode: an asyncio RESP2 server. On SIGTERM (or SIGINT) it closes the listening
socket first, so the next stage's dial is refused rather than landing on a dying socket,
then its connections, then exits 0 (a few ms). Further signals during shutdown are
blocked, so a second SIGTERM (the harness signals the pid and then the group) is harmless.

Ghost mode (`--ghost-ms N`): the io_uring bug made deterministic. Right after binding,
before any accept, the server forks a child that holds only the listening socket (not
the stdout/stderr pipes, so the harness sees EOF at the reap) in its own session, with
SIGTERM blocked. On SIGTERM the server exits at once; the child, woken by its parent's
exit, keeps the port in LISTEN without ever accepting for N more ms, then closes it.
Dials in that window complete their handshake and are reset when the child closes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import select
import signal
import socket
import sys
import time
from typing import NoReturn

from python_server import resp
from python_server.commands import Store, execute
from python_server.resp import ProtocolError, parse_command

PROGRAM = "python_server"
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
MAX_GHOST_MS = 60_000
GHOST_READY_TIMEOUT_S = 5.0


def _say(text: str) -> None:
    """One flushed line on stdout; a vanished reader must not turn into a traceback."""
    try:
        print(f"{PROGRAM}: {text}", flush=True)
    except OSError:
        pass


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self._server = server
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self._buffer += data
        replies: list[bytes] = []
        offset = 0
        try:
            while True:
                arguments, offset = parse_command(self._buffer, offset)
                if arguments is None:
                    break
                if arguments:
                    replies.append(execute(self._server.store, arguments))
        except ProtocolError as exc:
            # As Redis does: answer, then close, since the stream cannot be resynchronised.
            replies.append(resp.error(f"ERR Protocol error: {exc}"))
            self.transport.write(b"".join(replies))
            self.transport.close()
            return
        del self._buffer[:offset]
        if replies:
            self.transport.write(b"".join(replies))

    def pause_writing(self) -> None:
        # A client that sends without reading must not grow our write buffer forever.
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)


class Server:
    def __init__(self, host: str, port: int, ghost_ms: int | None) -> None:
        self.host = host
        self.port = port
        self.ghost_ms = ghost_ms
        self.store = Store()
        self.connections: set[_Connection] = set()
        self._listener: asyncio.Server | None = None
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None
        self._parent_alive_write: int | None = None  # ghost mode: see _fork_ghost

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        # Handlers first: a SIGTERM that arrives while we bind must still mean "stop".
        for signum in SHUTDOWN_SIGNALS:
            loop.add_signal_handler(signum, self._on_shutdown_signal, signum)
        try:
            self._listener = await loop.create_server(
                lambda: _Connection(self), self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            # asyncio rewords bind errors ("error while attempting to bind on address ...");
            # the errno's own text is the part worth one line.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            print(
                f"{PROGRAM}: cannot listen on {self.host}:{self.port}: {reason}"
                " (pick a free --port or stop whatever holds it)",
                file=sys.stderr,
                flush=True,
            )
            return 2
        if self._stopping:  # signalled while binding
            self._listener.close()
            return 0
        if self.ghost_ms is not None:
            self._fork_ghost()
        _say(f"listening on {self._describe_listener()} pid={os.getpid()}")
        await self._stopped
        await asyncio.sleep(0)  # let the aborted transports' close callbacks run
        return 0

    def _describe_listener(self) -> str:
        assert self._listener is not None
        names = []
        for sock in self._listener.sockets:
            address = sock.getsockname()
            host = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
            names.append(f"{host}:{address[1]}")
        return ", ".join(names)

    def _on_shutdown_signal(self, signum: int) -> None:
        if self._stopping:
            return
        self._stopping = True
        # Blocked, never delivered: a second SIGTERM can neither re-enter the shutdown nor
        # kill us with the default action once the loop has restored it at close. A ghost
        # child inherits the mask, so the group-wide SIGTERM cannot cut its window short.
        signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        name = signal.Signals(signum).name
        if self.ghost_ms is not None and self._listener is not None:
            self._become_ghost(name)
        if self._listener is not None:
            self._listener.close()  # closes the listening sockets synchronously
        connections = list(self.connections)
        for connection in connections:
            assert connection.transport is not None
            connection.transport.abort()
        _say(f"{name}: listener closed, closing {len(connections)} connection(s), exiting")
        assert self._stopped is not None
        if not self._stopped.done():
            self._stopped.set_result(None)

    def _fork_ghost(self) -> None:
        """Fork the child that will hold the listener after we exit, before any accept.

        Forking now rather than at SIGTERM time keeps the parent's exit immediate and lets
        the child be already waiting when the parent dies, so its window starts at the
        parent's exit and not a fork-and-start-up later (about 1-2 ms here). The child
        never holds a connection: it is forked before the loop has accepted any.
        """
        assert self._listener is not None and self.ghost_ms is not None
        listener_fds = [sock.fileno() for sock in self._listener.sockets]
        # The parent holds the only write end; its exit (however it dies) closes it, and
        # the child's read of the other end returns EOF: a parent-death signal that needs
        # no pidfd (which a seccomp profile may refuse).
        parent_alive_read, parent_alive_write = os.pipe()
        # The child says when it has let go of our pipes and left our process group; we
        # wait for that before announcing the listener, so a SIGTERM can never find a
        # ghost still in the group or still holding stdout (under load a fresh child can
        # take several ms to get a CPU).
        ready_read, ready_write = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would inherit, and never write, buffered lines
        # Blocked across the fork, so the child can never be stopped by the SIGTERM sent to
        # the parent's group, nor run the parent's handlers.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        if os.fork() == 0:
            _ghost_child(listener_fds, parent_alive_read, ready_write, self.ghost_ms)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        os.close(parent_alive_read)
        os.close(ready_write)
        self._parent_alive_write = parent_alive_write
        if not select.select([ready_read], [], [], GHOST_READY_TIMEOUT_S)[0]:
            print(
                f"{PROGRAM}: warning: the ghost child was not ready after {GHOST_READY_TIMEOUT_S:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        os.close(ready_read)

    def _become_ghost(self, signal_name: str) -> NoReturn:
        _say(f"{signal_name}: ghost mode: exiting now; a child keeps the listener open for {self.ghost_ms} ms")
        # Exit at once: the kernel closes our connections and our copy of the listener;
        # the child's copy keeps the port in LISTEN.
        os._exit(0)


def _ghost_child(listener_fds: list[int], parent_alive_read: int, ready_write: int, ghost_ms: int) -> NoReturn:
    try:
        # Drop the pipes first: the harness waits for their EOF before it sees the reap.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.setsid()  # out of the server's process group: a SIGTERM to the group misses us
        low = 3
        for fd in sorted({*listener_fds, parent_alive_read, ready_write}):
            os.closerange(low, fd)  # every other inherited fd: the loop's, the write end
            low = fd + 1
        os.closerange(low, max(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1024))
        os.write(ready_write, b"r")
        os.close(ready_write)
        while os.read(parent_alive_read, 1):  # b"" (EOF) once the parent has exited
            pass
        time.sleep(ghost_ms / 1000.0)  # the window, counted from the parent's exit
        for fd in listener_fds:
            os.close(fd)  # LISTEN gone; connections still queued in its backlog get a RST
    finally:
        os._exit(0)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the fix, not argparse's two-line usage dump.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {value}")
    return value


def _ghost_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ghost ms must be an integer, got {text!r}") from None
    if not 1 <= value <= MAX_GHOST_MS:
        raise argparse.ArgumentTypeError(f"ghost ms must be in 1..{MAX_GHOST_MS}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=PROGRAM,
        description="A small RESP2 server (PING, ECHO, SET [EX|PX], GET) for handoff-lab.",
    )
    parser.add_argument("--port", type=_port, default=6379, help="TCP port (default 6379)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--ghost-ms",
        type=_ghost_ms,
        default=None,
        metavar="N",
        help="positive control: on SIGTERM exit at once while a forked child keeps the "
        "listening socket open (never accepting) for N ms",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = Server(args.host, args.port, args.ghost_ms)
    try:
        return asyncio.run(server.run())
    except KeyboardInterrupt:  # a SIGINT before the loop's handler was installed
        return 130
