"""``python -m bench.create_session``: floors, CreateSession at each concurrency, the profile,
one results page."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc

from ..page import ResultsPage
from ..service.access import Access
from ..service.measure import Meter, quiet
from ..service.processes import EmulatorTLS, Service, emulator, service, workdir
from ..service.report import positive
from . import __doc__ as overview
from .floors import measure_floors
from .load import create_call, create_sessions
from .profile import Profile, py_spy, record

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

TARGET_RATIO = 1.3
TARGET = f"<= {TARGET_RATIO}"
RATIO_CONCURRENCY = 16


async def bench(args: argparse.Namespace, tmp: Path, page: ResultsPage) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    tls = EmulatorTLS.make(tmp)
    async with (
        emulator(tmp, tls=tls) as emu,
        service(tmp, emu, "create", Access("none")) as svc,
    ):
        meter = Meter({"service": svc.pid, "emulator": emu.pid, "bench": os.getpid()})
        runs = {}
        async with svc.channel() as channel:
            stub: VaultServiceAsyncStub = pb_grpc.VaultServiceStub(channel)
            await create_sessions(stub, svc, meter, "warm", 300, RATIO_CONCURRENCY)
            for concurrency in args.concurrency:
                await quiet(svc.pid)
                runs[concurrency] = await create_sessions(
                    stub, svc, meter, "run", args.calls, concurrency
                )
            await quiet(svc.pid)
            profile_load = asyncio.create_task(_keep_calling(stub, svc))
            try:
                profile = await record(svc.pid, args.profile_seconds, tmp / "profile.txt")
            finally:
                profile_load.cancel()
                await asyncio.gather(profile_load, return_exceptions=True)
        complaints = svc.complaints()
        floors = await measure_floors(tmp, emu, args.calls, RATIO_CONCURRENCY, args.rounds)
    floor_sum = sum(floors.values())
    measured = runs[RATIO_CONCURRENCY]
    service_us = measured.cpu["service"] / len(measured.latencies) * 1e6
    page.figure(
        f"service CPU per CreateSession (concurrency {RATIO_CONCURRENCY})",
        service_us,
        "sum of the floors",
        floor_sum,
        "µs",
        TARGET,
    )
    page.table(
        "Floors (same run)",
        ["floor", "CPU µs per call"],
        [*floors.items(), ("**sum**", floor_sum)],
    )
    page.table(
        "CreateSession by concurrency",
        [
            "concurrency",
            "calls",
            "calls/s",
            "service CPU µs/call",
            "emulator CPU µs/call",
            "bench CPU µs/call",
            "cores busy (ours)",
            "cores busy (others)",
        ],
        [
            (
                concurrency,
                len(run.latencies),
                run.rate,
                run.cpu_us("service"),
                run.cpu_us("emulator"),
                run.cpu_us("bench"),
                run.busy(),
                run.others(),
            )
            for concurrency, run in runs.items()
        ],
    )
    page.note(
        "Profile: `py-spy record --nonblocking --rate 250 --format raw` on the running service"
        f" for {args.profile_seconds:.0f} s of CreateSession at concurrency {RATIO_CONCURRENCY}"
        f" ({profile.samples:,} samples of running threads, the store thread's included). Each"
        " sample is charged to the innermost frame of a known layer"
        " (`bench/create_session/profile.py`); µs per call is the share times the service's"
        f" {service_us:,.0f} µs per call measured above. A thread ready to run but waiting for"
        " a core counts as running: with other work on the machine, the hand-offs to the store"
        " thread (`_Worker.submit`, `_Worker._serve`) look costlier than they are."
    )
    page.table(
        "Where the service's CPU goes (py-spy, by layer)",
        ["layer", "samples", "share", "≈ µs per call"],
        [
            (name, count, f"{count / profile.samples:.1%}", count / profile.samples * service_us)
            for name, count in profile.layers
        ],
    )
    if service_us > TARGET_RATIO * floor_sum:
        page.note(_what_misses(service_us, floor_sum, floors, profile))
    page.table(
        "Hottest leaf frames (py-spy)",
        ["frame", "share"],
        [(f"`{frame}`", f"{count / profile.samples:.1%}") for frame, count in profile.leaves],
    )
    page.plot(
        "throughput",
        "CreateSession throughput by concurrency",
        "concurrency",
        "calls/s",
        {"vault-service CreateSession": [(c, run.rate) for c, run in runs.items()]},
    )
    if complaints:
        page.note("The service logged:\n\n" + "\n".join(f"    {line}" for line in complaints))


# What each part of a CreateSession costs at its floor, and the profile's layers that part
# spends in (layer names as in profile.py, by their first words).
_PARTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("RSA sign and verify", ("RSA-2048",), ("RSA sign/verify",), ""),
    (
        "the store",
        ("one store insert",),
        ("SQLite and the store", "store thread"),
        "two store trips per CreateSession (record_or_request, then insert), one in the floor",
    ),
)


def _what_misses(
    service_us: float, floor_sum: float, floors: dict[str, float], profile: Profile
) -> str:
    """By how much the target is missed, and which parts of a CreateSession, by the profile,
    spend more than their floors: measured, each part's µs beside its floor's."""
    over = service_us - TARGET_RATIO * floor_sum
    lines = [
        f"**Target missed** by {service_us / floor_sum - TARGET_RATIO:.2f}: {TARGET_RATIO}x the"
        f" floors is {TARGET_RATIO * floor_sum:,.0f} µs, the service spent {over:,.0f} µs more."
        " By the profile, each part against its floors:",
        "",
    ]
    share = {name: count / profile.samples * service_us for name, count in profile.layers}
    claimed: set[str] = set()
    rest_floor = floor_sum
    for part, floor_names, layer_names, why in _PARTS:
        floor = sum(v for k, v in floors.items() if k.startswith(floor_names))
        layers = [name for name in share if name.startswith(layer_names)]
        spent = sum(share[name] for name in layers)
        claimed.update(layers)
        rest_floor -= floor
        reason = f" ({why})" if why else ""
        lines.append(
            f"- {part}: {spent:,.0f} µs against {floor:,.0f} ({spent - floor:+,.0f}){reason}"
        )
    rest = sum(us for name, us in share.items() if name not in claimed)
    lines.append(
        f"- gRPC, the HTTP POST and the event loop that runs both (and the store thread's"
        f" answers): {rest:,.0f} µs against {rest_floor:,.0f} ({rest - rest_floor:+,.0f})"
    )
    return "\n".join(lines)


async def _keep_calling(stub: VaultServiceAsyncStub, svc: Service) -> None:
    """CreateSession at the ratio's concurrency until cancelled (the profile's load)."""
    call = create_call(stub, svc, "profile")
    counter = itertools.count()

    async def worker() -> None:
        for n in counter:
            await call(n)

    await asyncio.gather(*(worker() for _ in range(RATIO_CONCURRENCY)))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.create_session", description=(overview or "").splitlines()[0]
    )
    parser.add_argument("--calls", type=positive, default=2000, help="calls per window")
    parser.add_argument("--concurrency", type=positive, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=positive, default=1000, help="sign/verify rounds")
    parser.add_argument("--profile-seconds", type=positive, default=8)
    args = parser.parse_args()
    if RATIO_CONCURRENCY not in args.concurrency:
        parser.error(f"--concurrency must include {RATIO_CONCURRENCY} (the ratio's level)")
    py_spy()
    page = ResultsPage("create_session", "CreateSession: CPU per call against its floors")
    with workdir() as tmp:
        asyncio.run(bench(args, tmp, page))
    page.write()


if __name__ == "__main__":
    main()
