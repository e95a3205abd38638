"""Backend selection: a :class:`~vault_service.database_url.DatabaseURL` names the backend.

The PostgreSQL backend takes the URL itself and reveals it only where it connects; the SQLite
backend takes the file's path, which is no secret.
"""

from __future__ import annotations

import logging
from typing import Final

from vault_service.database_url import DatabaseURL
from vault_service.store import postgres, postgres_pool, sqlite
from vault_service.store.base import Store
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.sealing import Rotation

ROTATION_BATCH_SIZE: Final = 500

log = logging.getLogger(__name__)


async def open_store(
    database: DatabaseURL,
    *,
    auto_migrate: bool,
    data_keys: DataKeyRing,
    sqlite_synchronous: sqlite.Synchronous = "NORMAL",
    postgres_pool_size: int = 10,
    postgres_lock_pool_size: int = 20,
    postgres_acquire_timeout: float = postgres_pool.DEFAULT_ACQUIRE_TIMEOUT,
) -> Store:
    """Open the store ``database`` names, migrating it first when ``auto_migrate``.

    Raises :class:`~vault_service.store.base.SchemaVersionError` for a database this build
    cannot use as is (the message says what to do), and
    :class:`~vault_service.store.base.DatabaseUnavailableError` for a PostgreSQL server that
    cannot be reached. Card data is sealed with ``data_keys``. ``sqlite_synchronous`` only
    applies to SQLite, the pool sizes and the acquire timeout only to PostgreSQL (the lock
    pool bounds how many sessions one replica creates at once).

    A database that still reads legacy plaintext card data is named in one warning: nothing
    else would tell the operator that a plaintext value is served instead of refused until
    ``rotate-data-key`` finds none left (:mod:`vault_service.store.sealing`).
    """
    store = await _open(
        database,
        auto_migrate=auto_migrate,
        data_keys=data_keys,
        sqlite_synchronous=sqlite_synchronous,
        postgres_pool_size=postgres_pool_size,
        postgres_lock_pool_size=postgres_lock_pool_size,
        postgres_acquire_timeout=postgres_acquire_timeout,
    )
    if store.allows_plaintext:
        log.warning(
            "the database does not record that it holds no plaintext card data, so plaintext "
            "card values are read as they are instead of refused as corrupt: run "
            "`vault-service rotate-data-key` to encrypt any left and record that none is"
        )
    return store


async def _open(
    database: DatabaseURL,
    *,
    auto_migrate: bool,
    data_keys: DataKeyRing,
    sqlite_synchronous: sqlite.Synchronous = "NORMAL",
    postgres_pool_size: int,
    postgres_lock_pool_size: int,
    postgres_acquire_timeout: float = postgres_pool.DEFAULT_ACQUIRE_TIMEOUT,
) -> sqlite.SQLiteStore | postgres.PostgresStore:
    """The backend ``database`` names, opened."""
    if database.backend == "sqlite":
        return await sqlite.SQLiteStore.open(
            database.reveal(),
            auto_migrate=auto_migrate,
            data_keys=data_keys,
            synchronous=sqlite_synchronous,
        )
    return await postgres.PostgresStore.open(
        database,
        auto_migrate=auto_migrate,
        data_keys=data_keys,
        max_size=postgres_pool_size,
        lock_pool_size=postgres_lock_pool_size,
        acquire_timeout=postgres_acquire_timeout,
    )


async def rotate_data_key(
    database: DatabaseURL, data_keys: DataKeyRing, *, batch_size: int = ROTATION_BATCH_SIZE
) -> Rotation:
    """Seal every stored card value that is not under ``data_keys``' active key again under it.

    Backs ``vault-service rotate-data-key``: safe to interrupt, to run again, and to run while
    the service serves (the backends' ``reseal``). The schema must be current (no migration
    runs here). Raises as :func:`open_store` does. A value that cannot be opened (under a key
    the ring lacks, tampered, or plaintext where the database records none) does not stop the
    pass: it is reported in the result, which then does not mark the database plaintext-free.
    """
    store = await _open(
        database,
        auto_migrate=False,
        data_keys=data_keys,
        postgres_pool_size=1,
        postgres_lock_pool_size=1,
    )
    try:
        return await store.reseal(batch_size=batch_size)
    finally:
        await store.close()


async def migrate(database: DatabaseURL) -> list[int]:
    """Apply the migrations ``database`` lacks; the versions applied, oldest first.

    Backs ``vault-service migrate``; safe to run again and concurrently (also from several
    replicas on one PostgreSQL database). Raises as :func:`open_store` does.
    """
    if database.backend == "sqlite":
        return await sqlite.migrate(database.reveal())
    return await postgres.migrate(database)
