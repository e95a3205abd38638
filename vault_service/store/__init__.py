"""Persistence: the :class:`Store` contract, its backends, migrations and the event log."""

from vault_service.store.base import (
    CorruptDataError,
    DatabaseUnavailableError,
    OrphanNotification,
    RecordExistsError,
    RecordNotFoundError,
    SchemaVersionError,
    Store,
    StoreBusyError,
    StoreClosedError,
    StoreError,
    UnreadableRecord,
)
from vault_service.store.postgres import EVENTS_CHANNEL

__all__ = [
    "EVENTS_CHANNEL",
    "CorruptDataError",
    "DatabaseUnavailableError",
    "OrphanNotification",
    "RecordExistsError",
    "RecordNotFoundError",
    "SchemaVersionError",
    "Store",
    "StoreBusyError",
    "StoreClosedError",
    "StoreError",
    "UnreadableRecord",
]
