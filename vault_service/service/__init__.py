"""The use cases: create a vaulting session, record Antom's observations, read a result,
stream results, reconcile sessions Antom has not finished.

This is the package's public face: code outside ``vault_service.service`` imports from here, never
from its modules (tests of the package's internals aside). :mod:`.vaulting` holds the use cases and
the one place that wakes the event hub, :mod:`.observations` turns Antom's answers into domain
observations, :mod:`.streaming` serves ``StreamResults`` (fed by :mod:`.fanout`, the stream index),
:mod:`.listing` pages ``ListResults``, :mod:`.reconciler` inquires and expires unfinished sessions
and :mod:`.retention` prunes what the retention settings let go."""

from vault_service.service.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_PAGE_TOKEN_CHARS,
    InvalidPageTokenError,
    Page,
    page_size,
)
from vault_service.service.reconciler import Reconciler
from vault_service.service.retention import Pruner
from vault_service.service.streaming import (
    Checkpoint,
    EventKeyMissingError,
    ResultStreams,
    StreamedEvent,
    StreamItem,
    UnreadableItem,
)
from vault_service.service.vaulting import CreatedSession, VaultingService

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_PAGE_TOKEN_CHARS",
    "Checkpoint",
    "CreatedSession",
    "EventKeyMissingError",
    "InvalidPageTokenError",
    "Page",
    "Pruner",
    "Reconciler",
    "ResultStreams",
    "StreamItem",
    "StreamedEvent",
    "UnreadableItem",
    "VaultingService",
    "page_size",
]
