"""``RunningService.reload()`` (what SIGHUP runs) with the service, its webhook and the
emulator live over loopback: new key files take effect for the Antom client's requests, for
its checks of Antom's answers and for the webhook; a broken file changes nothing."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path

import grpc
import pytest

from tests.e2e.conftest import ServiceEnv, StartService
from tests.e2e.key_rotation import install_keys, replace_file, rotate_emulator
from tests.fixtures.antom import buyer_submits
from vault_service import app
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.antom import PrivateKey
from vault_service.emulator import EmulatorServer
from vault_service.store import add_data_key, envelope_key_id

VISA = "4111111111111111"


@pytest.fixture(scope="module")
def new_merchant_key() -> PrivateKey:
    return PrivateKey.generate()


async def _vault_a_card(
    stub: pb_grpc.VaultServiceStub, emulator: EmulatorServer, vaulting_request_id: str
) -> None:
    """Create a session (a signed request, a verified answer), let the buyer finish and check
    that Antom's signed notification was acknowledged by the webhook."""
    created = await stub.CreateSession(
        pb.CreateSessionRequest(vaulting_request_id=vaulting_request_id)
    )
    await buyer_submits(emulator, created.session_data, VISA)
    await emulator.state.notifier.wait_idle()
    attempts = emulator.state.notifier.attempts(vaulting_request_id)
    assert [attempt.outcome for attempt in attempts] == ["acknowledged"]


async def test_reload_puts_new_keys_into_client_and_webhook(
    service: app.RunningService,
    stub: pb_grpc.VaultServiceStub,
    emulator: EmulatorServer,
    service_env: ServiceEnv,
    new_merchant_key: PrivateKey,
    antom_next_key: PrivateKey,
) -> None:
    """Guards the key reload: once Antom has rotated both keys, calls fail until reload(),
    and after it requests are signed with the new merchant key, answers and notifications
    are verified with Antom's new key."""
    await _vault_a_card(stub, emulator, "reload-before")
    install_keys(service_env, new_merchant_key, antom_next_key)
    rotate_emulator(emulator, new_merchant_key, antom_next_key)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="reload-stale"))

    await service.reload()

    await _vault_a_card(stub, emulator, "reload-after")


@pytest.mark.parametrize("broken", ["merchant", "antom"])
async def test_a_broken_key_file_keeps_every_old_key(
    service: app.RunningService,
    stub: pb_grpc.VaultServiceStub,
    emulator: EmulatorServer,
    service_env: ServiceEnv,
    new_merchant_key: PrivateKey,
    antom_next_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    """Guards all-or-nothing reloads: with one file broken (a truncated PEM) and the other
    one valid and new, reload() swaps nothing, logs one error naming the file but quoting no
    key material, and the service goes on working with its old keys."""
    install_keys(service_env, new_merchant_key, antom_next_key)
    if broken == "merchant":
        setting, source = "VAULT_MERCHANT_PRIVATE_KEY_FILE", new_merchant_key.to_pkcs8_pem()
    else:
        setting, source = "VAULT_ANTOM_PUBLIC_KEY_FILE", antom_next_key.public_key().to_spki_pem()
    truncated = source[: len(source) // 2]
    path = Path(service_env[setting])
    replace_file(path, truncated)

    with caplog.at_level(logging.INFO, logger="vault_service"):
        await service.reload()

    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "not reloaded" in error.getMessage()
    reason = getattr(error, "reason")  # noqa: B009 - an extra, unknown to the type checker
    assert str(path) in reason
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for line in truncated.splitlines()[1:]:
        assert line.decode() not in logged
    await _vault_a_card(stub, emulator, f"reload-kept-{broken}")


def _sealing_key(database: Path, vaulting_request_id: str) -> str:
    """The data key id the raw record row's card token is sealed under."""
    connection = sqlite3.connect(database)
    try:
        ((stored,),) = connection.execute(
            "SELECT card_token FROM records WHERE vaulting_request_id = ?", (vaulting_request_id,)
        ).fetchall()
    finally:
        connection.close()
    key_id = envelope_key_id(stored)
    assert key_id is not None
    return key_id


async def test_reload_rereads_the_data_key_file_all_or_nothing(
    start_service: StartService,
    service_env: ServiceEnv,
    emulator: EmulatorServer,
    data_key_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (issue 9 #10): SIGHUP re-read every key file but VAULT_DATA_KEY_FILE, so a
    new active data key (or a key added back for rows that no longer decrypt) needed a
    restart. reload() now swaps the new ring in: new card data is sealed under the new active
    key and data under the old one still reads. A broken file swaps nothing, says so in one
    error line naming the file and quoting no key material, and the old ring stays in force."""
    key_file = tmp_path / "data-keys.json"
    shutil.copyfile(data_key_file, key_file)
    service_env["VAULT_DATA_KEY_FILE"] = str(key_file)
    database = Path(service_env["VAULT_DATABASE_URL"].removeprefix("sqlite:///"))
    service = await start_service()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = pb_grpc.VaultServiceStub(channel)
        await _vault_a_card(stub, emulator, "data-before")
        assert _sealing_key(database, "data-before") == "session"

        add_data_key(key_file, key_id="k2")
        await service.reload()
        await _vault_a_card(stub, emulator, "data-after")
        assert _sealing_key(database, "data-after") == "k2"
        before = await stub.GetResult(pb.GetResultRequest(vaulting_request_id="data-before"))
        assert before.result.card.card_token

        good = key_file.read_bytes()
        broken = good[: len(good) // 2]
        replace_file(key_file, broken)
        with caplog.at_level(logging.INFO, logger="vault_service"):
            await service.reload()
        (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "data keys not reloaded" in error.getMessage()
        assert str(key_file) in getattr(error, "reason")  # noqa: B009 - an extra
        logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
        for material in json.loads(good)["keys"].values():
            assert material[:16] not in logged
        await _vault_a_card(stub, emulator, "data-kept")
        assert _sealing_key(database, "data-kept") == "k2"
