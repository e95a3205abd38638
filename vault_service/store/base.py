"""The ``Store`` contract every persistence backend implements, and the errors it raises.

The service layer talks to this protocol only, so the embedded SQLite backend and the
distributed PostgreSQL backend are interchangeable. Nothing here may assume a particular
database: no SQL, no connection objects, no backend-specific exceptions.

What every backend guarantees:

* ``apply`` is a transactional outbox: the record update and the event that describes it commit
  together or not at all, so a committed state change always has its event and vice versa.
* Event ids are positive, unique and increasing in the order ``events_after`` reveals them, and
  the log never grows "behind" a reader: once ``events_after`` has returned an event, no event
  with a smaller id can become visible later. A backend whose ids are allocated before commit
  (PostgreSQL sequences under concurrent writers) must either hold back events above any id
  that may still commit or allocate ids in commit order (PostgreSQL serialises its appends); a
  resuming ``StreamResults`` reader would otherwise skip an event for ever.
* Several replicas may share one database: ``claim_due`` hands each due record to one caller
  at a time, and ``creation_lock`` makes one replica at a time create a given session.
* Datetimes go in and come out timezone-aware; what comes out is in UTC.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Protocol

from vault_service.domain import (
    Event,
    ListPosition,
    Observation,
    ResultFilter,
    SessionRequest,
    VaultingRecord,
)
from vault_service.errors import (
    ConfigurationError,
    ConflictError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    VaultError,
)
from vault_service.metrics import PoolUse


class StoreError(VaultError):
    """Base class of the errors a store raises on purpose (a family: each has its category)."""


class RecordExistsError(StoreError, ConflictError):
    """``insert`` found a record with the same id; ``existing`` is that record.

    CreateSession compares the existing record's parameters with the new request to tell a
    replay (return the stored session) from a conflicting reuse of the id (``ALREADY_EXISTS``).
    """

    def __init__(self, existing: VaultingRecord) -> None:
        super().__init__(f"vaulting request {existing.vaulting_request_id!r} already exists")
        self.existing = existing


class RecordNotFoundError(StoreError, NotFoundError):
    """No record has this vaulting request id."""

    def __init__(self, vaulting_request_id: str) -> None:
        super().__init__(f"no vaulting request {vaulting_request_id!r}")
        self.vaulting_request_id = vaulting_request_id


class SchemaVersionError(StoreError, ConfigurationError):
    """The database's schema is not the one this build works with; the message tells the
    operator what to do (run ``vault-service migrate``, or deploy a newer build)."""


class UnusableDatabaseError(StoreError, ConfigurationError):
    """The database is there but cannot serve as configured (a SQLite file on a filesystem
    without write-ahead logging); the message says what to change."""


class DatabaseUnavailableError(StoreError, UnavailableError):
    """The database could not be reached at open (wrong address or credentials, a database
    that does not exist, a server that is down); the message names it, without secrets."""


class CorruptDataError(StoreError, InternalError):
    """Stored data does not decode into domain objects: it was edited outside vault-service,
    or written by an incompatible build. Never raised for data this build wrote itself."""


class StoreUnavailableError(StoreError, UnavailableError):
    """The database could not be reached, or the connection was lost during the call (a
    failover, a restart, ``pg_terminate_backend``). A write may or may not have committed;
    repeating the call is safe (writes are idempotent), so callers are told to retry."""

    public_message: ClassVar[str] = "the database is unavailable; retry later"
    """What a caller is told: the kind of trouble, never the driver's text (it may name hosts)."""


class StoreBusyError(StoreUnavailableError):
    """No database connection became free within the acquire timeout: every one is in use
    (a burst, a slow Antom holding creation locks). Failing fast, to be retried, bounds the
    queue of waiting calls instead of letting it grow with the load."""

    public_message: ClassVar[str] = "every database connection is busy; retry later"


class EventsPrunedError(StoreError, InvalidArgumentError):
    """A read of the event log from a position below its floor: events after that position
    were pruned (event retention), so the reader cannot be given all of them."""

    def __init__(self, position: int, floor: int) -> None:
        super().__init__(
            {"resume_token": "too old: the events after it were pruned (event retention)"},
            f"events after {position} were pruned up to {floor}",
        )
        self.position = position
        self.floor = floor


class StoreClosedError(StoreError, InternalError):
    """The store was used after ``close()``: a shutdown ordering bug in the caller."""


@dataclass(frozen=True, slots=True)
class OrphanNotification:
    """A verified notifyVaulting body for a vaulting request id this service never created.

    Kept for audit (Antom is acknowledged so that it stops retrying); ``received_at`` is when
    the first copy arrived, retried duplicates are not stored again.
    """

    vaulting_request_id: str
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class UnreadableOrphan:
    """An orphan notification whose stored body does not open here (under a data key the ring
    lacks, a tampered ciphertext, an edited row).

    Listed in its place rather than raised, so that one bad row neither hides the others from
    an audit nor stops the adoption of the orphans after it. ``error`` is the error's class
    name and ``key_id`` the missing data key, if that is the cause: never a stored value.
    """

    vaulting_request_id: str
    received_at: datetime
    error: str
    key_id: str | None = None


StoredOrphan = OrphanNotification | UnreadableOrphan
"""An orphan notification as a reader meets it."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows one retention pass deleted."""

    events: int = 0
    orphans: int = 0
    records: int = 0

    @property
    def any(self) -> bool:
        return bool(self.events or self.orphans or self.records)


class Unreadable(enum.Enum):
    """Why an event row does not become an :class:`Event` in this process.

    The two call for opposite answers: a missing key is this process's fault and one restart
    with the right key file fixes it, so nothing may move past the event; a corrupt row stays
    corrupt wherever it is read, so its subscribers are told and move on.
    """

    MISSING_KEY = "missing_key"
    """Sealed under a data key this process's ring does not hold."""
    CORRUPT = "corrupt"
    """Fails authentication under a key the ring holds, or its snapshot does not decode."""


@dataclass(frozen=True, slots=True)
class UnreadableEvent:
    """An event row that does not decode here, with what its row holds in the clear: enough
    to order it, to tell who may see it (``owner``, ``vaulting_request_id``) and to say why,
    never a value from its sealed or encoded columns."""

    event_id: int
    vaulting_request_id: str
    owner: str
    cause: Unreadable
    key_id: str | None
    """The missing data key's id (:attr:`Unreadable.MISSING_KEY` only)."""


Applied = Event | None | Exception
"""One apply's outcome in :meth:`Store.apply_batch`: its event, ``None`` (nothing changed), or
the exception that undid it alone."""

LogEntry = Event | UnreadableEvent
"""One event of the log as a reader meets it."""


def entry_owner(entry: LogEntry) -> str:
    """Who owns the record ``entry`` is about, readable or not."""
    return entry.owner if isinstance(entry, UnreadableEvent) else entry.record.owner


def entry_request_id(entry: LogEntry) -> str:
    """The vaulting request ``entry`` is about, readable or not."""
    if isinstance(entry, UnreadableEvent):
        return entry.vaulting_request_id
    return entry.record.vaulting_request_id


@dataclass(frozen=True, slots=True)
class UnreadableRecord:
    """A due record ``claim_due`` claimed but could not decode (its card data under a key the
    ring lacks, a tampered ciphertext, an edited row).

    It is claimed like the others rather than raised, so that it can neither roll the claim
    back (and stay first in line for ever) nor take its batch-mates down with it; the
    claimant reports it and pushes its next check out. ``error`` is the error's class name
    and ``key_id`` the missing data key, if that is the cause: never a stored value.
    """

    vaulting_request_id: str
    error: str
    key_id: str | None = None


class Store(Protocol):
    """Persistence of vaulting records, their event log and orphan notifications."""

    @property
    def log_id(self) -> str:
        """A stable random id of this database's event log, created by the first migration.

        Resume tokens embed it so that a token from another database is refused.
        """
        ...

    async def close(self) -> None:
        """Release every resource (threads, connections); later calls raise StoreClosedError.

        Work already submitted finishes first. Closing twice is harmless.
        """
        ...

    def pool_use(self) -> list[PoolUse]:
        """Each connection pool and its use now, for the metrics (none without a pool)."""
        ...

    async def get(self, vaulting_request_id: str) -> VaultingRecord | None:
        """The record with this id, or ``None``."""
        ...

    async def list_records(
        self, query: ResultFilter, *, after: ListPosition | None, limit: int
    ) -> list[VaultingRecord]:
        """Up to ``limit`` records matching ``query``, in ascending ``(updated_at,
        vaulting_request_id)`` order, starting after ``after`` (``None``: from the first).

        Keyset paging: the position is the last record's key, so a page costs an index range
        scan whatever its depth, and records that change between pages move, never shift the
        pages of the others. A record that does not decode raises as :meth:`get` does.
        """
        ...

    async def insert(self, record: VaultingRecord, *, next_check_at: datetime) -> bool:
        """Store a new record, due for its first reconciliation at ``next_check_at`` (unless
        it is already ``reconciled``); whether orphan notifications of its id were waiting
        for it (:meth:`adoptable_orphans` has them), seen in the same statement so that the
        usual CreateSession, which has none, needs no query of its own to know.

        Raises :class:`RecordExistsError` (carrying the stored record) when the id is taken;
        the store is the arbiter of concurrent CreateSession calls with the same id. No event
        is appended: the event log carries results, and a new session is not one.
        """
        ...

    async def record_or_request(
        self, vaulting_request_id: str, request: SessionRequest, at: datetime
    ) -> VaultingRecord | SessionRequest:
        """The stored record of this id if there is one; else its createVaultingSession
        request: ``request`` if it is the first one (then kept, durably, before returning),
        else the one kept first, unchanged.

        CreateSession replays the record, or sends the request this returns, so that every
        attempt for an id, in any process, at any later time, sends the first attempt's exact
        bytes. One call, not two: it is where every CreateSession starts.
        """
        ...

    async def apply(self, vaulting_request_id: str, observation: Observation) -> Event | None:
        """Apply ``observation`` to the record by the domain's rules, in one transaction.

        When the record changes, the update and an event holding a snapshot of the updated
        record commit together and the committed event is returned. When it does not (a
        duplicate, late or out-of-order observation) nothing is written and ``None`` is returned.
        A change that makes the record ``reconciled`` also takes it off the reconciliation
        schedule; one that makes it unreconciled again (an EXPIRED record that learns of a
        success without its card token) puts it back, due at ``observation.observed_at``.
        Raises :class:`RecordNotFoundError` for an unknown id.
        """
        ...

    async def apply_batch(self, applies: Sequence[tuple[str, Observation]]) -> list[Applied]:
        """Several :meth:`apply` calls, ``(vaulting_request_id, observation)`` each, committed
        together in one transaction: a group commit pays one commit (one WAL append, one
        fsync, one event-log lock) for the batch instead of one per call.

        The outcomes come back in the order of ``applies``, each exactly what its own
        :meth:`apply` would have given in that order: the committed event, ``None`` when
        nothing changed, or the exception it would have raised (:class:`RecordNotFoundError`
        for an unknown id), which undid that apply only. Applies to one id see each other in
        order, and their events are appended in the order of ``applies``. Raises only for what
        fails the whole batch (the database unavailable, the store closed): then nothing of
        it committed, or, like a lost connection during :meth:`apply`, maybe all of it.
        """
        ...

    async def record_orphan(
        self, vaulting_request_id: str, body: bytes, received_at: datetime
    ) -> None:
        """Keep a notification for an unknown id for audit; idempotent per (id, body)."""
        ...

    async def list_orphans(self, *, limit: int) -> list[StoredOrphan]:
        """The oldest ``limit`` orphan notifications, in the order they first arrived."""
        ...

    async def adoptable_orphans(
        self, *, limit: int, vaulting_request_id: str | None = None
    ) -> list[StoredOrphan]:
        """The oldest ``limit`` orphan notifications whose record exists now (created after
        they arrived: a late replica, a restore), optionally of one id, in arrival order."""
        ...

    async def drop_orphan(self, vaulting_request_id: str, body: bytes) -> None:
        """Forget one orphan notification (applied to its record); gone already is fine."""
        ...

    async def events_after(
        self,
        after_event_id: int,
        *,
        limit: int,
        owner: str | None = None,
        vaulting_request_ids: frozenset[str] | None = None,
    ) -> list[LogEntry]:
        """Up to ``limit`` events with ids above ``after_event_id``, in ascending id order;
        :class:`EventsPrunedError` when ``after_event_id`` is below the log's floor.

        ``owner`` keeps one caller's events (``None``: every owner); ``vaulting_request_ids``
        keeps events of those ids (``None``: every id; an empty set matches nothing). An
        event whose row does not decode here is an :class:`UnreadableEvent` in its place
        (logged once, :mod:`vault_service.store.event_rows`), never left out: a reader must
        not move past an event it could not read without knowing it did.
        """
        ...

    async def last_event_id(self) -> int:
        """The id of the newest event a reader can see, or the log's floor when every event
        was pruned (0 when the log never held one).

        Resuming from it with ``events_after`` never skips an event.
        """
        ...

    async def events_floor(self) -> int:
        """The newest pruned event id (0: none pruned); a position below it has lost events,
        and ``events_after`` from it raises :class:`EventsPrunedError`."""
        ...

    async def prune(
        self, *, events_before: datetime, records_before: datetime | None, batch_size: int
    ) -> Pruned | None:
        """One retention pass, in batches of ``batch_size`` rows
        (:mod:`vault_service.store.pruning`): events and orphan notifications older than
        ``events_before``; final records unchanged since before ``records_before`` (``None``:
        none), with their events and card data. Then the backend reclaims the space if it
        must (SQLite). ``None`` when another replica is pruning now: one at a time."""
        ...

    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta
    ) -> list[VaultingRecord | UnreadableRecord]:
        """Claim up to ``limit`` scheduled (not ``reconciled``) records whose next check is at
        or before ``now``, the longest overdue first, for ``lease``; a claimed row that does
        not decode comes back as an :class:`UnreadableRecord`, in its place.

        Claiming moves each record's next check to ``now + lease`` in the same atomic step, so
        a concurrent caller (another replica's reconciler) never gets the same record while the
        lease runs. The claimant ends the lease early with :meth:`reschedule`, or the record
        becomes final and leaves the schedule; a claimant that dies simply lets it lapse, and
        the record is due again. ``lease`` must be positive.
        """
        ...

    async def reschedule(self, vaulting_request_id: str, next_check_at: datetime) -> None:
        """Set when the reconciler next looks at a record.

        A record that became final meanwhile stays off the schedule (a reconciler racing a
        notification must not put it back). Raises :class:`RecordNotFoundError` for an
        unknown id.
        """
        ...

    def creation_lock(
        self, vaulting_request_id: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Exclusive, across every replica sharing the database, for one vaulting request id.

        CreateSession holds it around "look the id up, call Antom, insert the record", so that
        the same id arriving on two replicas at once makes one Antom call: the second caller
        waits, then finds the record. Locks of different ids are independent. Leaving the
        block releases it, also when the holder is cancelled, whether it held the lock or was
        still waiting for it; a replica that dies holding it releases it with its connection.
        Raises :class:`StoreClosedError` on entry once the store is closed.
        """
        ...


def check_limit(limit: int) -> None:
    """The contract's rule for every ``limit`` argument, shared by the backends."""
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")


def check_lease(lease: timedelta) -> None:
    """The contract's rule for ``claim_due``'s lease: a claim must keep the record away from
    other claimants for some time, or two replicas could claim it at once."""
    if lease <= timedelta(0):
        raise ValueError(f"lease must be positive, not {lease}")
