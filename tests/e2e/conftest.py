"""The whole service as ``vault-service serve`` wires it, against the emulator, over loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from tests.fixtures.antom import CLIENT_ID
from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import PrivateKey
from vault_service.config import Settings
from vault_service.emulator import EmulatorServer

ServiceEnv = dict[str, str]


@pytest.fixture
def service_env(
    tmp_path: Path,
    emulator: EmulatorServer,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
    data_key_file: Path,
) -> ServiceEnv:
    """The environment of a dev deployment: keys in files, SQLite in the test's folder."""
    merchant_file = tmp_path / "merchant-private-key.pem"
    merchant_file.write_bytes(merchant_key.to_pkcs8_pem())
    antom_file = tmp_path / "antom-public-key.pem"
    antom_file.write_bytes(antom_key.public_key().to_spki_pem())
    return {
        "VAULT_GRPC_LISTEN": "127.0.0.1:0",
        "VAULT_HTTP_LISTEN": "127.0.0.1:0",
        "VAULT_ADMIN_LISTEN": "127.0.0.1:0",
        "VAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}",
        "VAULT_DATA_KEY_FILE": str(data_key_file),
        "VAULT_AUTO_MIGRATE": "1",
        "VAULT_ANTOM_BASE_URL": emulator.base_url,
        "VAULT_ANTOM_CLIENT_ID": CLIENT_ID,
        "VAULT_MERCHANT_PRIVATE_KEY_FILE": str(merchant_file),
        "VAULT_ANTOM_PUBLIC_KEY_FILE": str(antom_file),
        "VAULT_ANTOM_TIMEOUT": "5",
        "VAULT_CHECKPOINT_INTERVAL": "0.2",
        "VAULT_SHUTDOWN_GRACE": "1",
    }


StartService = Callable[[], Awaitable[app.RunningService]]


@pytest.fixture
async def start_service(service_env: ServiceEnv) -> AsyncIterator[StartService]:
    """``await start_service()`` runs the service; every instance is stopped at teardown.

    Starting again after ``stop()`` on the same environment is a restart: same database.
    """
    running: list[app.RunningService] = []

    async def start() -> app.RunningService:
        service = await app.start(Settings.from_env(service_env))
        running.append(service)
        return service

    yield start
    for service in running:
        await service.stop()


@pytest.fixture
async def service(start_service: StartService) -> app.RunningService:
    return await start_service()


@pytest.fixture
async def stub(service: app.RunningService) -> AsyncIterator[pb_grpc.VaultServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        yield pb_grpc.VaultServiceStub(channel)


async def logged(process: asyncio.subprocess.Process, message: str) -> dict[str, str]:
    """Read the process's log up to the first line with ``message``; that line."""
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while True:
            line = await process.stderr.readline()
            assert line, "serve exited"
            entry: dict[str, str] = json.loads(line)
            if entry["message"] == message:
                return entry
