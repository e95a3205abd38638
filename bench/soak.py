"""``python -m bench.soak``: a long churn against one service, its memory sampled throughout.

grpcio's asyncio server has leaked per call and per stream before (grpc/grpc #43360, #43462),
and a leak of ours (a subscriber left in an index, a task per stream never reaped, a cache
without a bound) would only show after hours in production. So the service runs for
``--minutes`` under a steady mix of everything a day brings: CreateSession, Antom's signed
notifications and their retries, GetResult, ListResults, and StreamResults opened and closed all
the time (from now, resumed from a token, filtered to ids). Its RSS is sampled every
``--sample`` seconds; after ``--warmup`` minutes (caches and pools filled, the allocator's arenas
grown) it must stay within ±5 % of its value at the end of the warm-up.

Not a timing and not run in CI: the figure is recorded with its commit on the results page.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import signal
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import Signer, read_private_key_file
from vault_service.config import DEFAULT_NOTIFY_PATH
from vault_service.webhook import ACKNOWLEDGEMENT

from .page import ResultsPage
from .service.access import Access, access_for
from .service.measure import cpu_seconds, rss_kib
from .service.processes import Service, emulator, service, workdir
from .service.report import positive
from .service.webhook import signed_notifications

TOLERANCE = 0.05


@dataclass
class Churn:
    """What the load did, counted by kind and outcome (a soak with errors proves nothing)."""

    done: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    created: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def fail(self, kind: str, exc: BaseException) -> None:
        code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        self.failed[f"{kind}: {code}"] += 1


@dataclass(frozen=True)
class Sample:
    minute: float
    rss_mib: float
    cpu_seconds: float


async def sessions(
    stub: pb_grpc.VaultServiceStub,
    http: aiohttp.ClientSession,
    svc: Service,
    signer: Signer,
    rate: float,
    churn: Churn,
) -> None:
    """``rate`` sessions a second, each completed by its signed notification (one in ten
    delivered twice, as Antom retries), read back with GetResult, and a ListResults page."""
    url = f"http://127.0.0.1:{svc.http_port}{DEFAULT_NOTIFY_PATH}"
    metadata = svc.access.metadata
    for n in itertools.count():
        started = time.monotonic()
        request_id = f"soak-{n}"
        try:
            await stub.CreateSession(
                pb.CreateSessionRequest(vaulting_request_id=request_id),
                timeout=10,
                metadata=metadata,
            )
            churn.done["CreateSession"] += 1
            churn.created.append(request_id)
            [(headers, body)] = signed_notifications(signer, [request_id])
            for _ in range(2 if n % 10 == 0 else 1):
                await notify(http, url, headers, body)
                churn.done["notification"] += 1
            await stub.GetResult(
                pb.GetResultRequest(vaulting_request_id=request_id), timeout=10, metadata=metadata
            )
            churn.done["GetResult"] += 1
            if n % 20 == 0:
                await stub.ListResults(pb.ListResultsRequest(page_size=50), metadata=metadata)
                churn.done["ListResults"] += 1
        except (grpc.aio.AioRpcError, aiohttp.ClientError, RuntimeError) as exc:
            churn.fail("session", exc)
        await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))


async def notify(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes
) -> None:
    async with http.post(url, data=body, headers=headers) as answer:
        if answer.status != 200 or await answer.read() != ACKNOWLEDGEMENT:
            raise RuntimeError(f"webhook answered {answer.status}")


async def stream_slot(
    stub: pb_grpc.VaultServiceStub,
    metadata: tuple[tuple[str, str], ...],
    life: tuple[float, float],
    rng: random.Random,
    churn: Churn,
) -> None:
    """One stream after another, each held for a random while then cancelled: a third from
    now, a third resumed from a recent token, a third filtered to recent vaulting requests."""
    while True:
        kind = rng.choice(("from now", "resumed", "filtered"))
        request = pb.StreamResultsRequest()
        if kind == "resumed" and churn.tokens:
            request.resume_token = rng.choice(churn.tokens[-100:])
        elif kind == "filtered" and churn.created:
            request.vaulting_request_ids.extend(rng.sample(churn.created[-50:], 1))
        call = stub.StreamResults(request, metadata=metadata)
        try:
            async with asyncio.timeout(rng.uniform(*life)):
                async for message in call:
                    if message.HasField("event"):
                        churn.done["event streamed"] += 1
                        churn.tokens.append(message.event.resume_token)
                        del churn.tokens[:-1000]
        except TimeoutError:
            call.cancel()
            churn.done[f"stream ({kind})"] += 1
        except grpc.aio.AioRpcError as exc:
            churn.fail(f"stream ({kind})", exc)


async def sample_memory(pid: int, every: float, into: list[Sample]) -> None:
    start = time.monotonic()
    while True:
        into.append(Sample((time.monotonic() - start) / 60, rss_kib(pid) / 1024, cpu_seconds(pid)))
        await asyncio.sleep(every)


async def soak(args: argparse.Namespace, tmp: Path, access: Access) -> ResultsPage:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    page = ResultsPage("soak", "Soak: memory under a steady churn")
    churn = Churn()
    samples: list[Sample] = []
    rng = random.Random(args.seed)
    async with (
        emulator(tmp) as emu,
        service(tmp, emu, "soak", access) as svc,
        svc.channel() as channel,
        aiohttp.ClientSession(trust_env=False) as http,
    ):
        stub = pb_grpc.VaultServiceStub(channel)
        signer = Signer(read_private_key_file(emu.dev_dir / "antom-private-key.pem"))
        life = (args.stream_life[0], args.stream_life[1])
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(sample_memory(svc.pid, args.sample, samples))]
            tasks.append(group.create_task(sessions(stub, http, svc, signer, args.sessions, churn)))
            metadata = tuple(svc.access.metadata)
            tasks += [
                group.create_task(stream_slot(stub, metadata, life, rng, churn))
                for _ in range(args.streams)
            ]
            await asyncio.sleep(args.minutes * 60)
            for task in tasks:
                task.cancel()
        complaints = svc.complaints()
    report(page, args, samples, churn, complaints)
    return page


def report(
    page: ResultsPage,
    args: argparse.Namespace,
    samples: list[Sample],
    churn: Churn,
    complaints: list[str],
) -> None:
    steady = [s for s in samples if s.minute >= args.warmup]
    if not steady:
        raise RuntimeError("the run ended before its warm-up did: raise --minutes")
    reference = steady[0].rss_mib
    page.figure(
        "highest RSS after warm-up",
        max(s.rss_mib for s in steady),
        "RSS at the end of warm-up",
        reference,
        "MiB",
        f"<= {1 + TOLERANCE}",
    )
    page.figure(
        "lowest RSS after warm-up",
        min(s.rss_mib for s in steady),
        "RSS at the end of warm-up",
        reference,
        "MiB",
        f">= {1 - TOLERANCE}",
    )
    last_half = [s for s in steady if s.minute >= (args.warmup + args.minutes) / 2]
    if len(last_half) >= 2 and len(steady) >= 2:
        page.figure(
            "median RSS, second half",
            statistics.median(s.rss_mib for s in last_half),
            "median RSS, after warm-up",
            statistics.median(s.rss_mib for s in steady),
            "MiB",
        )
    span = samples[-1].minute - samples[0].minute
    cores = (samples[-1].cpu_seconds - samples[0].cpu_seconds) / (span * 60) if span else 0.0
    page.note(
        f"{args.minutes} minutes, warm-up {args.warmup} min, RSS sampled every {args.sample} s"
        f" ({len(samples)} samples). Load: {args.sessions} sessions/s (each completed by a signed"
        f" notification, one in ten delivered twice, read back with GetResult, a ListResults"
        f" page every 20), {args.streams} streams held {life_text(args)} s each and reopened"
        f" (from now, resumed, filtered). The service used {cores:.2f} of a core on average."
    )
    page.table("Load, counted", ["what", "done", "failed"], churn_rows(churn))
    page.plot(
        "rss",
        "Service RSS during the soak",
        "minutes",
        "RSS MiB",
        {"service RSS": [(s.minute, s.rss_mib) for s in samples]},
    )
    page.table(
        "RSS samples, one a minute",
        ["minute", "RSS MiB", "vs end of warm-up"],
        [
            (f"{s.minute:.1f}", f"{s.rss_mib:.1f}", f"{(s.rss_mib / reference - 1) * 100:+.1f} %")
            for s in samples[:: max(1, round(60 / args.sample))]
        ],
    )
    page.note(
        "Service log at WARNING and above: "
        + ("nothing." if not complaints else "\n\n```\n" + "\n".join(complaints) + "\n```")
    )


def life_text(args: argparse.Namespace) -> str:
    return f"{args.stream_life[0]:g} to {args.stream_life[1]:g}"


def churn_rows(churn: Churn) -> list[tuple[str, int, int]]:
    kinds = sorted({*churn.done, *(k.partition(":")[0] for k in churn.failed)})
    rows = []
    for kind in kinds:
        failed = sum(n for k, n in churn.failed.items() if k.partition(":")[0] == kind)
        rows.append((kind, churn.done[kind], failed))
    rows += [(f"failure {k}", 0, n) for k, n in sorted(churn.failed.items())]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes before the reference")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--sessions", type=float, default=20.0, help="sessions per second")
    parser.add_argument("--streams", type=positive, default=200, help="streams open at a time")
    parser.add_argument("--stream-life", type=float, nargs=2, default=[1.0, 10.0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--auth", choices=("none",), default="none")
    parser.add_argument("--callers", type=positive, default=1)
    args = parser.parse_args()
    with workdir() as tmp:
        page = asyncio.run(soak(args, tmp, access_for(args, tmp)))
    page.write()
    print(f"pid {os.getpid()} done")


if __name__ == "__main__":
    main()
