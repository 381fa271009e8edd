"""Decoder for the kernel's TCP socket tables /proc/net/tcp and /proc/net/tcp6.

Standard library only (it runs inside the images). Row layout, as printed by the
kernel's tcp4_seq_show / tcp6_seq_show (FACTS.md section 8):

    sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...

- IPv4 addresses are one 32-bit word printed with %08X in host (little-endian) order,
  so `0100007F` is 127.0.0.1. IPv6 addresses are four such words, each little-endian.
- Ports are plain big-endian hex (`18EB` is 6379).
- `tr` is the kind of timer pending on the socket, `tm->when` its remaining time in
  clock ticks (USER_HZ, see `os.sysconf("SC_CLK_TCK")`).

One read of /proc/net/tcp walks the whole hash table (milliseconds on a busy host):
fine for `lab sockets`, too coarse for watching a 5 ms teardown window; the netlink
sampler in lab.observe.sockdiag does that.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

PROC_NET_TCP = "/proc/net/tcp"
PROC_NET_TCP6 = "/proc/net/tcp6"

# include/net/tcp_states.h
TCP_STATES: dict[int, str] = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
    0x0C: "NEW_SYN_RECV",
}
STATE_CODES: dict[str, int] = {name: code for code, name in TCP_STATES.items()}

# The `tr` column (net/ipv4/tcp_ipv4.c get_tcp4_sock, and the TIME_WAIT/request variants).
TIMER_KINDS: dict[int, str] = {
    0: "none",
    1: "retransmit",
    2: "keepalive",
    3: "time_wait",
    4: "zero_window_probe",
}

_IPV4_HEX_WIDTH = 8
_IPV6_HEX_WIDTH = 32
_MIN_FIELDS = 10  # sl .. inode; the kernel prints more (refcount, pointer, ...) for most rows


def state_code(name: str) -> int:
    """The numeric state for a name such as `listen` or `TIME_WAIT` (case-insensitive)."""
    key = name.strip().upper().replace("-", "_")
    if key not in STATE_CODES:
        known = ", ".join(s.lower() for s in STATE_CODES)
        raise ValueError(f"unknown TCP state {name!r}; use one of: {known}")
    return STATE_CODES[key]


def state_name(code: int) -> str:
    """The kernel's name of a state code; codes newer than this table keep their number."""
    return TCP_STATES.get(code, f"UNKNOWN_{code:02X}")


@dataclass(frozen=True)
class TcpRow:
    """One decoded row of /proc/net/tcp or /proc/net/tcp6."""

    slot: int
    family: int  # socket.AF_INET or socket.AF_INET6
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    state_code: int
    tx_queue: int
    rx_queue: int
    timer: int  # key of TIMER_KINDS
    timer_ticks: int  # the `tm->when` field, in clock ticks
    retransmits: int
    uid: int
    timeout: int
    inode: int

    @property
    def state(self) -> str:
        return state_name(self.state_code)

    @property
    def timer_kind(self) -> str:
        return TIMER_KINDS.get(self.timer, f"unknown_{self.timer}")

    @property
    def timer_ms(self) -> float:
        """`tm->when` converted from clock ticks to milliseconds."""
        return self.timer_ticks * 1000.0 / _clock_ticks_per_second()

    @property
    def local(self) -> str:
        return _endpoint(self.family, self.local_address, self.local_port)

    @property
    def remote(self) -> str:
        return _endpoint(self.family, self.remote_address, self.remote_port)


def _clock_ticks_per_second() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100  # USER_HZ on every Linux architecture the lab runs on


def _endpoint(family: int, address: str, port: int) -> str:
    return f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"


def decode_address(hex_address: str) -> tuple[int, str]:
    """Decode the kernel's hex address (8 digits IPv4, 32 digits IPv6) to (family, text)."""
    try:
        raw = bytes.fromhex(hex_address)
    except ValueError:
        raise ValueError(f"address {hex_address!r} is not hexadecimal") from None
    if len(hex_address) == _IPV4_HEX_WIDTH:
        return socket.AF_INET, str(ipaddress.IPv4Address(raw[::-1]))
    if len(hex_address) == _IPV6_HEX_WIDTH:
        # Four 32-bit words, each printed in host (little-endian) byte order.
        in_network_order = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        address = ipaddress.IPv6Address(in_network_order)
        if address.ipv4_mapped is not None:  # a v4 peer of a dual-stack socket, as ss shows it
            return socket.AF_INET6, f"::ffff:{address.ipv4_mapped}"
        return socket.AF_INET6, str(address)
    raise ValueError(
        f"address {hex_address!r} has {len(hex_address)} hex digits; "
        f"expected {_IPV4_HEX_WIDTH} (tcp) or {_IPV6_HEX_WIDTH} (tcp6)"
    )


def _decode_endpoint(field: str) -> tuple[int, str, int]:
    address, sep, port = field.partition(":")
    if not sep or not port:
        raise ValueError(f"endpoint {field!r} is not ADDRESS:PORT")
    family, text = decode_address(address)
    return family, text, int(port, 16)


def _hex_pair(field: str, what: str) -> tuple[int, int]:
    first, sep, second = field.partition(":")
    if not sep:
        raise ValueError(f"{what} {field!r} is not HEX:HEX")
    return int(first, 16), int(second, 16)


def is_header(line: str) -> bool:
    return line.lstrip().startswith("sl ")


def parse_row(line: str) -> TcpRow:
    """Decode one data row. Raises ValueError naming the line when it is malformed."""
    fields = line.split()
    try:
        if len(fields) < _MIN_FIELDS:
            raise ValueError(f"{len(fields)} fields, expected at least {_MIN_FIELDS}")
        slot_text = fields[0]
        if not slot_text.endswith(":"):
            raise ValueError(f"slot {slot_text!r} does not end with ':'")
        slot = int(slot_text[:-1])
        family, local_address, local_port = _decode_endpoint(fields[1])
        remote_family, remote_address, remote_port = _decode_endpoint(fields[2])
        if remote_family != family:
            raise ValueError("local and remote addresses have different widths")
        code = int(fields[3], 16)
        tx_queue, rx_queue = _hex_pair(fields[4], "tx_queue:rx_queue")
        timer, timer_ticks = _hex_pair(fields[5], "tr:tm->when")
        retransmits = int(fields[6], 16)
        uid = int(fields[7])
        timeout = int(fields[8])
        inode = int(fields[9])
    except ValueError as err:
        raise ValueError(f"malformed socket-table line {line.strip()!r}: {err}") from None
    return TcpRow(
        slot=slot,
        family=family,
        local_address=local_address,
        local_port=local_port,
        remote_address=remote_address,
        remote_port=remote_port,
        state_code=code,
        tx_queue=tx_queue,
        rx_queue=rx_queue,
        timer=timer,
        timer_ticks=timer_ticks,
        retransmits=retransmits,
        uid=uid,
        timeout=timeout,
        inode=inode,
    )


def parse_table(text: str) -> list[TcpRow]:
    """Decode the text of /proc/net/tcp or /proc/net/tcp6 (header optional).

    The family comes from each row's address width, so a saved copy of either file
    (or a concatenation of both) decodes the same way.
    """
    return [parse_row(line) for line in text.splitlines() if line.strip() and not is_header(line)]


def read_table(paths: Iterable[str] = (PROC_NET_TCP, PROC_NET_TCP6)) -> list[TcpRow]:
    """Read and decode the live tables; a missing file (no IPv6 in this kernel) is skipped."""
    rows: list[TcpRow] = []
    for path in paths:
        try:
            with open(path, encoding="ascii") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        rows.extend(parse_table(text))
    return rows


def select(rows: Iterable[TcpRow], *, port: int | None = None, state: int | None = None) -> list[TcpRow]:
    """Rows whose local or remote port is `port` and whose state code is `state`."""
    return [
        row
        for row in rows
        if (port is None or port in (row.local_port, row.remote_port)) and (state is None or row.state_code == state)
    ]
