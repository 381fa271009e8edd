"""`lab sockets`: the kernel's TCP socket table, decoded (the seed's watcher, as a command).

    lab sockets [--port N] [--state NAME] [--from FILE] [--watch [--interval-ms M]]

Reads /proc/net/tcp and /proc/net/tcp6 (or a saved copy of either with --from, e.g.
from a bug report), and shows for each row the process holding its inode when that
process is visible to us in /proc/PID/fd.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

from lab.observe import procfs, procnet
from lab.observe.procnet import TcpRow

HEADERS = ["sl", "local", "remote", "state", "tx_q", "rx_q", "timer", "retr", "uid", "inode", "process"]

RowKey = tuple[int, str, int, str, int]


class UsageError(Exception):
    """Bad input: the message is one line that names the fix."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, metavar="N", help="only sockets whose local or remote port is N")
    parser.add_argument(
        "--state", metavar="NAME", help="only this state, case-insensitive (listen, established, time_wait, ...)"
    )
    parser.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="decode a saved copy of /proc/net/tcp or /proc/net/tcp6 instead",
    )
    parser.add_argument("--watch", action="store_true", help="re-sample and print what changes until Ctrl-C")
    parser.add_argument(
        "--interval-ms", type=int, default=200, metavar="M", help="sampling interval of --watch (default 200 ms)"
    )


def _filters(args: argparse.Namespace) -> tuple[int | None, int | None]:
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535 (got {args.port})")
    state = None
    if args.state is not None:
        try:
            state = procnet.state_code(args.state)
        except ValueError as exc:
            raise UsageError(f"--state: {exc}") from None
    if args.watch and args.from_file:
        raise UsageError("--watch samples the live table; drop --from or --watch")
    if args.interval_ms < 1:
        raise UsageError(f"--interval-ms must be at least 1 (got {args.interval_ms})")
    return args.port, state


def _load(args: argparse.Namespace, port: int | None, state: int | None) -> list[TcpRow]:
    if args.from_file:
        try:
            with open(args.from_file, encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.from_file}: {exc.strerror}") from None
        try:
            rows = procnet.parse_table(text)
        except ValueError as exc:
            raise UsageError(f"{args.from_file}: {exc}") from None
    else:
        rows = procnet.read_table()
    return procnet.select(rows, port=port, state=state)


def _owner_names(rows: list[TcpRow]) -> dict[int, str]:
    inodes = {row.inode for row in rows if row.inode}
    if not inodes:
        return {}
    owners = procfs.inode_owners(inodes)
    return {inode: ", ".join(f"{pid}/{name}" for pid, name in entries) for inode, entries in owners.items()}


def _cells(row: TcpRow, owners: dict[int, str]) -> list[object]:
    timer = row.timer_kind if row.timer == 0 else f"{row.timer_kind}:{row.timer_ticks}"
    return [
        row.slot,
        row.local,
        row.remote,
        row.state,
        row.tx_queue,
        row.rx_queue,
        timer,
        row.retransmits,
        row.uid,
        row.inode,
        owners.get(row.inode, ""),
    ]


def format_table(rows: list[TcpRow], owners: dict[int, str]) -> str:
    table = [_cells(row, owners) for row in rows]
    try:
        from tabulate import tabulate  # the UI's only non-stdlib import, optional
    except ImportError:
        return _plain_table(table)
    return tabulate(table, headers=HEADERS, tablefmt="simple")


def _plain_table(table: list[list[object]]) -> str:
    text = [[str(cell) for cell in row] for row in [HEADERS, *table]]
    widths = [max(len(row[i]) for row in text) for i in range(len(HEADERS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in text)


def _key(row: TcpRow) -> RowKey:
    return (row.family, row.local_address, row.local_port, row.remote_address, row.remote_port)


def _watch(args: argparse.Namespace, port: int | None, state: int | None) -> int:
    interval_s = args.interval_ms / 1000.0
    previous = {_key(row): row for row in _load(args, port, state)}
    print(format_table(list(previous.values()), _owner_names(list(previous.values()))))
    print(f"-- watching every {args.interval_ms} ms; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(interval_s)
            current = {_key(row): row for row in _load(args, port, state)}
            stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
            appeared = [row for key, row in current.items() if key not in previous]
            owners = _owner_names(appeared)
            for row in appeared:
                owner = owners.get(row.inode)
                print(
                    f"{stamp} + {row.local} {row.remote} {row.state} inode {row.inode}"
                    + (f" ({owner})" if owner else "")
                )
            for key, row in previous.items():
                if key not in current:
                    print(f"{stamp} - {row.local} {row.remote} {row.state} inode {row.inode}")
                elif current[key].state_code != row.state_code:
                    print(f"{stamp} ~ {row.local} {row.remote} {row.state} -> {current[key].state}")
            sys.stdout.flush()
            previous = current
    except KeyboardInterrupt:
        return 0


def run(args: argparse.Namespace) -> int:
    try:
        port, state = _filters(args)
        if args.watch:
            return _watch(args, port, state)
        rows = _load(args, port, state)
    except UsageError as exc:
        print(f"lab sockets: error: {exc}", file=sys.stderr)
        return 2
    owners = {} if args.from_file else _owner_names(rows)
    if not rows:
        print("no matching sockets")
        return 0
    print(format_table(rows, owners))
    return 0
