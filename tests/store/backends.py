"""One factory per store backend, so that the shared suite in this package runs against each.

A backend is a database *location* plus the ways the suite needs to reach it: migrate it, open
a store on it (again, for restart tests), fake a newer build's migration, and name it to a child
process. Adding a backend is a class here and one entry in :data:`BACKENDS` (fresh databases
for a test) and :data:`BACKEND_AT` (an existing one, from a child process); the ``backend``
fixture is parametrised over :data:`BACKENDS`.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest

from tests.fixtures.postgres import MakeDatabase
from vault_service.database_url import parse_database_url
from vault_service.store import Store
from vault_service.store import postgres as postgres_backend
from vault_service.store import sqlite as sqlite_backend
from vault_service.store.data_keys import DataKeyRing


class Backend(Protocol):
    name: str
    location: str
    key_file: Path
    data_keys: DataKeyRing

    async def migrate(self) -> list[int]:
        """Run the backend's ``vault-service migrate``; the versions it applied."""
        ...

    async def open(self, *, auto_migrate: bool = False) -> Store:
        """A new store on this database (the caller closes it)."""
        ...

    async def record_schema_version(self, version: int) -> None:
        """Mark ``version`` applied, as a newer build's ``migrate`` would have."""
        ...

    @property
    def url(self) -> str:
        """The database as ``VAULT_DATABASE_URL`` names it."""
        ...

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` (no parameters: SQL both dialects share), read directly,
        bypassing the store under test."""
        ...

    async def execute(self, sql: str) -> None:
        """Run ``sql`` (no parameters) directly, as an operator or an attacker with SQL
        access would."""
        ...


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, location: str, key_file: Path, data_keys: DataKeyRing) -> None:
        self.location = location
        self.key_file = key_file
        self.data_keys = data_keys

    @classmethod
    def fresh(cls, directory: Path, key_file: Path, data_keys: DataKeyRing) -> SQLiteBackend:
        return cls(str(directory / f"vault-{secrets.token_hex(4)}.sqlite3"), key_file, data_keys)

    async def migrate(self) -> list[int]:
        return await sqlite_backend.migrate(self.location)

    async def open(self, *, auto_migrate: bool = False) -> Store:
        return await sqlite_backend.SQLiteStore.open(
            self.location, auto_migrate=auto_migrate, data_keys=self.data_keys
        )

    async def record_schema_version(self, version: int) -> None:
        with sqlite3.connect(self.location) as connection:
            connection.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, 0)",
                (version, "from a newer build"),
            )
        connection.close()

    @property
    def url(self) -> str:
        return f"sqlite:///{self.location}"

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._run, sql)

    async def execute(self, sql: str) -> None:
        await asyncio.to_thread(self._run, sql)

    def _run(self, sql: str) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(self.location, timeout=5)
        try:
            with connection:
                return connection.execute(sql).fetchall()
        finally:
            connection.close()


class PostgresBackend:
    name = "postgresql"

    def __init__(self, location: str, key_file: Path, data_keys: DataKeyRing) -> None:
        self.location = location
        self.key_file = key_file
        self.data_keys = data_keys

    async def migrate(self) -> list[int]:
        return await postgres_backend.migrate(parse_database_url(self.location))

    async def open(self, *, auto_migrate: bool = False) -> Store:
        return await postgres_backend.PostgresStore.open(
            parse_database_url(self.location), auto_migrate=auto_migrate, data_keys=self.data_keys
        )

    async def record_schema_version(self, version: int) -> None:
        connection = await asyncpg.connect(self.location)
        try:
            await connection.execute(
                "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                version,
                "from a newer build",
            )
        finally:
            await connection.close()

    @property
    def url(self) -> str:
        return self.location

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(self.location)
        try:
            return [tuple(row.values()) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    async def execute(self, sql: str) -> None:
        connection = await asyncpg.connect(self.location)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()


MakeBackend = Callable[[], Awaitable[Backend]]


def _keys(request: pytest.FixtureRequest) -> tuple[Path, DataKeyRing]:
    """The session's key file and ring (tests.fixtures.data_keys)."""
    return request.getfixturevalue("data_key_file"), request.getfixturevalue("data_keys")


def _sqlite(request: pytest.FixtureRequest) -> MakeBackend:
    directory: Path = request.getfixturevalue("tmp_path")
    key_file, data_keys = _keys(request)

    async def make() -> Backend:
        return SQLiteBackend.fresh(directory, key_file, data_keys)

    return make


def _postgres(request: pytest.FixtureRequest) -> MakeBackend:
    # The fixture of tests.fixtures.postgres: skips (fails under CI) without a server.
    make_database: MakeDatabase = request.getfixturevalue("postgres_databases")
    key_file, data_keys = _keys(request)

    async def make() -> Backend:
        return PostgresBackend(await make_database(), key_file, data_keys)

    return make


# name -> given the test's fixture request, a maker of fresh, empty databases for that test
# (each dropped or deleted after it).
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], MakeBackend]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
}

# name -> how a child process reaches an existing database from its location and key file.
BACKEND_AT: dict[str, Callable[[str, Path, DataKeyRing], Backend]] = {
    "sqlite": SQLiteBackend,
    "postgresql": PostgresBackend,
}
