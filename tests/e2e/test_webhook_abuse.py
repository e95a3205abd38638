"""The public webhook under abuse, in the whole service as ``vault-service serve`` wires it:
gzip bombs while a caller reads a result, and the connection settings from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib

import aiohttp
import grpc
import pytest

from tests.e2e.conftest import ServiceEnv, StartService
from tests.fixtures.logs import CapturedLog
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.config import DEFAULT_NOTIFY_PATH, ConfigError, Settings
from vault_service.webhook.connections import REFUSAL

BOMBS = 100


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """60 MiB of zeros as a 61 KB gzip body."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join(compressor.compress(zeros) for _ in range(60)) + compressor.flush()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_env(request: pytest.FixtureRequest, service_env: ServiceEnv) -> ServiceEnv:
    """The service environment on each backend (PostgreSQL: a fresh database)."""
    if request.param == "postgresql":
        service_env["VAULT_DATABASE_URL"] = request.getfixturevalue("postgres_dsn")
    return service_env


async def test_gzip_bombs_do_not_hold_up_get_result(
    backend_env: ServiceEnv,
    start_service: StartService,
    gzip_bomb: bytes,
    captured_log: CapturedLog,
    inflations: list[str],
) -> None:
    """Regression (issue 9 #1): forty 61 KB gzip bombs cost 4.7 s of event-loop CPU, because
    aiohttp inflated each refused body while it drained it, and a concurrent GetResult took
    4.4 s. Now 100 bombs are each refused from their headers (415), nothing is inflated, no
    ERROR is logged, and a GetResult issued while they arrive answers within 1 s."""
    service = await start_service()
    url = f"http://127.0.0.1:{service.http_port}{DEFAULT_NOTIFY_PATH}"
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=BOMBS)) as http,
    ):
        stub = pb_grpc.VaultServiceStub(channel)
        await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="vr-bombed"))
        first_answer = asyncio.Event()

        async def bomb() -> int:
            async with http.post(url, data=gzip_bomb, headers=headers) as response:
                await response.read()
                first_answer.set()
                return response.status

        bombs = [asyncio.create_task(bomb()) for _ in range(BOMBS)]
        await first_answer.wait()
        started = time.monotonic()
        result = await stub.GetResult(
            pb.GetResultRequest(vaulting_request_id="vr-bombed"), timeout=10
        )
        answered_within = time.monotonic() - started
        statuses = await asyncio.gather(*bombs)
    assert result.result.vaulting_request_id == "vr-bombed"
    assert answered_within < 1.0
    assert statuses == [415] * BOMBS
    assert inflations == []
    assert not [line for line in captured_log.lines() if line["level"] in {"error", "critical"}]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"VAULT_WEBHOOK_HEADER_TIMEOUT": "0"}, "VAULT_WEBHOOK_HEADER_TIMEOUT must be positive"),
        ({"VAULT_WEBHOOK_HEADER_TIMEOUT": "soon"}, "VAULT_WEBHOOK_HEADER_TIMEOUT must be a"),
        ({"VAULT_WEBHOOK_MAX_CONNECTIONS": "0"}, "VAULT_WEBHOOK_MAX_CONNECTIONS must be"),
        ({"VAULT_WEBHOOK_MAX_CONNECTIONS": "many"}, "VAULT_WEBHOOK_MAX_CONNECTIONS must be"),
    ],
)
def test_nonsense_connection_settings_name_the_variable(
    service_env: ServiceEnv, change: dict[str, str], message: str
) -> None:
    """Guards the new settings: refused at start, naming the variable."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**service_env, **change})


def test_connection_settings_default_to_15_s_and_256(service_env: ServiceEnv) -> None:
    """Guards the documented defaults."""
    settings = Settings.from_env(service_env)
    assert (settings.webhook_header_timeout, settings.webhook_max_connections) == (15.0, 256)


async def test_connection_settings_reach_the_webhook(
    service_env: ServiceEnv, start_service: StartService
) -> None:
    """Guards the wiring from the environment to the webhook's socket: with a header timeout
    of 0.5 s and a cap of 1, a silent connection is closed unanswered, and while it is open a
    second connection gets the 503."""
    service_env["VAULT_WEBHOOK_HEADER_TIMEOUT"] = "0.5"
    service_env["VAULT_WEBHOOK_MAX_CONNECTIONS"] = "1"
    service = await start_service()
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", service.http_port)
    try:
        extra_reader, extra = await asyncio.open_connection("127.0.0.1", service.http_port)
        async with asyncio.timeout(5):
            assert await extra_reader.read(-1) == REFUSAL
            assert await silent_reader.read(-1) == b""
        extra.close()
    finally:
        silent.close()
        with contextlib.suppress(ConnectionError):
            await silent.wait_closed()
