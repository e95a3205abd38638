"""CreateSession load: unique ``vaulting_request_id`` per call, each answer checked as created."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from vault_service._proto.vault.v1 import vault_service_pb2 as pb

from ..service.measure import Meter, Run, drive
from ..service.processes import Service

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub


def create_call(
    stub: VaultServiceAsyncStub, svc: Service, prefix: str
) -> Callable[[int], Awaitable[None]]:
    async def call(n: int) -> None:
        request_id = f"{prefix}-{n}"
        answer = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id=request_id),
            timeout=10,
            metadata=svc.access.metadata,
        )
        if not answer.created:
            raise RuntimeError(f"{request_id} was not created")

    return call


async def create_sessions(
    stub: VaultServiceAsyncStub,
    svc: Service,
    meter: Meter,
    prefix: str,
    calls: int,
    concurrency: int,
) -> Run:
    """One timed window of ``calls`` CreateSessions by ``concurrency`` workers."""
    return await drive(
        meter, calls, concurrency, create_call(stub, svc, f"{prefix}-c{concurrency}")
    )
