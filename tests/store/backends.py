"""One factory per store backend, so that the shared suite in this package runs against each.

A backend is a database *location* plus the ways the suite needs to reach it: migrate it, open
a store on it (again, for restart tests), fake a newer build's migration, and name it to a child
process. Adding a backend is a class here and one entry in :data:`BACKENDS` (fresh databases
for a test) and :data:`BACKEND_AT` (an existing one, from a child process); the ``backend``
fixture is parametrised over :data:`BACKENDS`.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import asyncpg
import pytest

from tests.fixtures.postgres import MakeDatabase
from vault_service.store import Store
from vault_service.store import postgres as postgres_backend
from vault_service.store import sqlite as sqlite_backend


class Backend(Protocol):
    name: str
    location: str

    async def migrate(self) -> list[int]:
        """Run the backend's ``vault-service migrate``; the versions it applied."""
        ...

    async def open(self, *, auto_migrate: bool = False) -> Store:
        """A new store on this database (the caller closes it)."""
        ...

    async def record_schema_version(self, version: int) -> None:
        """Mark ``version`` applied, as a newer build's ``migrate`` would have."""
        ...


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, location: str) -> None:
        self.location = location

    @classmethod
    def fresh(cls, directory: Path) -> SQLiteBackend:
        return cls(str(directory / f"vault-{secrets.token_hex(4)}.sqlite3"))

    async def migrate(self) -> list[int]:
        return await sqlite_backend.migrate(self.location)

    async def open(self, *, auto_migrate: bool = False) -> Store:
        return await sqlite_backend.SQLiteStore.open(self.location, auto_migrate=auto_migrate)

    async def record_schema_version(self, version: int) -> None:
        with sqlite3.connect(self.location) as connection:
            connection.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, 0)",
                (version, "from a newer build"),
            )
        connection.close()


class PostgresBackend:
    name = "postgresql"

    def __init__(self, location: str) -> None:
        self.location = location

    async def migrate(self) -> list[int]:
        return await postgres_backend.migrate(self.location)

    async def open(self, *, auto_migrate: bool = False) -> Store:
        return await postgres_backend.PostgresStore.open(self.location, auto_migrate=auto_migrate)

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


MakeBackend = Callable[[], Awaitable[Backend]]


def _sqlite(request: pytest.FixtureRequest) -> MakeBackend:
    directory: Path = request.getfixturevalue("tmp_path")

    async def make() -> Backend:
        return SQLiteBackend.fresh(directory)

    return make


def _postgres(request: pytest.FixtureRequest) -> MakeBackend:
    # The fixture of tests.fixtures.postgres: skips (fails under CI) without a server.
    make_database: MakeDatabase = request.getfixturevalue("postgres_databases")

    async def make() -> Backend:
        return PostgresBackend(await make_database())

    return make


# name -> given the test's fixture request, a maker of fresh, empty databases for that test
# (each dropped or deleted after it).
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], MakeBackend]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
}

# name -> how a child process reaches an existing database from its location.
BACKEND_AT: dict[str, Callable[[str], Backend]] = {
    "sqlite": SQLiteBackend,
    "postgresql": PostgresBackend,
}
