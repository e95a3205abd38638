"""Which stored columns hold card data, and how each value is bound to its row when sealed.

Three columns carry a card token: ``records.card_token``, ``events.card_token``, and the raw
notifyVaulting body of an orphan notification (``orphan_notifications.body``, whose
``paymentMethodDetail`` holds the token). Every backend seals them with the same
:class:`~vault_service.store.data_keys.DataKeyRing` calls and the same contexts, so the stored
form stays independent of the backend, like the rest of :mod:`vault_service.store.codec`.

The context (associated data) is the column's name and the row's vaulting request id: a
ciphertext copied into another request's row, or into another column, fails to authenticate
and reads as :class:`~vault_service.store.base.CorruptDataError` instead of handing one
buyer's card to another session. An event is bound to its request, not its id, because the id
is drawn inside the insert that stores the ciphertext.

Values written before encryption (legacy plaintext) still read as they are; the rotation
(``vault-service rotate-data-key``) seals them along with values under a retired key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vault_service.store.base import CorruptDataError
from vault_service.store.codec import RecordRow
from vault_service.store.data_keys import DataKeyRing, is_envelope


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A column holding sealed card data: ``key`` orders its table for batched rotation and
    ``first`` is below every key; ``binary`` says whether the column holds bytes (the body) or
    text (a token)."""

    table: str
    key: str
    column: str
    first: str | int
    binary: bool

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
SEALED_COLUMNS: Final = (RECORD_TOKEN, EVENT_TOKEN, ORPHAN_BODY)


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


def seal_token(
    keys: DataKeyRing, column: SealedColumn, vaulting_request_id: str, token: str | None
) -> str | None:
    """The stored form of a card token (``None``: no card)."""
    if token is None:
        return None
    return keys.seal(token.encode(), column.context(vaulting_request_id))


def open_token(
    keys: DataKeyRing, column: SealedColumn, vaulting_request_id: str, stored: str | None
) -> str | None:
    """The card token a stored value holds (legacy plaintext reads as is)."""
    if stored is None or not is_envelope(stored):
        return stored
    plaintext = keys.open(stored, column.context(vaulting_request_id))
    try:
        return plaintext.decode()
    except UnicodeDecodeError:
        raise CorruptDataError(f"a sealed card token in {column.name} is not UTF-8") from None


def seal_body(keys: DataKeyRing, vaulting_request_id: str, body: bytes) -> bytes:
    """The stored form of an orphan notification's body: its envelope as ASCII bytes."""
    return keys.seal(body, ORPHAN_BODY.context(vaulting_request_id)).encode("ascii")


def open_body(keys: DataKeyRing, vaulting_request_id: str, stored: bytes) -> bytes:
    """An orphan notification's body (a legacy plaintext body, JSON, reads as is)."""
    envelope = _ascii(stored)
    if envelope is None or not is_envelope(envelope):
        return stored
    return keys.open(envelope, ORPHAN_BODY.context(vaulting_request_id))


def seal_record_row(keys: DataKeyRing, row: RecordRow) -> RecordRow:
    """``row`` as stored: its card token sealed."""
    return row._replace(
        card_token=seal_token(keys, RECORD_TOKEN, row.vaulting_request_id, row.card_token)
    )


def open_record_row(keys: DataKeyRing, row: RecordRow) -> RecordRow:
    """A stored ``records`` row with its card token in plaintext, for the codec."""
    return row._replace(
        card_token=open_token(keys, RECORD_TOKEN, row.vaulting_request_id, row.card_token)
    )


def reseal(
    keys: DataKeyRing, column: SealedColumn, vaulting_request_id: str, stored: str | bytes
) -> str | bytes | None:
    """``stored`` sealed again under the active key, or ``None`` when it already is.

    Legacy plaintext is sealed; a value under an old key is opened with it first, so a key
    missing from the ring fails here (naming the key id) instead of losing the value.
    """
    if isinstance(stored, bytes):
        envelope = _ascii(stored)
        if envelope is not None and keys.is_current(envelope):
            return None
        return seal_body(keys, vaulting_request_id, open_body(keys, vaulting_request_id, stored))
    if keys.is_current(stored):
        return None
    token = open_token(keys, column, vaulting_request_id, stored)
    return seal_token(keys, column, vaulting_request_id, token)


def _ascii(stored: bytes) -> str | None:
    """A stored body as text when it can be an envelope (bodies sealed by this module)."""
    try:
        return stored.decode("ascii")
    except UnicodeDecodeError:
        return None
