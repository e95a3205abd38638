"""CPU cost of one signed Antom round trip, by httpx transport, against the local emulator.

The emulator runs in its own process so that only the client's CPU is counted: signing, the
HTTP exchange, verifying the answer's signature and parsing it. Run from the repository root:

    .venv/bin/python bench/antom_client.py [--calls 3000] [--concurrency 1 16]

It also reports the primitives the numbers are made of: RSA-2048 sign and verify with a key
loaded once, and the cost of parsing a PEM private key (what a per-call key load would add).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport

from vault_service.antom import (
    AntomClient,
    AntomClientConfig,
    CreateVaultingSessionRequest,
    PrivateKey,
    Signer,
    Verifier,
    ensure_key_pair,
    load_private_key,
)

CLIENT_ID = "BENCH0000000001"
NOTIFY_URL = "http://127.0.0.1:9/notify"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def emulator(workdir: Path) -> Iterator[tuple[str, Path, Path]]:
    """Start ``vault-service emulator`` in a subprocess; yield its URL and the private keys it
    generated in ``workdir`` (the merchant's, and the emulator's own Antom key)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vault_service",
            "emulator",
            "--listen",
            f"127.0.0.1:{port}",
            "--client-id",
            CLIENT_ID,
            "--dev-dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.05)
        yield (
            f"http://127.0.0.1:{port}",
            workdir / "merchant-private-key.pem",
            workdir / "antom-private-key.pem",
        )
    finally:
        process.terminate()
        process.wait(10)


def httpcore_client(max_connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(limits=limits, trust_env=False)


def aiohttp_client(max_connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits, trust_env=False))


TRANSPORTS: dict[str, Callable[[int], httpx.AsyncClient]] = {
    "httpx default (httpcore, sniffio installed)": httpcore_client,
    "httpx + aiohttp transport (httpx-aiohttp)": aiohttp_client,
}


async def round_trips(
    client: AntomClient, calls: int, concurrency: int, prefix: str
) -> tuple[float, float]:
    """Run ``calls`` createVaultingSession calls; return (CPU µs per call, calls per second)."""
    counter = iter(range(calls))

    async def worker() -> None:
        for n in counter:
            await client.create_vaulting_session(
                CreateVaultingSessionRequest(
                    vaulting_request_id=f"{prefix}-{n}", vaulting_notification_url=NOTIFY_URL
                )
            )

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / calls * 1e6, calls / wall


async def measure_transports(
    url: str, merchant_key: PrivateKey, antom_key: PrivateKey, calls: int, levels: list[int]
) -> list[str]:
    rows = []
    signer, verifier = Signer(merchant_key), Verifier(antom_key.public_key())
    for name, factory in TRANSPORTS.items():
        for concurrency in levels:
            http = factory(concurrency)
            config = AntomClientConfig(gateway=url, client_id=CLIENT_ID, allow_plain_http=True)
            async with AntomClient(config, signer, verifier, http=http) as client:
                tag = f"{os.getpid()}-{abs(hash(name))}-{concurrency}"
                await round_trips(client, min(300, calls), concurrency, f"warm-{tag}")
                cpu_us, rate = await round_trips(client, calls, concurrency, f"run-{tag}")
            await http.aclose()
            rows.append(f"| {name} | {concurrency} | {cpu_us:,.0f} | {rate:,.0f} |")
    return rows


def measure_primitives(key: PrivateKey, rounds: int = 2000) -> list[str]:
    signer, verifier = Signer(key), Verifier(key.public_key())
    header = signer.sign("POST", "/ams/api/v1/vaults/inquireVaulting", CLIENT_ID, "1", b"{}")

    start = time.perf_counter()
    for _ in range(rounds):
        signer.sign("POST", "/ams/api/v1/vaults/inquireVaulting", CLIENT_ID, "1", b"{}")
    sign_us = (time.perf_counter() - start) / rounds * 1e6

    start = time.perf_counter()
    for _ in range(rounds):
        verifier.verify(
            header,
            method="POST",
            path="/ams/api/v1/vaults/inquireVaulting",
            client_id=CLIENT_ID,
            time="1",
            body=b"{}",
        )
    verify_us = (time.perf_counter() - start) / rounds * 1e6

    pem = key.to_pkcs8_pem()
    loads = 50
    start = time.perf_counter()
    for _ in range(loads):
        load_private_key(pem)
    load_ms = (time.perf_counter() - start) / loads * 1e3
    return [
        f"| RSA-2048 sign, key loaded once | {sign_us:,.0f} µs |",
        f"| RSA-2048 verify, key loaded once | {verify_us:,.0f} µs |",
        f"| parse a PKCS#8 PEM private key | {load_ms:,.1f} ms |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, emulator(Path(tmp)) as (url, mkey, akey):
        merchant_key, _ = ensure_key_pair(mkey, Path(tmp) / "merchant-public-key.pem")
        antom_key = load_private_key(akey.read_bytes())
        print(f"CPU {os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.calls} calls\n")
        print("| primitive | cost |\n|---|---|")
        print("\n".join(measure_primitives(merchant_key)))
        print("\n| transport | concurrency | client CPU µs / call | calls / s |\n|---|---|---|---|")
        rows = asyncio.run(
            measure_transports(url, merchant_key, antom_key, args.calls, args.concurrency)
        )
        print("\n".join(rows))


if __name__ == "__main__":
    main()
