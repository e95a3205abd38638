"""Retention, shared by both backends: prune the event log, old orphan notifications and (when
configured) old final records, in small batches, on a session on which the backend holds the
pruner's exclusivity (:meth:`~vault_service.store.sql_store.SQLStore.prune`).

The event log is pruned as a prefix: the oldest events, up to the first one that is still
within the retention, never an event after one that is kept. The newest pruned id is the log's
*floor* (``meta.events_floor``): a reader at a position below it may have lost events and is
refused (:class:`~vault_service.store.base.EventsPrunedError`). The floor is raised before the
events under it are deleted, each step committing on its own, so a reader that could meet the
gap always sees the new floor; an interruption between the two leaves a floor above events that
still exist, which refuses a little early and is finished by the next pass.

Record retention deletes a final record whose last change is older than the cut-off, with its
events and its kept createVaultingSession request. The record is deleted last and only if it
still qualifies, so one that changed meanwhile (an EXPIRED record that learned its card) stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from vault_service.store.base import Pruned
from vault_service.store.sql import Dialect, Session

EVENTS_FLOOR_KEY: Final = "events_floor"
_READ_FLOOR: Final = f"SELECT value FROM meta WHERE key = '{EVENTS_FLOOR_KEY}'"  # noqa: S608
_RAISE_FLOOR: Final = (
    f"INSERT INTO meta (key, value) VALUES ('{EVENTS_FLOOR_KEY}', $1) "  # noqa: S608
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


async def read_floor(db: Session) -> int:
    """The newest pruned event id (0: nothing pruned yet)."""
    value = await db.fetchval(_READ_FLOOR)
    return 0 if value is None else int(value)


async def prune_pass(
    db: Session,
    dialect: Dialect,
    *,
    events_before: datetime,
    records_before: datetime | None,
    batch_size: int,
) -> Pruned:
    """One pass: events, then orphan notifications older than ``events_before``, then final
    records unchanged since before ``records_before`` (``None``: records are kept for ever)."""
    events = await _prune_events(db, dialect, events_before, batch_size)
    orphans = await _batches(
        db,
        "DELETE FROM orphan_notifications WHERE id IN (SELECT id FROM orphan_notifications "
        "WHERE received_at < $1 ORDER BY id LIMIT $2)",
        dialect.instant(events_before),
        batch_size,
    )
    records = 0
    if records_before is not None:
        records = await _prune_records(db, dialect, records_before, batch_size)
    return Pruned(events, orphans, records)


async def _prune_events(db: Session, dialect: Dialect, before: datetime, batch_size: int) -> int:
    deleted = 0
    while True:
        rows = await db.fetch("SELECT id, occurred_at FROM events ORDER BY id LIMIT $1", batch_size)
        old = 0
        for _, occurred_at in rows:
            if dialect.read_instant(occurred_at) >= before:
                break
            old += 1
        if not old:
            return deleted
        last = rows[old - 1][0]
        await db.execute(_RAISE_FLOOR, str(last))
        deleted += await db.execute("DELETE FROM events WHERE id <= $1", last)
        if old < len(rows) or len(rows) < batch_size:
            return deleted


async def _prune_records(db: Session, dialect: Dialect, before: datetime, batch_size: int) -> int:
    cutoff = dialect.instant(before)
    in_ids = dialect.in_texts.format(column="vaulting_request_id", values="$1")
    deleted = 0
    while True:
        ids = [
            rid
            for (rid,) in await db.fetch(
                "SELECT vaulting_request_id FROM records WHERE final_at < $1 AND updated_at < $1 "
                "ORDER BY final_at LIMIT $2",
                cutoff,
                batch_size,
            )
        ]
        if not ids:
            return deleted
        chosen = dialect.texts(frozenset(ids))
        # Built from constant names and the dialect's constant condition.
        await db.execute(f"DELETE FROM events WHERE {in_ids}", chosen)  # noqa: S608
        await db.execute(f"DELETE FROM session_requests WHERE {in_ids}", chosen)  # noqa: S608
        deleted += await db.execute(
            f"DELETE FROM records WHERE {in_ids} AND final_at < $2 AND updated_at < $2",  # noqa: S608
            chosen,
            cutoff,
        )
        if len(ids) < batch_size:
            return deleted


async def _batches(db: Session, delete: str, before: object, batch_size: int) -> int:
    """Run ``delete`` (``$1``: the cut-off, ``$2``: the batch size) until a batch is short."""
    deleted = 0
    while True:
        count = await db.execute(delete, before, batch_size)
        deleted += count
        if count < batch_size:
            return deleted
