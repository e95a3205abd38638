"""Waking live ``StreamResults`` subscribers when events are committed, in this process and,
on PostgreSQL, across replicas.

The public face: :class:`EventHub` (the in-process wake-up the stream index's reader waits on) and
:class:`PostgresWakeups` (one LISTEN connection per replica feeding the hub).
"""

from vault_service.events.hub import EventHub
from vault_service.events.postgres import ListenUnavailableError, PostgresWakeups

__all__ = ["EventHub", "ListenUnavailableError", "PostgresWakeups"]
