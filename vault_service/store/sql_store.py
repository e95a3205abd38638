"""What both backends do alike, written once: the private base of
:class:`~vault_service.store.sqlite.SQLiteStore` and
:class:`~vault_service.store.postgres.PostgresStore`.

A backend brings a :class:`~vault_service.store.sql.Session` per unit of work and its
:class:`~vault_service.store.sql.Dialect`; this base builds on them every ``Store`` method made
of statements that are each atomic alone. What needs a transaction of several writes stays in
the backend, because the transactions really differ (a SQLite unit runs whole on the store
thread, a PostgreSQL one holds row locks and the append lock): ``apply`` and ``apply_batch``,
and the writes of ``claim_due``, of a rotation batch and of a record retention batch.
:meth:`SQLStore._change` is ``apply``'s shared part, :meth:`SQLStore._plan_batch`
``apply_batch``'s.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Final

from vault_service.domain import (
    Event,
    ListPosition,
    Observation,
    ResultFilter,
    SessionRequest,
    VaultingRecord,
)
from vault_service.domain import apply_observation as apply_to
from vault_service.metrics import PoolUse
from vault_service.store.base import (
    EventsPrunedError,
    LogEntry,
    Pruned,
    RecordExistsError,
    RecordNotFoundError,
    StoreClosedError,
    StoredOrphan,
    UnreadableRecord,
    check_lease,
    check_limit,
)
from vault_service.store.codec import (
    RECORD_COLUMNS,
    decode_instant,
    decode_parameters,
    encode_instant,
    encode_parameters,
)
from vault_service.store.event_rows import SELECT_EVENTS, EventRow, ReportedEvents
from vault_service.store.migrator import mark_plaintext_free
from vault_service.store.pruning import RecordBatch, prune_pass, read_floor
from vault_service.store.sealer import Sealer
from vault_service.store.sealing import (
    LEGACY_ROWS,
    LegacyRows,
    ResealedBatch,
    Rotation,
    SealedColumn,
    reseal_columns,
)
from vault_service.store.sql import Dialect, Row, Session

# The statements below are built from constant column and table names, never from input.
_COLUMNS: Final = ", ".join(RECORD_COLUMNS)
SELECT_RECORD: Final = f"SELECT {_COLUMNS} FROM records WHERE vaulting_request_id = $1"  # noqa: S608
UPDATE_RECORD: Final = (
    "UPDATE records SET "  # noqa: S608
    + ", ".join(f"{column} = ${n}" for n, column in enumerate(RECORD_COLUMNS[1:], start=1))
    + f", next_check_at = CASE WHEN ${len(RECORD_COLUMNS)} THEN NULL"
    + f" ELSE coalesce(next_check_at, ${len(RECORD_COLUMNS) + 1}) END"
    + f" WHERE vaulting_request_id = ${len(RECORD_COLUMNS) + 2}"
)
"""``apply``'s update: :attr:`Change.update` are its parameters."""
_INSERT_RECORD: Final = (
    f"INSERT INTO records ({_COLUMNS}, next_check_at) "  # noqa: S608
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(RECORD_COLUMNS) + 2))}) "
    "ON CONFLICT (vaulting_request_id) DO NOTHING "
    # Whether orphan notifications wait for the new record: CreateSession adopts them only
    # then, instead of asking in a round trip of its own every time.
    "RETURNING EXISTS (SELECT 1 FROM orphan_notifications o "
    "WHERE o.vaulting_request_id = records.vaulting_request_id)"
)
_RESCHEDULE: Final = (
    "UPDATE records SET next_check_at = $2 "
    "WHERE vaulting_request_id = $1 AND next_check_at IS NOT NULL"
)
KEEP_SESSION_REQUEST: Final = (
    "INSERT INTO session_requests (vaulting_request_id, owner, parameters, body, created_at) "
    "VALUES ($1, $2, $3, $4, $5) "
    # A no-op update, so that RETURNING yields the row kept first when this one conflicts:
    # one statement instead of an insert and a read (the update waits for a conflicting
    # insert to commit, as DO NOTHING does, and changes nothing).
    "ON CONFLICT (vaulting_request_id) DO UPDATE SET owner = session_requests.owner "
    "RETURNING owner, parameters, body"
)
_INSERT_ORPHAN: Final = (
    "INSERT INTO orphan_notifications (vaulting_request_id, body, body_sha256, received_at) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (vaulting_request_id, body_sha256) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class Change:
    """What ``apply`` writes when an observation changes a record: the record update's
    parameters (:data:`UPDATE_RECORD`) and the event's columns, ``(vaulting_request_id, owner,
    source, occurred_at, snapshot, card_token, sealed)``, both in the dialect's values."""

    record: VaultingRecord
    observation: Observation
    update: tuple[object, ...]
    event_columns: tuple[object, ...]

    def event(self, event_id: int) -> Event:
        """The event as appended under ``event_id``."""
        occurred_at = decode_instant(encode_instant(self.observation.observed_at))  # as stored: UTC
        return Event(event_id, self.observation.source, occurred_at, self.record)


class SQLStore(ABC):
    """A ``Store`` over a backend's sessions; the backend adds ``open``, ``close``, ``apply``,
    ``creation_lock`` and the hooks below."""

    dialect: ClassVar[Dialect]

    def __init__(self, log_id: str, sealer: Sealer) -> None:
        self._log_id = log_id
        self._sealer = sealer
        self._unreadable_events = ReportedEvents()
        self._closed = False

    @property
    def log_id(self) -> str:
        return self._log_id

    def pool_use(self) -> list[PoolUse]:
        """None by default: SQLite has one connection on its own thread, no pool."""
        return []

    @property
    def allows_plaintext(self) -> bool:
        """Whether legacy plaintext card data reads (the database records no plaintext state)."""
        return self._sealer.allows_plaintext

    @abstractmethod
    def _session(self) -> contextlib.AbstractAsyncContextManager[Session]:
        """A session for one unit of work; raises :class:`StoreClosedError` once closed."""

    @abstractmethod
    def _pruner(self) -> contextlib.AbstractAsyncContextManager[Session | None]:
        """A session for a retention pass while this caller is the only pruner of the
        database, or ``None`` when another one is pruning now."""

    @abstractmethod
    async def _reclaim(self, db: Session) -> None:
        """Give the space pruning freed back (or leave it to the database's own vacuum)."""

    @abstractmethod
    async def _delete_records(self, db: Session, batch: RecordBatch) -> int:
        """Record retention's atomic step, on the pruner's session ``db``: in one transaction,
        lock and check again the records of ``batch`` and delete those that still qualify
        (:class:`RecordBatch`); how many it deleted."""

    @abstractmethod
    async def _claim(self, now: datetime, limit: int, lease: timedelta) -> list[Row]:
        """``claim_due``'s atomic step: the due rows, claimed, in order, not yet decoded."""

    @abstractmethod
    async def _swap(
        self, column: SealedColumn, swaps: list[tuple[str | int, str | bytes, str | bytes]]
    ) -> int:
        """Replace each (row key, old, new) value of ``column`` that still holds ``old``;
        how many took."""

    @abstractmethod
    async def _upgrade(
        self, legacy: LegacyRows, writes: list[tuple[str | int, tuple[str | None, ...], str]]
    ) -> int:
        """Rewrite each (row key, layout values, sealed) legacy row that is still legacy;
        how many took."""

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the {self.dialect.name} store is closed")

    async def get(self, vaulting_request_id: str) -> VaultingRecord | None:
        async with self._session() as db:
            row = await db.fetchrow(SELECT_RECORD, vaulting_request_id)
        return None if row is None else self._open_record(row)

    async def list_records(
        self, query: ResultFilter, *, after: ListPosition | None, limit: int
    ) -> list[VaultingRecord]:
        check_limit(limit)
        if query.statuses is not None and not query.statuses:
            return []
        sql, parameters = list_statement(self.dialect, query, after)
        async with self._session() as db:
            rows = await db.fetch(sql, *parameters, limit)
        return [self._open_record(row) for row in rows]

    async def insert(self, record: VaultingRecord, *, next_check_at: datetime) -> bool:
        values = self.dialect.record_values(self._sealer.seal_record(record))
        check_at = None if record.reconciled else self.dialect.instant(next_check_at)
        async with self._session() as db:
            while True:
                inserted = await db.fetchrow(_INSERT_RECORD, *values, check_at)
                if inserted is not None:
                    return bool(inserted[0])
                # The conflicting insert has committed (ON CONFLICT waits for it): read it back,
                # unless record retention deleted it in between (then the id is free again).
                row = await db.fetchrow(SELECT_RECORD, record.vaulting_request_id)
                if row is not None:
                    break
        raise RecordExistsError(self._open_record(row))

    async def record_or_request(
        self, vaulting_request_id: str, request: SessionRequest, at: datetime
    ) -> VaultingRecord | SessionRequest:
        async with self._session() as db:
            row = await db.fetchrow(SELECT_RECORD, vaulting_request_id)
            kept = None
            if row is None:
                kept = await db.fetchrow(
                    KEEP_SESSION_REQUEST, *self._kept_values(vaulting_request_id, request, at)
                )
        return self._record_or_request(row, kept)

    def _kept_values(
        self, vaulting_request_id: str, request: SessionRequest, at: datetime
    ) -> tuple[object, ...]:
        """:data:`KEEP_SESSION_REQUEST`'s parameters."""
        parameters = encode_parameters(request.parameters)
        return (
            vaulting_request_id,
            request.owner,
            parameters,
            request.body,
            self.dialect.instant(at),
        )

    def _record_or_request(
        self, record: Row | None, kept: Row | None
    ) -> VaultingRecord | SessionRequest:
        """``record_or_request``'s answer from the record's row or else the kept request's."""
        if record is not None:
            return self._open_record(record)
        assert kept is not None  # an upsert RETURNING always yields its row
        owner, parameters, body = kept
        return SessionRequest(owner, decode_parameters(parameters), bytes(body))

    async def record_orphan(
        self, vaulting_request_id: str, body: bytes, received_at: datetime
    ) -> None:
        sealed = self._sealer.seal_body(vaulting_request_id, body)
        # Of the plaintext: a retried copy seals to a new ciphertext but is the same body.
        digest = hashlib.sha256(body).digest()
        async with self._session() as db:
            await db.execute(
                _INSERT_ORPHAN,
                vaulting_request_id,
                sealed,
                digest,
                self.dialect.instant(received_at),
            )

    async def list_orphans(self, *, limit: int) -> list[StoredOrphan]:
        return await self._orphans("", limit)

    async def adoptable_orphans(
        self, *, limit: int, vaulting_request_id: str | None = None
    ) -> list[StoredOrphan]:
        adoptable = (
            "WHERE EXISTS (SELECT 1 FROM records r "
            "WHERE r.vaulting_request_id = o.vaulting_request_id)"
        )
        if vaulting_request_id is None:
            return await self._orphans(adoptable, limit)
        return await self._orphans(
            f"{adoptable} AND o.vaulting_request_id = $2", limit, vaulting_request_id
        )

    async def drop_orphan(self, vaulting_request_id: str, body: bytes) -> None:
        async with self._session() as db:
            await db.execute(
                "DELETE FROM orphan_notifications "
                "WHERE vaulting_request_id = $1 AND body_sha256 = $2",
                vaulting_request_id,
                hashlib.sha256(body).digest(),
            )

    async def _orphans(self, where: str, limit: int, *args: object) -> list[StoredOrphan]:
        """Orphans (``o``) matching ``where`` (its parameters from ``$2``), oldest first."""
        check_limit(limit)
        async with self._session() as db:
            rows = await db.fetch(
                "SELECT vaulting_request_id, body, received_at FROM orphan_notifications o "  # noqa: S608 - constant conditions
                f"{where} ORDER BY id LIMIT $1",
                limit,
                *args,
            )
        # Opened one by one: a body that does not open is reported in its place.
        return [
            self._sealer.open_orphan(rid, body, self.dialect.read_instant(received_at))
            for rid, body, received_at in rows
        ]

    async def events_after(
        self,
        after_event_id: int,
        *,
        limit: int,
        owner: str | None = None,
        vaulting_request_ids: frozenset[str] | None = None,
    ) -> list[LogEntry]:
        check_limit(limit)
        self._check_open()
        if vaulting_request_ids is not None and not vaulting_request_ids:
            return []
        parameters: list[object] = [after_event_id]
        if owner is not None:
            parameters.append(owner)
        if vaulting_request_ids is not None:
            parameters.append(self.dialect.texts(vaulting_request_ids))
        sql = events_statement(
            self.dialect, owner=owner is not None, ids=vaulting_request_ids is not None
        )
        async with self._session() as db:
            rows = await db.fetch(sql, *parameters, limit)
            # Read after the page: a pruning that could have taken from it raised the floor
            # first (pruning module docstring).
            floor = await read_floor(db)
        if after_event_id < floor:
            raise EventsPrunedError(after_event_id, floor)
        read_instant = self.dialect.read_instant
        events = [
            EventRow(event_id, rid, owner, source, read_instant(occurred_at), *rest)
            for event_id, rid, owner, source, occurred_at, *rest in rows
        ]
        return self._sealer.open_events(events, self._unreadable_events)

    async def last_event_id(self) -> int:
        # Readers never see an id below one they saw (base module docstring): max(id) is safe.
        async with self._session() as db:
            last: int = await db.fetchval("SELECT coalesce(max(id), 0) FROM events")
            # Ids are never reused, so a log pruned empty stands at its floor.
            return max(last, await read_floor(db))

    async def events_floor(self) -> int:
        async with self._session() as db:
            return await read_floor(db)

    async def prune(
        self, *, events_before: datetime, records_before: datetime | None, batch_size: int
    ) -> Pruned | None:
        check_limit(batch_size)
        async with self._pruner() as db:
            if db is None:
                return None
            pruned = await prune_pass(
                db,
                self.dialect,
                events_before=events_before,
                records_before=records_before,
                batch_size=batch_size,
                delete_records=functools.partial(self._delete_records, db),
            )
            if pruned.any:
                await self._reclaim(db)
            return pruned

    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta
    ) -> list[VaultingRecord | UnreadableRecord]:
        check_limit(limit)
        check_lease(lease)
        rows = await self._claim(now, limit, lease)
        # Decoded after the lease committed: a row that does not decode must not roll it back.
        return [self._sealer.open_claimed(self.dialect.record_row(row)) for row in rows]

    async def reschedule(self, vaulting_request_id: str, next_check_at: datetime) -> None:
        async with self._session() as db:
            # Reconciled records have no next check (a CHECK constraint says so): they stay
            # unscheduled.
            if await db.execute(
                _RESCHEDULE, vaulting_request_id, self.dialect.instant(next_check_at)
            ):
                return
            found = await db.fetchval(
                "SELECT 1 FROM records WHERE vaulting_request_id = $1", vaulting_request_id
            )
        if found is None:
            raise RecordNotFoundError(vaulting_request_id)

    async def reseal(self, *, batch_size: int) -> Rotation:
        """Seal every card value that is not under the active data key again under it (one
        pass per column); backs ``vault-service rotate-data-key``.

        Safe while the service serves, and to interrupt and run again: each batch of
        ``batch_size`` rows is read, then written back by the backend's :meth:`_swap` or
        :meth:`_upgrade`, which replace a row only if it still holds what was read (compare
        and swap). A concurrent ``apply`` that rewrote the row meanwhile wins (it sealed the
        token itself) and the row counts as ``changed``. A value that cannot be opened is left
        as it is and reported; when there is none, the database records that it holds no
        plaintext (sealing module docstring).
        """
        check_limit(batch_size)

        async def batch(column: SealedColumn, after: object) -> ResealedBatch:
            rows = await self._batch(_reseal_select(column), after, batch_size)
            plan = self._sealer.plan_reseal(
                column, ((key, rid, stored) for key, rid, stored in rows)
            )
            swapped = await self._swap(column, plan.swaps) if plan.swaps else 0
            last = rows[-1][0] if rows else None
            return ResealedBatch(len(rows), last, len(plan.swaps), swapped, plan.unreadable)

        async def upgrade(column: SealedColumn, after: object) -> ResealedBatch:
            legacy = LEGACY_ROWS[column]
            rows = await self._batch(_upgrade_select(legacy), after, batch_size)
            plan = self._sealer.plan_upgrade(
                legacy, ((key, rid, tuple(values)) for key, rid, *values in rows)
            )
            swapped = await self._upgrade(legacy, plan.writes) if plan.writes else 0
            last = rows[-1][0] if rows else None
            return ResealedBatch(len(rows), last, len(plan.writes), swapped, plan.unreadable)

        async def mark() -> bool:
            async with self._session() as db:
                return await mark_plaintext_free(db, self.dialect)

        return await reseal_columns(
            batch, upgrade=upgrade, batch_size=batch_size, mark_plaintext_free=mark
        )

    def _change(
        self, vaulting_request_id: str, observation: Observation, row: Row | None
    ) -> Change | None:
        """``apply``'s decision on the record's ``row`` (read for update): the writes, or
        ``None`` when ``observation`` changes nothing."""
        if row is None:
            raise RecordNotFoundError(vaulting_request_id)
        return self._change_of(self._open_record(row), observation)

    def _change_of(self, record: VaultingRecord, observation: Observation) -> Change | None:
        """``apply``'s decision on ``record`` as it stands: the writes, or ``None``."""
        changed = apply_to(record, observation)
        if changed is None:
            return None
        rid = record.vaulting_request_id
        row, sealed_event = self._sealer.seal_change(changed)
        values = self.dialect.record_values(row)
        occurred_at = self.dialect.instant(observation.observed_at)
        update = (*values[1:], changed.reconciled, occurred_at, rid)
        event = (rid, changed.owner, observation.source.value, occurred_at)
        return Change(changed, observation, update, (*event, *sealed_event))

    def _plan_batch(
        self, applies: Sequence[tuple[str, Observation]], rows: Mapping[str, Row]
    ) -> list[Change | Exception | None]:
        """``apply_batch``'s decisions on the records' ``rows`` (read for update, by id), in
        the order of ``applies``: each apply sees the record as the ones before it left it,
        and one that raises (an unknown id, a record that does not decode) is its outcome
        alone."""
        records: dict[str, VaultingRecord] = {}
        plan: list[Change | Exception | None] = []
        for rid, observation in applies:
            try:
                record = records.get(rid)
                change = (
                    self._change(rid, observation, rows.get(rid))
                    if record is None
                    else self._change_of(record, observation)
                )
            except Exception as exc:  # the outcome of this apply alone
                plan.append(exc)
                continue
            if change is not None:
                records[rid] = change.record
            plan.append(change)
        return plan

    def _open_record(self, row: Row) -> VaultingRecord:
        return self._sealer.open_record(self.dialect.record_row(row))

    async def _batch(self, select: str, after: object, limit: int) -> list[Row]:
        async with self._session() as db:
            return await db.fetch(select, after, limit)


def _reseal_select(column: SealedColumn) -> str:
    """A batch of ``column``'s values in key order: (key, vaulting request id, value)."""
    # Names come from the constant SEALED_COLUMNS, never from input.
    return (
        f"SELECT {column.key}, vaulting_request_id, {column.column} FROM {column.table} "  # noqa: S608
        f"WHERE {column.key} > $1 AND {column.column} IS NOT NULL ORDER BY {column.key} LIMIT $2"
    )


def _upgrade_select(legacy: LegacyRows) -> str:
    """A batch of ``legacy``'s rows in key order: (key, vaulting request id, *columns)."""
    table, key, sealed = legacy.sealed.table, legacy.sealed.key, legacy.sealed.column
    # Names come from the constant LEGACY_ROWS, never from input.
    return (
        f"SELECT {key}, vaulting_request_id, {', '.join(legacy.columns)} FROM {table} "  # noqa: S608
        f"WHERE {key} > $1 AND {sealed} IS NULL ORDER BY {key} LIMIT $2"
    )


def upgrade_statement(legacy: LegacyRows) -> str:
    """The write-back of one legacy row (key, *layout values, sealed), which only takes if the
    row is still legacy (a replica rewrote it otherwise)."""
    table, key, sealed = legacy.sealed.table, legacy.sealed.key, legacy.sealed.column
    assignments = ", ".join(
        f"{column} = ${n}" for n, column in enumerate((*legacy.columns, sealed), start=2)
    )
    return f"UPDATE {table} SET {assignments} WHERE {key} = $1 AND {sealed} IS NULL"  # noqa: S608


def events_statement(dialect: Dialect, *, owner: bool, ids: bool) -> str:
    """The text of :meth:`SQLStore.events_after`: after ``$1``, then the owner (``owner``) and
    the ids (``ids``) as the next parameters, the limit last.

    One text per combination of filters (not "$2 IS NULL OR ..."), so that each prepared
    statement gets a plan for the filters it really has. With both filters, the ids pick the
    rows (``events_by_request``) and the owner only filters them: a filtered stream reads its
    few ids' events, not its owner's whole history.
    """
    conditions = ["id > $1"]
    count = 1
    if owner:
        count += 1
        column = dialect.unindexed.format(column="owner") if ids else "owner"
        conditions.append(f"{column} = ${count}")
    if ids:
        count += 1
        conditions.append(dialect.in_texts.format(column="vaulting_request_id", values=f"${count}"))
    return f"{SELECT_EVENTS}{' AND '.join(conditions)} ORDER BY id LIMIT ${count + 1}"


def list_statement(
    dialect: Dialect, query: ResultFilter, after: ListPosition | None
) -> tuple[str, list[object]]:
    """``list_records``'s statement (without the limit, the last parameter) and parameters.

    One text per combination of filters, as in :meth:`SQLStore.events_after`. The owner and the
    position are range conditions on ``records_listed_by_owner`` (or
    ``records_listed`` for an admin), which also gives the order, so a page reads the index
    from the position on; status, labels and the upper bound filter those rows.
    """
    parameters: list[object] = []

    def parameter(value: object) -> str:
        parameters.append(value)
        return f"${len(parameters)}"

    conditions: list[str] = []
    if query.owner is not None:
        conditions.append(f"owner = {parameter(query.owner)}")
    if after is not None:
        at, rid = parameter(dialect.instant(after[0])), parameter(after[1])
        conditions.append(f"(updated_at, vaulting_request_id) > ({at}, {rid})")
    if query.updated_from is not None:
        conditions.append(f"updated_at >= {parameter(dialect.instant(query.updated_from))}")
    if query.updated_before is not None:
        conditions.append(f"updated_at < {parameter(dialect.instant(query.updated_before))}")
    if query.statuses is not None:
        statuses = dialect.texts(frozenset(status.value for status in query.statuses))
        conditions.append(dialect.in_texts.format(column="status", values=parameter(statuses)))
    for key, value in query.labels:
        conditions.append(dialect.has_label.format(key=parameter(key), value=parameter(value)))
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    sql = (
        f"SELECT {_COLUMNS} FROM records {where}"  # noqa: S608 - constant names only
        f"ORDER BY updated_at, vaulting_request_id LIMIT ${len(parameters) + 1}"
    )
    return sql, parameters
