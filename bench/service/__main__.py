"""``python -m bench.service``: the phases in order, on two fresh service instances."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp

from . import __doc__ as overview
from .access import AUTH_MODES, Access, access_for
from .measure import Meter
from .processes import emulator, service, stubs_for, workdir
from .report import Report, positive, source, versions
from .streams import (
    FANOUT_HEADER,
    FILTERED_HEADER,
    STREAM_HEADER,
    Streams,
    fan_out,
    filtered_wakeups,
    idle_streams,
)
from .unary import unary_phase
from .webhook import webhook_phase


async def bench(args: argparse.Namespace, tmp: Path, access: Access, report: Report) -> None:
    # SIGTERM (a timeout, a CI runner) cancels the run like Ctrl-C does, so that the child
    # processes are still stopped on the way out.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    complaints: list[str] = []
    async with emulator(tmp) as emu, aiohttp.ClientSession(trust_env=False) as http:
        async with service(tmp, emu, "first", access) as svc:
            meter = Meter({"service": svc.pid, "emulator": emu.pid, "bench": os.getpid()})
            created = await unary_phase(args, svc, meter, report)
            stream_rows = report.table("### Idle StreamResults", STREAM_HEADER)
            fanout_rows = report.table("### Fan-out: one event to every open stream", FANOUT_HEADER)
            filtered_rows = report.table(
                "### Wake-ups: one event, streams filtered to other vaulting requests",
                FILTERED_HEADER,
            )
            async with stubs_for(svc, args.stream_channels) as stubs:
                streams = Streams(stubs, args.open_timeout, svc.access.metadata)
                label = f"{args.streams:,}"
                await idle_streams(label, args.streams, streams, svc, meter, stream_rows)
                await fan_out(
                    label,
                    args.fanout_events,
                    streams,
                    stubs[0],
                    emu,
                    http,
                    meter,
                    fanout_rows,
                    access.metadata,
                )
                await streams.close()
                if streams.ended:
                    complaints.append(f"streams ended by the server: {dict(streams.ended)}")
                await filtered_wakeups(
                    args.streams,
                    args.fanout_events,
                    stubs,
                    args,
                    svc,
                    emu,
                    http,
                    meter,
                    filtered_rows,
                )
                await webhook_phase(args, svc, emu, created, stubs, meter, report)
            complaints += svc.complaints()
        async with service(tmp, emu, "burst", access) as svc:
            meter = Meter({"service": svc.pid, "emulator": emu.pid, "bench": os.getpid()})
            async with stubs_for(svc, args.stream_channels) as stubs:
                streams = Streams(stubs, args.open_timeout, svc.access.metadata)
                label = f"{args.burst:,} (one burst, fresh process)"
                await idle_streams(label, args.burst, streams, svc, meter, stream_rows)
                if streams.calls and args.burst_fanout_events:
                    await fan_out(
                        f"{len(streams.calls):,}",
                        args.burst_fanout_events,
                        streams,
                        stubs[0],
                        emu,
                        http,
                        meter,
                        fanout_rows,
                        access.metadata,
                    )
                await streams.close()
                if streams.ended:
                    complaints.append(f"streams ended by the server: {dict(streams.ended)}")
            complaints += svc.complaints()
    for line in complaints:
        print(f"service: {line}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.service", description=(overview or "").splitlines()[0]
    )
    parser.add_argument("--calls", type=positive, default=2000, help="unary calls per level")
    parser.add_argument("--concurrency", type=positive, nargs="+", default=[1, 16])
    parser.add_argument("--streams", type=positive, default=1000, help="idle streams, phase 2")
    parser.add_argument("--burst", type=positive, default=5000, help="stream opens in one burst")
    parser.add_argument("--stream-channels", type=positive, default=1, help="client connections")
    parser.add_argument("--open-timeout", type=float, default=60.0, help="s to first message")
    parser.add_argument("--fanout-events", type=positive, default=5)
    parser.add_argument("--burst-fanout-events", type=int, default=1)
    parser.add_argument("--notifications", type=positive, default=2000)
    parser.add_argument("--notify-concurrency", type=positive, default=16)
    parser.add_argument(
        "--auth", choices=AUTH_MODES, default="none", help="how the bench's gRPC calls identify"
    )
    parser.add_argument(
        "--callers", type=positive, default=100, help="entries in the callers file (--auth tokens)"
    )
    parser.add_argument(
        "--webhook-streams", type=int, default=1000, help="filtered streams open, last webhook run"
    )
    args = parser.parse_args()
    needed = args.notifications * (2 if args.webhook_streams else 1)
    if needed > min(300, args.calls) + args.calls * len(args.concurrency):
        parser.error("more notifications than the unary phase creates sessions: raise --calls")
    print(versions(), flush=True)
    print(source(), flush=True)
    report = Report()
    started = time.perf_counter()
    with workdir() as tmp:
        access = access_for(args, tmp)
        print(f"caller authentication: {access.describe()}", flush=True)
        asyncio.run(bench(args, tmp, access, report))
    print(f"\n{report.render()}\n\nfinished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
