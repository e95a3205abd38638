"""The PostgreSQL advisory lock keys vault-service takes, each in a key space of its own.

PostgreSQL keeps single-bigint keys apart from two-int4 keys. The service's fixed locks (the
event append, migrations) are single bigint keys; every creation lock is the two-int4 key
``(CREATION_LOCK_SPACE, hashtext(id))``, a key space the fixed locks never enter, so no
caller-chosen id can hash onto the append lock and stall every append for the length of an
Antom call. Two ids sharing a 32-bit hash only serialise their own creations.
"""

from __future__ import annotations

import hashlib
from typing import Final


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key, unlikely to collide with another program's."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


EVENT_APPEND_LOCK: Final = _advisory_key("vault-service:event-append")
"""Serialises event appends (:mod:`vault_service.store.event_append`)."""
MIGRATION_LOCK: Final = _advisory_key("vault-service:migrate")
"""Held while migrating (exclusive) or checking the schema (shared)."""
PRUNER_LOCK: Final = _advisory_key("vault-service:prune")
"""Held by the one replica running a retention pass (:mod:`vault_service.store.pruning`)."""
CREATION_LOCK_SPACE: Final = _advisory_key("vault-service:create-session") >> 32
"""The first int4 of every creation lock's two-int4 key."""
