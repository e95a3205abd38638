"""Backend selection by ``VAULT_DATABASE_URL``: the scheme picks the backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.strategies import T0, new_record
from vault_service.store import SchemaVersionError
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.factory import DatabaseURL, migrate, open_store, parse_database_url
from vault_service.store.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from vault_service.store.postgres import PostgresStore
from vault_service.store.sqlite import SQLiteStore

SQLITE_VERSIONS = [migration.version for migration in SQLITE_MIGRATIONS]
POSTGRES_VERSIONS = [migration.version for migration in POSTGRES_MIGRATIONS]


@pytest.mark.parametrize(
    ("url", "expected", "shown"),
    [
        ("sqlite:///vault.db", DatabaseURL("sqlite", "vault.db"), "sqlite:///vault.db"),
        (
            "sqlite:////var/lib/v.db",
            DatabaseURL("sqlite", "/var/lib/v.db"),
            "sqlite:////var/lib/v.db",
        ),
        (
            "postgresql://vault:pw@db:5432/vault",
            DatabaseURL("postgresql", "postgresql://vault:pw@db:5432/vault"),
            "postgresql://vault@db:5432/vault",
        ),
        (
            "postgres://db/vault",
            DatabaseURL("postgresql", "postgres://db/vault"),
            "postgres://db/vault",
        ),
    ],
)
def test_the_scheme_selects_the_backend(url: str, expected: DatabaseURL, shown: str) -> None:
    """Guards the URL forms the operator documentation promises, and that printing a parsed
    URL (``migrate``'s output, logs) never shows its password."""
    parsed = parse_database_url(url)
    assert parsed == expected
    assert str(parsed) == shown


@pytest.mark.parametrize(
    "url",
    ["sqlite:///", "sqlite://relative.db", "mysql://u:pw@db/vault", "postgresql://", "vault.db"],
)
def test_other_urls_are_refused_without_showing_a_password(url: str) -> None:
    """Guards against a typo silently selecting a backend, and the error leaking secrets."""
    with pytest.raises(ValueError, match=r"expected sqlite:///PATH or postgresql://") as refused:
        parse_database_url(url)
    assert "pw" not in str(refused.value)


async def test_open_store_and_migrate_on_sqlite(tmp_path: Path, data_keys: DataKeyRing) -> None:
    """Guards ``serve``/``migrate`` wiring for SQLite: refuse unmigrated, migrate, open."""
    url = f"sqlite:///{tmp_path / 'vault.db'}"
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
    with pytest.raises(SchemaVersionError, match="run `vault-service migrate`"):
        await open_store(postgres_dsn, auto_migrate=False, data_keys=data_keys)
    assert await migrate(postgres_dsn) == POSTGRES_VERSIONS
    store = await open_store(
        postgres_dsn, auto_migrate=False, data_keys=data_keys, postgres_pool_size=2
    )
    try:
        assert isinstance(store, PostgresStore)
        await store.insert(new_record("a"), next_check_at=T0)
    finally:
        await store.close()
    auto = await open_store(
        postgres_dsn.replace("postgresql://", "postgres://", 1),
        auto_migrate=True,
        data_keys=data_keys,
    )
    await auto.close()
