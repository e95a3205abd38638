"""The floors of one CreateSession, each measured on its own in the run that measures the service.

A CreateSession is a unary gRPC call, an RSA-2048 signature, a POST over a kept-alive TLS
connection, the verification of Antom's signature and a store insert; nothing can cost less than
those together. Each is measured here in isolation, with the same libraries the service uses:

* ``grpc``: a bare ``grpc.aio`` server (``bare_grpc``, its own process, no interceptor) answering
  request and response bytes of CreateSession's sizes, its CPU from ``/proc``;
* ``sign`` and ``verify``: ``Signer.sign`` and ``Verifier.verify`` with keys loaded once;
* ``post``: aiohttp alone (no signing: the requests are signed before the window) POSTing
  createVaultingSession requests to the same TLS emulator over kept-alive connections, reading
  each answer whole; this process's CPU;
* ``insert``: ``SQLiteStore.insert`` of a new record in a fresh database, the service's store
  thread included.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import grpc

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.antom import (
    CreateVaultingSessionRequest,
    Signer,
    Verifier,
    read_private_key_file,
)
from vault_service.antom.client import CREATE_VAULTING_SESSION_PATH, signed_headers
from vault_service.domain import Session, SessionParameters, VaultingRecord
from vault_service.store import SQLiteStore, read_data_key_file

from ..service.measure import cpu_seconds
from ..service.processes import CLIENT_ID, Emulator, child, free_ports, wait_for_port
from . import bare_grpc

NOTIFY_URL = "https://127.0.0.1:9/notify"
ANSWER_SIZE = 300
"""About a CreateSessionResponse's size (a session id, its data, an expiry, a URL)."""
WARM_UP = 200


async def _window(calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> None:
    counter = iter(range(calls))

    async def worker() -> None:
        for n in counter:
            await call(n)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def grpc_floor(
    workdir: Path, calls: int, concurrency: int, request_size: int, answer_size: int
) -> float:
    """CPU µs per call of the bare grpc.aio server."""
    [port] = free_ports(1)
    command = (*bare_grpc.COMMAND, str(port), str(answer_size))
    async with child([], dict(os.environ), workdir / "bare-grpc.log", command=command) as process:
        await wait_for_port(port, process, time.monotonic() + 30)
        request = b"\x0a" * request_size
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = channel.unary_unary(bare_grpc.METHOD)

            async def call(_: int) -> None:
                await method(request, timeout=10)

            await _window(WARM_UP, concurrency, call)
            before = cpu_seconds(process.pid)
            await _window(calls, concurrency, call)
            return (cpu_seconds(process.pid) - before) / calls * 1e6


def signing_floors(emu: Emulator, rounds: int) -> tuple[float, float]:
    """CPU µs of one ``Signer.sign`` and one ``Verifier.verify`` (keys loaded once)."""
    signer = Signer(read_private_key_file(emu.dev_dir / "merchant-private-key.pem"))
    antom = read_private_key_file(emu.dev_dir / "antom-private-key.pem")
    verifier = Verifier(antom.public_key())
    body = _body("floor-sign")
    path, at = CREATE_VAULTING_SESSION_PATH, "1700000000000"
    began = time.process_time()
    for _ in range(rounds):
        signer.sign("POST", path, CLIENT_ID, at, body)
    sign = (time.process_time() - began) / rounds * 1e6
    header = Signer(antom).sign("POST", path, CLIENT_ID, at, body)
    began = time.process_time()
    for _ in range(rounds):
        verifier.verify(header, method="POST", path=path, client_id=CLIENT_ID, time=at, body=body)
    verify = (time.process_time() - began) / rounds * 1e6
    return sign, verify


async def post_floor(emu: Emulator, calls: int, concurrency: int) -> float:
    """CPU µs per POST of aiohttp alone over kept-alive TLS connections to the emulator."""
    if emu.tls is None:
        raise ValueError("the POST floor is measured over TLS")
    signer = Signer(read_private_key_file(emu.dev_dir / "merchant-private-key.pem"))
    path = CREATE_VAULTING_SESSION_PATH
    signed = []
    for n in range(WARM_UP + calls):
        body = _body(f"floor-post-{n}")
        signed.append((body, signed_headers(signer, path, CLIENT_ID, body)))
    context = ssl.create_default_context(cafile=emu.tls.ca_file)
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=context)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:

        async def call(n: int) -> None:
            body, headers = signed[n]
            async with http.post(emu.url + path, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the emulator answered {response.status}")

        await _window(WARM_UP, concurrency, call)
        signed = signed[WARM_UP:]
        began = time.process_time()
        await _window(calls, concurrency, call)
        return (time.process_time() - began) / calls * 1e6


async def insert_floor(workdir: Path, data_key_file: Path, calls: int, concurrency: int) -> float:
    """CPU µs per ``SQLiteStore.insert`` of a new record (store thread included)."""
    store = await SQLiteStore.open(
        workdir / "floor.db", auto_migrate=True, data_keys=read_data_key_file(data_key_file)
    )
    try:
        now = datetime.now(UTC)
        records = [_record(f"floor-insert-{n}", now) for n in range(WARM_UP + calls)]
        later = now + timedelta(hours=1)

        async def call(n: int) -> None:
            await store.insert(records[n], next_check_at=later)

        await _window(WARM_UP, concurrency, call)
        records = records[WARM_UP:]
        began = time.process_time()
        await _window(calls, concurrency, call)
        return (time.process_time() - began) / calls * 1e6
    finally:
        await store.close()


async def measure_floors(
    workdir: Path, emu: Emulator, calls: int, concurrency: int, rounds: int
) -> dict[str, float]:
    """Every floor of one CreateSession, CPU µs each, by name (the service's data key file
    in ``workdir`` seals the insert's store)."""
    request = pb.CreateSessionRequest(vaulting_request_id="run-c16-1000").ByteSize()
    grpc_us = await grpc_floor(workdir, calls, concurrency, request, ANSWER_SIZE)
    sign_us, verify_us = signing_floors(emu, rounds)
    return {
        "bare grpc.aio unary (server process)": grpc_us,
        "RSA-2048 sign": sign_us,
        "RSA-2048 verify": verify_us,
        "aiohttp POST over kept-alive TLS to the emulator": await post_floor(
            emu, calls, concurrency
        ),
        "one store insert (SQLite, store thread included)": await insert_floor(
            workdir, workdir / "data-keys.json", calls, concurrency
        ),
    }


def _body(vaulting_request_id: str) -> bytes:
    return CreateVaultingSessionRequest(
        vaulting_request_id=vaulting_request_id, vaulting_notification_url=NOTIFY_URL
    ).to_json_bytes()


def _record(vaulting_request_id: str, now: datetime) -> VaultingRecord:
    """A record as CreateSession stores it (a session from Antom, no result yet)."""
    return VaultingRecord(
        vaulting_request_id=vaulting_request_id,
        owner="bench",
        parameters=SessionParameters(),
        session=Session(
            session_id=f"session-{vaulting_request_id}",
            session_data="x" * 200,
            expires_at=now + timedelta(minutes=30),
            normal_url="https://127.0.0.1/emulator/buyer",
        ),
        created_at=now,
        updated_at=now,
    )
