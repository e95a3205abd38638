"""Versioned schema migrations and the schema version check every backend applies at open.

A migration is a version number and the statements that take the schema from the previous
version to it. Versions are applied in order, each in its own transaction together with its row
in ``schema_migrations``, so an interrupted ``vault-service migrate`` leaves the database at a
well-defined version and can simply be run again. Released migrations are never edited: a
change to the schema is a new version.

Each backend has its own list (SQL dialects differ) describing the same logical schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vault_service.store.base import SchemaVersionError


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def check_schema_version(current: int, *, known: int, where: str, will_migrate: bool) -> None:
    """Refuse to work with a database whose schema this build cannot use as is.

    ``current`` is the newest version applied to the database at ``where`` (0: none),
    ``known`` the newest this build knows. A database behind ``known`` is acceptable only when
    the caller is about to migrate it; one ahead of ``known`` never is (this build would
    misread it, and migrations do not run backwards).
    """
    if current > known:
        raise SchemaVersionError(
            f"the database {where} was migrated by a newer vault-service (schema version "
            f"{current}, this build knows up to {known}): run that version or a newer one"
        )
    if current < known and not will_migrate:
        state = "has no vault-service schema" if current == 0 else f"is at schema version {current}"
        raise SchemaVersionError(
            f"the database {where} {state} and this build needs version {known}: "
            "run `vault-service migrate`"
        )


SQLITE_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        version=1,
        description="records, event log, orphan notifications, log id",
        statements=(
            """
            CREATE TABLE meta (
                key   TEXT PRIMARY KEY,
                value TEXT NOT NULL
            ) STRICT
            """,
            "INSERT INTO meta (key, value) VALUES ('log_id', lower(hex(randomblob(16))))",
            """
            CREATE TABLE records (
                vaulting_request_id TEXT PRIMARY KEY,
                owner               TEXT NOT NULL,
                status              TEXT NOT NULL CHECK (status IN (
                    'SESSION_CREATED', 'PROCESSING', 'SUCCEEDED', 'FAILED', 'EXPIRED')),
                parameters          TEXT NOT NULL,
                session_id          TEXT NOT NULL,
                session_data        TEXT NOT NULL,
                session_expires_at  INTEGER NOT NULL,
                session_normal_url  TEXT NOT NULL,
                card_token          TEXT,
                card                TEXT,
                antom_result        TEXT,
                acquirer_info       TEXT NOT NULL,
                created_at          INTEGER NOT NULL,
                updated_at          INTEGER NOT NULL,
                final_at            INTEGER,
                next_check_at       INTEGER,
                CHECK ((card IS NULL) = (card_token IS NULL)),
                CHECK ((next_check_at IS NULL) = (status IN ('SUCCEEDED', 'FAILED', 'EXPIRED')))
            ) STRICT
            """,
            """
            CREATE INDEX records_due ON records (next_check_at, vaulting_request_id)
            WHERE next_check_at IS NOT NULL
            """,
            """
            CREATE TABLE events (
                id                  INTEGER PRIMARY KEY AUTOINCREMENT,
                vaulting_request_id TEXT NOT NULL REFERENCES records (vaulting_request_id),
                owner               TEXT NOT NULL,
                source              TEXT NOT NULL CHECK (source IN (
                    'NOTIFICATION', 'INQUIRY', 'EXPIRY')),
                occurred_at         INTEGER NOT NULL,
                snapshot            TEXT NOT NULL,
                card_token          TEXT
            ) STRICT
            """,
            "CREATE INDEX events_by_owner ON events (owner, id)",
            "CREATE INDEX events_by_request ON events (vaulting_request_id, id)",
            """
            CREATE TABLE orphan_notifications (
                id                  INTEGER PRIMARY KEY,
                vaulting_request_id TEXT NOT NULL,
                body                BLOB NOT NULL,
                body_sha256         BLOB NOT NULL,
                received_at         INTEGER NOT NULL,
                UNIQUE (vaulting_request_id, body_sha256)
            ) STRICT
            """,
        ),
    ),
)
