"""The Kubernetes promise over loopback: a rolling restart under load that no caller notices.

Three ``vault-service serve`` processes share one PostgreSQL database. Consumers use the
Python client (``vault_client``) against a round-robin target of every replica, as behind a
headless Service. While 500 sessions complete, each replica in turn is SIGTERMed and, once it
has exited, replaced by a new process on the same ports (a pod rescheduled behind the same
Service). Antom notifies the replica that created a session: one that is away gets Antom's
retries, as the real one would behind an ingress.

What the client does is observed from outside it: a probe sits between the client and its
stub (the client's own public API has no hook for this), records each CreateSession attempt
that failed and, per consumer, when a stream ended and when the next one sent its first
message.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
import pytest
from vault_client import AsyncVaultClient, MemoryCursorStore, pb

from tests.clients.python.conftest import free_port
from tests.fixtures.antom import buyer_submits
from tests.replicas.cards import DECLINED, FINAL_STATUS, THREE_DS, VISA
from tests.replicas.conftest import ServeProcess, SpawnServe, read_log, wait_until
from vault_service.domain import decode_resume_token
from vault_service.emulator import EmulatorServer
from vault_service.store import DataKeyRing

REPLICAS: Final = 3
SESSIONS: Final = 500
CONSUMERS: Final = 3
PRODUCERS: Final = 8
RESTART_AT: Final = (100, 220, 340)
"""Completed sessions after which replica 0, 1, 2 is restarted: every restart under load."""
GRACE: Final = "5"
STREAM_BACK_BOUND: Final = 1.0
CARDS: Final = (VISA, DECLINED, THREE_DS)


@dataclass
class Probe:
    """What one client's calls looked like on the wire."""

    failed_creates: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    stream_ends: list[tuple[float, str]] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    _ended_at: float | None = None

    def ended(self, code: grpc.StatusCode) -> None:
        """A stream ended; a gap runs from the first end after a message to the next message
        (a reopened stream that fails again does not restart it)."""
        now = time.monotonic()
        self.stream_ends.append((now, code.name))
        if self._ended_at is None:
            self._ended_at = now

    @property
    def away(self) -> bool:
        return self._ended_at is not None

    def first_message(self) -> None:
        if self._ended_at is not None:
            self.gaps.append(time.monotonic() - self._ended_at)
            self._ended_at = None


class _ObservedStream:
    def __init__(self, call: Any, probe: Probe) -> None:
        self._call, self._probe, self._first = call, probe, True

    async def read(self) -> Any:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as error:
            self._probe.ended(error.code())
            raise
        if self._first:
            self._first = False
            self._probe.first_message()
        return message

    def cancel(self) -> bool:
        return bool(self._call.cancel())


class _ObservedStub:
    def __init__(self, stub: Any, probe: Probe) -> None:
        self._stub, self._probe = stub, probe

    async def CreateSession(self, request: Any, **kwargs: Any) -> Any:
        try:
            return await self._stub.CreateSession(request, **kwargs)
        except grpc.aio.AioRpcError as error:
            self._probe.failed_creates[request.vaulting_request_id].append(error.code().name)
            raise

    def StreamResults(self, request: Any, **kwargs: Any) -> _ObservedStream:
        return _ObservedStream(self._stub.StreamResults(request, **kwargs), self._probe)


def observed(client: AsyncVaultClient) -> Probe:
    probe = Probe()
    client._stub = _ObservedStub(client._stub, probe)  # type: ignore[assignment]
    return probe


@dataclass
class Consumer:
    client: AsyncVaultClient
    probe: Probe
    events: list[pb.ResultEvent] = field(default_factory=list)
    cursor: MemoryCursorStore = field(default_factory=MemoryCursorStore)

    async def follow(self) -> None:
        async with self.client.results(self.cursor) as stream:
            async for item in stream:
                assert isinstance(item, pb.ResultEvent), item
                self.events.append(item)

    @property
    def positioned(self) -> bool:
        """Whether the stream's opening checkpoint arrived (its token saved): every later
        event reaches this consumer. Entering ``results()`` opens nothing yet."""
        return self.cursor.token is not None

    def final(self) -> set[str]:
        return {
            e.result.vaulting_request_id
            for e in self.events
            if e.result.status in set(FINAL_STATUS.values())
        }


@pytest.mark.timeout(180)
async def test_a_rolling_restart_under_load_loses_and_doubles_nothing(
    serve_processes: SpawnServe,
    emulator: EmulatorServer,
    postgres_dsn: str,
    data_keys: DataKeyRing,
) -> None:
    """500 sessions complete while each of three replicas is SIGTERMed and replaced in turn:
    every consumer receives every event of the log exactly once and in order, every stream
    that ended is back within 1 s, each replica drained and exited 0, and every CreateSession
    that failed on the way succeeded on a retry (the client retries with the same id)."""
    ports = [(free_port(), free_port()) for _ in range(REPLICAS)]

    async def spawn(replica: int) -> ServeProcess:
        grpc_port, http_port = ports[replica]
        return await serve_processes(
            VAULT_GRPC_LISTEN=f"127.0.0.1:{grpc_port}",
            VAULT_HTTP_LISTEN=f"127.0.0.1:{http_port}",
            VAULT_SHUTDOWN_GRACE=GRACE,
        )

    replicas = [await spawn(n) for n in range(REPLICAS)]
    target = "ipv4:" + ",".join(f"127.0.0.1:{grpc_port}" for grpc_port, _ in ports)
    consumers = []
    for _ in range(CONSUMERS):
        client = AsyncVaultClient(target, load_balancing="round_robin")
        consumers.append(Consumer(client, observed(client)))
    producer_client = AsyncVaultClient(target, load_balancing="round_robin")
    producer_probe = observed(producer_client)
    followers = [asyncio.create_task(consumer.follow()) for consumer in consumers]
    completed = 0
    restarts: list[float] = []

    async def produce(ids: list[str]) -> None:
        nonlocal completed
        for rid in ids:
            created = await producer_client.create_session(rid, labels={"order": rid})
            card = CARDS[int(rid.rpartition("-")[2]) % len(CARDS)]
            await buyer_submits(emulator, created.session_data, card)
            completed += 1

    async def roll() -> None:
        for replica, after in enumerate(RESTART_AT):
            await wait_until(lambda a=after: completed >= a, within=60, what=f"{after} sessions")
            began = time.monotonic()
            old = replicas[replica]
            old.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(float(GRACE) + 5):
                assert await old.process.wait() == 0, f"replica {replica} did not drain cleanly"
            replicas[replica] = await spawn(replica)
            restarts.append(time.monotonic() - began)

    rids = [f"roll-{n}" for n in range(SESSIONS)]
    started = time.monotonic()
    try:
        # Not a fixed pause: a consumer whose stream opened late on a loaded machine started
        # "from now" after the first events, and missed them.
        await wait_until(
            lambda: all(consumer.positioned for consumer in consumers),
            within=10,
            what="every consumer's opening checkpoint",
        )
        await asyncio.gather(roll(), *(produce(rids[n::PRODUCERS]) for n in range(PRODUCERS)))
        await wait_until(
            lambda: all(consumer.final() == set(rids) for consumer in consumers),
            within=60,
            what="every session's final event at every consumer",
        )
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.3)  # room for a doubled event to show up
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        for consumer in consumers:
            await consumer.client.close()
        await producer_client.close()

    log = await read_log(postgres_dsn, data_keys)
    for n, consumer in enumerate(consumers):
        received = [decode_resume_token(e.resume_token, log.log_id) for e in consumer.events]
        assert received == [event.event_id for event in log.events], f"consumer {n}"
    gaps = [gap for consumer in consumers for gap in consumer.probe.gaps]
    ends = [end for consumer in consumers for end in consumer.probe.stream_ends]
    assert {code for _, code in ends} <= {"UNAVAILABLE"}, ends
    assert not any(consumer.probe.away for consumer in consumers), "a stream never came back"
    assert len(gaps) >= 1, "no stream was ever ended by a drain"
    assert max(gaps) <= STREAM_BACK_BOUND, f"a stream came back after {max(gaps):.3f} s"
    # create_session returned for every id (it raises when its retries give up), and every id
    # that saw a failed attempt has its session and its final event in the log.
    assert set(producer_probe.failed_creates) <= {e.record.vaulting_request_id for e in log.events}
    print(
        f"\nrolling restart: {SESSIONS} sessions, {len(log.events)} events in"
        f" {elapsed:.1f} s; restarts took {', '.join(f'{r:.2f}' for r in restarts)} s;"
        f" {len(gaps)} streams ended ({len(ends)} ends in all),"
        f" back after max {max(gaps) * 1000:.0f} ms"
        f" (mean {sum(gaps) / len(gaps) * 1000:.0f} ms);"
        f" CreateSession attempts failed and retried: {dict(producer_probe.failed_creates)}"
    )
