"""Phase 1: CreateSession at each concurrency, next to the standard health Check on the same
server as the gRPC floor (both pay the same caller authentication)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc

from .measure import Meter, drive, pct
from .processes import Service, health_stub
from .report import Report, add_row, ms


async def unary_phase(
    args: argparse.Namespace, svc: Service, meter: Meter, report: Report
) -> list[str]:
    """CreateSession (and the health Check floor) at each concurrency; returns the ids made."""
    rows = report.table(
        "### CreateSession (unary, through Antom) and the gRPC floor",
        [
            "call",
            "concurrency",
            "calls",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "service CPU µs/call",
            "emulator CPU µs/call",
            "bench CPU µs/call",
            "cores busy (all 3)",
            "cores busy (others)",
        ],
    )
    created: list[str] = []
    metadata = svc.access.metadata
    async with svc.channel() as chan:
        stub = pb_grpc.VaultServiceStub(chan)
        health = health_stub(chan)
        check = health_pb2.HealthCheckRequest(service="vault.v1.VaultService")

        def create(prefix: str) -> Callable[[int], Awaitable[object]]:
            async def call(n: int) -> None:
                request_id = f"{prefix}-{n}"
                answer = await stub.CreateSession(
                    pb.CreateSessionRequest(vaulting_request_id=request_id),
                    timeout=10,
                    metadata=metadata,
                )
                if not answer.created:
                    raise RuntimeError(f"{request_id} was not created")
                created.append(request_id)

            return call

        async def health_check(_: int) -> None:
            await health.Check(check, timeout=10, metadata=metadata)

        await drive(meter, min(300, args.calls), 16, create("warm"))
        await drive(meter, min(300, args.calls), 16, health_check)
        for concurrency in args.concurrency:
            for name, call in (
                ("Health/Check (same server)", health_check),
                ("CreateSession", create(f"c{concurrency}")),
            ):
                run = await drive(meter, args.calls, concurrency, call)
                add_row(
                    rows,
                    name,
                    concurrency,
                    len(run.latencies),
                    f"{run.rate:,.0f}",
                    ms(pct(run.latencies, 50)),
                    ms(pct(run.latencies, 99)),
                    run.cpu_us("service"),
                    run.cpu_us("emulator"),
                    run.cpu_us("bench"),
                    run.busy(),
                    run.others(),
                )
    return created
