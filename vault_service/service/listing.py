"""``ListResults``: a caller's records, filtered, one keyset page at a time.

A page token names the position after which the next page starts, the last record's
``(updated_at, vaulting_request_id)``, so a page is one index range scan at any depth
(:meth:`~vault_service.store.Store.list_records`). The token also carries a fingerprint of the
listing it belongs to (the log id, whose records may be read, and the filters): a token sent
with other filters, by another caller, or to another deployment would page through a listing it
was not made for, so it is refused instead. The fingerprint is a hash, not a secret: it stops
mistakes, and access is enforced by the owner condition of every query, never by the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from vault_service.domain import ListPosition, ResultFilter, VaultingRecord
from vault_service.errors import InvalidArgumentError
from vault_service.store import Store

DEFAULT_PAGE_SIZE: Final = 50
"""Results per page when the request says 0 (the contract documents it)."""
MAX_PAGE_SIZE: Final = 500
"""The most results a page holds; a larger request is served this many (AIP-158 coerces)."""
MAX_PAGE_TOKEN_CHARS: Final = 300
_PREFIX: Final = "p1."
_FINGERPRINT_BYTES: Final = 12


class InvalidPageTokenError(InvalidArgumentError):
    """A page token that is malformed or belongs to another listing; the message says which."""

    def __init__(self, why: str) -> None:
        super().__init__({"page_token": why}, why)

    @property
    def public_message(self) -> str:
        return f"invalid page_token: {self}"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing: its records in order, and the next page's token (``""``: last)."""

    records: list[VaultingRecord]
    next_page_token: str


def page_size(requested: int) -> int:
    """The page size served for a (non-negative) requested one: default for 0, capped."""
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


async def list_page(store: Store, query: ResultFilter, page_token: str, size: int) -> Page:
    """The page of ``query`` that ``page_token`` names (``""``: the first), at most ``size``
    records; raises :class:`InvalidPageTokenError` for a token of another listing."""
    fingerprint = _fingerprint(store.log_id, query)
    after = _decode(page_token, fingerprint) if page_token else None
    # One more than asked: whether there is a next page, without an empty last page.
    records = await store.list_records(query, after=after, limit=size + 1)
    if len(records) <= size:
        return Page(records, "")
    last = records[size - 1]
    position = (last.updated_at, last.vaulting_request_id)
    return Page(records[:size], _encode(fingerprint, position))


def _fingerprint(log_id: str, query: ResultFilter) -> str:
    """What a token is bound to: the log (deployment), who reads, and every filter."""
    statuses = None if query.statuses is None else sorted(query.statuses)
    described = [
        log_id,
        query.owner,
        statuses,
        sorted(query.labels),
        _instant(query.updated_from),
        _instant(query.updated_before),
    ]
    digest = hashlib.sha256(json.dumps(described, separators=(",", ":")).encode()).digest()
    return digest[:_FINGERPRINT_BYTES].hex()


def _instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _encode(fingerprint: str, position: ListPosition) -> str:
    at, vaulting_request_id = position
    payload = json.dumps([fingerprint, at.isoformat(), vaulting_request_id], separators=(",", ":"))
    return _PREFIX + base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _decode(token: str, fingerprint: str) -> ListPosition:
    """The position in ``token``, which must be exactly what :func:`_encode` wrote for this
    listing (as with resume tokens, a lenient decoder would page from a mangled position)."""
    if not token.startswith(_PREFIX) or len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidPageTokenError("the page token is malformed")
    body = token[len(_PREFIX) :]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidPageTokenError("the page token is malformed") from None
    match decoded:
        case [str() as bound_to, str() as at_text, str() as vaulting_request_id]:
            pass
        case _:
            raise InvalidPageTokenError("the page token is malformed")
    try:
        at = datetime.fromisoformat(at_text)
    except ValueError:
        raise InvalidPageTokenError("the page token is malformed") from None
    if at.utcoffset() is None or _encode(bound_to, (at, vaulting_request_id)) != token:
        raise InvalidPageTokenError("the page token is malformed")
    if bound_to != fingerprint:
        raise InvalidPageTokenError(
            "the page token belongs to another listing: send it with the filters of the request "
            "that returned it, as the same caller"
        )
    return at, vaulting_request_id
