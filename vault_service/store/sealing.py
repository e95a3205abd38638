"""Which stored columns hold card data, and how each value is bound to its row when sealed.

Five columns carry card data: ``records.card_token`` and ``events.card_token`` (the card
token), ``records.sealed`` and ``events.sealed`` (the JSON document of every other sealed field,
:mod:`vault_service.store.sealed_fields` says which and why), and the raw notifyVaulting body
of an orphan notification (``orphan_notifications.body``). Every backend seals them with the same
:class:`~vault_service.store.data_keys.DataKeyRing` calls and the same contexts, so the stored
form stays independent of the backend, like the rest of :mod:`vault_service.store.codec`.

The context (associated data) is the column's name and the row's vaulting request id: a
ciphertext copied into another request's row, or into another column, fails to authenticate
and reads as :class:`~vault_service.store.base.CorruptDataError` instead of handing one
buyer's card to another session. An event is bound to its request, not its id, because the id
is drawn inside the insert that stores the ciphertext.

Rows written before the sealed fields were split off (schema version 1) have no ``sealed``
value and hold those fields in their clear JSON columns: they are legacy plaintext too, and a
rotation moves their fields into a sealed document (:data:`LEGACY_ROWS`).

Values written before encryption (legacy plaintext) still read as they are, until the database
records that it holds none: ``meta`` key :data:`PLAINTEXT_STATE_KEY` = :data:`NO_PLAINTEXT`,
set when a database is created (it has no legacy rows), when migrating (``migrate`` or
auto-migration) finds no plaintext value, and by a rotation (``vault-service rotate-data-key``)
that sealed every value and found nothing it could not read. Until then the service logs a
warning each time it opens the database. From then on a plaintext value can only be a writer
that forgot to encrypt or a database-level swap of ciphertext for plaintext, so it reads as
:class:`PlaintextCardDataError` instead of being served. A store reads the state when it
opens: replicas started before a rotation set it enforce it from their next start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from vault_service.domain import VaultingRecord
from vault_service.store.base import (
    CorruptDataError,
    OrphanNotification,
    StoredOrphan,
    UnreadableOrphan,
    UnreadableRecord,
)
from vault_service.store.codec import (
    RecordRow,
    record_from_row,
    split_legacy_record,
    split_legacy_snapshot,
)
from vault_service.store.data_keys import (
    ENVELOPE_PREFIX,
    DataKeyRing,
    UnknownDataKeyError,
    is_envelope,
)
from vault_service.store.migrations import PLAINTEXT_STATE_KEY

NO_PLAINTEXT: Final = "none"
SELECT_PLAINTEXT_STATE: Final = f"SELECT value FROM meta WHERE key = '{PLAINTEXT_STATE_KEY}'"  # noqa: S608
MARK_NEW_DATABASE: Final = (
    f"INSERT INTO meta (key, value) VALUES ('{PLAINTEXT_STATE_KEY}', '{NO_PLAINTEXT}')"  # noqa: S608
)
"""Run with a database's first migration only: a database created by this build has no legacy
rows. A database migrated earlier may have some, so it waits for a migration or a rotation to
find none (:func:`mark_plaintext_free_sql`)."""


class PlaintextCardDataError(CorruptDataError):
    """A card value is plaintext in a database that records holding none; the message names
    the column and the row, never the value."""

    def __init__(self, column: SealedColumn, vaulting_request_id: str) -> None:
        super().__init__(
            f"{column.name} of vaulting request {vaulting_request_id!r} is not encrypted, but "
            "this database holds only encrypted card data: it was written or altered outside "
            "vault-service"
        )


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A column holding sealed card data: ``key`` orders its table for batched rotation and
    ``first`` is below every key; ``binary`` says whether the column holds bytes (the body) or
    text (a token, a JSON document); ``required`` that every row this build writes has a
    value (a row without one is a legacy row)."""

    table: str
    key: str
    column: str
    first: str | int
    binary: bool
    required: bool = False

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def context(self, vaulting_request_id: str) -> bytes:
        # The column name has no ':', so the id that follows cannot forge another column's context.
        return f"{self.name}:{vaulting_request_id}".encode()


RECORD_TOKEN: Final = SealedColumn(
    "records", "vaulting_request_id", "card_token", first="", binary=False
)
EVENT_TOKEN: Final = SealedColumn("events", "id", "card_token", first=0, binary=False)
ORPHAN_BODY: Final = SealedColumn("orphan_notifications", "id", "body", first=0, binary=True)
RECORD_SEALED: Final = SealedColumn(
    "records", "vaulting_request_id", "sealed", first="", binary=False, required=True
)
EVENT_SEALED: Final = SealedColumn("events", "id", "sealed", first=0, binary=False, required=True)
SEALED_COLUMNS: Final = (RECORD_TOKEN, EVENT_TOKEN, ORPHAN_BODY, RECORD_SEALED, EVENT_SEALED)


@dataclass(frozen=True, slots=True)
class LegacyRows:
    """The rows of ``sealed``'s table written before the split (no ``sealed`` value), and how
    one is rewritten: ``split`` takes the stored text of ``columns`` and returns their new
    values and the plaintext sealed document."""

    sealed: SealedColumn
    columns: tuple[str, ...]
    split: Callable[[tuple[str | None, ...]], tuple[tuple[str | None, ...], str]]


def _split_record(values: tuple[str | None, ...]) -> tuple[tuple[str | None, ...], str]:
    card, acquirer_info = values
    if acquirer_info is None:
        raise CorruptDataError("acquirer_info is missing")
    card, acquirer_info, sealed = split_legacy_record(card, acquirer_info)
    return (card, acquirer_info), sealed


def _split_event(values: tuple[str | None, ...]) -> tuple[tuple[str | None, ...], str]:
    (snapshot,) = values
    if snapshot is None:
        raise CorruptDataError("the snapshot is missing")
    snapshot, sealed = split_legacy_snapshot(snapshot)
    return (snapshot,), sealed


LEGACY_ROWS: Final = {
    RECORD_SEALED: LegacyRows(RECORD_SEALED, ("card", "acquirer_info"), _split_record),
    EVENT_SEALED: LegacyRows(EVENT_SEALED, ("snapshot",), _split_event),
}


@dataclass(frozen=True, slots=True)
class ResealCount:
    """What one rotation pass over a column did.

    ``rewritten`` values were sealed under the active key; ``changed`` were candidates that a
    concurrent write replaced before the pass could (the writer sealed them itself, under the
    key it had: a re-run checks them).
    """

    column: SealedColumn
    rewritten: int
    changed: int
    unreadable: tuple[UnreadableValue, ...] = ()


@dataclass(frozen=True, slots=True)
class UnreadableValue:
    """A stored value a rotation could not open (a key missing from the ring, a tampered or
    misplaced ciphertext, forbidden plaintext): left as it is, and reported by ``key``."""

    column: SealedColumn
    key: str | int
    vaulting_request_id: str
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.column.name} at {self.column.key} {self.key!r} "
            f"(vaulting request {self.vaulting_request_id!r}): {self.reason}"
        )


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``rotate-data-key`` did: a count per column and whether the database now records
    holding no plaintext (only after a pass that left no value unreadable)."""

    counts: tuple[ResealCount, ...]
    plaintext_free: bool

    @property
    def unreadable(self) -> tuple[UnreadableValue, ...]:
        return tuple(value for count in self.counts for value in count.unreadable)


def mark_plaintext_free_sql(as_bytes: str) -> str:
    """One statement that records "no plaintext" in ``meta`` if, and only if, no sealed column
    holds a value without the envelope prefix: the check and the write are one atomic step.

    ``as_bytes`` is the dialect's cast of a text literal ``{}`` to bytes (for the orphan
    body, a blob: SQLite never finds a blob equal to a text).
    """
    text_prefix = f"'{ENVELOPE_PREFIX}'"
    binary_prefix = as_bytes.format(text_prefix)
    plaintext = [
        f"NOT EXISTS (SELECT 1 FROM {column.table} WHERE "  # noqa: S608
        + (f"{column.column} IS NULL OR " if column.required else "")
        + f"substr({column.column}, 1, {len(ENVELOPE_PREFIX)}) <> "
        f"{binary_prefix if column.binary else text_prefix})"
        for column in SEALED_COLUMNS
    ]
    return (
        f"INSERT INTO meta (key, value) SELECT '{PLAINTEXT_STATE_KEY}', '{NO_PLAINTEXT}' "
        f"WHERE {' AND '.join(plaintext)} ON CONFLICT (key) DO NOTHING"
    )


def allows_plaintext(state: str | None) -> bool:
    """Whether a database whose ``meta`` plaintext state is ``state`` may hold legacy
    plaintext (no state: created before the state existed and not rotated since)."""
    return state != NO_PLAINTEXT


def seal_token(
    keys: DataKeyRing, column: SealedColumn, vaulting_request_id: str, token: str | None
) -> str | None:
    """The stored form of a card token (``None``: no card)."""
    if token is None:
        return None
    return keys.seal(token.encode(), column.context(vaulting_request_id))


def open_token(
    keys: DataKeyRing,
    column: SealedColumn,
    vaulting_request_id: str,
    stored: str | None,
    *,
    plaintext: bool,
) -> str | None:
    """The card token a stored value holds; legacy plaintext reads as is when ``plaintext``
    (the database may hold some) and raises :class:`PlaintextCardDataError` otherwise."""
    if stored is None:
        return None
    if not is_envelope(stored):
        if plaintext:
            return stored
        raise PlaintextCardDataError(column, vaulting_request_id)
    opened = keys.open(stored, column.context(vaulting_request_id))
    try:
        return opened.decode()
    except UnicodeDecodeError:
        raise CorruptDataError(f"a sealed card token in {column.name} is not UTF-8") from None


def open_sealed_document(
    keys: DataKeyRing,
    column: SealedColumn,
    vaulting_request_id: str,
    stored: str | None,
    *,
    plaintext: bool,
) -> str | None:
    """The sealed-fields document of a row (``None``: a legacy row, which reads only while
    the database may hold plaintext, as :func:`open_token`)."""
    if stored is None and not plaintext:
        raise PlaintextCardDataError(column, vaulting_request_id)
    return open_token(keys, column, vaulting_request_id, stored, plaintext=plaintext)


def seal_body(keys: DataKeyRing, vaulting_request_id: str, body: bytes) -> bytes:
    """The stored form of an orphan notification's body: its envelope as ASCII bytes."""
    return keys.seal(body, ORPHAN_BODY.context(vaulting_request_id)).encode("ascii")


def open_body(
    keys: DataKeyRing, vaulting_request_id: str, stored: bytes, *, plaintext: bool
) -> bytes:
    """An orphan notification's body (a legacy plaintext body, JSON, reads as is when
    ``plaintext``, as :func:`open_token`)."""
    envelope = _ascii(stored)
    if envelope is None or not is_envelope(envelope):
        if plaintext:
            return stored
        raise PlaintextCardDataError(ORPHAN_BODY, vaulting_request_id)
    return keys.open(envelope, ORPHAN_BODY.context(vaulting_request_id))


def read_orphan(
    keys: DataKeyRing,
    vaulting_request_id: str,
    stored: bytes,
    received_at: datetime,
    *,
    plaintext: bool,
) -> StoredOrphan:
    """An orphan notification with its body opened; one whose body does not open is reported
    in its place instead of failing the read of every orphan read with it."""
    try:
        body = open_body(keys, vaulting_request_id, stored, plaintext=plaintext)
    except (CorruptDataError, UnknownDataKeyError) as exc:
        return UnreadableOrphan(
            vaulting_request_id, received_at, type(exc).__name__, getattr(exc, "key_id", None)
        )
    return OrphanNotification(vaulting_request_id, body, received_at)


def seal_record_row(keys: DataKeyRing, row: RecordRow) -> RecordRow:
    """``row`` as stored: its card token and sealed document sealed."""
    return row._replace(
        card_token=seal_token(keys, RECORD_TOKEN, row.vaulting_request_id, row.card_token),
        sealed=seal_token(keys, RECORD_SEALED, row.vaulting_request_id, row.sealed),
    )


def open_record_row(keys: DataKeyRing, row: RecordRow, *, plaintext: bool) -> RecordRow:
    """A stored ``records`` row with its card token and sealed document in plaintext, for
    the codec."""
    rid = row.vaulting_request_id
    return row._replace(
        card_token=open_token(keys, RECORD_TOKEN, rid, row.card_token, plaintext=plaintext),
        sealed=open_sealed_document(keys, RECORD_SEALED, rid, row.sealed, plaintext=plaintext),
    )


def read_claimed_row(
    keys: DataKeyRing, row: RecordRow, *, plaintext: bool
) -> VaultingRecord | UnreadableRecord:
    """A row ``claim_due`` claimed, decoded; one that does not decode is reported in its
    place instead of failing the claim of every row claimed with it."""
    try:
        return record_from_row(open_record_row(keys, row, plaintext=plaintext))
    except (CorruptDataError, UnknownDataKeyError) as exc:
        return UnreadableRecord(
            row.vaulting_request_id, type(exc).__name__, getattr(exc, "key_id", None)
        )


def reseal(
    keys: DataKeyRing,
    column: SealedColumn,
    vaulting_request_id: str,
    stored: str | bytes,
    *,
    plaintext: bool,
) -> str | bytes | None:
    """``stored`` sealed again under the active key, or ``None`` when it already is.

    Legacy plaintext is sealed (when ``plaintext``: in a database recorded as holding none it
    is refused, not laundered into ciphertext); a value under an old key is opened with it
    first, so a key missing from the ring fails here (naming the key id) instead of losing the
    value.
    """
    if isinstance(stored, bytes):
        envelope = _ascii(stored)
        if envelope is not None and keys.is_current(envelope):
            return None
        body = open_body(keys, vaulting_request_id, stored, plaintext=plaintext)
        return seal_body(keys, vaulting_request_id, body)
    if keys.is_current(stored):
        return None
    token = open_token(keys, column, vaulting_request_id, stored, plaintext=plaintext)
    return seal_token(keys, column, vaulting_request_id, token)


def reseal_or_report(
    keys: DataKeyRing,
    column: SealedColumn,
    key: str | int,
    vaulting_request_id: str,
    stored: str | bytes,
    *,
    plaintext: bool,
) -> str | bytes | UnreadableValue | None:
    """:func:`reseal`, with a value that cannot be opened reported instead of raised, so that
    one bad row neither stops the rotation of the others nor lets it claim success."""
    try:
        return reseal(keys, column, vaulting_request_id, stored, plaintext=plaintext)
    except (CorruptDataError, UnknownDataKeyError) as exc:
        # The messages of these errors name key ids, columns and rows, never a value.
        return UnreadableValue(column, key, vaulting_request_id, str(exc))


@dataclass(frozen=True, slots=True)
class ResealPlan:
    """What one batch of rows needs: ``swaps`` as (row key, stored value, new value), and the
    values that could not be opened."""

    swaps: list[tuple[str | int, str | bytes, str | bytes]]
    unreadable: list[UnreadableValue]


def plan_reseal(
    keys: DataKeyRing,
    column: SealedColumn,
    rows: Iterable[tuple[str | int, str, str | bytes]],
    *,
    plaintext: bool,
) -> ResealPlan:
    """The swaps and reports for ``rows`` of (row key, vaulting request id, stored value)."""
    plan = ResealPlan([], [])
    for key, vaulting_request_id, stored in rows:
        new = reseal_or_report(keys, column, key, vaulting_request_id, stored, plaintext=plaintext)
        if isinstance(new, UnreadableValue):
            plan.unreadable.append(new)
        elif new is not None:
            plan.swaps.append((key, stored, new))
    return plan


@dataclass(frozen=True, slots=True)
class UpgradePlan:
    """What one batch of legacy rows needs: ``writes`` as (row key, new values of the
    layout's columns, sealed document), and the rows that could not be split."""

    writes: list[tuple[str | int, tuple[str | None, ...], str]]
    unreadable: list[UnreadableValue]


def plan_upgrade(
    keys: DataKeyRing,
    legacy: LegacyRows,
    rows: Iterable[tuple[str | int, str, tuple[str | None, ...]]],
) -> UpgradePlan:
    """The writes and reports for legacy ``rows`` of (row key, vaulting request id, stored
    text of ``legacy.columns``): each split, its sealed document sealed under the active key."""
    plan = UpgradePlan([], [])
    for key, vaulting_request_id, values in rows:
        try:
            new_values, document = legacy.split(values)
        except CorruptDataError as exc:
            plan.unreadable.append(
                UnreadableValue(legacy.sealed, key, vaulting_request_id, str(exc))
            )
            continue
        sealed = keys.seal(document.encode(), legacy.sealed.context(vaulting_request_id))
        plan.writes.append((key, new_values, sealed))
    return plan


@dataclass(frozen=True, slots=True)
class ResealedBatch:
    """One batch as a backend carried it out: how many rows it read (fewer than the batch
    size ends the column), the last row's key, how many writes it planned and how many took
    (compare and swap), and the values it could not open."""

    rows: int
    last_key: object
    planned: int
    swapped: int
    unreadable: list[UnreadableValue]


Batch = Callable[[SealedColumn, object], Awaitable[ResealedBatch]]


async def reseal_columns(
    batch: Batch,
    *,
    upgrade: Batch,
    batch_size: int,
    mark_plaintext_free: Callable[[], Awaitable[bool]],
) -> Rotation:
    """Every sealed column, batch by batch from its first key, through the backend's
    ``batch(column, after_key)``, after its legacy rows (:data:`LEGACY_ROWS`) through
    ``upgrade(column, after_key)``; the database is marked plaintext-free only after a pass
    that left nothing unreadable."""
    counts = []
    for column in SEALED_COLUMNS:
        rewritten = changed = 0
        unreadable: list[UnreadableValue] = []
        for run in (upgrade, batch) if column in LEGACY_ROWS else (batch,):
            after: object = column.first
            while True:
                done = await run(column, after)
                rewritten += done.swapped
                changed += done.planned - done.swapped
                unreadable += done.unreadable
                if done.rows < batch_size:
                    break
                after = done.last_key
        counts.append(ResealCount(column, rewritten, changed, tuple(unreadable)))
    if any(count.unreadable for count in counts):
        return Rotation(tuple(counts), plaintext_free=False)
    return Rotation(tuple(counts), plaintext_free=await mark_plaintext_free())


def _ascii(stored: bytes) -> str | None:
    """A stored body as text when it can be an envelope (bodies sealed by this module)."""
    try:
        return stored.decode("ascii")
    except UnicodeDecodeError:
        return None
