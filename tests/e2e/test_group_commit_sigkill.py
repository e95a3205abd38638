"""SIGKILL during a burst of notifications: every acknowledged one is stored, on each backend.

The webhook commits notifications in groups (``vault_service.service.group_commit``): a
caller is acknowledged only once its batch has committed. This runs a real
``vault-service serve``, posts Antom's signed notifications at concurrency, kills the process
(SIGKILL, no drain) while it is acknowledging them, starts it again on the same database and
reads every acknowledged notification's result back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import aiohttp
import grpc
import pytest

from tests.e2e.conftest import ServiceEnv, logged
from tests.fixtures.antom import CLIENT_ID
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import PrivateKey, Signer
from vault_service.config import DEFAULT_NOTIFY_PATH
from vault_service.webhook import ACKNOWLEDGEMENT

COMMAND: Final = (sys.executable, "-m", "vault_service", "serve")
SESSIONS: Final = 150
CONCURRENCY: Final = 32
KILL_AFTER: Final = 40
"""Acknowledgements received before the kill: the rest of the burst is still in flight."""


@dataclass
class Serving:
    process: asyncio.subprocess.Process
    grpc_port: int
    webhook_port: int


@contextlib.asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[Serving]:
    """``vault-service serve`` on ``env``; its stderr is drained in the background."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND, env=env, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        entry = await logged(process, "vault-service serving")
        ports = dict(part.split(" :") for part in entry["listen"].split(", "))
        reader = asyncio.create_task(process.stderr.read())
        try:
            yield Serving(process, int(ports["grpc"]), int(ports["webhook"]))
        finally:
            if process.returncode is None:
                process.kill()
            await reader
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def signed(signer: Signer, vaulting_request_id: str) -> tuple[dict[str, str], bytes]:
    """A successful notification for the id, signed as Antom signs it."""
    body = json.dumps(
        {
            "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
            "vaultingRequestId": vaulting_request_id,
            "paymentMethodDetail": {
                "paymentMethodType": "CARD",
                "card": {"cardToken": f"ALIPAY-{vaulting_request_id}", "brand": "VISA"},
            },
        },
        separators=(",", ":"),
    ).encode()
    request_time = str(time.time_ns() // 1_000_000)
    headers = {
        "Content-Type": "application/json; charset=UTF-8",
        "client-id": CLIENT_ID,
        "request-time": request_time,
        "signature": signer.sign("POST", DEFAULT_NOTIFY_PATH, CLIENT_ID, request_time, body),
    }
    return headers, body


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, service_env: ServiceEnv) -> dict[str, str]:
    env = {**os.environ, **service_env}
    if request.param == "postgresql":
        env["VAULT_DATABASE_URL"] = request.getfixturevalue("postgres_dsn")
    return env


async def test_every_acknowledged_notification_survives_a_sigkill_mid_burst(
    env: dict[str, str], antom_key: PrivateKey
) -> None:
    """Guards the group commit's promise: an acknowledgement (HTTP 200 with Antom's exact
    success body) is sent only after the notification's batch has committed, so a process
    killed while it acknowledges a burst has lost none that Antom will not send again."""
    ids = [f"burst-{n:03}" for n in range(SESSIONS)]
    signer = Signer(antom_key)
    acknowledged: list[str] = []
    async with serving(env) as first:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
            stub = pb_grpc.VaultServiceStub(channel)
            for rid in ids:
                await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id=rid))
        url = f"http://127.0.0.1:{first.webhook_port}{DEFAULT_NOTIFY_PATH}"
        notifications = iter(ids)

        async def deliver(http: aiohttp.ClientSession) -> None:
            for rid in notifications:
                headers, body = signed(signer, rid)
                try:
                    async with http.post(url, data=body, headers=headers) as answer:
                        if answer.status == 200 and await answer.read() == ACKNOWLEDGEMENT:
                            acknowledged.append(rid)
                except aiohttp.ClientError:
                    continue  # killed before it answered: Antom would retry this one
                if len(acknowledged) == KILL_AFTER:
                    first.process.kill()

        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(deliver(http) for _ in range(CONCURRENCY)))
        await first.process.wait()

    assert KILL_AFTER <= len(acknowledged) < SESSIONS, "the kill did not land mid-burst"
    async with (
        serving(env) as second,
        grpc.aio.insecure_channel(f"127.0.0.1:{second.grpc_port}") as channel,
    ):
        stub = pb_grpc.VaultServiceStub(channel)
        results = [
            await stub.GetResult(pb.GetResultRequest(vaulting_request_id=rid))
            for rid in acknowledged
        ]
    lost = [
        rid
        for rid, answer in zip(acknowledged, results, strict=True)
        if answer.result.status != pb.VAULTING_STATUS_SUCCEEDED
    ]
    assert lost == []
