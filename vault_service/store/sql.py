"""What the SQL shared by both backends (:mod:`vault_service.store.sql_store`,
:mod:`vault_service.store.migrator`) asks of a backend: a :class:`Session` that runs statements
and a :class:`Dialect` that says how its SQL and values differ.

Shared statements are written with PostgreSQL's numbered placeholders (``$1``); SQLite reads
the same numbers as ``?1`` (:func:`numbered_qmarks`), so one text serves both.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from vault_service.store.codec import RecordRow
from vault_service.store.migrations import Migration


class Row(Protocol):
    """A result row, read by position (a tuple from sqlite3, an ``asyncpg.Record``)."""

    def __getitem__(self, index: int, /) -> Any: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


class Session(Protocol):
    """The statements of one unit of work, each atomic on its own (autocommit).

    A unit that must write several rows atomically is not built on a session: it stays in its
    backend (``apply``, ``claim_due``), whose transactions really differ.
    """

    async def fetch(self, sql: str, *args: object) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: object) -> Row | None: ...

    async def fetchval(self, sql: str, *args: object) -> Any:
        """The first column of the first row, ``None`` when there is no row."""
        ...

    async def execute(self, sql: str, *args: object) -> int:
        """Run ``sql``; how many rows it inserted, updated or deleted."""
        ...


class SchemaSession(Session, Protocol):
    """A session on a connection no other task uses yet (a store being opened), which may
    therefore hold a transaction across statements."""

    def transaction(self) -> contextlib.AbstractAsyncContextManager[object]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the backends' SQL and stored values, for the shared code."""

    name: str
    """How messages name the backend ("SQLite", "PostgreSQL")."""
    migrations: tuple[Migration, ...]
    schema_migrations_table: str
    """``CREATE TABLE IF NOT EXISTS schema_migrations`` in the dialect's types."""
    schema_migrations_exists: str
    """A query whose value is not ``NULL`` once ``schema_migrations`` exists."""
    mark_plaintext_free: str
    """:func:`~vault_service.store.sealing.mark_plaintext_free_sql` in the dialect."""
    hold_schema: Callable[[Session, bool], contextlib.AbstractAsyncContextManager[None]]
    """Held around checking (``False``) or migrating (``True``) the schema, so that several
    processes opening one database at once see it before or after a migration, never in
    between."""
    in_texts: str
    """The condition "the text column ``{column}`` is one of the parameter ``{values}``"."""
    unindexed: str
    """The column ``{column}`` as a term the planner uses no index for (SQLite's unary ``+``),
    where a condition on it must only filter what another index found."""
    texts: Callable[[frozenset[str]], object]
    """A set of texts as that parameter."""
    has_label: str
    """The condition "the record's labels hold the pair (parameter ``{key}``, parameter
    ``{value}``)", on a ``records`` row."""
    instant: Callable[[datetime], object]
    """An aware datetime as a stored instant."""
    read_instant: Callable[[Any], datetime]
    """A stored instant as an aware UTC datetime."""
    record_row: Callable[[Row], RecordRow]
    """A ``records`` row (the codec's columns in order) as the codec's values."""
    record_values: Callable[[RecordRow], list[object]]
    """The codec's values of a ``records`` row as parameters."""


@contextlib.asynccontextmanager
async def no_schema_lock(db: Session, exclusive: bool) -> AsyncIterator[None]:
    """For a database whose write transactions already exclude each other (SQLite)."""
    del db, exclusive
    yield


@functools.cache
def numbered_qmarks(sql: str) -> str:
    """``sql`` with ``$N`` placeholders as SQLite's ``?N`` (same numbers, same arguments)."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def rows_changed(status: str) -> int:
    """The row count of a PostgreSQL command status (``UPDATE 3``, ``INSERT 0 1``)."""
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0
