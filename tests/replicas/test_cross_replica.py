"""A notification that lands on one replica reaches the readers of every other replica."""

from __future__ import annotations

import asyncio

from tests.fixtures.antom import buyer_submits
from tests.replicas.cards import VISA
from tests.replicas.conftest import OpenStub, StartReplica, Subscriber, subscribed, wait_until
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.emulator import EmulatorServer, Outcome


async def test_a_notification_to_replica_a_reaches_streams_on_b_and_c_and_reads_everywhere(
    start_replica: StartReplica, open_stub: OpenStub, emulator: EmulatorServer
) -> None:
    """The session is created on C but Antom notifies A (as a load balancer may route it):
    StreamResults subscribers on B and C get the event through the database's LISTEN/NOTIFY
    wake-up (checkpoints are 30 s apart, so polling cannot deliver it in time), exactly once,
    and GetResult answers the same result on A, B and C."""
    a = await start_replica()
    b = await start_replica(VAULT_NOTIFY_URL=a.notify_url)
    c = await start_replica(VAULT_NOTIFY_URL=a.notify_url)
    stub_a, stub_b, stub_c = (open_stub(r.grpc_port) for r in (a, b, c))
    on_b, on_c = Subscriber([stub_b]), Subscriber([stub_c])

    async with subscribed([on_b, on_c]):
        created = await stub_c.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="cross-1", labels={"order": "o-1"}),
            timeout=10,
        )
        await buyer_submits(emulator, created.session_data, VISA)
        await wait_until(
            lambda: on_b.caught_up(1) and on_c.caught_up(1), within=5, what="the event on B and C"
        )
        async with asyncio.timeout(10):
            await emulator.state.notifier.wait_idle()
        await asyncio.sleep(0.2)  # room for a doubled event to show up

    attempts = emulator.state.notifier.attempts("cross-1")
    assert [(x.url, x.outcome) for x in attempts] == [(a.notify_url, Outcome.ACKNOWLEDGED)]
    assert len(on_b.events) == len(on_c.events) == 1
    assert on_b.ends == on_c.ends == []
    event = on_b.events[0]
    assert event == on_c.events[0]
    assert event.source == pb.EVENT_SOURCE_NOTIFICATION
    assert event.result.vaulting_request_id == "cross-1"
    assert event.result.status == pb.VAULTING_STATUS_SUCCEEDED
    assert dict(event.result.labels) == {"order": "o-1"}
    for stub in (stub_a, stub_b, stub_c):
        read = await stub.GetResult(pb.GetResultRequest(vaulting_request_id="cross-1"), timeout=5)
        assert read.result == event.result
