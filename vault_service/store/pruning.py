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
events and its kept createVaultingSession request, and only once none of its events is above
the floor: deleting an event the prefix prune has not reached would leave a hole that readers
skip without being refused (a record whose events are still kept waits for a later pass). Each
batch is one transaction of its backend (:class:`RecordBatch`): the chosen records are locked
and checked again, and only those that still qualify lose their events, request and row, so
that an ``apply`` racing the pass (an EXPIRED record that learned its card) either lands before
the batch, and its record is then no longer chosen, or waits for it and finds no record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


# A final record unchanged since the cut-off ($1) with no event above the floor ($2).
_PRUNABLE: Final = (
    "final_at < $1 AND updated_at < $1 AND NOT EXISTS (SELECT 1 FROM events e "
    "WHERE e.vaulting_request_id = records.vaulting_request_id AND e.id > $2)"
)
_SELECT_RECORDS: Final = (
    f"SELECT vaulting_request_id FROM records WHERE {_PRUNABLE} ORDER BY final_at LIMIT $3"  # noqa: S608
)


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Records chosen for deletion, in the dialect's values: ``ids`` (a texts parameter),
    ``cutoff`` (an instant) and the event log's ``floor``. A backend deletes them in one
    transaction (:meth:`~vault_service.store.sql_store.SQLStore._delete_records`): first
    :meth:`lock` (its rows locked, as the backend can), then :meth:`deletes` of what it found."""

    ids: object
    cutoff: object
    floor: int

    def lock(self, dialect: Dialect) -> tuple[str, tuple[object, ...]]:
        """The statement choosing those of :attr:`ids` that still qualify, in key order (the
        backend appends its row lock), and its parameters."""
        in_ids = dialect.in_texts.format(column="vaulting_request_id", values="$3")
        sql = (
            f"SELECT vaulting_request_id FROM records WHERE {in_ids} AND {_PRUNABLE} "  # noqa: S608
            "ORDER BY vaulting_request_id"
        )
        return sql, (self.cutoff, self.floor, self.ids)

    def deletes(self, dialect: Dialect, locked: list[str]) -> list[tuple[str, tuple[object, ...]]]:
        """The deletes of the ``locked`` records' events, request and row (checked once more),
        with their parameters; the last one's count is the records deleted."""
        chosen = dialect.texts(frozenset(locked))
        in_ids = dialect.in_texts.format(column="vaulting_request_id", values="$1")
        in_chosen = dialect.in_texts.format(column="vaulting_request_id", values="$3")
        # Built from constant names and the dialect's constant condition.
        return [
            (f"DELETE FROM events WHERE {in_ids}", (chosen,)),  # noqa: S608
            (f"DELETE FROM session_requests WHERE {in_ids}", (chosen,)),  # noqa: S608
            (
                f"DELETE FROM records WHERE {in_chosen} AND {_PRUNABLE}",  # noqa: S608
                (self.cutoff, self.floor, chosen),
            ),
        ]


DeleteRecords = Callable[[RecordBatch], Awaitable[int]]
"""A backend's deletion of one :class:`RecordBatch` in one transaction: how many it deleted."""


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
    delete_records: DeleteRecords,
) -> Pruned:
    """One pass: events, then orphan notifications older than ``events_before``, then final
    records unchanged since before ``records_before`` (``None``: records are kept for ever),
    each batch of those deleted by ``delete_records``."""
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
        records = await _prune_records(db, dialect, records_before, batch_size, delete_records)
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


async def _prune_records(
    db: Session, dialect: Dialect, before: datetime, batch_size: int, delete: DeleteRecords
) -> int:
    cutoff = dialect.instant(before)
    floor = await read_floor(db)
    deleted = 0
    while True:
        ids = [rid for (rid,) in await db.fetch(_SELECT_RECORDS, cutoff, floor, batch_size)]
        if not ids:
            return deleted
        deleted += await delete(RecordBatch(dialect.texts(frozenset(ids)), cutoff, floor))
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
