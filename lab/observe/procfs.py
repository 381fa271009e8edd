"""What /proc/PID/fd says about a process: its sockets and whether it holds an io_uring.

Standard library only (it runs inside the images). Processes come and go while we
read, and other users' fd directories are unreadable without privileges, so every
reader here treats "vanished" and "not allowed" as absence, never as an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

PROC = "/proc"
IO_URING_LINK = "anon_inode:[io_uring]"
_SOCKET_PREFIX = "socket:["
# Reading another process's fds can fail in all these ways without it being a bug.
_GONE_OR_HIDDEN = (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError)


def _fd_links(pid: int) -> Iterator[str]:
    """The link targets of the process's open fds. Raises OSError if the directory
    cannot be listed; individual fds closing mid-scan are skipped."""
    directory = f"{PROC}/{pid}/fd"
    for name in os.listdir(directory):
        try:
            yield os.readlink(f"{directory}/{name}")
        except _GONE_OR_HIDDEN:
            continue


def holds_io_uring(pid: int) -> bool | None:
    """True if the process has an io_uring instance open (an fd linking to
    `anon_inode:[io_uring]`), False if not, None if it is gone or unreadable."""
    try:
        return any(link == IO_URING_LINK for link in _fd_links(pid))
    except OSError:  # gone, hidden from us, or /proc not mounted
        return None


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets the process holds (`socket:[N]` fd links); empty if gone."""
    try:
        return {int(link[len(_SOCKET_PREFIX) : -1]) for link in _fd_links(pid) if link.startswith(_SOCKET_PREFIX)}
    except OSError:
        return set()


def process_name(pid: int) -> str | None:
    """The process's command name (/proc/PID/comm), or None if it is gone."""
    try:
        with open(f"{PROC}/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def _pids() -> Iterator[int]:
    for entry in os.listdir(PROC):
        if entry.isdigit():
            yield int(entry)


def inode_owners(inodes: Iterable[int] | None = None) -> dict[int, list[tuple[int, str]]]:
    """Map socket inode -> [(pid, name), ...] over every process we may inspect.

    With `inodes`, only those are reported (the scan still visits every process).
    Processes that vanish mid-scan or whose fds are hidden from us are skipped.
    """
    wanted = set(inodes) if inodes is not None else None
    owners: dict[int, list[tuple[int, str]]] = {}
    for pid in _pids():
        held = socket_inodes(pid)
        if wanted is not None:
            held &= wanted
        if not held:
            continue
        name = process_name(pid)
        if name is None:  # exited between the two reads
            continue
        for inode in sorted(held):
            owners.setdefault(inode, []).append((pid, name))
    return owners
