"""CreateSession with one id on several replicas at once makes one Antom call."""

from __future__ import annotations

import asyncio

from tests.replicas.conftest import OpenStub, StartReplica
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.emulator import EmulatorServer

IDS = [f"same-id-{n}" for n in range(4)]
CALLS_PER_REPLICA = 2
ANTOM_LATENCY_MS = 150


async def test_concurrent_duplicates_on_three_replicas_make_one_antom_call_per_id(
    start_replica: StartReplica, open_stub: OpenStub, emulator: EmulatorServer
) -> None:
    """Every id is sent by two callers to each of three replicas at the same moment, while
    Antom takes 150 ms to answer (a wide window for a race): Antom sees exactly one
    createVaultingSession per id, one caller per id gets ``created`` and every caller gets
    the same session. Guards the cross-replica creation lock (an in-process lock alone would
    let each replica call Antom)."""
    replicas = [await start_replica() for _ in range(3)]
    stubs = [open_stub(r.grpc_port) for r in replicas]
    emulator.state.faults.update({"latency_ms": ANTOM_LATENCY_MS})

    async def create_everywhere(rid: str) -> list[pb.CreateSessionResponse]:
        request = pb.CreateSessionRequest(vaulting_request_id=rid, labels={"order": rid})
        return list(
            await asyncio.gather(
                *(
                    stub.CreateSession(request, timeout=15)
                    for stub in stubs
                    for _ in range(CALLS_PER_REPLICA)
                )
            )
        )

    answers = await asyncio.gather(*(create_everywhere(rid) for rid in IDS))

    for rid, per_id in zip(IDS, answers, strict=True):
        assert emulator.state.stats.calls("createVaultingSession", rid) == 1, rid
        assert len(per_id) == len(stubs) * CALLS_PER_REPLICA
        assert sum(answer.created for answer in per_id) == 1, rid
        sessions = {
            (a.vaulting_request_id, a.vaulting_session_id, a.session_data, a.expire_time.seconds)
            for a in per_id
        }
        assert len(sessions) == 1, sessions
        assert next(iter(sessions))[0] == rid
