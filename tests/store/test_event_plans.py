"""How the event log is read: a filtered stream's resume is an index range on its ids, on
both backends, never a walk through its owner's whole history."""

from __future__ import annotations

import json
from typing import Any

from tests.store.backends import Backend
from tests.store.strategies import T0, new_record, observe
from vault_service.domain import VaultingStatus
from vault_service.store import Store
from vault_service.store.sql_store import SQLStore, events_statement

HISTORY = 300
"""Sessions of the owner's history, two events each."""


async def test_a_filtered_resume_reads_its_ids_through_the_request_index(
    backend: Backend, store: Store
) -> None:
    """Regression: with the owner and the ids both in the query, SQLite walked the owner's
    index (``events_by_owner``: every event of the caller since the position) and filtered
    each row by id, so a stream filtered to one id resuming after an old token read the
    caller's whole history. The ids now pick the rows (``events_by_request``) and the owner
    only filters them (``+owner`` on SQLite), on both backends."""
    for n in range(HISTORY):
        rid = f"vr-{n:04}"
        await store.insert(new_record(rid, owner="alice"), next_check_at=T0)
        await store.apply(rid, observe(VaultingStatus.PROCESSING))
        await store.apply(rid, observe(VaultingStatus.SUCCEEDED))
    await backend.execute("ANALYZE")
    assert isinstance(store, SQLStore)
    sql = events_statement(store.dialect, owner=True, ids=True)
    ids = store.dialect.texts(frozenset({"vr-0007"}))
    explain = "EXPLAIN QUERY PLAN " if backend.name == "sqlite" else "EXPLAIN (FORMAT JSON) "
    async with store._session() as db:
        plan = await db.fetch(explain + sql, 0, "alice", ids, 256)
        rows = await db.fetch(sql, 0, "alice", ids, 256)
    assert [row[0] for row in rows] == [15, 16]  # the statement reads what it should
    text = (
        " | ".join(str(row[-1]) for row in plan)
        if backend.name == "sqlite"
        else " | ".join(_nodes(json.loads(plan[0][0])[0]["Plan"]))
    )
    assert "events_by_request" in text, text
    assert "events_by_owner" not in text, text
    assert "SCAN events" not in text, text  # SQLite: a full scan reads "SCAN events"
    assert "Seq Scan" not in text, text  # PostgreSQL


def _nodes(node: dict[str, Any]) -> list[str]:
    """Each node of a PostgreSQL JSON plan as "type index", depth first."""
    own = f"{node['Node Type']} {node.get('Index Name', '')}".strip()
    return [own, *(name for child in node.get("Plans", ()) for name in _nodes(child))]
