"""``python -m bench.sdk``: the SDK's ``execute()`` and vault-service's CreateSession against
one TLS emulator on port 443, at each concurrency; one results page."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import read_private_key_file

from ..create_session.floors import measure_floors
from ..create_session.load import create_sessions
from ..page import REPO, ResultsPage
from ..service.access import Access
from ..service.measure import Meter, cpu_seconds, machine_cpu_seconds, quiet
from ..service.processes import (
    CLIENT_ID,
    Emulator,
    EmulatorTLS,
    emulator,
    service,
    workdir,
)
from ..service.report import positive
from . import __doc__ as overview

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

SDK_PYTHON = REPO / ".venv-antom-sdk" / "bin" / "python"
WORKER = Path(__file__).resolve().parent / "worker.py"
ANTOM_PORT = 443
RATIO_CONCURRENCY = 16
THROUGHPUT_TARGET = ">= 30"
CPU_TARGET = f"<= {1 / 30:.4f}"
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Window:
    """One timed window: calls, wall seconds, CPU seconds of each process and the machine."""

    calls: int
    wall: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.calls / self.wall

    def us(self, name: str) -> float:
        return self.cpu[name] / self.calls * 1e6

    def others(self) -> float:
        ours = sum(v for k, v in self.cpu.items() if k != "machine")
        return max(0.0, self.cpu["machine"] - ours) / self.wall


class SdkWorker:
    """``worker.py`` under the SDK's interpreter, one line per timed run."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    async def run(self, prefix: str, calls: int, threads: int) -> tuple[int, float, list[str]]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        line = {"prefix": prefix, "calls": calls, "threads": threads}
        self._process.stdin.write(json.dumps(line).encode() + b"\n")
        await self._process.stdin.drain()
        answer = await self._process.stdout.readline()
        if not answer:
            raise RuntimeError("the SDK worker ended; see sdk-worker.log")
        done = json.loads(answer)
        return int(done["calls"]), float(done["wall"]), list(done["errors"])


@contextlib.asynccontextmanager
async def sdk_worker(tmp: Path, emu: Emulator) -> AsyncIterator[SdkWorker]:
    if not SDK_PYTHON.exists():
        raise SystemExit(f"{SDK_PYTHON} is missing: run scripts/bootstrap")
    assert emu.tls is not None
    merchant = read_private_key_file(emu.dev_dir / "merchant-private-key.pem")
    antom = read_private_key_file(emu.dev_dir / "antom-private-key.pem")
    settings = {
        "gateway": "https://127.0.0.1",  # the SDK adds no port: always 443
        "client_id": CLIENT_ID,
        # The SDK's key forms: bare base64 of PKCS#1 (private) and of SPKI (public).
        "merchant_private_key": "".join(merchant.to_pkcs1_pem().decode().splitlines()[1:-1]),
        "antom_public_key": antom.public_key().to_spki_base64(),
        "notify_url": "https://127.0.0.1:9/notify",
    }
    env = {"PATH": os.environ.get("PATH", ""), "SSL_CERT_FILE": str(emu.tls.ca_file)}
    with (tmp / "sdk-worker.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(SDK_PYTHON),
            str(WORKER),
            json.dumps(settings),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        yield SdkWorker(process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def sdk_window(
    worker: SdkWorker, pids: dict[str, int], prefix: str, calls: int, threads: int
) -> Window:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine = machine_cpu_seconds()
    done, wall, errors = await worker.run(prefix, calls, threads)
    if errors:
        raise RuntimeError(f"the SDK's calls failed: {errors}")
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return Window(done, wall, cpu | {"machine": machine_cpu_seconds() - machine})


async def bench(args: argparse.Namespace, tmp: Path, page: ResultsPage) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    tls = EmulatorTLS.make(tmp)
    sdk: dict[int, Window] = {}
    ours: dict[int, Window] = {}
    async with (
        emulator(tmp, tls=tls, port=ANTOM_PORT) as emu,
        service(tmp, emu, "sdk", Access("none")) as svc,
        sdk_worker(tmp, emu) as worker,
        svc.channel() as channel,
    ):
        stub: VaultServiceAsyncStub = pb_grpc.VaultServiceStub(channel)
        sdk_pids = {"sdk": worker.pid, "emulator": emu.pid}
        meter = Meter({"service": svc.pid, "emulator": emu.pid, "bench": os.getpid()})
        await sdk_window(worker, sdk_pids, "sdk-warm", 50, 4)
        await create_sessions(stub, svc, meter, "warm", 300, RATIO_CONCURRENCY)
        for concurrency in args.concurrency:
            await quiet(emu.pid)
            sdk[concurrency] = await sdk_window(
                worker, sdk_pids, f"sdk-c{concurrency}", args.sdk_calls, concurrency
            )
            await quiet(svc.pid)
            run = await create_sessions(stub, svc, meter, "run", args.calls, concurrency)
            ours[concurrency] = Window(len(run.latencies), run.wall, run.cpu)
        floors = await measure_floors(tmp, emu, args.calls, RATIO_CONCURRENCY, args.rounds)
    report(page, sdk, ours, floors)


def report(
    page: ResultsPage, sdk: dict[int, Window], ours: dict[int, Window], floors: dict[str, float]
) -> None:
    c = RATIO_CONCURRENCY
    throughput = page.figure(
        f"vault-service CreateSession throughput (concurrency {c})",
        ours[c].rate,
        f"SDK execute() throughput ({c} threads)",
        sdk[c].rate,
        "calls/s",
        THROUGHPUT_TARGET,
    )
    cpu = page.figure(
        f"vault-service CPU per CreateSession (concurrency {c})",
        ours[c].us("service"),
        f"SDK process CPU per execute() ({c} threads)",
        sdk[c].us("sdk"),
        "µs",
        CPU_TARGET,
    )
    page.table(
        "Both clients by concurrency (same emulator, TLS on 127.0.0.1:443)",
        [
            "client",
            "concurrency",
            "calls",
            "calls/s",
            "client CPU µs/call",
            "emulator CPU µs/call",
            "load generator CPU µs/call",
            "cores busy (others)",
        ],
        [
            *(
                (
                    "SDK execute()",
                    n,
                    w.calls,
                    w.rate,
                    w.us("sdk"),
                    w.us("emulator"),
                    "(the SDK)",
                    f"{w.others():.2f}",
                )
                for n, w in sdk.items()
            ),
            *(
                (
                    "vault-service CreateSession",
                    n,
                    w.calls,
                    w.rate,
                    w.us("service"),
                    w.us("emulator"),
                    w.us("bench"),
                    f"{w.others():.2f}",
                )
                for n, w in ours.items()
            ),
        ],
    )
    page.plot(
        "throughput",
        "createVaultingSession throughput by concurrency",
        "concurrency (calls in flight / SDK threads)",
        "calls/s",
        {
            "vault-service CreateSession": [(n, w.rate) for n, w in ours.items()],
            "SDK DefaultAlipayClient.execute()": [(n, w.rate) for n, w in sdk.items()],
        },
        logy=True,
    )
    ratio_notes(page, sdk[c], ours[c], floors, throughput.met, cpu.met)


def ratio_notes(
    page: ResultsPage,
    sdk: Window,
    ours: Window,
    floors: dict[str, float],
    throughput_met: bool | None,
    cpu_met: bool | None,
) -> None:
    """What caps each ratio, computed from this run's own figures."""
    per_call = ours.us("service") + ours.us("emulator") + ours.us("bench")
    cap_rate = CORES / per_call * 1e6
    free = max(0.0, CORES - ours.others())
    free_rate = free / per_call * 1e6
    page.note(
        f"**Throughput cap.** On this machine's {CORES} cores, each CreateSession costs the"
        f" service {ours.us('service'):,.0f} µs, the emulator (Antom's stand-in: it verifies and"
        f" signs too) {ours.us('emulator'):,.0f} µs and the load generator"
        f" {ours.us('bench'):,.0f} µs of CPU: {per_call:,.0f} µs together, so no run here can"
        f" exceed {cap_rate:,.0f} calls/s, however cheap the service, i.e. a throughput ratio"
        f" of {cap_rate / sdk.rate:,.1f}x over the SDK's {sdk.rate:,.0f} calls/s"
        f" (measured: {ours.rate / sdk.rate:,.1f}x,"
        f" {'met' if throughput_met else 'missed'}). The emulator and the load generator"
        " alone, with a service costing nothing, would allow"
        f" {CORES / (ours.us('emulator') + ours.us('bench')) * 1e6 / sdk.rate:,.1f}x."
        f" Other processes kept {ours.others():.2f} cores busy during the window: with the"
        f" {free:.2f} cores they left, the cap was {free_rate:,.0f} calls/s"
        f" ({free_rate / sdk.rate:,.1f}x), and the service reached {ours.rate:,.0f}. The SDK"
        " runs its threads under one GIL, so it cannot exceed 1 / its CPU per call,"
        f" {1e6 / sdk.us('sdk'):,.1f} calls/s, whatever the thread count."
    )
    crypto_us = floors["RSA-2048 sign"] + floors["RSA-2048 verify"]
    floor_sum = sum(floors.values())
    page.note(
        f"**CPU cap.** The service signs each request and verifies each answer as the SDK does"
        f" (RSA-2048, {crypto_us:,.0f} µs together, measured in this run): its CPU per call"
        f" cannot fall below that, so the CPU ratio cannot fall below"
        f" {crypto_us / sdk.us('sdk'):.4f}. With every floor of a CreateSession, each measured"
        f" alone in this run as `bench.create_session` does ({floor_sum:,.0f} µs: "
        + ", ".join(f"{name} {us:,.0f}" for name, us in floors.items())
        + f"), the bound is {floor_sum / sdk.us('sdk'):.4f}"
        f" ({'within' if floor_sum / sdk.us('sdk') <= 1 / 30 else 'above'} the 1/30 target):"
        f" measured {ours.us('service') / sdk.us('sdk'):.4f},"
        f" {'met' if cpu_met else 'missed'}, i.e. the service at"
        f" {ours.us('service') / floor_sum:.2f}x its floors. The SDK's cost per call is a new"
        " TLS connection (handshake included), its private key parsed (and checked) again for"
        " every signature and the answer verified with the pure-Python `rsa` package."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sdk", description=(overview or "").splitlines()[0]
    )
    parser.add_argument("--calls", type=positive, default=2000, help="CreateSessions per level")
    parser.add_argument("--sdk-calls", type=positive, default=300, help="execute() per level")
    parser.add_argument("--concurrency", type=positive, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=positive, default=500, help="sign/verify rounds")
    args = parser.parse_args()
    if RATIO_CONCURRENCY not in args.concurrency:
        parser.error(f"--concurrency must include {RATIO_CONCURRENCY} (the ratios' level)")
    page = ResultsPage("sdk", "vault-service against the official Antom SDK")
    with workdir() as tmp:
        asyncio.run(bench(args, tmp, page))
    page.write()


if __name__ == "__main__":
    main()
