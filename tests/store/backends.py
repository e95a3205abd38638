"""One factory per store backend, so that the shared suite in this package runs against each.

A backend is a database *location* plus the ways the suite needs to reach it: migrate it, open
a store on it (again, for restart tests), fake a newer build's migration, and name it to a child
process. Adding a backend (PostgreSQL: a fresh database per test) is a class here and one entry
in :data:`BACKENDS`; the ``backend`` fixture is parametrised over that mapping.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from vault_service.store import Store
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

    def record_schema_version(self, version: int) -> None:
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

    def record_schema_version(self, version: int) -> None:
        with sqlite3.connect(self.location) as connection:
            connection.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, 0)",
                (version, "from a newer build"),
            )
        connection.close()


# name -> a factory making a fresh, empty database under a per-test directory.
BACKENDS: dict[str, Callable[[Path], Backend]] = {"sqlite": SQLiteBackend.fresh}

# name -> how a child process reaches an existing database from its location.
BACKEND_AT: dict[str, Callable[[str], Backend]] = {"sqlite": SQLiteBackend}
