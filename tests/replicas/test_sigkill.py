"""A replica killed mid-stream: its subscribers resume on another one and lose nothing."""

from __future__ import annotations

import asyncio
import itertools
import signal

import grpc

from tests.fixtures.antom import buyer_submits
from tests.replicas.cards import DECLINED, VISA
from tests.replicas.conftest import (
    OpenStub,
    SpawnServe,
    Subscriber,
    assert_received_exactly,
    read_log,
    subscribed,
    wait_until,
)
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.emulator import EmulatorServer, Outcome
from vault_service.store import DataKeyRing

SESSIONS = 24
EVENTS_BEFORE_KILL = 6
EVENTS_WHILE_AWAY = 3
PAUSE = 0.05


def acknowledged(emulator: EmulatorServer) -> int:
    """Notifications Y has stored (it acknowledges only what it committed)."""
    attempts = emulator.state.notifier.attempts()
    return sum(attempt.outcome is Outcome.ACKNOWLEDGED for attempt in attempts)


async def test_a_subscriber_resumes_on_another_replica_after_sigkill_and_loses_nothing(
    serve_processes: SpawnServe,
    open_stub: OpenStub,
    emulator: EmulatorServer,
    postgres_dsn: str,
    data_keys: DataKeyRing,
) -> None:
    """Two ``vault-service serve`` processes share the database; Antom notifies Y. A
    subscriber streams from X while cards are saved one after another; X is SIGKILLed in the
    middle of that, the stream breaks with UNAVAILABLE and the subscriber resumes on Y from
    its last token, held back until Y has committed a few more events. Guards: the events
    committed before, during and after the kill all arrive, exactly once and in log order,
    and the dead replica leaves neither a process nor a database connection behind (checked
    by the fixture)."""
    y = await serve_processes()
    x = await serve_processes(VAULT_NOTIFY_URL=y.notify_url)
    stub_x, stub_y = open_stub(x.grpc_port), open_stub(y.grpc_port)
    subscriber = Subscriber([stub_x, stub_y])
    cards = dict(zip((f"kill-{n}" for n in range(SESSIONS)), itertools.cycle((VISA, DECLINED))))

    async def produce() -> None:
        """Save cards one after another: each makes one event, committed by Y."""
        for rid, card in cards.items():
            created = await stub_y.CreateSession(
                pb.CreateSessionRequest(vaulting_request_id=rid), timeout=10
            )
            await buyer_submits(emulator, created.session_data, card)
            await asyncio.sleep(PAUSE)

    async with subscribed([subscriber]):
        producer = asyncio.create_task(produce())
        try:
            await wait_until(
                lambda: subscriber.caught_up(EVENTS_BEFORE_KILL),
                within=10,
                what=f"{EVENTS_BEFORE_KILL} events on X",
            )
            subscriber.gate = asyncio.Event()
            x.process.send_signal(signal.SIGKILL)
            async with asyncio.timeout(10):
                assert await x.process.wait() == -signal.SIGKILL
            # Let Y commit a few events while the subscriber is away, then let it resume.
            missed = len(subscriber.events) + EVENTS_WHILE_AWAY
            await wait_until(
                lambda: acknowledged(emulator) >= missed,
                within=10,
                what="events committed while the subscriber is away",
            )
            subscriber.gate.set()
            async with asyncio.timeout(30):
                await producer
        finally:
            producer.cancel()
        async with asyncio.timeout(10):
            await emulator.state.notifier.wait_idle()
        log = await read_log(postgres_dsn, data_keys)
        await wait_until(
            lambda: subscriber.caught_up(len(log.events)),
            within=5,
            what="the subscriber to reach the end of the log",
        )
        await asyncio.sleep(0.2)  # room for a doubled event to show up

    outcomes = [attempt.outcome for attempt in emulator.state.notifier.attempts()]
    assert outcomes == [Outcome.ACKNOWLEDGED] * SESSIONS
    assert [e.record.vaulting_request_id for e in log.events] == list(cards)
    assert_received_exactly(subscriber, log, after=0, name="subscriber")
    broken = subscriber.ends[0]
    assert (broken.replica, broken.code) == (0, grpc.StatusCode.UNAVAILABLE), subscriber.ends
    assert broken.events_before >= EVENTS_BEFORE_KILL, "killed mid-stream"
    assert broken.events_before + EVENTS_WHILE_AWAY < len(log.events), "events after the resume"
    assert all(end.code is grpc.StatusCode.UNAVAILABLE for end in subscriber.ends)
