"""A replica whose PostgreSQL connections are all busy answers at once instead of queueing."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from tests.e2e.conftest import ServiceEnv
from tests.fixtures.antom import buyer_submits
from tests.grpc_api.support import retry_info
from tests.replicas.cards import DECLINED
from tests.replicas.conftest import OpenStub, StartReplica, wait_until
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.config import ConfigError, Settings
from vault_service.emulator import EmulatorServer

TINY_POOLS = {
    "VAULT_PG_POOL_SIZE": "1",
    "VAULT_PG_LOCK_POOL_SIZE": "1",
    "VAULT_PG_ACQUIRE_TIMEOUT": "0.5",
}
SLOW_ANTOM_MS = 2_000  # within VAULT_ANTOM_TIMEOUT (5 s in these tests)


async def _waiting_sessions(dsn: str) -> int:
    """How many sessions of the test's database wait for a lock."""
    admin = await asyncpg.connect(dsn)
    try:
        waiting: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    finally:
        await admin.close()
    return waiting


def assert_busy(refused: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> None:
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == "every database connection is busy; retry later"
    assert retry_info(refused.value) is not None


async def test_create_session_fails_unavailable_when_every_lock_connection_is_busy(
    start_replica: StartReplica, open_stub: OpenStub, emulator: EmulatorServer
) -> None:
    """Regression (issue 9 #13): the lock pool (one connection per CreateSession calling
    Antom) was fixed at 10 with no acquire timeout, so while Antom was slow the eleventh
    CreateSession of a replica queued without bound. With the pool full, a CreateSession now
    fails UNAVAILABLE with RetryInfo after VAULT_PG_ACQUIRE_TIMEOUT, while the slow one is
    still calling Antom, and the slow one still succeeds."""
    replica = await start_replica(**TINY_POOLS)
    stub = open_stub(replica.grpc_port)
    emulator.state.faults.update({"latency_ms": SLOW_ANTOM_MS})
    slow = asyncio.ensure_future(
        stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="slow"), timeout=30)
    )
    await wait_until(
        lambda: emulator.state.stats.calls("createVaultingSession", "slow") == 1,
        within=10,
        what="the slow CreateSession to reach Antom",
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateSession(pb.CreateSessionRequest(vaulting_request_id="next"), timeout=30)
    assert_busy(refused)
    assert not slow.done(), "the refusal waited for the slow call instead of the timeout"
    assert emulator.state.stats.calls("createVaultingSession", "next") == 0
    assert (await slow).created


async def test_get_result_fails_unavailable_when_every_connection_is_busy(
    start_replica: StartReplica, open_stub: OpenStub, postgres_dsn: str, emulator: EmulatorServer
) -> None:
    """Regression (issue 9 #13): with every main-pool connection held (here the only one,
    by a refresh whose write waits for a row lock), further calls queued without bound. A
    GetResult now fails UNAVAILABLE with RetryInfo after VAULT_PG_ACQUIRE_TIMEOUT, and the
    held call finishes once the row is free."""
    replica = await start_replica(**TINY_POOLS)
    stub = open_stub(replica.grpc_port)
    emulator.state.faults.update({"drop_notifications": -1})  # only a refresh learns of it
    created = await stub.CreateSession(
        pb.CreateSessionRequest(vaulting_request_id="held"), timeout=10
    )
    await buyer_submits(emulator, created.session_data, DECLINED)
    admin = await asyncpg.connect(postgres_dsn)
    try:
        row_lock = admin.transaction()
        await row_lock.start()
        await admin.execute("SELECT 1 FROM records WHERE vaulting_request_id = 'held' FOR UPDATE")
        held = asyncio.ensure_future(
            stub.GetResult(
                pb.GetResultRequest(vaulting_request_id="held", refresh=True), timeout=30
            )
        )

        async def refresh_waits() -> bool:
            return await _waiting_sessions(postgres_dsn) >= 1

        await wait_until(refresh_waits, within=10, what="the refresh to wait for the row")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetResult(pb.GetResultRequest(vaulting_request_id="held"), timeout=30)
        assert_busy(refused)
        assert not held.done()
        await row_lock.rollback()
        assert (await held).result.status == pb.VAULTING_STATUS_FAILED
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VAULT_PG_POOL_SIZE", "0"),
        ("VAULT_PG_LOCK_POOL_SIZE", "ten"),
        ("VAULT_PG_ACQUIRE_TIMEOUT", "-1"),
    ],
)
def test_pool_settings_have_defaults_and_refuse_nonsense(
    replica_env: ServiceEnv, name: str, value: str
) -> None:
    """Guards the settings of issue 9 #13: documented defaults, and a nonsense value refused
    at start naming its variable."""
    settings = Settings.from_env(replica_env)
    assert (settings.pg_pool_size, settings.pg_lock_pool_size) == (10, 20)
    assert settings.pg_acquire_timeout == 5.0
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        Settings.from_env({**replica_env, name: value})
