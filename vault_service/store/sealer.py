"""One store's sealing policy: its data key ring and whether legacy plaintext still reads.

:mod:`vault_service.store.sealing` says how each column is sealed and opened, as functions of
a ring and a plaintext flag; a store decides both once, when it opens, and every value it
writes or reads goes through the :class:`Sealer` holding them, so no call site passes either.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from vault_service.domain import VaultingRecord
from vault_service.store.base import LogEntry, StoredOrphan, UnreadableRecord
from vault_service.store.codec import RecordRow, encode_record, record_from_row, record_to_row
from vault_service.store.data_keys import DataKeyRing
from vault_service.store.event_rows import EventRow, ReportedEvents, log_entries
from vault_service.store.sealing import (
    EVENT_SEALED,
    EVENT_TOKEN,
    LegacyRows,
    ResealPlan,
    SealedColumn,
    UpgradePlan,
    open_record_row,
    plan_reseal,
    plan_upgrade,
    read_claimed_row,
    read_orphan,
    seal_body,
    seal_record_row,
    seal_token,
)


class Sealer:
    """Seals what a store writes and opens what it reads, with one ring and one policy."""

    __slots__ = ("_keys", "_plaintext")

    def __init__(self, keys: DataKeyRing, *, plaintext: bool) -> None:
        self._keys = keys
        # Whether legacy plaintext card data reads (sealing module docstring), as of open.
        self._plaintext = plaintext

    @property
    def allows_plaintext(self) -> bool:
        return self._plaintext

    def seal_record(self, record: VaultingRecord) -> RecordRow:
        """``record`` as its ``records`` row stores it."""
        return seal_record_row(self._keys, record_to_row(record))

    def open_record(self, row: RecordRow) -> VaultingRecord:
        return record_from_row(open_record_row(self._keys, row, plaintext=self._plaintext))

    def open_claimed(self, row: RecordRow) -> VaultingRecord | UnreadableRecord:
        """A claimed row, or the report that it does not decode (``claim_due``)."""
        return read_claimed_row(self._keys, row, plaintext=self._plaintext)

    def seal_change(
        self, record: VaultingRecord
    ) -> tuple[RecordRow, tuple[str, str | None, str | None]]:
        """``record`` as its ``records`` row stores it, and the snapshot, sealed card token and
        sealed document of the event about it, their JSON encoded once for both."""
        row, snapshot = encode_record(record)
        rid = record.vaulting_request_id
        event_token = seal_token(self._keys, EVENT_TOKEN, rid, row.card_token)
        event_sealed = seal_token(self._keys, EVENT_SEALED, rid, row.sealed)
        return seal_record_row(self._keys, row), (snapshot, event_token, event_sealed)

    def open_events(self, rows: list[EventRow], reported: ReportedEvents) -> list[LogEntry]:
        return log_entries(rows, self._keys, reported, plaintext=self._plaintext)

    def seal_body(self, vaulting_request_id: str, body: bytes) -> bytes:
        return seal_body(self._keys, vaulting_request_id, body)

    def open_orphan(
        self, vaulting_request_id: str, stored: bytes, received_at: datetime
    ) -> StoredOrphan:
        """An orphan notification, or the report that its body does not open."""
        return read_orphan(
            self._keys, vaulting_request_id, stored, received_at, plaintext=self._plaintext
        )

    def plan_reseal(
        self, column: SealedColumn, rows: Iterable[tuple[str | int, str, str | bytes]]
    ) -> ResealPlan:
        return plan_reseal(self._keys, column, rows, plaintext=self._plaintext)

    def plan_upgrade(
        self, legacy: LegacyRows, rows: Iterable[tuple[str | int, str, tuple[str | None, ...]]]
    ) -> UpgradePlan:
        return plan_upgrade(self._keys, legacy, rows)
