"""Persistence: the :class:`Store` contract, its backends, migrations and the event log.

This is the package's public face: code outside ``vault_service.store`` imports from here,
never from its modules (tests of the store's internals aside).
"""

from vault_service.store.base import (
    Applied,
    CorruptDataError,
    DatabaseUnavailableError,
    EventsPrunedError,
    LogEntry,
    OrphanNotification,
    Pruned,
    RecordExistsError,
    RecordNotFoundError,
    SchemaVersionError,
    Store,
    StoreBusyError,
    StoreClosedError,
    StoredOrphan,
    StoreError,
    StoreUnavailableError,
    Unreadable,
    UnreadableEvent,
    UnreadableOrphan,
    UnreadableRecord,
    entry_owner,
    entry_request_id,
)
from vault_service.store.data_keys import (
    DataKeyFileError,
    DataKeyRing,
    UnknownDataKeyError,
    add_data_key,
    envelope_key_id,
    read_data_key_file,
)
from vault_service.store.event_append import EVENTS_CHANNEL
from vault_service.store.factory import migrate, open_store, rotate_data_key
from vault_service.store.postgres import PostgresStore
from vault_service.store.sealing import Rotation
from vault_service.store.sqlite import SQLiteStore

__all__ = [
    "EVENTS_CHANNEL",
    "Applied",
    "CorruptDataError",
    "DataKeyFileError",
    "DataKeyRing",
    "DatabaseUnavailableError",
    "EventsPrunedError",
    "LogEntry",
    "OrphanNotification",
    "PostgresStore",
    "Pruned",
    "RecordExistsError",
    "RecordNotFoundError",
    "Rotation",
    "SQLiteStore",
    "SchemaVersionError",
    "Store",
    "StoreBusyError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "StoredOrphan",
    "UnknownDataKeyError",
    "Unreadable",
    "UnreadableEvent",
    "UnreadableOrphan",
    "UnreadableRecord",
    "add_data_key",
    "entry_owner",
    "entry_request_id",
    "envelope_key_id",
    "migrate",
    "open_store",
    "read_data_key_file",
    "rotate_data_key",
]
