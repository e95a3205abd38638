"""The measurements: fan-out to N open streams, memory per idle stream, the webhook under
load. A :class:`Target` is one server under measurement, the service or the bare anchor; both
are read by :class:`bench.service.streams.Streams`."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import Signer
from vault_service.config import DEFAULT_NOTIFY_PATH
from vault_service.webhook import ACKNOWLEDGEMENT

from ..service.measure import Meter, pct, rss_kib, settle
from ..service.streams import Streams
from ..service.webhook import signed_notifications
from .profile import sampled

STREAMS_PER_CHANNEL = 2500
"""Client connections hold this many streams each (the server allows 10,000 per connection)."""
OPEN_TIMEOUT = 120.0
EVENT_TIMEOUT = 120.0


@dataclass
class Target:
    """One server: how to open channels to it, and how to make one event reach its streams.

    ``prepare`` returns the id of the next event (the service creates its session then);
    ``submit`` is the timed part: from here to each stream's arrival is the latency."""

    name: str
    pid: int
    channel: Callable[[], grpc.aio.Channel]
    prepare: Callable[[], Awaitable[str]]
    submit: Callable[[str], Awaitable[None]]

    @contextlib.asynccontextmanager
    async def stubs(self, count: int) -> AsyncIterator[list[pb_grpc.VaultServiceStub]]:
        channels = [self.channel() for _ in range(count)]
        try:
            yield [pb_grpc.VaultServiceStub(channel) for channel in channels]
        finally:
            for channel in channels:
                await channel.close()


@dataclass
class FanOut:
    """One target at one number of open streams."""

    streams: int
    latencies: list[float] = field(default_factory=list)
    cpu_per_event: float = 0.0
    rss_kib_before: int = 0
    rss_kib_after: int = 0
    seconds_to_open: float = 0.0

    @property
    def rss_kib_per_stream(self) -> float:
        return (self.rss_kib_after - self.rss_kib_before) / self.streams


async def fan_out(
    target: Target, count: int, events: int, meter: Meter, profile: Path | None = None
) -> FanOut:
    """Open ``count`` unfiltered streams, settle, then ``events`` events one at a time (with
    the server sampled by py-spy into ``profile`` meanwhile, when given)."""
    result = FanOut(count)
    async with target.stubs(math.ceil(count / STREAMS_PER_CHANNEL)) as stubs:
        streams = Streams(stubs, OPEN_TIMEOUT)
        await settle(1.0)
        result.rss_kib_before = rss_kib(target.pid)
        result.seconds_to_open = await streams.open([pb.StreamResultsRequest()] * count)
        if len(streams.calls) != count:
            raise RuntimeError(f"{target.name}: streams refused: {dict(streams.refused)}")
        await settle(2.0)
        result.rss_kib_after = rss_kib(target.pid)
        cpu = 0.0
        sampling = contextlib.nullcontext() if profile is None else sampled(target.pid, profile)
        async with sampling:
            for _ in range(events):
                request_id = await target.prepare()
                await settle(0.3)
                before, submitted = meter.take(), time.monotonic()
                await target.submit(request_id)
                await asyncio.wait_for(streams.complete[request_id].wait(), EVENT_TIMEOUT)
                cpu += Meter.since(before, meter.take())[target.name]
                arrivals = streams.arrivals[request_id]
                result.latencies += [arrived - submitted for arrived, _ in arrivals]
        result.cpu_per_event = cpu / events
        await streams.close()
        if streams.ended:
            raise RuntimeError(f"{target.name}: streams ended by the server: {streams.ended}")
    return result


async def create_sessions(stub: pb_grpc.VaultServiceStub, prefix: str, count: int) -> list[str]:
    """``count`` sessions on the service (each one Antom call to the emulator), 16 at a time."""
    ids = [f"{prefix}-{n}" for n in range(count)]
    pending = iter(ids)

    async def worker() -> None:
        for request_id in pending:
            await stub.CreateSession(
                pb.CreateSessionRequest(vaulting_request_id=request_id), timeout=30
            )

    await asyncio.gather(*(worker() for _ in range(16)))
    return ids


@dataclass
class Webhook:
    """Antom's signed notifications, posted to the service's webhook."""

    http: aiohttp.ClientSession
    url: str
    signer: Signer

    async def post(self, signed: tuple[dict[str, str], bytes]) -> float:
        """Seconds until the acknowledgement."""
        headers, body = signed
        start = time.perf_counter()
        async with self.http.post(self.url, data=body, headers=headers) as answer:
            if answer.status != 200 or await answer.read() != ACKNOWLEDGEMENT:
                raise RuntimeError(f"webhook: HTTP {answer.status} {await answer.text()}")
        return time.perf_counter() - start

    def sign(self, ids: list[str]) -> list[tuple[dict[str, str], bytes]]:
        return signed_notifications(self.signer, ids)


def webhook_url(http_port: int) -> str:
    return f"http://127.0.0.1:{http_port}{DEFAULT_NOTIFY_PATH}"


async def paced_posts(webhook: Webhook, ids: list[str], rate: float) -> list[float]:
    """One notification per id, started every ``1 / rate`` s whatever the answers (an open
    loop, as Antom sends); each one's seconds to its acknowledgement."""
    signed = webhook.sign(ids)
    start = time.monotonic()
    tasks = []
    for n, notification in enumerate(signed):
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        tasks.append(asyncio.create_task(webhook.post(notification)))
    return list(await asyncio.gather(*tasks))


@dataclass
class Paced:
    """Paced notifications: each one's seconds to its acknowledgement, and the service's CPU
    per notification over the window."""

    latencies: list[float]
    cpu_per_post: float


async def webhook_under_streams(
    target: Target,
    webhook: Webhook,
    ids: list[str],
    rate: float,
    streams_open: int,
    meter: Meter,
) -> Paced:
    """The paced notifications while ``streams_open`` streams filtered to other ids are open
    (none of them matches any notification)."""
    async with target.stubs(max(1, math.ceil(streams_open / STREAMS_PER_CHANNEL))) as stubs:
        streams = Streams(stubs, OPEN_TIMEOUT)
        await streams.open(
            [
                pb.StreamResultsRequest(vaulting_request_ids=[f"else-{n}"])
                for n in range(streams_open)
            ]
        )
        if len(streams.calls) != streams_open:
            raise RuntimeError(f"streams refused: {dict(streams.refused)}")
        await settle(2.0)
        before = meter.take()
        latencies = await paced_posts(webhook, ids, rate)
        cpu = Meter.since(before, meter.take())[target.name]
        await streams.close()
    return Paced(latencies, cpu / len(ids))


def summary(latencies: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in ms."""
    return pct(latencies, 50) * 1e3, pct(latencies, 99) * 1e3, max(latencies) * 1e3
