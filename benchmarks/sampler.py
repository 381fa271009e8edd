"""Cost of one listener sample: netlink sock_diag sampler versus one /proc/net/tcp read.

Run: python benchmarks/sampler.py [--samples N] [--all-modes] [--pyroute2]

Opens a listener on a free port (IPv4 and IPv6), then alternates batches of netlink
samples and of /proc/net/tcp reads so both see the same machine state, and prints the
median and p99 of each. The last line is machine-readable:

    sampler_us_per_sample=<median> proc_net_tcp_us_per_read=<median> ratio=<r>

where ratio = proc_net_tcp median / sampler median (how many times cheaper the sampler
is). The sampler target is a median <= 50 us per sample (both families).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.observe import procnet
from lab.observe.sockdiag import MODES, ListenerSampler

BATCH = 200


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def open_listeners() -> tuple[int, list[socket.socket]]:
    v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    v4.bind(("127.0.0.1", 0))
    v4.listen(16)
    port = v4.getsockname()[1]
    sockets = [v4]
    if socket.has_ipv6:
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            v6.bind(("::1", port))
            v6.listen(16)
            sockets.append(v6)
        except OSError:
            v6.close()
    return port, sockets


def read_proc_net_tcp() -> None:
    with open(procnet.PROC_NET_TCP, "rb") as f:
        f.read()


def measure(contenders: dict[str, Callable[[], object]], samples: int) -> dict[str, list[float]]:
    """Interleave batches of every contender; return sorted per-call costs in us."""
    costs: dict[str, list[float]] = {name: [] for name in contenders}
    for call in contenders.values():  # warm caches and code paths
        for _ in range(50):
            call()
    clock = time.perf_counter_ns
    done = 0
    while done < samples:
        batch = min(BATCH, samples - done)
        for name, call in contenders.items():
            bucket = costs[name]
            for _ in range(batch):
                started = clock()
                call()
                bucket.append((clock() - started) / 1000.0)
        done += batch
    return {name: sorted(values) for name, values in costs.items()}


def pyroute2_contender(port: int) -> Callable[[], object] | None:
    try:
        from pyroute2 import DiagSocket  # type: ignore[import-not-found]
    except ImportError:
        print("pyroute2 not installed: skipped (pip install pyroute2 to compare)")
        return None
    diag = DiagSocket()
    diag.bind()

    def sample() -> list[object]:
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in diag.get_sock_stats(family=family, states=1 << 10):
                if msg["idiag_sport"] == port:
                    found.append(msg)
        return found

    return sample


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000, help="calls per contender")
    parser.add_argument("--all-modes", action="store_true", help="also time every sock_diag request mode")
    parser.add_argument("--pyroute2", action="store_true", help="also time pyroute2")
    args = parser.parse_args()
    if args.samples < 100:
        print("error: --samples must be at least 100", file=sys.stderr)
        return 2

    port, listeners = open_listeners()
    samplers: list[ListenerSampler] = []
    try:
        default = ListenerSampler(port)
        samplers.append(default)
        found = default.sample()
        if len(found) != len(listeners):
            print(f"error: sampler found {len(found)} listeners, expected {len(listeners)}")
            return 1
        contenders: dict[str, Callable[[], object]] = {f"sampler[{default.mode}]": default.sample}
        if args.all_modes:
            for mode in MODES:
                if mode != default.mode:
                    sampler = ListenerSampler(port, mode=mode)
                    samplers.append(sampler)
                    contenders[f"sampler[{mode}]"] = sampler.sample
        if args.pyroute2:
            extra = pyroute2_contender(port)
            if extra is not None:
                contenders["pyroute2"] = extra
        contenders["proc_net_tcp_read"] = read_proc_net_tcp
        contenders["proc_net_tcp_read+decode"] = lambda: procnet.read_table((procnet.PROC_NET_TCP,))

        costs = measure(contenders, args.samples)
    finally:
        for sampler in samplers:
            sampler.close()
        for sock in listeners:
            sock.close()

    with open(procnet.PROC_NET_TCP, "rb") as f:
        rows = max(0, f.read().count(b"\n") - 1)
    print(f"port {port}, {len(listeners)} listeners, {rows} rows in /proc/net/tcp, {args.samples} calls each")
    print(f"{'contender':28} {'median_us':>10} {'p99_us':>10}")
    for name, values in costs.items():
        print(f"{name:28} {statistics.median(values):10.1f} {percentile(values, 0.99):10.1f}")
    sampler_median = statistics.median(costs[f"sampler[{default.mode}]"])
    proc_median = statistics.median(costs["proc_net_tcp_read"])
    print(
        f"sampler_us_per_sample={sampler_median:.1f} "
        f"proc_net_tcp_us_per_read={proc_median:.1f} "
        f"ratio={proc_median / sampler_median:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
