"""Bringing a database to this build's schema, for either backend: the one migration runner.

The migrations themselves, and the version check, are in :mod:`vault_service.store.migrations`;
what differs between the backends (the bookkeeping table's types, how concurrent openers are
kept apart) comes from the :class:`~vault_service.store.sql.Dialect`. A store opens through
:func:`open_schema`, which also reads what the store needs from the database: its log id and
whether legacy plaintext still reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from vault_service.store.migrations import Migration, check_schema_version
from vault_service.store.sealing import MARK_NEW_DATABASE, SELECT_PLAINTEXT_STATE, allows_plaintext
from vault_service.store.sql import Dialect, SchemaSession, Session


class Schema(NamedTuple):
    """A database checked (or migrated) for a store."""

    applied: list[int]
    """The versions applied now, oldest first."""
    log_id: str
    plaintext: bool
    """Whether legacy plaintext card data reads (:mod:`vault_service.store.sealing`)."""


async def open_schema(db: SchemaSession, dialect: Dialect, *, where: str, migrate: bool) -> Schema:
    """Check the schema version of the database at ``where``, migrating first when ``migrate``.

    Raises :class:`~vault_service.store.base.SchemaVersionError` for a database this build
    cannot use as is. Each migration is applied with its ``schema_migrations`` row in one
    transaction, unless already applied (by a concurrent ``migrate``), so running it again, or
    twice at once, is safe.
    """
    async with dialect.hold_schema(db, migrate):
        check_schema_version(
            await _schema_version(db, dialect),
            known=dialect.migrations[-1].version,
            where=where,
            will_migrate=migrate,
        )
        applied = [
            migration.version
            for migration in (dialect.migrations if migrate else ())
            if await _apply(db, dialect, migration)
        ]
    log_id: str = await db.fetchval("SELECT value FROM meta WHERE key = 'log_id'")
    plaintext = allows_plaintext(await db.fetchval(SELECT_PLAINTEXT_STATE))
    if migrate and plaintext:
        # Migrated before the state existed: marked as soon as it holds no plaintext, not only
        # by a rotation (a scan of the sealed columns, until the mark is set).
        plaintext = not await mark_plaintext_free(db, dialect)
    return Schema(applied, log_id, plaintext)


def schema_migrations_table(*, integer: str, text: str, applied_at: str, options: str = "") -> str:
    """The bookkeeping table of applied versions, in a dialect's column types."""
    return f"""
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     {integer} PRIMARY KEY,
            description {text} NOT NULL,
            applied_at  {applied_at}
        ) {options}
    """


async def mark_plaintext_free(db: Session, dialect: Dialect) -> bool:
    """Record "no plaintext" unless some value still lacks an envelope; whether it is."""
    await db.execute(dialect.mark_plaintext_free)
    return not allows_plaintext(await db.fetchval(SELECT_PLAINTEXT_STATE))


async def _schema_version(db: Session, dialect: Dialect) -> int:
    if await db.fetchval(dialect.schema_migrations_exists) is None:
        return 0
    version: int = await db.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return version


async def _apply(db: SchemaSession, dialect: Dialect, migration: Migration) -> bool:
    """Apply ``migration`` and record it in one transaction, unless it is already applied."""
    async with db.transaction():
        await db.execute(dialect.schema_migrations_table)
        if await db.fetchval(
            "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
        ):
            return False
        for statement in migration.statements:
            await db.execute(statement)
        if migration is dialect.migrations[0]:
            await db.execute(MARK_NEW_DATABASE)
        await db.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
            migration.version,
            migration.description,
            dialect.instant(datetime.now(UTC)),
        )
    return True
