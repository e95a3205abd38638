"""Where an idle stream's memory goes in the service, by tracemalloc rather than RSS.

RSS says how much more the service holds per idle stream than the bare server, not what holds
it. Here the whole service (``app.start``, the very wiring of ``serve``) runs in this process
with its streams opened by a client in the same process, and the Python allocations made while
they open are grouped by the module that made them: the stream index and ``StreamResults``
(``vault_service/service``), the gRPC layers of ours each call passes through (interceptors,
servicer, errors: ``vault_service/grpc_api``), grpc's own Python and Cython objects
(``grpc/``), asyncio, and the client. grpc core's C allocations are not traced: they are the
same on both servers.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter

import grpc

from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.config import Settings

from ..service.measure import settle
from ..service.streams import Streams
from .phases import OPEN_TIMEOUT

BATCH = 100
"""Streams opened at once: one process holding both ends cannot take a larger burst whole."""
OURS = (
    ("vault_service/service/", "stream index and StreamResults (vault_service/service)"),
    ("vault_service/grpc_api/", "our gRPC layers: interceptors, servicer (vault_service/grpc_api)"),
    ("vault_service/", "other vault_service code"),
    ("bench/", "the bench's client"),
    ("/grpc/", "grpc's Python and Cython objects (server and client)"),
)
"""Searched from the allocating frame outwards: the nearest frame of one of these names it."""


def group_of(frames: list[str]) -> str:
    """``frames``: the allocation's traceback, most recent first."""
    for frame in frames:
        for part, name in OURS:
            if part in frame:
                return name
    return "asyncio and the rest (no frame of ours or grpc's)"


async def traced_bytes_per_stream(env: dict[str, str], count: int) -> dict[str, float]:
    """Open ``count`` idle streams on an in-process service; traced bytes per stream by
    group."""
    running = await app.start(Settings.from_env(env))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            streams = Streams([pb_grpc.VaultServiceStub(channel)], OPEN_TIMEOUT)
            await settle(1.0)
            gc.collect()
            tracemalloc.start(30)
            before = tracemalloc.take_snapshot()
            for start in range(0, count, BATCH):
                await streams.open([pb.StreamResultsRequest()] * min(BATCH, count - start))
            if len(streams.calls) != count:
                raise RuntimeError(f"in-process streams refused: {dict(streams.refused)}")
            await settle(3.0)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            await streams.close()
    finally:
        await running.stop()
    grouped: Counter[str] = Counter()
    for stat in after.compare_to(before, "traceback"):
        grouped[group_of([frame.filename for frame in reversed(stat.traceback)])] += stat.size_diff
    return {group: size / count for group, size in grouped.most_common()}
