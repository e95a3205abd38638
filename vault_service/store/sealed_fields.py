"""Which stored fields of a vaulting record are sealed (encrypted at rest) and why: the one list.

The codec (:mod:`vault_service.store.codec`) splits a record by this table: clear fields stay
in the queryable JSON columns (``records.card``, ``events.snapshot``), sealed ones go into one
JSON document per row that :mod:`vault_service.store.sealing` encrypts into the row's
``sealed`` column (the card token keeps its own sealed ``card_token`` column). A card field
missing from :data:`CARD_FIELDS` fails a test, so a field added to ``Card`` needs a decision.

The rule, as a PCI-minded reviewer would apply it: seal what lets someone charge, impersonate
or re-identify the buyer or the card (tokens, the name and address, card identifiers and
verification data); keep in clear what describes the card *product* and is needed to operate
the service (brand, funding, issuer, and the truncated PAN PCI DSS 3.4.1 itself allows to be
shown: at most the BIN and the last four). The PAN and CVV never reach the service at all.
What is not in this table (ids, owner, session parameters and data, status, Antom's result
codes, timestamps) is service metadata, not card or buyer data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class StoredField:
    """A field of the stored record, whether it is sealed, and the reason."""

    name: str
    sealed: bool
    why: str


CARD_FIELDS: Final = (
    StoredField(
        "card_token",
        sealed=True,
        why="charges the saved card at Antom: whoever holds it can pay with it "
        "(kept in its own sealed column, records.card_token and events.card_token)",
    ),
    StoredField(
        "billing_address",
        sealed=True,
        why="the buyer's home address: personal data, and an AVS factor in card fraud",
    ),
    StoredField(
        "cardholder_name",
        sealed=True,
        why="the buyer's name: cardholder data under PCI DSS, personal data under GDPR",
    ),
    StoredField(
        "expiry_month",
        sealed=True,
        why="a card-not-present verification factor; with the clear BIN and last four it is "
        "what social engineering asks for, and nobody needs to query it",
    ),
    StoredField("expiry_year", sealed=True, why="as expiry_month"),
    StoredField(
        "fingerprint",
        sealed=True,
        why="a stable identifier of the underlying card number: it links a card across "
        "buyers, sessions and merchants",
    ),
    StoredField("brand", sealed=False, why="the card scheme, shared by millions of cards"),
    StoredField(
        "masked_card_number",
        sealed=False,
        why="the truncated PAN (at most BIN and last four), which PCI DSS 3.4.1 allows to "
        "display; operators match cards with buyers by it",
    ),
    StoredField(
        "bin",
        sealed=False,
        why="the issuer's identification number, shared by every card of a product; part of "
        "the truncation PCI DSS allows",
    ),
    StoredField("last_four", sealed=False, why="as bin: the other part of the allowed truncation"),
    StoredField("funding", sealed=False, why="credit, debit or prepaid: describes the product"),
    StoredField("issuing_country", sealed=False, why="describes the issuer, not the buyer"),
    StoredField("issuer_name", sealed=False, why="describes the issuer, not the buyer"),
)
"""Every field of :class:`~vault_service.domain.Card`."""

RECORD_FIELDS: Final = (
    StoredField(
        "acquirer_info",
        sealed=True,
        why="holds acquirerCardToken (the card's token at the acquirer, usable like the card "
        "token), acquirerFingerprint and acquirerAccountName; sealed whole, so that a key "
        "Antom adds later is sealed too rather than left in clear by default",
    ),
)
"""Fields of :class:`~vault_service.domain.VaultingRecord` outside the card that are card or
buyer data."""

SEALED_CARD_FIELDS: Final = frozenset(
    field.name for field in CARD_FIELDS if field.sealed and field.name != "card_token"
)
"""The card fields that go into the sealed document (the token has a column of its own)."""
