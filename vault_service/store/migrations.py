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

PLAINTEXT_STATE_KEY: Final = "plaintext_card_data"
"""The ``meta`` key recording that no card value is plaintext (see the sealing module)."""


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


_SCHEDULED_UNLESS_RECONCILED: Final = """CHECK (CASE status
                    WHEN 'SUCCEEDED' THEN TRUE
                    WHEN 'FAILED' THEN next_check_at IS NULL
                    WHEN 'EXPIRED' THEN next_check_at IS NULL
                    ELSE next_check_at IS NOT NULL END)"""
"""Version 3's schedule rule (both dialects): open records are scheduled, FAILED and EXPIRED
never; a SUCCEEDED one is while its card token is missing (``VaultingRecord.reconciled``),
which only the stored card, sealed, can tell."""


def _sealed_fields(text: str) -> tuple[str, ...]:
    """Version 4 in both dialects: a ``sealed`` column for the encrypted document of a row's
    sealed fields (:mod:`vault_service.store.sealed_fields`). Rows written before it hold
    those fields in clear JSON, so a database that has any no longer holds "no plaintext"
    (:mod:`vault_service.store.sealing`) until ``rotate-data-key`` has sealed them."""
    return (
        f"ALTER TABLE records ADD COLUMN sealed {text}",
        f"ALTER TABLE events ADD COLUMN sealed {text}",
        f"DELETE FROM meta WHERE key = '{PLAINTEXT_STATE_KEY}' "  # noqa: S608
        "AND (EXISTS (SELECT 1 FROM records) OR EXISTS (SELECT 1 FROM events))",
    )


_LISTING_INDEXES: Final = (
    # Issue 14: ListResults pages by (updated_at, vaulting_request_id) after a position, for one
    # owner or (an admin) for all; record retention finds old final records by final_at.
    "CREATE INDEX records_listed_by_owner ON records (owner, updated_at, vaulting_request_id)",
    "CREATE INDEX records_listed ON records (updated_at, vaulting_request_id)",
    "CREATE INDEX records_final ON records (final_at) WHERE final_at IS NOT NULL",
)
"""Version 5 in both dialects (plain ``CREATE INDEX``: it blocks writes to ``records`` while it
builds, which ``docs/operations.md`` says to plan a migration around on a large database)."""


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
    Migration(
        version=2,
        description="session_requests: the createVaultingSession body first sent per id",
        statements=(
            # Issue 9 #15: a retry repeats these exact bytes, whatever the settings say now.
            """
            CREATE TABLE session_requests (
                vaulting_request_id TEXT PRIMARY KEY,
                owner               TEXT NOT NULL,
                parameters          TEXT NOT NULL,
                body                BLOB NOT NULL,
                created_at          INTEGER NOT NULL
            ) STRICT
            """,
        ),
    ),
    Migration(
        version=3,
        description="records: a SUCCEEDED record without its card token stays scheduled",
        statements=(
            # Issue 9 #7. SQLite cannot change a CHECK in place: the table is rebuilt. Events
            # reference records, so their foreign keys are checked at COMMIT (deferred), by
            # when every record is back under the same key.
            "PRAGMA defer_foreign_keys = ON",
            "CREATE TEMP TABLE records_before_v3 AS SELECT * FROM records",
            "DROP TABLE records",
            f"""
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
                {_SCHEDULED_UNLESS_RECONCILED}
            ) STRICT
            """,
            "INSERT INTO records SELECT * FROM temp.records_before_v3",
            "DROP TABLE temp.records_before_v3",
            """
            CREATE INDEX records_due ON records (next_check_at, vaulting_request_id)
            WHERE next_check_at IS NOT NULL
            """,
        ),
    ),
    Migration(
        version=4,
        description="sealed fields: card details and acquirer info encrypted at rest",
        statements=_sealed_fields("TEXT"),
    ),
    Migration(
        version=5,
        description="records: indexes for ListResults and record retention",
        statements=_LISTING_INDEXES,
    ),
)


POSTGRES_MIGRATIONS: Final[tuple[Migration, ...]] = (
    # Instants are timestamptz (microsecond resolution, like the codec's integers, so the
    # conversion is exact both ways) so that operators can read and compare them in SQL. JSON is
    # jsonb: PostgreSQL validates it on write and operators can query inside it (card->>'brand');
    # the codec reads it back whatever the key order or spacing, and its pairs are JSON arrays,
    # which jsonb keeps in order. The card token stays in its own column, outside the JSON.
    Migration(
        version=1,
        description="records, event log, orphan notifications, log id",
        statements=(
            """
            CREATE TABLE meta (
                key   text PRIMARY KEY,
                value text NOT NULL
            )
            """,
            "INSERT INTO meta (key, value) VALUES ('log_id', md5(gen_random_uuid()::text))",
            """
            CREATE TABLE records (
                vaulting_request_id text PRIMARY KEY,
                owner               text NOT NULL,
                status              text NOT NULL CHECK (status IN (
                    'SESSION_CREATED', 'PROCESSING', 'SUCCEEDED', 'FAILED', 'EXPIRED')),
                parameters          jsonb NOT NULL,
                session_id          text NOT NULL,
                session_data        text NOT NULL,
                session_expires_at  timestamptz NOT NULL,
                session_normal_url  text NOT NULL,
                card_token          text,
                card                jsonb,
                antom_result        jsonb,
                acquirer_info       jsonb NOT NULL,
                created_at          timestamptz NOT NULL,
                updated_at          timestamptz NOT NULL,
                final_at            timestamptz,
                next_check_at       timestamptz,
                CHECK ((card IS NULL) = (card_token IS NULL)),
                CHECK ((next_check_at IS NULL) = (status IN ('SUCCEEDED', 'FAILED', 'EXPIRED')))
            )
            """,
            """
            CREATE INDEX records_due ON records (next_check_at, vaulting_request_id)
            WHERE next_check_at IS NOT NULL
            """,
            """
            CREATE TABLE events (
                id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                vaulting_request_id text NOT NULL REFERENCES records (vaulting_request_id),
                owner               text NOT NULL,
                source              text NOT NULL CHECK (source IN (
                    'NOTIFICATION', 'INQUIRY', 'EXPIRY')),
                occurred_at         timestamptz NOT NULL,
                snapshot            jsonb NOT NULL,
                card_token          text
            )
            """,
            "CREATE INDEX events_by_owner ON events (owner, id)",
            "CREATE INDEX events_by_request ON events (vaulting_request_id, id)",
            """
            CREATE TABLE orphan_notifications (
                id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                vaulting_request_id text NOT NULL,
                body                bytea NOT NULL,
                body_sha256         bytea NOT NULL,
                received_at         timestamptz NOT NULL,
                UNIQUE (vaulting_request_id, body_sha256)
            )
            """,
        ),
    ),
    Migration(
        version=2,
        description="session_requests: the createVaultingSession body first sent per id",
        statements=(
            # Issue 9 #15: a retry repeats these exact bytes, whatever the settings say now.
            """
            CREATE TABLE session_requests (
                vaulting_request_id text PRIMARY KEY,
                owner               text NOT NULL,
                parameters          jsonb NOT NULL,
                body                bytea NOT NULL,
                created_at          timestamptz NOT NULL
            )
            """,
        ),
    ),
    Migration(
        version=3,
        description="records: a SUCCEEDED record without its card token stays scheduled",
        statements=(
            # Issue 9 #7. records_check1 is version 1's unnamed schedule CHECK.
            "ALTER TABLE records DROP CONSTRAINT records_check1",
            f"ALTER TABLE records ADD CONSTRAINT records_scheduled {_SCHEDULED_UNLESS_RECONCILED}",
        ),
    ),
    Migration(
        version=4,
        description="sealed fields: card details and acquirer info encrypted at rest",
        statements=_sealed_fields("text"),
    ),
    Migration(
        version=5,
        description="records: indexes for ListResults and record retention",
        statements=_LISTING_INDEXES,
    ),
)
