"""``python -m bench.fanout``: the run, and its page under ``bench/results/fanout/``."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
from pathlib import Path

import aiohttp

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import Signer, read_private_key_file

from ..page import Figure, ResultsPage
from ..service.access import Access
from ..service.measure import Meter
from ..service.processes import emulator, service, service_env, workdir
from ..service.report import positive
from . import __doc__ as overview
from . import profile
from .bare import PUBLISH, BareServer, bare_server
from .memory import OURS, traced_bytes_per_stream
from .phases import (
    FanOut,
    Paced,
    Target,
    Webhook,
    create_sessions,
    fan_out,
    summary,
    webhook_under_streams,
    webhook_url,
)

RATIO_AT = 1000
"""The open streams at which the fan-out figure is judged."""
SERVICE_GROUP = OURS[0][1]


def bare_target(bare: BareServer, template: pb.StreamResultsResponse) -> Target:
    """Publishes ``template`` (an event message the service sent) under each new id."""
    control = bare.channel()
    publish = control.unary_unary(PUBLISH)
    counter = itertools.count()

    async def prepare() -> str:
        return f"bare-{next(counter)}"

    async def submit(request_id: str) -> None:
        message = pb.StreamResultsResponse()
        message.CopyFrom(template)
        message.event.result.vaulting_request_id = request_id
        await publish(message.SerializeToString(), timeout=30)

    return Target("bare", bare.pid, bare.channel, prepare, submit)


async def run(args: argparse.Namespace, tmp: Path, page: ResultsPage) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    access = Access("none")
    async with (
        emulator(tmp) as emu,
        aiohttp.ClientSession(trust_env=False) as http,
        service(tmp, emu, "service", access) as svc,
        bare_server(tmp, dict(os.environ)) as bare,
        svc.channel() as control,
    ):
        stub = pb_grpc.VaultServiceStub(control)
        signer = Signer(read_private_key_file(emu.dev_dir / "antom-private-key.pem"))
        webhook = Webhook(http, webhook_url(svc.http_port), signer)
        fanout_events = sum(args.events_at(n) for n in args.streams)
        posts = round(args.rate * args.seconds)
        print(f"creating {fanout_events + 2 * posts + 1:,} sessions", flush=True)
        ids = iter(await create_sessions(stub, "fanout", fanout_events + 2 * posts + 1))

        async def prepare() -> str:
            return next(ids)

        async def submit(request_id: str) -> None:
            [notification] = webhook.sign([request_id])
            await webhook.post(notification)

        service_target = Target("service", svc.pid, svc.channel, prepare, submit)
        template = await event_message(stub, service_target)
        targets = [service_target, bare_target(bare, template)]
        meter = Meter({"service": svc.pid, "bare": bare.pid, "bench": os.getpid()})
        results: dict[str, dict[int, FanOut]] = {target.name: {} for target in targets}
        largest = max(args.streams)
        sampled = tmp / "service-fanout.folded" if profile.available() else None
        for count in sorted(args.streams, reverse=True):
            for target in targets:
                print(f"fan-out: {target.name}, {count:,} streams", flush=True)
                results[target.name][count] = await fan_out(
                    target,
                    count,
                    args.events_at(count),
                    meter,
                    sampled if target is service_target and count == largest else None,
                )
        memory = report_fan_out(page, results)
        if sampled is not None:
            report_profile(page, sampled, largest)
        if memory.met is False:
            traced = await traced_bytes_per_stream(
                service_env(tmp, emu, "traced", access), args.traced_streams
            )
            explain_memory(page, memory, traced, args.traced_streams)
        paced = [
            await webhook_under_streams(
                service_target, webhook, [next(ids) for _ in range(posts)], args.rate, n, meter
            )
            for n in (0, args.webhook_streams)
        ]
        report_webhook(page, args, *paced)
        complaints = svc.complaints()
    if complaints:
        page.note("The service logged:\n\n" + "\n".join(f"    {line}" for line in complaints))


async def event_message(stub: pb_grpc.VaultServiceStub, target: Target) -> pb.StreamResultsResponse:
    """A real event message of the service (one notification, one stream): the bare server
    publishes the same bytes, so both send messages of one size."""
    request_id = await target.prepare()
    call = stub.StreamResults(pb.StreamResultsRequest(vaulting_request_ids=[request_id]))
    await call.read()  # the first checkpoint
    await target.submit(request_id)
    while True:
        message = await asyncio.wait_for(call.read(), 30)
        assert isinstance(message, pb.StreamResultsResponse)
        if message.HasField("event"):
            call.cancel()
            return message


def report_fan_out(page: ResultsPage, results: dict[str, dict[int, FanOut]]) -> Figure:
    """The fan-out table, plot and figures; the memory figure, to be explained if missed."""
    service, bare = results["service"], results["bare"]
    counts = sorted(service)
    rows = []
    for count in counts:
        for name, runs in results.items():
            run = runs[count]
            p50, p99, worst = summary(run.latencies)
            rows.append(
                [
                    f"{count:,}",
                    name,
                    f"{len(run.latencies) // count} x {count:,}",
                    f"{run.seconds_to_open:.1f}",
                    p50,
                    p99,
                    worst,
                    f"{run.cpu_per_event * 1e3:,.0f}",
                ]
            )
    page.table(
        "Fan-out: one event to every open stream (from submit to arrival on each stream)",
        [
            "open streams",
            "server",
            "events x streams",
            "s to open all",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server CPU ms / event",
        ],
        rows,
    )
    page.plot(
        "fanout-latency",
        "Fan-out latency vs open streams",
        "open streams",
        "ms from submit to arrival",
        {
            f"{name} {label}": [(n, summary(runs[n].latencies)[index]) for n in counts]
            for name, runs in results.items()
            for label, index in (("p50", 0), ("p99", 1))
        },
        logx=True,
        logy=True,
    )
    latency = [
        page.figure(
            f"fan-out p99 at {count:,} streams",
            summary(service[count].latencies)[1],
            "bare grpc.aio server",
            summary(bare[count].latencies)[1],
            "ms",
            "<= 1.5" if count == RATIO_AT else None,
        )
        for count in counts
    ]
    explain_fan_out(page, results, missed=any(figure.met is False for figure in latency))
    largest = counts[-1]
    return page.figure(
        f"RSS per idle stream at {largest:,} streams",
        service[largest].rss_kib_per_stream,
        "bare grpc.aio server",
        bare[largest].rss_kib_per_stream,
        "KiB",
        "<= 1.2",
    )


def explain_fan_out(
    page: ResultsPage, results: dict[str, dict[int, FanOut]], *, missed: bool
) -> None:
    """What each server spends per event and per stream (CPU is what a loop-bound fan-out's
    latency is made of): the slope between the smallest and largest levels."""
    lines = []
    for name, runs in results.items():
        low, high = min(runs), max(runs)
        per_stream = (runs[high].cpu_per_event - runs[low].cpu_per_event) / (high - low)
        fixed = runs[low].cpu_per_event - per_stream * low
        lines.append(
            f"- {name}: {per_stream * 1e6:,.1f} µs of CPU per stream and per event, plus"
            f" {fixed * 1e3:,.1f} ms per event whatever the streams"
        )
    verdict = "Fan-out missed its target." if missed else "Where fan-out time goes."
    page.note(
        f"{verdict} Measured CPU per event (server process, /proc), as a line through the"
        " smallest and largest levels:\n\n" + "\n".join(lines)
    )


def explain_memory(
    page: ResultsPage, memory: Figure, traced: dict[str, float], streams: int
) -> None:
    """The memory figure was missed: what tracemalloc finds per stream, by module."""
    gap = (memory.value - memory.anchor) * 1024
    rows = [[group, f"{size:,.0f}"] for group, size in traced.items()]
    rows.append(["total traced", f"{sum(traced.values()):,.0f}"])
    page.table(
        f"Where an idle stream's Python memory goes in the service (tracemalloc, {streams:,}"
        " streams opened on an in-process service)",
        ["allocated by", "bytes / stream"],
        rows,
    )
    ours = sum(size for group, size in traced.items() if "vault_service" in group)
    page.note(
        f"RSS per idle stream missed its target by {gap:,.0f} bytes per stream over the bare"
        f" server. tracemalloc attributes {ours:,.0f} bytes per stream to vault_service code"
        " (table above), of which the stream index and StreamResults are the"
        f" {traced.get(SERVICE_GROUP, 0.0):,.0f} under vault_service/service; the rest of ours is"
        " the layers every call passes through (interceptors for metrics and authentication,"
        " the error translation, the servicer: one async generator frame each per stream)."
        " grpc core's C memory is not traced and is the same on both servers."
    )


def report_profile(page: ResultsPage, sampled: Path, streams: int) -> None:
    page.table(
        f"py-spy: the service's samples during the {streams:,}-stream fan-out, by function"
        " (inclusive; the rest is C: grpc core, the loop's select, the SQLite thread)",
        ["share of samples", "function"],
        [[f"{share:.1%}", function] for share, function in profile.inclusive(sampled, 25)],
    )


def report_webhook(
    page: ResultsPage, args: argparse.Namespace, quiet: Paced, loaded: Paced
) -> None:
    rows = [
        [
            f"{streams:,}",
            len(run.latencies),
            *summary(run.latencies),
            f"{run.cpu_per_post * 1e6:,.0f}",
        ]
        for streams, run in ((0, quiet), (args.webhook_streams, loaded))
    ]
    page.table(
        f"Webhook: signed notifications at {args.rate:g}/s, streams filtered to other ids open",
        [
            "streams open",
            "notifications",
            "p50 ms",
            "p99 ms",
            "max ms",
            "service CPU µs / notification",
        ],
        rows,
    )
    page.figure(
        f"webhook p99, {args.webhook_streams:,} streams open, {args.rate:g} events/s",
        summary(loaded.latencies)[1],
        "the issue's 100 ms bound",
        100.0,
        "ms",
        "< 1",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=(overview or "").splitlines()[0]
    )
    parser.add_argument("--streams", type=positive, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--events", type=positive, default=5, help="events per level")
    parser.add_argument(
        "--events-largest", type=positive, default=3, help="events at the largest level"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="notifications per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="of notifications")
    parser.add_argument("--webhook-streams", type=positive, default=10000)
    parser.add_argument(
        "--traced-streams", type=positive, default=1000, help="in-process, if memory is missed"
    )
    args = parser.parse_args()
    largest = max(args.streams)
    args.events_at = lambda n: args.events_largest if n == largest else args.events
    page = ResultsPage("fanout", "Stream fan-out: the stream index beside a bare grpc.aio server")
    started = time.perf_counter()
    with workdir() as tmp:
        asyncio.run(run(args, tmp, page))
    page.note(f"Finished in {time.perf_counter() - started:.0f} s.")
    page.write()


if __name__ == "__main__":
    main()
