"""Cross-replica wake-ups over PostgreSQL LISTEN/NOTIFY, including a lost connection."""

from __future__ import annotations

import asyncpg

from vault_service.events import EventHub, PostgresWakeups

CHANNEL = "vault_events"


async def woken(hub: EventHub, seen: int) -> bool:
    return await hub.wait(seen, 5.0)


async def test_a_notify_from_another_connection_wakes_the_hub(postgres_dsn: str) -> None:
    """An event committed by another replica wakes this replica's subscribers."""
    hub = EventHub()
    wakeups = PostgresWakeups(postgres_dsn, hub, channel=CHANNEL)
    await wakeups.start()
    try:
        other = await asyncpg.connect(postgres_dsn)
        seen = hub.generation
        await other.execute("SELECT pg_notify($1, '42')", CHANNEL)
        assert await woken(hub, seen)
        await other.close()
    finally:
        await wakeups.close()


async def test_a_terminated_listen_connection_comes_back_and_wakes_everyone(
    postgres_dsn: str,
) -> None:
    """After pg_terminate_backend the listener reconnects, LISTENs again and wakes every
    subscriber once so they catch up from the log; later NOTIFYs arrive again. (The
    termination is what is noticed, not a probe: with probes every 0.2 s, a database slowed
    by a loaded CI machine failed one, and a second reconnect broke the count.)"""
    hub = EventHub()
    wakeups = PostgresWakeups(postgres_dsn, hub, channel=CHANNEL, probe_interval=30)
    await wakeups.start()
    admin = await asyncpg.connect(postgres_dsn)
    try:
        seen = hub.generation
        terminated = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'vault-service-listen' AND datname = current_database()"
        )
        assert terminated == 1
        assert await woken(hub, seen), "the reconnect wakes subscribers to re-read the log"
        assert wakeups.reconnects == 1
        seen = hub.generation
        await admin.execute("SELECT pg_notify($1, '43')", CHANNEL)
        assert await woken(hub, seen)
    finally:
        await admin.close()
        await wakeups.close()


async def test_close_leaves_no_listen_connection(postgres_dsn: str) -> None:
    """Shutting down releases the LISTEN connection."""
    wakeups = PostgresWakeups(postgres_dsn, EventHub(), channel=CHANNEL)
    await wakeups.start()
    await wakeups.close()
    admin = await asyncpg.connect(postgres_dsn)
    try:
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'vault-service-listen' AND datname = current_database()"
        )
        assert left == 0
    finally:
        await admin.close()
