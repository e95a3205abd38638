"""``vault-service serve`` as a real process: configuration errors, signals, SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.e2e.conftest import ServiceEnv, logged
from tests.e2e.key_rotation import install_keys, replace_file, rotate_emulator
from tests.fixtures.antom import buyer_submits
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import PrivateKey
from vault_service.domain import VaultingStatus
from vault_service.emulator import EmulatorServer
from vault_service.store import DataKeyRing, SQLiteStore

COMMAND = (sys.executable, "-m", "vault_service")


@dataclass
class ServeProcess:
    process: asyncio.subprocess.Process
    grpc_port: int


@pytest.fixture
async def serve_process(service_env: ServiceEnv) -> AsyncIterator[ServeProcess]:
    """A running `vault-service serve`; its ports are read from its "serving" log line."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "serve",
        env={**os.environ, **service_env},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while True:
            line = await process.stderr.readline()
            assert line, "serve exited before it was serving"
            entry = json.loads(line)
            if entry["message"] == "vault-service serving":
                grpc_port = int(entry["listen"].split("grpc :")[1].split(",")[0])
                break
    yield ServeProcess(process, grpc_port)
    if process.returncode is None:
        process.kill()
        await process.wait()


async def run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, env=env, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"VAULT_ANTOM_CLIENT_ID": ""}, "VAULT_ANTOM_CLIENT_ID is not set"),
        ({"VAULT_MERCHANT_PRIVATE_KEY_FILE": "/nonexistent.pem"}, "cannot read"),
        ({"VAULT_GRPC_LISTEN": "nonsense"}, "VAULT_GRPC_LISTEN must be HOST:PORT"),
        ({"VAULT_HEALTH_LISTEN": "nonsense"}, "VAULT_HEALTH_LISTEN must be HOST:PORT"),
        ({"VAULT_AUTO_MIGRATE": "0"}, "vault-service migrate"),
        ({"VAULT_ANTOM_BASE_URL": "http://10.1.2.3:8090"}, "VAULT_ANTOM_ALLOW_HTTP"),
        ({"VAULT_GRPC_LISTEN": "0.0.0.0:0"}, "no caller identity is configured"),
        ({"VAULT_GRPC_LISTEN": "0.0.0.0:0"}, "VAULT_INSECURE=1"),
        ({"VAULT_AUTH_TOKENS_FILE": "/nonexistent.json"}, "VAULT_AUTH_TOKENS_FILE: cannot read"),
        (
            {"VAULT_GRPC_LISTEN": "0.0.0.0:0", "VAULT_AUTH_TOKENS_FILE": "/dev/null"},
            "tokens would cross the network in cleartext",
        ),
        ({"VAULT_GRPC_TLS_CERT_FILE": "/dev/null"}, "go together"),
        (
            {"VAULT_GRPC_TLS_CERT_FILE": "/dev/null", "VAULT_GRPC_TLS_KEY_FILE": "/dev/null"},
            "VAULT_GRPC_TLS_CERT_FILE holds no PEM certificate",
        ),
        ({"VAULT_ANTOM_BASE_URL": "https://open-sea-global.alipay.com"}, "VAULT_NOTIFY_URL"),
        ({"VAULT_ANTOM_BASE_URL": "http://127.0.0.1:8090/ams/api"}, "without path"),
        ({"VAULT_DATABASE_URL": "mysql://db/vault"}, "VAULT_DATABASE_URL"),
        ({"VAULT_DATABASE_URL": "postgresql://vault:hunter2@127.0.0.1:1/vault"}, "127.0.0.1:1"),
        ({"VAULT_DATA_KEY_FILE": ""}, "VAULT_DATA_KEY_FILE is not set"),
        ({"VAULT_DATA_KEY_FILE": "/dev/null"}, "VAULT_DATA_KEY_FILE: /dev/null: the data key"),
    ],
)
async def test_bad_configuration_is_one_line_and_exit_2(
    service_env: ServiceEnv, change: dict[str, str], message: str
) -> None:
    """Operators get one clear line naming the setting, never a traceback."""
    code, err = await run("serve", env={**os.environ, **service_env, **change})
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    "setting",
    ["VAULT_HTTP_LISTEN", "VAULT_GRPC_LISTEN", "VAULT_HEALTH_LISTEN", "VAULT_ADMIN_LISTEN"],
)
async def test_a_port_in_use_is_one_line_naming_its_setting(
    service_env: ServiceEnv, setting: str
) -> None:
    """Guards the wiring's one translation of a failure to listen: the operator is told which
    setting names an address that cannot be bound, with exit code 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        code, err = await run("serve", env={**os.environ, **service_env, setting: address})
    assert code == 2
    # gRPC's core logs its own line about the bind first; ours is the last, and no traceback.
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"vault-service: error: {setting}: cannot listen on {address}")
    )
    assert "Traceback" not in err


async def test_an_unreadable_key_is_one_line_and_exit_2(
    service_env: ServiceEnv, tmp_path: Path
) -> None:
    """A key file with garbage in it fails at start, naming the file."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    code, err = await run(
        "serve", env={**os.environ, **service_env, "VAULT_ANTOM_PUBLIC_KEY_FILE": str(garbage)}
    )
    assert code == 2
    assert str(garbage) in err
    assert "Traceback" not in err


async def test_migrate_then_serve_without_auto_migrate(service_env: ServiceEnv) -> None:
    """`vault-service migrate` prepares the database the way `serve` expects it."""
    env = {**os.environ, **service_env, "VAULT_AUTO_MIGRATE": "0"}
    assert (await run("migrate", env=env))[0] == 0
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    async with asyncio.timeout(30):
        line = json.loads(await process.stderr.readline())
    assert line["message"] == "vault-service serving"
    process.send_signal(signal.SIGTERM)
    assert await process.wait() == 0


async def test_sigterm_stops_cleanly(serve_process: ServeProcess) -> None:
    """Kubernetes' SIGTERM: the process drains and exits 0 within the grace period."""
    serve_process.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        assert await serve_process.process.wait() == 0


async def test_an_acknowledged_notification_survives_sigkill(
    serve_process: ServeProcess,
    emulator: EmulatorServer,
    service_env: ServiceEnv,
    data_keys: DataKeyRing,
) -> None:
    """Once Antom got our acknowledgement it never sends the notification again, so the
    result must already be durable: SIGKILL right after the ack loses nothing."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{serve_process.grpc_port}") as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        created = await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="kill-1"))
    await buyer_submits(emulator, created.session_data, "4111111111111111")
    async with asyncio.timeout(10):
        await emulator.state.notifier.wait_idle()
    assert [a.outcome for a in emulator.state.notifier.attempts("kill-1")] == ["acknowledged"]
    serve_process.process.kill()
    await serve_process.process.wait()

    database = service_env["VAULT_DATABASE_URL"].removeprefix("sqlite:///")
    store = await SQLiteStore.open(database, auto_migrate=False, data_keys=data_keys)
    try:
        record = await store.get("kill-1")
        assert record is not None
        assert record.status is VaultingStatus.SUCCEEDED
        assert len(await store.events_after(0, limit=10)) == 1
    finally:
        await store.close()


async def test_sighup_reloads_the_key_files(
    serve_process: ServeProcess,
    emulator: EmulatorServer,
    service_env: ServiceEnv,
    antom_next_key: PrivateKey,
) -> None:
    """Guards the SIGHUP wiring of `vault-service serve`: a broken key file is reported
    (naming the file, quoting no key) and changes nothing; new key files are in use after the
    next SIGHUP, for requests, answers and notifications; the process keeps serving."""
    process = serve_process.process
    new_merchant = PrivateKey.generate()
    merchant_file = Path(service_env["VAULT_MERCHANT_PRIVATE_KEY_FILE"])
    truncated = new_merchant.to_pkcs8_pem()[:600]
    replace_file(merchant_file, truncated)
    process.send_signal(signal.SIGHUP)
    error = await logged(process, "Antom keys not reloaded; the previous keys stay in use")
    assert str(merchant_file) in error["reason"]
    assert not [line for line in truncated.splitlines()[1:] if line.decode() in str(error)]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{serve_process.grpc_port}") as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="hup-old-keys"))
        install_keys(service_env, new_merchant, antom_next_key)
        process.send_signal(signal.SIGHUP)
        await logged(process, "Antom keys reloaded")
        rotate_emulator(emulator, new_merchant, antom_next_key)
        created = await stub.CreateSession(
            pb.CreateSessionRequest(vaulting_request_id="hup-new-keys")
        )
    await buyer_submits(emulator, created.session_data, "4111111111111111")
    async with asyncio.timeout(10):
        await emulator.state.notifier.wait_idle()
    assert [a.outcome for a in emulator.state.notifier.attempts("hup-new-keys")] == ["acknowledged"]
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        assert await process.wait() == 0
