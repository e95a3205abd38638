"""Backend selection by ``VAULT_DATABASE_URL``: the scheme picks the backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.strategies import T0, new_record
from vault_service.database_url import parse_database_url
from vault_service.store import SchemaVersionError
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.factory import migrate, open_store
from vault_service.store.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from vault_service.store.postgres import PostgresStore
from vault_service.store.sqlite import SQLiteStore

SQLITE_VERSIONS = [migration.version for migration in SQLITE_MIGRATIONS]
POSTGRES_VERSIONS = [migration.version for migration in POSTGRES_MIGRATIONS]


async def test_open_store_and_migrate_on_sqlite(tmp_path: Path, data_keys: DataKeyRing) -> None:
    """Guards ``serve``/``migrate`` wiring for SQLite: refuse unmigrated, migrate, open."""
    url = parse_database_url(f"sqlite:///{tmp_path / 'vault.db'}")
    with pytest.raises(SchemaVersionError, match="run `vault-service migrate`"):
        await open_store(url, auto_migrate=False, data_keys=data_keys)
    assert await migrate(url) == SQLITE_VERSIONS
    store = await open_store(
        url, auto_migrate=False, data_keys=data_keys, sqlite_synchronous="FULL"
    )
    try:
        assert isinstance(store, SQLiteStore)
        await store.insert(new_record("a"), next_check_at=T0)
    finally:
        await store.close()


async def test_open_store_and_migrate_on_postgres(
    postgres_dsn: str, data_keys: DataKeyRing
) -> None:
    """Guards ``serve``/``migrate`` wiring for PostgreSQL, both schemes, and auto-migrate."""
    database = parse_database_url(postgres_dsn)
    with pytest.raises(SchemaVersionError, match="run `vault-service migrate`"):
        await open_store(database, auto_migrate=False, data_keys=data_keys)
    assert await migrate(database) == POSTGRES_VERSIONS
    store = await open_store(
        database, auto_migrate=False, data_keys=data_keys, postgres_pool_size=2
    )
    try:
        assert isinstance(store, PostgresStore)
        await store.insert(new_record("a"), next_check_at=T0)
    finally:
        await store.close()
    auto = await open_store(
        parse_database_url(postgres_dsn.replace("postgresql://", "postgres://", 1)),
        auto_migrate=True,
        data_keys=data_keys,
    )
    await auto.close()
