"""What is particular to the PostgreSQL backend: commit-ordered ids, NOTIFY, advisory locks,
connection settings, the schema's types.

Some tests reach into the store (``_pool``) or the database directly: that is the only way to
hold a transaction open half-way, or to see the locks and sessions it leaves on the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests.store.strategies import T0, new_record, observe
from vault_service.database_url import parse_database_url, redact_dsn
from vault_service.domain import VaultingStatus
from vault_service.store import EVENTS_CHANNEL, DatabaseUnavailableError, SchemaVersionError
from vault_service.store import postgres as postgres_module
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.migrations import POSTGRES_MIGRATIONS
from vault_service.store.postgres import PostgresStore, migrate
from vault_service.store.postgres_pool import APPLICATION_NAME

POSTGRES_VERSIONS = [migration.version for migration in POSTGRES_MIGRATIONS]

S = VaultingStatus
GATE = 7_301_999  # an advisory lock key of these tests, nothing else uses it

# A trigger that makes an event insert wait, inside apply's transaction (after the record
# update, holding the append lock), for as long as the test holds the GATE lock.
_GATED_EVENTS = f"""
    CREATE FUNCTION wait_at_gate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock_shared({GATE});
        RETURN NEW;
    END $$;
    CREATE TRIGGER gated AFTER INSERT ON events FOR EACH ROW
    WHEN (NEW.vaulting_request_id = 'gated') EXECUTE FUNCTION wait_at_gate();
"""


@pytest.fixture
async def dsn(postgres_dsn: str) -> str:
    """A migrated database of the test's own."""
    await migrate(parse_database_url(postgres_dsn))
    return postgres_dsn


@pytest.fixture
async def pg_store(dsn: str, data_keys: DataKeyRing) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(
        parse_database_url(dsn), auto_migrate=False, data_keys=data_keys
    )
    yield store
    await store.close()


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test's database, outside any store."""
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


async def _waiting_for_locks(admin: asyncpg.Connection) -> int:
    """How many sessions of this database wait for an advisory lock."""
    waiting: int = await admin.fetchval(
        "SELECT count(*) FROM pg_locks JOIN pg_database ON pg_database.oid = pg_locks.database "
        "WHERE datname = current_database() AND locktype = 'advisory' AND NOT granted"
    )
    return waiting


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` (a server-side state: nothing to await on) for up to 5 seconds."""
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"still not {what} after 5 s")


async def _wait_until_waiting(admin: asyncpg.Connection, count: int) -> None:
    async def enough() -> bool:
        return await _waiting_for_locks(admin) >= count

    await _eventually(enough, f"{count} sessions waiting for an advisory lock")


async def test_a_later_append_waits_for_an_earlier_uncommitted_one(
    dsn: str, data_keys: DataKeyRing, pg_store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Guards "sequence order is not commit order": while one replica's event insert is held
    before its commit, another replica's append waits instead of committing a higher id, so a
    reader never sees the later id first; and the NOTIFY of each arrives only with its commit."""
    await admin.execute(_GATED_EVENTS)
    for vaulting_request_id in ("gated", "free"):
        await pg_store.insert(new_record(vaulting_request_id), next_check_at=T0)
    notified: asyncio.Queue[str] = asyncio.Queue()
    await admin.add_listener(EVENTS_CHANNEL, lambda *args: notified.put_nowait(args[3]))
    other = await PostgresStore.open(
        parse_database_url(dsn), auto_migrate=False, data_keys=data_keys
    )
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", GATE)
        gated = asyncio.create_task(pg_store.apply("gated", observe(S.SUCCEEDED)))
        await _wait_until_waiting(admin, 1)
        free = asyncio.create_task(other.apply("free", observe(S.SUCCEEDED)))
        await _wait_until_waiting(admin, 2)  # the free append waits for the append lock
        assert await other.events_after(0, limit=10) == []
        assert await other.last_event_id() == 0
        assert notified.empty()

        await admin.execute("SELECT pg_advisory_unlock($1)", GATE)
        first, second = await gated, await free
    finally:
        await other.close()
    assert first is not None
    assert second is not None
    assert first.event_id < second.event_id
    assert await pg_store.events_after(0, limit=10) == [first, second]
    async with asyncio.timeout(5):
        assert [await notified.get(), await notified.get()] == [
            str(first.event_id),
            str(second.event_id),
        ]


async def test_cancelling_apply_mid_transaction_rolls_it_back(
    pg_store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Guards the outbox when a caller's deadline cancels apply with its event inserted but
    not committed: neither the record update nor the event remains, nothing is notified, and
    the store (its pool, the append lock) keeps working."""
    await admin.execute(_GATED_EVENTS)
    await pg_store.insert(new_record("gated"), next_check_at=T0)
    notified: asyncio.Queue[str] = asyncio.Queue()
    await admin.add_listener(EVENTS_CHANNEL, lambda *args: notified.put_nowait(args[3]))
    await admin.execute("SELECT pg_advisory_lock($1)", GATE)
    task = asyncio.create_task(pg_store.apply("gated", observe(S.SUCCEEDED)))
    await _wait_until_waiting(admin, 1)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await admin.execute("SELECT pg_advisory_unlock($1)", GATE)

    assert await pg_store.get("gated") == new_record("gated")
    assert await pg_store.last_event_id() == 0
    event = await pg_store.apply("gated", observe(S.PROCESSING))
    assert event is not None
    assert await pg_store.events_after(0, limit=10) == [event]
    async with asyncio.timeout(5):
        assert await notified.get() == str(event.event_id)
    assert notified.empty()


async def test_no_change_notifies_nothing(
    pg_store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Guards against wake-ups without events (a duplicate notification from Antom)."""
    await pg_store.insert(new_record("a"), next_check_at=T0)
    await pg_store.apply("a", observe(S.SUCCEEDED))
    notified: asyncio.Queue[str] = asyncio.Queue()
    await admin.add_listener(EVENTS_CHANNEL, lambda *args: notified.put_nowait(args[3]))
    assert await pg_store.apply("a", observe(S.SUCCEEDED)) is None
    await admin.execute("NOTIFY vault_events, 'marker'")  # delivered in order: after any other
    async with asyncio.timeout(5):
        assert await notified.get() == "marker"


async def test_a_dead_replicas_creation_lock_vanishes_with_its_connection(
    dsn: str, data_keys: DataKeyRing, pg_store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Guards against a crashed replica blocking an id for ever: when its session ends (here:
    terminated by the server), another replica gets the lock, and the "dead" holder still
    leaves its block cleanly."""
    other = await PostgresStore.open(
        parse_database_url(dsn), auto_migrate=False, data_keys=data_keys
    )
    held, leave = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with pg_store.creation_lock("vr-1"):
            held.set()
            await leave.wait()

    holder = asyncio.create_task(hold())
    try:
        await asyncio.wait_for(held.wait(), 5)
        terminated = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
            "JOIN pg_database ON pg_database.oid = pg_locks.database "
            "WHERE datname = current_database() AND locktype = 'advisory' AND granted"
        )
        assert terminated == 1
        async with asyncio.timeout(5), other.creation_lock("vr-1"):
            pass
        leave.set()
        await holder
        async with asyncio.timeout(5), pg_store.creation_lock("vr-1"):
            pass
    finally:
        leave.set()
        await other.close()


async def test_creation_locks_leave_no_advisory_lock_behind(
    dsn: str, data_keys: DataKeyRing, pg_store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Guards the session-level locks, which outlive transactions: after holders finish,
    fail or are cancelled (also while waiting), the server holds no advisory lock at all."""
    other = await PostgresStore.open(
        parse_database_url(dsn), auto_migrate=False, data_keys=data_keys
    )
    try:
        held, leave = asyncio.Event(), asyncio.Event()

        async def hold(store: PostgresStore, entered: asyncio.Event) -> None:
            async with store.creation_lock("vr-1"):
                entered.set()
                await leave.wait()

        holder = asyncio.create_task(hold(pg_store, held))
        await asyncio.wait_for(held.wait(), 5)
        waiters = [asyncio.create_task(hold(other, asyncio.Event())) for _ in range(3)]
        await _wait_until_waiting(admin, 1)  # one waits on the server, two in-process
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        leave.set()
        await holder
        with pytest.raises(ZeroDivisionError):
            async with other.creation_lock("vr-2"):
                1 / 0  # noqa: B018
        locks = await admin.fetchval(
            "SELECT count(*) FROM pg_locks JOIN pg_database ON pg_database.oid = pg_locks.database "
            "WHERE datname = current_database() AND locktype = 'advisory'"
        )
        assert locks == 0
    finally:
        await other.close()


async def test_a_held_creation_lock_never_stalls_appends(
    dsn: str,
    data_keys: DataKeyRing,
    pg_store: PostgresStore,
    admin: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression (issue 9 #14): a creation lock was keyed by hashtextextended(id, 0), the
    bigint key space of the event-append lock, so an id hashing onto the append lock stalled
    every append for the length of an Antom call. Here the append lock is given exactly the
    key that id had under that scheme; appends on another replica still go through while the
    lock is held, because creation locks live in the two-int4 key space."""
    colliding = "vr-collide"
    old_key = await admin.fetchval("SELECT hashtextextended($1, 0)", colliding)
    monkeypatch.setattr(postgres_module, "EVENT_APPEND_LOCK", old_key)
    await pg_store.insert(new_record("appending"), next_check_at=T0)
    other = await PostgresStore.open(
        parse_database_url(dsn), auto_migrate=False, data_keys=data_keys
    )
    try:
        async with pg_store.creation_lock(colliding):
            held = await admin.fetch(
                "SELECT classid::bigint, objid::bigint, objsubid FROM pg_locks "
                "JOIN pg_database ON pg_database.oid = pg_locks.database "
                "WHERE datname = current_database() AND locktype = 'advisory' AND granted"
            )
            assert [tuple(row.values())[2] for row in held] == [2]  # the two-int4 form
            async with asyncio.timeout(5):  # a stall waits for the lock, for ever
                first = await other.apply("appending", observe(S.PROCESSING))
                second = await other.apply("appending", observe(S.SUCCEEDED))
        assert first is not None
        assert second is not None
        assert await pg_store.events_after(0, limit=10) == [first, second]
    finally:
        await other.close()


async def test_connections_identify_themselves_and_have_timeouts(
    pg_store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Guards the operator's view (pg_stat_activity shows vault-service) and the bounds on a
    stuck statement or transaction; waiting for a creation lock has no statement timeout."""
    async with pg_store._pool.acquire() as connection:
        settings = await connection.fetchrow(
            "SELECT current_setting('application_name') AS name, "
            "current_setting('statement_timeout') AS statement, "
            "current_setting('idle_in_transaction_session_timeout') AS idle"
        )
    assert settings is not None
    assert dict(settings) == {"name": APPLICATION_NAME, "statement": "30s", "idle": "30s"}
    async with pg_store._lock_pool.acquire() as connection:
        assert await connection.fetchval("SHOW statement_timeout") == "0"
    sessions = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = $1",
        APPLICATION_NAME,
    )
    assert sessions >= 1


async def test_close_ends_every_session(pg_store: PostgresStore, admin: asyncpg.Connection) -> None:
    """Guards against a stopped replica leaving connections (and so locks) on the server."""
    await pg_store.insert(new_record("a"), next_check_at=T0)
    async with pg_store.creation_lock("vr-1"):
        pass
    await pg_store.close()

    async def no_sessions() -> bool:
        sessions: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1",
            APPLICATION_NAME,
        )
        return sessions == 0

    await _eventually(no_sessions, "rid of the store's sessions")


async def test_the_schema_keeps_instants_and_json_queryable(
    pg_store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Guards the storage choices operators rely on: instants are timestamptz, JSON is jsonb
    (queryable by field), the card token is in its own column (sealed: tests/store/
    test_data_at_rest.py checks its encryption)."""
    await pg_store.insert(new_record("a"), next_check_at=T0)
    await pg_store.apply("a", observe(S.SUCCEEDED))
    row = await admin.fetchrow(
        "SELECT created_at, card->>'brand' AS brand, card ? 'card_token' AS token_in_json, "
        "card_token, next_check_at FROM records"
    )
    assert row is not None
    assert row["created_at"] == T0
    assert row["brand"] == "VISA"
    assert row["token_in_json"] is False
    assert row["card_token"].startswith("v1:")
    assert row["next_check_at"] is None
    snapshot_brand = await admin.fetchval("SELECT snapshot->'card'->>'brand' FROM events")
    assert snapshot_brand == "VISA"


async def test_migrate_records_its_versions_and_a_log_id(
    dsn: str, admin: asyncpg.Connection
) -> None:
    """Guards the operator's view of ``schema_migrations`` and a random 128-bit log id."""
    rows = await admin.fetch("SELECT version, description FROM schema_migrations")
    assert [row["version"] for row in rows] == POSTGRES_VERSIONS
    log_id = await admin.fetchval("SELECT value FROM meta WHERE key = 'log_id'")
    assert len(log_id) == 32
    assert int(log_id, 16) >= 0


async def test_refusals_name_the_database_without_its_password(postgres_dsn: str) -> None:
    """Guards the operator's message: which database, what to do, and no secret in logs."""
    with_password = postgres_dsn.replace("postgres@", "postgres:s3cret@", 1)
    with pytest.raises(SchemaVersionError) as refused:
        await PostgresStore.open(
            parse_database_url(with_password), auto_migrate=False, data_keys=DataKeyRing.generate()
        )
    message = str(refused.value)
    assert "run `vault-service migrate`" in message
    assert redact_dsn(with_password) in message
    assert "s3cret" not in message


async def test_an_unreachable_server_is_a_clear_error() -> None:
    """Guards ``serve``/``migrate`` against a traceback for a wrong host or port."""
    with pytest.raises(DatabaseUnavailableError, match=r"cannot connect to the database") as error:
        await PostgresStore.open(
            parse_database_url("postgresql://vault:s3cret@127.0.0.1:1/vault"),
            auto_migrate=False,
            data_keys=DataKeyRing.generate(),
        )
    assert "s3cret" not in str(error.value)
