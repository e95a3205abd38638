"""Webhook abuse: what 100 gzip bombs cost the service, against 100 ordinary notifications.

Issue 9 item 1: aiohttp inflated request bodies sent with ``Content-Encoding`` before the
webhook looked at them, so a 61 KB gzip body of 60 MiB of zeros cost the service tens of
milliseconds of event-loop CPU even though it was answered 415, and a ``GetResult`` waited
behind the inflation. This bench measures the service's CPU for

1. the anchor: 100 signed notifyVaulting POSTs for sessions without a result (each one
   verified, parsed, stored with its event and acknowledged), and
2. 100 gzip bombs (``--bomb-mib`` MiB of zeros, gzip level 9, ``Content-Encoding: gzip``),
   sent two ways: written whole on a raw connection of its own and read to the close, as an
   attacker would, and POSTed with an aiohttp client session (keep-alive, which may stop
   writing a body once it has the answer; with the decompression on, this is the pattern
   that made the server inflate in our runs),

both at ``--concurrency``, each window extended by ``--settle`` seconds after its last answer
so that work the server does after answering (draining an unread body) is counted. Then a
probe calls ``GetResult`` every 20 ms, on its own and while another 100 bombs arrive, and
reports its latency (in separate windows, so that the probe's CPU is not in the figures above).

It reuses the processes and meters of ``bench/service/``: ``vault-service serve`` and
``vault-service emulator`` run as subprocesses configured through the environment, CPU comes
from ``/proc/<pid>/stat``, and "cores busy (others)" must be ~0 for a run to count. Run from
the repository root::

    .venv/bin/python -m bench.webhook_abuse [--requests 100] [--concurrency 10]

To measure another commit: ``git archive COMMIT | tar -x -C DIR`` and run this script with
``PYTHONPATH=DIR`` (the children run the ``vault_service`` this process imports).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import zlib
from typing import TYPE_CHECKING

import aiohttp

from bench.service.access import Access
from bench.service.measure import Meter, drive
from bench.service.processes import Service, emulator, service, workdir
from bench.service.report import Report, add_row, ms, positive, source, versions
from bench.service.webhook import signed_notifications
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import Signer, read_private_key_file
from vault_service.config import DEFAULT_NOTIFY_PATH
from vault_service.webhook import ACKNOWLEDGEMENT

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

MIB = 1024 * 1024
BOMB_REQUEST = ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"")
PROBE_INTERVAL = 0.02
Signed = list[tuple[dict[str, str], bytes]]


def gzip_bomb(mib: int) -> bytes:
    """``mib`` MiB of zeros, gzip level 9 (60 MiB → 61 KB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MIB)
    return b"".join(compressor.compress(zeros) for _ in range(mib)) + compressor.flush()


async def probe_get_result(
    stub: VaultServiceAsyncStub, vaulting_request_id: str, stop: asyncio.Event
) -> list[float]:
    """``GetResult`` every ``PROBE_INTERVAL`` seconds until ``stop``; the latency of each."""
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        await stub.GetResult(
            pb.GetResultRequest(vaulting_request_id=vaulting_request_id), timeout=30
        )
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(PROBE_INTERVAL)
    return latencies


class Target:
    """The running service and what is sent to it."""

    def __init__(self, args: argparse.Namespace, svc: Service, signed: Signed) -> None:
        self.url = f"http://127.0.0.1:{svc.http_port}{DEFAULT_NOTIFY_PATH}"
        self.signed = signed
        self.bomb = gzip_bomb(args.bomb_mib)
        self.port = svc.http_port
        self.bomb_head = (
            f"POST {DEFAULT_NOTIFY_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(self.bomb)}\r\n\r\n"
        ).encode()
        self.meter = Meter({"service": svc.pid})
        self.args = args

    async def send(self, kind: str) -> tuple[dict[str, str], dict[str, float], float]:
        """``--requests`` of ``kind`` (anchor or bombs) at ``--concurrency``: the answers
        counted by kind, the CPU used until ``--settle`` seconds after the last, the wall time."""
        args = self.args
        answers: dict[str, int] = {}
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:

            async def post(n: int) -> None:
                if kind == "raw bombs":
                    key = await self.bomb_whole()
                else:
                    headers, body = self.signed[n] if kind == "anchor" else BOMB_REQUEST
                    if kind == "client bombs":
                        body = self.bomb
                    async with http.post(self.url, data=body, headers=headers) as answer:
                        content = await answer.read()
                        key = "ack" if content == ACKNOWLEDGEMENT else str(answer.status)
                answers[key] = answers.get(key, 0) + 1

            before, wall = self.meter.take(), time.perf_counter()
            await drive(self.meter, args.requests, args.concurrency, post)
            await asyncio.sleep(args.settle)
            cpu = Meter.since(before, self.meter.take())
            wall = time.perf_counter() - wall
        counted = {key: f"{count} x {key}" for key, count in sorted(answers.items())}
        return counted, cpu, wall

    async def bomb_whole(self) -> str:
        """One bomb the way an attacker sends it: the whole body, whatever the answer (an
        HTTP client stops writing once it has its answer, which can spare the server the
        body), then read to the close; the status of the answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(self.bomb_head + self.bomb)
            await writer.drain()
            answer = await reader.read(-1)
        except ConnectionError as exc:
            return type(exc).__name__
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        return answer[9:12].decode() or "closed unanswered"


async def bench(args: argparse.Namespace, report: Report) -> None:
    cpu_rows = report.table(
        f"### Service CPU, {args.requests} requests at concurrency {args.concurrency}",
        [
            "requests",
            "answers",
            "service CPU ms (all)",
            "service CPU µs/request",
            "ratio to the anchor",
            "cores busy (others)",
        ],
    )
    latency_rows = report.table(
        f"### GetResult every {PROBE_INTERVAL * 1e3:.0f} ms, on its own and during the bombs",
        ["while", "GetResult calls", "p50 ms", "max ms"],
    )
    with workdir() as tmp:
        access = Access("none")
        async with (
            emulator(tmp) as emu,
            service(tmp, emu, "abuse", access) as svc,
            access.channel(svc.grpc_port) as channel,
        ):
            stub: VaultServiceAsyncStub = pb_grpc.VaultServiceStub(channel)
            ids = [f"abuse-{n}" for n in range(args.requests)]
            for vaulting_request_id in ids:
                await stub.CreateSession(
                    pb.CreateSessionRequest(vaulting_request_id=vaulting_request_id), timeout=30
                )
            signer = Signer(read_private_key_file(emu.dev_dir / "antom-private-key.pem"))
            target = Target(args, svc, signed_notifications(signer, ids))
            bomb_label = f"gzip bombs ({len(target.bomb) / 1000:.0f} KB → {args.bomb_mib} MiB)"
            anchor_cpu = 0.0
            for label, kind in (
                ("signed notifications (anchor)", "anchor"),
                (f"{bomb_label}, raw socket, whole body", "raw bombs"),
                (f"{bomb_label}, aiohttp client", "client bombs"),
            ):
                answers, cpu, wall = await target.send(kind)
                used = cpu["service"]
                anchor_cpu = anchor_cpu or used
                add_row(
                    cpu_rows,
                    f"{args.requests} {label}",
                    ", ".join(answers.values()),
                    f"{used * 1e3:,.1f}",
                    f"{used / args.requests * 1e6:,.0f}",
                    f"{used / anchor_cpu:.3f}",
                    f"{max(0.0, cpu['machine'] - used) / wall:.2f}",
                )
            for label, load in (
                ("nothing else", None),
                (f"{args.requests} {bomb_label}, raw socket", "raw bombs"),
                (f"{args.requests} {bomb_label}, aiohttp client", "client bombs"),
            ):
                stop = asyncio.Event()
                probe = asyncio.create_task(probe_get_result(stub, ids[0], stop))
                if load is None:
                    await asyncio.sleep(1.0 + args.settle)
                else:
                    await target.send(load)
                stop.set()
                latencies = await probe
                add_row(
                    latency_rows,
                    label,
                    len(latencies),
                    ms(statistics.median(latencies)),
                    ms(max(latencies)),
                )
            if complaints := svc.complaints():
                print("service log (first lines):", *complaints, sep="\n  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=positive, default=100)
    parser.add_argument("--concurrency", type=positive, default=10)
    parser.add_argument("--bomb-mib", type=positive, default=60)
    parser.add_argument("--settle", type=float, default=2.5, help="s counted after the last answer")
    args = parser.parse_args()
    print(versions(), flush=True)
    print(source(), flush=True)
    report = Report()
    asyncio.run(bench(args, report))
    print(f"\n{report.render()}")


if __name__ == "__main__":
    main()
