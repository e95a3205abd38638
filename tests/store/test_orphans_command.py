"""``vault-service orphans``: the admin's audit list of orphan notifications, on every
backend, as a process: one JSON line each, oldest first, Antom's result but no card data."""

from __future__ import annotations

import json
import os

from tests.store.backends import Backend
from tests.store.strategies import T0
from tests.store.test_data_at_rest import SECRETS, full_notification, run_cli
from vault_service.store import Store


async def test_orphans_lists_each_with_its_result_and_no_card_data(
    backend: Backend, store: Store
) -> None:
    """Every orphan, with its id, arrival time, body digest and Antom's result; none of the
    body's card or buyer values reaches the output."""
    for rid in ("lost-1", "lost-2"):
        await store.record_orphan(rid, full_notification(rid), T0)
    env = {
        **os.environ,
        "VAULT_DATABASE_URL": backend.url,
        "VAULT_DATA_KEY_FILE": str(backend.key_file),
    }
    code, out, err = await run_cli("orphans", env=env)
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["vaulting_request_id"] for line in lines] == ["lost-1", "lost-2"]
    assert lines[0]["received_time"] == T0.isoformat()
    assert (lines[0]["result_status"], lines[0]["vaulting_status"]) == ("S", "SUCCESS")
    assert len(lines[0]["body_sha256"]) == 64
    assert [name for name, value in SECRETS.items() if value in out] == []
    code, out, _ = await run_cli("orphans", "--limit", "1", env=env)
    assert (code, len(out.splitlines())) == (0, 1)


async def test_orphans_lists_an_unreadable_body_as_such(backend: Backend, store: Store) -> None:
    """Broke (issue 14): one orphan whose body did not decode made the whole listing fail.
    Now it is listed in its place with ``unreadable`` (the error's class), and the others as
    usual."""
    for rid in ("lost-1", "lost-2"):
        await store.record_orphan(rid, full_notification(rid), T0)
    plaintext = "X'7b7d'" if backend.name == "sqlite" else "'\\x7b7d'::bytea"  # b"{}"
    await backend.execute(
        f"UPDATE orphan_notifications SET body = {plaintext} WHERE vaulting_request_id = 'lost-1'"
    )
    env = {
        **os.environ,
        "VAULT_DATABASE_URL": backend.url,
        "VAULT_DATA_KEY_FILE": str(backend.key_file),
    }
    code, out, err = await run_cli("orphans", env=env)
    assert (code, err) == (0, "")
    unreadable, readable = (json.loads(line) for line in out.splitlines())
    assert unreadable == {
        "vaulting_request_id": "lost-1",
        "received_time": T0.isoformat(),
        "unreadable": "PlaintextCardDataError",
    }
    assert (readable["vaulting_request_id"], readable["result_status"]) == ("lost-2", "S")
