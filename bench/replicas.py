"""``python -m bench.replicas``: one and two ``vault-service serve`` replicas on one PostgreSQL.

Creates its own database on the server ``--admin-url`` names (and drops it at the end), runs the
emulator (Antom) and the replicas as subprocesses configured through the environment, and this
process as the load generator. For each configuration, SQLite with one replica (the anchor of
CPU per call), PostgreSQL with one replica, PostgreSQL with two replicas sharing the database:

* CreateSession at ``--create-concurrency``, each call a new id (one Antom round trip each), the
  calls spread evenly over the replicas;
* signed notifications (first deliveries for sessions inserted beforehand through the store's
  API) at ``--notify-concurrency``, spread the same way, on raw keep-alive sockets
  (:mod:`bench.webhook.load`).

The page gives the throughput with two replicas over one, and PostgreSQL's service CPU per
call over SQLite's, both from ``/proc`` (the replicas' CPU summed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.database_url import parse_database_url
from vault_service.store import open_store, read_data_key_file

from .page import ResultsPage
from .service.access import Access
from .service.measure import Meter, drive, pct
from .service.processes import Emulator, Service, emulator, service, workdir
from .service.report import positive
from .webhook.load import Outcome, closed_loop
from .webhook.notifications import insert_sessions, signed_requests

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
WARM_UP = 200


@dataclass(frozen=True)
class Measured:
    """One configuration's figures."""

    create_rate: float
    create_cpu_us: float
    create_p99_ms: float
    notify_rate: float
    notify_cpu_us: float
    notify_p99_ms: float


@contextlib.asynccontextmanager
async def database(admin_url: str) -> AsyncIterator[str]:
    """A new database on the server, dropped on the way out; its URL."""
    name = f"vault_bench_replicas_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rpartition("/")[0] + f"/{name}"
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def replicas(
    tmp: Path, emu: Emulator, label: str, count: int, database_url: str | None
) -> AsyncIterator[list[Service]]:
    settings = {} if database_url is None else {"VAULT_DATABASE_URL": database_url}
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                service(tmp, emu, f"{label}-{n}", Access("none"), **settings)
            )
            for n in range(count)
        ]


async def create_sessions(
    services: list[Service], meter: Meter, prefix: str, calls: int, concurrency: int
) -> tuple[float, float, float]:
    """CreateSession ``calls`` times over the replicas: (calls/s, service CPU µs/call, p99 ms)."""
    async with contextlib.AsyncExitStack() as stack:
        stubs = [
            pb_grpc.VaultServiceStub(await stack.enter_async_context(svc.channel()))
            for svc in services
        ]

        def create(tag: str) -> Callable[[int], Awaitable[object]]:
            async def call(n: int) -> None:
                answer = await stubs[n % len(stubs)].CreateSession(
                    pb.CreateSessionRequest(vaulting_request_id=f"{prefix}-{tag}-{n}"),
                    timeout=10,
                )
                if not answer.created:
                    raise RuntimeError("a session was not created")

            return call

        await drive(meter, WARM_UP, concurrency, create("warm"))
        run = await drive(meter, calls, concurrency, create("timed"))
    service_cpu = sum(used for name, used in run.cpu.items() if name.startswith("replica"))
    return run.rate, service_cpu / calls * 1e6, pct(run.latencies, 99) * 1e3


async def notify(
    services: list[Service], meter: Meter, requests: list[bytes], concurrency: int
) -> tuple[float, float, float]:
    """The notifications spread over the replicas: (acknowledged/s, service CPU µs, p99 ms)."""
    share = len(requests) // len(services)
    before = meter.take()
    outcomes: list[Outcome] = await asyncio.gather(
        *(
            closed_loop(
                svc.http_port,
                requests[n * share : (n + 1) * share],
                max(1, concurrency // len(services)),
            )
            for n, svc in enumerate(services)
        )
    )
    used = Meter.since(before, meter.take())
    acknowledged = sum(len(outcome.acknowledged) for outcome in outcomes)
    if acknowledged != share * len(services):
        raise RuntimeError(f"only {acknowledged} notifications acknowledged")
    wall = max(outcome.wall for outcome in outcomes)
    service_cpu = sum(v for name, v in used.items() if name.startswith("replica"))
    latencies = [latency for outcome in outcomes for latency in outcome.latencies]
    return acknowledged / wall, service_cpu / acknowledged * 1e6, pct(latencies, 99) * 1e3


async def configuration(
    args: argparse.Namespace,
    tmp: Path,
    emu: Emulator,
    label: str,
    count: int,
    database_url: str | None,
    requests: list[bytes],
    ids: list[str],
) -> Measured:
    async with replicas(tmp, emu, label, count, database_url) as services:
        url = database_url or f"sqlite:///{services[0].database}"
        keys = await asyncio.to_thread(read_data_key_file, tmp / "data-keys.json")
        store = await open_store(parse_database_url(url), auto_migrate=False, data_keys=keys)
        try:
            await insert_sessions(store, ids)
        finally:
            await store.close()
        meter = Meter(
            {f"replica-{n}": svc.pid for n, svc in enumerate(services)} | {"bench": os.getpid()}
        )
        print(f"{label}: CreateSession", flush=True)
        create = await create_sessions(services, meter, label, args.calls, args.create_concurrency)
        print(f"{label}: notifications", flush=True)
        await notify(services, meter, requests[:WARM_UP], args.notify_concurrency)
        notified = await notify(services, meter, requests[WARM_UP:], args.notify_concurrency)
    return Measured(*create[:2], create[2], *notified)


async def bench(args: argparse.Namespace, tmp: Path) -> ResultsPage:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    page = ResultsPage("replicas", "Replicas: one and two serve processes on one PostgreSQL")
    configurations = (("sqlite", 1), ("postgresql-1", 1), ("postgresql-2", 2))
    per = WARM_UP + args.notifications
    ids = [f"{label}-n{n:06}" for label, _ in configurations for n in range(per)]
    results: dict[str, Measured] = {}
    async with emulator(tmp) as emu, database(args.admin_url) as url:
        print(f"signing {len(ids):,} notifications", flush=True)
        requests = await signed_requests(emu.dev_dir / "antom-private-key.pem", ids)
        for n, (label, count) in enumerate(configurations):
            chunk = slice(n * per, (n + 1) * per)
            database_url = None if label == "sqlite" else url
            results[label] = await configuration(
                args, tmp, emu, label, count, database_url, requests[chunk], ids[chunk]
            )
    one, two, lite = results["postgresql-1"], results["postgresql-2"], results["sqlite"]
    page.figure(
        "CreateSession throughput, 2 replicas",
        two.create_rate,
        "1 replica",
        one.create_rate,
        "calls/s",
    )
    page.figure(
        "webhook throughput, 2 replicas",
        two.notify_rate,
        "1 replica",
        one.notify_rate,
        "notifications/s",
    )
    page.figure(
        "service CPU per CreateSession, PostgreSQL",
        one.create_cpu_us,
        "SQLite",
        lite.create_cpu_us,
        "µs",
    )
    page.figure(
        "service CPU per notification, PostgreSQL",
        one.notify_cpu_us,
        "SQLite",
        lite.notify_cpu_us,
        "µs",
    )
    page.table(
        "Each configuration",
        [
            "store",
            "replicas",
            "CreateSession/s",
            "CreateSession p99 ms",
            "service CPU µs/CreateSession",
            "notifications/s",
            "notification p99 ms",
            "service CPU µs/notification",
        ],
        [
            (
                "SQLite" if label == "sqlite" else "PostgreSQL",
                count,
                f"{m.create_rate:,.0f}",
                f"{m.create_p99_ms:.1f}",
                f"{m.create_cpu_us:,.0f}",
                f"{m.notify_rate:,.0f}",
                f"{m.notify_p99_ms:.1f}",
                f"{m.notify_cpu_us:,.0f}",
            )
            for (label, count), m in ((c, results[c[0]]) for c in configurations)
        ],
    )
    page.note(
        f"CreateSession: {args.calls:,} calls at concurrency {args.create_concurrency} (after"
        f" {WARM_UP} warm-up calls), each a new id and one round trip to the emulator;"
        f" notifications: {args.notifications:,} first deliveries at concurrency"
        f" {args.notify_concurrency} in all, spread evenly over the replicas. Service CPU is"
        " the replicas' together. The machine has "
        f"{os.cpu_count()} cores shared by the replicas, PostgreSQL, the emulator and this"
        " generator: a second replica can only add throughput where one replica leaves a"
        " core idle."
    )
    return page


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="where to CREATE DATABASE")
    parser.add_argument("--calls", type=positive, default=1500)
    parser.add_argument("--create-concurrency", type=positive, default=16)
    parser.add_argument("--notifications", type=positive, default=3000)
    parser.add_argument("--notify-concurrency", type=positive, default=32)
    args = parser.parse_args()
    with workdir() as tmp:
        page = asyncio.run(bench(args, tmp))
    page.write()


if __name__ == "__main__":
    main()
