"""The staged suite: one table of stages, each a short function of a StageContext.

The stages follow the CodeCrafters Redis tester (FACTS.md section 2). Adding a stage is
one function plus one row in STAGES. `kill_before_close` is the tester's kill order:
rg2, wy1 and zu2 leave their clients connected while the server is killed; the others
close theirs inside the stage. Standard library only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.harness import resp
from lab.harness.client import Client, DialFailed, ReadOutcome
from lab.harness.words import Words

PING = ("PING",)


class StageFailure(Exception):
    """A failed check: `lines` is the tester's failure block, `diagnosis` the lab's cause."""

    def __init__(self, lines: list[str], diagnosis: str | None = None) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.diagnosis = diagnosis


@dataclass
class Exchange:
    """The first command of a stage and what came back: evidence for the handoff."""

    client: str
    sent_at_ns: int
    outcome: ReadOutcome
    passed: bool


@dataclass
class StageContext:
    slug: str
    port: int
    words: Words
    log: Callable[[str], None]
    event: Callable[[str, str], None]
    should_stop: Callable[[], bool] = lambda: False
    clients: list[Client] = field(default_factory=list)
    first_exchange: Exchange | None = None
    first_dial_done: threading.Event = field(default_factory=threading.Event)

    def tester(self, line: str) -> None:
        self.log(f"[tester::#{self.slug.upper()}] {line}")

    def client(self, name: str, attempts: int = 52, interval_s: float = 0.1) -> Client:
        client = Client(name=name, port=self.port, events=self.event)
        self.clients.append(client)
        try:
            client.dial(attempts=attempts, interval_s=interval_s, should_stop=self.should_stop,
                        after_first_attempt=self.first_dial_done.set)
        except DialFailed as exc:
            raise StageFailure(
                [f"Failed to connect to port {self.port}: {exc}"],
                f"every dial to port {self.port} failed ({len(client.attempts)} attempts)",
            ) from None
        return client

    def close(self, client: Client) -> None:
        client.close()

    def close_all(self) -> None:
        for client in self.clients:
            client.close()

    def expect(self, client: Client, words: tuple[str, ...], expected: resp.Value) -> None:
        """Send one command as redis-cli would and check the single reply."""
        self.tester(f"{client.name}: $ redis-cli {' '.join(words)}")
        payload = resp.command(*words)
        sent_at = time.monotonic_ns()
        client.send(payload)
        self.tester(f"{client.name}: Sent bytes: {resp.quote(payload)}")
        outcome = client.read()
        passed = False
        try:
            if outcome.data:
                self.tester(f"{client.name}: Received bytes: {resp.quote(outcome.data)}")
            try:
                value = resp.decode_exactly_one(outcome.data)
            except resp.RESPDecodeError as exc:
                raise StageFailure(
                    resp.render_decode_error(outcome.data, exc), describe_outcome(outcome, sent_at)
                ) from None
            self.tester(f"{client.name}: Received RESP {value.describe()}")
            if value != expected:
                raise StageFailure(
                    [f"Expected {expected.describe()}, got {value.describe()}"],
                    f"the server answered, with the wrong reply ({value.describe()})",
                )
            shown = expected.data if expected.data is not None else "nil"
            self.tester(f'{client.name}: \u2714\ufe0e Received "{shown}"' if expected.kind != "bulk"
                        or expected.data is not None else f"{client.name}: \u2714\ufe0e Received null bulk string")
            passed = True
        finally:
            if self.first_exchange is None:
                self.first_exchange = Exchange(client.name, sent_at, outcome, passed)


def describe_outcome(outcome: ReadOutcome, sent_at_ns: int) -> str:
    """The precise cause behind the tester's one message."""
    ended_ms = ((outcome.ended_at_ns or sent_at_ns) - sent_at_ns) / 1e6
    if outcome.data:
        return f"received {len(outcome.data)} bytes that are not one complete RESP value ({outcome.cause})"
    closed = ""
    if outcome.closed_at_ns is not None:  # when, not only what: a ghost resets at once
        closed = f" {(outcome.closed_at_ns - sent_at_ns) / 1e6:.1f} ms after the request"
    if outcome.cause == "eof":
        return f"connection closed by the peer (EOF){closed} with no reply; the tester waited its full 2 s"
    if outcome.cause == "reset":
        return f"connection reset by the peer (ECONNRESET){closed} with no reply"
    return f"no reply and no close for {ended_ms:.0f} ms: the peer accepted but never answered"


def run_bind(ctx: StageContext) -> None:
    # jm1: the tester retries the dial every second for about 15 s; any connect passes.
    ctx.tester(f"Connecting to port {ctx.port}...")
    client = ctx.client("client", attempts=15, interval_s=1.0)
    ctx.tester("Connection successful")
    ctx.close(client)


def run_ping(ctx: StageContext) -> None:
    client = ctx.client("client")
    ctx.tester("Connection established, sending ping command...")
    ctx.expect(client, PING, resp.simple("PONG"))


def run_ping_pong_multiple(ctx: StageContext) -> None:
    client = ctx.client("client-1")
    for _ in range(3):
        ctx.expect(client, PING, resp.simple("PONG"))


def run_concurrent_clients(ctx: StageContext) -> None:
    first = ctx.client("client-1")
    second = ctx.client("client-2")
    for client in (first, second, first, first, second):
        ctx.expect(client, PING, resp.simple("PONG"))
    third = ctx.client("client-3")
    ctx.expect(third, PING, resp.simple("PONG"))


def run_echo(ctx: StageContext) -> None:
    client = ctx.client("client")
    word = ctx.words.one()
    ctx.expect(client, ("ECHO", word), resp.bulk(word))
    ctx.close(client)


def run_set_get(ctx: StageContext) -> None:
    client = ctx.client("client")
    key, value = ctx.words.distinct(2)
    ctx.expect(client, ("SET", key, value), resp.simple("OK"))
    ctx.expect(client, ("GET", key), resp.bulk(value))
    ctx.close(client)


def run_expiry(ctx: StageContext) -> None:
    client = ctx.client("client")
    key, value = ctx.words.distinct(2)
    ctx.expect(client, ("SET", key, value, "PX", "100"), resp.simple("OK"))
    ctx.expect(client, ("GET", key), resp.bulk(value))
    ctx.tester("Sleeping for 101ms")
    time.sleep(0.101)
    ctx.expect(client, ("GET", key), resp.bulk(None))
    ctx.close(client)


@dataclass(frozen=True)
class Stage:
    slug: str
    title: str
    run: Callable[[StageContext], None]
    kill_before_close: bool  # the tester's kill order for this stage
    mandated_sleep_s: float = 0.0  # sleeps the stage itself requires (for overhead figures)


STAGES: tuple[Stage, ...] = (
    Stage("jm1", "Bind to a port", run_bind, kill_before_close=False),
    Stage("rg2", "Respond to PING", run_ping, kill_before_close=True),
    Stage("wy1", "Respond to multiple PINGs", run_ping_pong_multiple, kill_before_close=True),
    Stage("zu2", "Handle concurrent clients", run_concurrent_clients, kill_before_close=True),
    Stage("qq0", "Implement the ECHO command", run_echo, kill_before_close=False),
    Stage("la7", "Implement the SET & GET commands", run_set_get, kill_before_close=False),
    Stage("yz1", "Expiry", run_expiry, kill_before_close=False, mandated_sleep_s=0.101),
)
STAGE_TIMEOUT_S = 10.0
BY_SLUG = {stage.slug: stage for stage in STAGES}
SLUGS = tuple(stage.slug for stage in STAGES)
