"""Phases 2 and 3: idle StreamResults held open, and the fan-out of one event to them.

A buyer submits a card to the emulator, whose signed notification reaches the webhook; each
event's latency is taken from the submit (and from the event's ``event_time``, when the service
recorded it) to its arrival on every stream.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import grpc

from tests.fixtures.callers import Metadata
from vault_service._proto.vault.v1 import vault_service_pb2 as pb

from .measure import Meter, Run, pct, quiet, rss_kib, settle
from .processes import Emulator, Service
from .report import add_row, ms

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

    StreamCall = grpc.aio.UnaryStreamCall[pb.StreamResultsRequest, pb.StreamResultsResponse]

CARD = {
    "cardNo": "4111111111111111",
    "expiryMonth": "12",
    "expiryYear": "39",
    "cvv": "737",
    "cardholderName": "Bench Buyer",
}
STREAM_HEADER = [
    "streams",
    "opened (first checkpoint)",
    "refused",
    "seconds to open all",
    "p99 ms to first checkpoint",
    "service RSS MiB before → after",
    "RSS KiB / idle stream",
    "service CPU while idle",
]
FANOUT_HEADER = [
    "open streams",
    "events x streams",
    "p50 ms from submit",
    "p99 ms from submit",
    "max ms from submit",
    "p50 ms from recorded",
    "p99 ms from recorded",
    "max ms from recorded",
    "service CPU / event",
    "service CPU µs / delivery",
    "bench CPU / event",
    "cores busy (others, worst event)",
]
FILTERED_HEADER = [
    "streams filtered to other ids",
    "events",
    "p50 ms submit → matching stream",
    "max ms submit → matching stream",
    "service CPU / event",
    "service CPU µs / non-matching stream",
]


@dataclass
class Streams:
    """StreamResults calls held open by this process, each read by its own task."""

    stubs: list[VaultServiceAsyncStub]
    open_timeout: float
    metadata: Metadata = ()
    calls: list[StreamCall] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    first_message: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)
    arrivals: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    event_times: dict[str, float] = field(default_factory=dict)
    complete: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    expect: dict[str, int] = field(default_factory=dict)
    closing: bool = False

    async def open(self, requests: list[pb.StreamResultsRequest]) -> float:
        """Open one stream per request at once, over the stubs in turn; seconds until every
        one answered."""
        start = time.perf_counter()
        stubs = itertools.cycle(self.stubs)
        await asyncio.gather(*(self._open_one(next(stubs), request) for request in requests))
        return time.perf_counter() - start

    async def _open_one(
        self, stub: VaultServiceAsyncStub, request: pb.StreamResultsRequest
    ) -> None:
        start = time.perf_counter()
        call = stub.StreamResults(request, metadata=self.metadata)
        try:
            first = await asyncio.wait_for(call.read(), self.open_timeout)
        except grpc.aio.AioRpcError as exc:
            self.refused[exc.code().name] += 1
            return
        except TimeoutError:
            call.cancel()
            self.refused["no first message in time"] += 1
            return
        if not isinstance(first, pb.StreamResultsResponse) or not first.HasField("checkpoint"):
            call.cancel()
            self.refused["first message not a checkpoint"] += 1
            return
        self.first_message.append(time.perf_counter() - start)
        self.calls.append(call)
        self.readers.append(asyncio.create_task(self._follow(call)))

    async def _follow(self, call: StreamCall) -> None:
        try:
            while True:
                message = await call.read()
                arrived, wall = time.monotonic(), time.time()
                if not isinstance(message, pb.StreamResultsResponse):  # grpc.aio.EOF
                    self.ended["EOF"] += 1
                    return
                if message.HasField("event"):
                    request_id = message.event.result.vaulting_request_id
                    stamp = message.event.event_time
                    self.event_times[request_id] = stamp.seconds + stamp.nanos / 1e9
                    arrived_at = self.arrivals[request_id]
                    arrived_at.append((arrived, wall))
                    if len(arrived_at) == self.expect.get(request_id, len(self.calls)):
                        self.complete[request_id].set()
        except grpc.aio.AioRpcError as exc:
            if not (self.closing and exc.code() is grpc.StatusCode.CANCELLED):
                self.ended[exc.code().name] += 1

    async def close(self) -> None:
        self.closing = True
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.calls.clear()
        self.readers.clear()


async def buyer_submits(http: aiohttp.ClientSession, emu: Emulator, session_data: str) -> None:
    """The buyer saves the bench's card in the emulator's stand-in for Antom's card form."""
    async with http.post(
        f"{emu.url}/emulator/buyer/submit", json={"sessionData": session_data, **CARD}
    ) as answer:
        if answer.status != 200:
            raise RuntimeError(f"buyer submit: HTTP {answer.status} {await answer.text()}")


async def idle_streams(
    label: str, count: int, streams: Streams, svc: Service, meter: Meter, rows: list[str]
) -> None:
    """Open ``count`` streams at once and keep them; report what they cost while idle."""
    await settle()
    rss_before = rss_kib(svc.pid)
    seconds = await streams.open([pb.StreamResultsRequest()] * count)
    await settle()
    rss_after = rss_kib(svc.pid)
    before, wall = meter.take(), time.perf_counter()
    await settle(2.0)
    idle = Meter.since(before, meter.take())["service"] / (time.perf_counter() - wall)
    opened = len(streams.calls)
    refused = ", ".join(f"{n} {code}" for code, n in streams.refused.items()) or "none"
    add_row(
        rows,
        label,
        f"{opened:,} / {count:,}",
        refused,
        f"{seconds:.2f}",
        ms(pct(streams.first_message, 99)) if streams.first_message else "-",
        f"{rss_before / 1024:,.1f} → {rss_after / 1024:,.1f}",
        f"{(rss_after - rss_before) / max(opened, 1):,.1f}",
        f"{idle * 100:.1f} %",
    )


async def fan_out(
    label: str,
    events: int,
    streams: Streams,
    stub: VaultServiceAsyncStub,
    emu: Emulator,
    http: aiohttp.ClientSession,
    meter: Meter,
    rows: list[str],
    metadata: Metadata,
) -> None:
    """Each event: a new session, the buyer submits a card to the emulator, Antom's signed
    notification reaches the webhook, every open stream gets the event."""
    from_submit: list[float] = []
    from_recorded: list[float] = []
    cpu: list[dict[str, float]] = []
    windows: list[Run] = []
    for n in range(events):
        request_id = f"fanout-{label}-{n}-{os.getpid()}"
        created = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id=request_id),
            timeout=10,
            metadata=metadata,
        )
        await settle(0.5)
        before = meter.take()
        submitted = time.monotonic()
        await buyer_submits(http, emu, created.session_data)
        await asyncio.wait_for(streams.complete[request_id].wait(), 60)
        used = Meter.since(before, meter.take())
        cpu.append(used)
        windows.append(Run([], time.monotonic() - submitted, used))
        recorded = streams.event_times[request_id]
        for arrived, wall in streams.arrivals[request_id]:
            from_submit.append(arrived - submitted)
            from_recorded.append(wall - recorded)
    delivered = len(from_submit)
    service_cpu = sum(used["service"] for used in cpu)
    bench_cpu = sum(used["bench"] for used in cpu)
    add_row(
        rows,
        label,
        f"{events} x {delivered // events:,}",
        ms(pct(from_submit, 50)),
        ms(pct(from_submit, 99)),
        ms(max(from_submit)),
        ms(pct(from_recorded, 50)),
        ms(pct(from_recorded, 99)),
        ms(max(from_recorded)),
        f"{service_cpu / events * 1e3:,.0f} ms",
        f"{service_cpu / delivered * 1e6:,.0f}",
        f"{bench_cpu / events * 1e3:,.0f} ms",
        max(window.others() for window in windows),
    )


async def filtered_wakeups(
    count: int,
    events: int,
    stubs: list[VaultServiceAsyncStub],
    args: argparse.Namespace,
    svc: Service,
    emu: Emulator,
    http: aiohttp.ClientSession,
    meter: Meter,
    rows: list[str],
) -> None:
    """``count`` streams that filter on ids which never get an event, plus one stream on the
    event's own id: what one event costs when it concerns a single stream."""
    streams = Streams(stubs, args.open_timeout, svc.access.metadata)
    await streams.open(
        [pb.StreamResultsRequest(vaulting_request_ids=[f"else-{n}"]) for n in range(count)]
    )
    if len(streams.calls) != count:
        raise RuntimeError(f"filtered streams refused: {dict(streams.refused)}")
    latencies: list[float] = []
    service_cpu = 0.0
    for n in range(events):
        request_id = f"filtered-{n}-{os.getpid()}"
        created = await stubs[0].CreateSession(
            pb.CreateSessionRequest(vaulting_request_id=request_id),
            timeout=10,
            metadata=svc.access.metadata,
        )
        await streams.open([pb.StreamResultsRequest(vaulting_request_ids=[request_id])])
        streams.expect[request_id] = 1
        await settle(0.5)
        before = meter.take()
        submitted = time.monotonic()
        await buyer_submits(http, emu, created.session_data)
        await asyncio.wait_for(streams.complete[request_id].wait(), 60)
        latencies.append(streams.arrivals[request_id][0][0] - submitted)
        await quiet(svc.pid)
        service_cpu += Meter.since(before, meter.take())["service"]
    await streams.close()
    add_row(
        rows,
        f"{count:,}",
        events,
        ms(pct(latencies, 50)),
        ms(max(latencies)),
        f"{service_cpu / events * 1e3:,.0f} ms",
        f"{service_cpu / events / count * 1e6:,.0f}",
    )
