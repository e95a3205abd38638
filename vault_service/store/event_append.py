"""How the PostgreSQL backend appends an event: in commit order, announced on
:data:`EVENTS_CHANNEL`.

Appends are serialised. An event id comes from an identity sequence when the row is inserted,
but sequences hand out ids at insert time, not at commit: with two concurrent writers, id 8 can
commit and be read before id 7 commits, and a reader resuming after 8 would never see 7.
``apply`` therefore takes one transaction-scoped advisory lock
(:data:`~vault_service.store.advisory_locks.EVENT_APPEND_LOCK`) in the statement that inserts
the event, after the record update, and keeps it until commit. Appends then get their ids in
commit order, and a reader that has seen id N can never later see a new id below N, so a cursor
stays a single integer, ``max(id)`` is a safe resume point, and ``events_after`` is a plain
index range scan. The alternative, a commit-safe horizon (read only ids below the oldest
in-flight ``xid8``), keeps appends parallel but makes every cursor two-dimensional and holds
readers back behind any slow transaction. The price is a serialisation point of one statement
and one commit per event, whereas vaulting results are low-volume (a few events per saved
card); the measurements are in ``bench/results/store.md``.

A batch of applies committed together (``apply_batch``, a group commit) appends all its
events in one statement (:data:`APPEND_EVENTS`), under one take of the same lock, with one
NOTIFY carrying the batch's highest id.

The same statement NOTIFYs :data:`EVENTS_CHANNEL` with the event id (a hint only; readers read
the log), which PostgreSQL delivers exactly when, and only if, the transaction commits. The
store owns the channel's name because it sends on it; the listeners take it from
:mod:`vault_service.store`.
"""

from __future__ import annotations

from typing import Final

EVENTS_CHANNEL: Final = "vault_events"
"""The NOTIFY channel of event appends; the payload is the new event's id (a hint only)."""

APPEND_EVENT: Final = f"""
    WITH serialised AS MATERIALIZED (SELECT pg_advisory_xact_lock($1::bigint)),
    appended AS (
        INSERT INTO events
            (vaulting_request_id, owner, source, occurred_at, snapshot, card_token, sealed)
        SELECT $2::text, $3::text, $4::text, $5::timestamptz, $6::jsonb, $7::text, $8::text
        FROM serialised
        RETURNING id
    )
    SELECT id, pg_notify('{EVENTS_CHANNEL}', id::text) FROM appended
"""  # noqa: S608
"""One statement takes the append lock ($1), then inserts (the identity default is evaluated
for the row the locked CTE produces, so the id is drawn under the lock), then NOTIFYs. The lock
is transaction-scoped: it is released only after COMMIT has made the event visible."""

APPEND_EVENTS: Final = f"""
    WITH serialised AS MATERIALIZED (SELECT pg_advisory_xact_lock($1::bigint)),
    appended AS (
        INSERT INTO events
            (vaulting_request_id, owner, source, occurred_at, snapshot, card_token, sealed)
        SELECT e.vaulting_request_id, e.owner, e.source, e.occurred_at, e.snapshot,
               e.card_token, e.sealed
        FROM serialised,
             unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::jsonb[],
                    $7::text[], $8::text[])
             WITH ORDINALITY
             AS e(vaulting_request_id, owner, source, occurred_at, snapshot, card_token, sealed, n)
        ORDER BY e.n
        RETURNING id
    )
    SELECT ids, pg_notify('{EVENTS_CHANNEL}', last::text)
    FROM (SELECT array_agg(id ORDER BY id) AS ids, max(id) AS last FROM appended) AS batch
"""  # noqa: S608
""":data:`APPEND_EVENT` for a batch: the events' columns as arrays ($2 to $8, one element per
event), inserted in array order, so that the ids (drawn row by row under the lock) follow it:
the sorted ids are the events' ids in that order. One NOTIFY with the highest id."""
