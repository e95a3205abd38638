"""Persistence: the :class:`Store` contract, its backends, migrations and the event log."""

from vault_service.store.base import (
    CorruptDataError,
    OrphanNotification,
    RecordExistsError,
    RecordNotFoundError,
    SchemaVersionError,
    Store,
    StoreClosedError,
    StoreError,
)

__all__ = [
    "CorruptDataError",
    "OrphanNotification",
    "RecordExistsError",
    "RecordNotFoundError",
    "SchemaVersionError",
    "Store",
    "StoreClosedError",
    "StoreError",
]
