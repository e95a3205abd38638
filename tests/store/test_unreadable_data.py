"""Card data that does not decrypt, on every backend: one bad event row is left out of the log's
readers (and of every stream) instead of breaking them all; plaintext in a database that
records holding none reads as corrupt data; a rotation reports what it cannot decrypt.

Rows are damaged with plain SQL (``Backend.execute``), as an operator or an attacker would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest

from tests.fixtures.logs import CapturedLog
from tests.store.backends import Backend
from tests.store.strategies import T0
from tests.store.test_data_at_rest import (
    forget_plaintext_state,
    raw_values,
    reopen,
    run_cli,
    save_card,
    token,
)
from vault_service.database_url import parse_database_url
from vault_service.domain import Event
from vault_service.events import EventHub
from vault_service.service.streaming import (
    PAGE_SIZE,
    ResultStreams,
    StreamedEvent,
    StreamItem,
)
from vault_service.store import CorruptDataError, Store
from vault_service.store.data_keys import DataKeyRing, add_data_key, read_data_key_file
from vault_service.store.event_rows import EventPage, EventRow, ReportedEvents
from vault_service.store.factory import open_store, rotate_data_key
from vault_service.store.sealing import (
    EVENT_TOKEN,
    NO_PLAINTEXT,
    PLAINTEXT_STATE_KEY,
    PlaintextCardDataError,
    seal_token,
)

PLAINTEXT_STATE = f"SELECT value FROM meta WHERE key = '{PLAINTEXT_STATE_KEY}'"

# How each damage replaces event "b"'s token ({unknown}: sealed under a key the ring lacks).
DAMAGE = {
    "moved-from-another-event": "(SELECT card_token FROM events WHERE vaulting_request_id = 'a')",
    "moved-from-the-record": "(SELECT card_token FROM records WHERE vaulting_request_id = 'b')",
    "unknown-key": "'{unknown}'",
    "malformed": "'v1:session:not base64!'",
    "plaintext": f"'{token('b')}'",
}


@pytest.fixture
async def log(store: Store) -> list[Event]:
    """Events of "a", "b" and "c" (owner checkout), then "o" (owner billing)."""
    return [
        await save_card(store, rid, owner="billing" if rid == "o" else "checkout")
        for rid in ("a", "b", "c", "o")
    ]


async def damage_event(backend: Backend, damage: str) -> str:
    """Replace event "b"'s token as ``damage`` says; the value it held before."""
    [(before,)] = await backend.query(
        "SELECT card_token FROM events WHERE vaulting_request_id = 'b'"
    )
    unknown = seal_token(DataKeyRing.generate("gone"), EVENT_TOKEN, "b", token("b"))
    await backend.execute(
        "UPDATE events SET card_token = "
        + DAMAGE[damage].format(unknown=unknown)
        + " WHERE vaulting_request_id = 'b'"
    )
    stored: str = before
    return stored


async def follow(
    store: Store, hub: EventHub, position: int, owner: str | None
) -> AsyncIterator[StreamItem]:
    """A stream of ``owner``'s events after ``position`` (``None``: an admin's, every owner)."""
    streams = ResultStreams(store, hub, checkpoint_interval=30)
    return streams.follow(position, owner=owner, vaulting_request_ids=None)


async def take(items: AsyncIterator[StreamItem], count: int) -> list[str]:
    """The request ids of the next ``count`` events ``items`` streams."""
    taken: list[str] = []
    async with asyncio.timeout(10):
        async for item in items:
            if isinstance(item, StreamedEvent):
                taken.append(item.event.record.vaulting_request_id)
                if len(taken) == count:
                    break
    return taken


def ids(events: list[Event]) -> list[str]:
    return [event.record.vaulting_request_id for event in events]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
async def test_an_unreadable_event_is_left_out_and_logged(
    backend: Backend, store: Store, log: list[Event], damage: str, captured_log: CapturedLog
) -> None:
    """Guards finding 10: one event that does not decrypt or decode used to fail every read of
    the log. It is left out (pages refill past it, so paging still reaches the end), logged
    with its event id and request id and without any card value, and its record still reads."""
    before = await damage_event(backend, damage)
    assert ids(await store.events_after(0, limit=100)) == ["a", "c", "o"]
    paged: list[Event] = []
    while page := await store.events_after(paged[-1].event_id if paged else 0, limit=1):
        paged += page
    assert ids(paged) == ["a", "c", "o"]
    assert ids(await store.events_after(0, limit=2, owner="checkout")) == ["a", "c"]

    errors = [line for line in captured_log.lines() if line["level"] == "error"]
    assert errors
    assert all(
        (line["event_id"], line["vaulting_request_id"]) == (log[1].event_id, "b") for line in errors
    )
    assert token("b") not in captured_log.text
    assert before not in captured_log.text
    record = await store.get("b")
    assert record is not None
    assert record.card is not None
    assert record.card.card_token == token("b")


async def test_streams_go_on_past_an_unreadable_event(
    backend: Backend, store: Store, log: list[Event], hub: EventHub, captured_log: CapturedLog
) -> None:
    """Guards finding 10 at the stream: an event sealed under a key the ring lacks used to fail
    every StreamResults with INTERNAL, on every reconnect. Streams from before it deliver the
    events after it, also live ones; other owners' streams and admin streams are unaffected."""
    await damage_event(backend, "unknown-key")
    checkout = await follow(store, hub, 0, "checkout")
    billing = await follow(store, hub, 0, "billing")
    admin = await follow(store, hub, 0, None)
    resumed = await follow(store, hub, log[0].event_id, "checkout")
    assert await take(checkout, 2) == ["a", "c"]
    assert await take(billing, 1) == ["o"]
    assert await take(admin, 3) == ["a", "c", "o"]
    assert await take(resumed, 1) == ["c"]

    await save_card(store, "d")
    hub.notify()
    for items in (checkout, admin, resumed):
        assert await take(items, 1) == ["d"]
    for items in (checkout, billing, admin, resumed):
        await items.aclose()
    assert token("b") not in captured_log.text


async def test_a_stream_moves_past_an_unreadable_newest_event(
    backend: Backend, store: Store, log: list[Event], hub: EventHub
) -> None:
    """Guards the resume position: with the unreadable event the newest of the log, a stream
    from before it neither fails nor loops on it, and delivers the next event."""
    await backend.execute(
        f"UPDATE events SET card_token = 'v1:x:AAAA' WHERE id = {log[-1].event_id}"
    )
    items = await follow(store, hub, log[2].event_id, None)
    hub.notify()
    await asyncio.sleep(0)
    await save_card(store, "d")
    hub.notify()
    assert await take(items, 1) == ["d"]
    await items.aclose()


async def test_a_new_database_refuses_plaintext_card_data(backend: Backend, store: Store) -> None:
    """Guards finding 9: a database created by this build records holding no plaintext, so a
    plaintext token (a writer that forgot to encrypt, or ciphertext swapped for plaintext in
    SQL) reads as corrupt data naming the column and the row, never as a card."""
    assert await backend.query(PLAINTEXT_STATE) == [(NO_PLAINTEXT,)]
    await save_card(store, "a")
    await store.record_orphan("orphan-a", b'{"cardToken": "ALIPAY-orphan"}', T0)
    await backend.execute(f"UPDATE records SET card_token = '{token('a')}'")
    json_bytes = "X'7b7d'" if backend.name == "sqlite" else "'\\x7b7d'::bytea"  # b"{}"
    await backend.execute(f"UPDATE orphan_notifications SET body = {json_bytes}")
    with pytest.raises(PlaintextCardDataError) as refused:
        await store.get("a")
    assert "records.card_token of vaulting request 'a'" in str(refused.value)
    assert token("a") not in str(refused.value)
    with pytest.raises(CorruptDataError) as refused:
        await store.list_orphans(limit=10)
    assert "orphan_notifications.body of vaulting request 'orphan-a'" in str(refused.value)


async def test_a_rotation_without_plaintext_left_makes_plaintext_corrupt(
    backend: Backend, store: Store
) -> None:
    """Guards finding 9 on an upgraded database (no state recorded: legacy plaintext reads):
    a rotation that leaves no plaintext records so, and stores opened afterwards refuse
    plaintext; a plaintext value appearing later is reported by the next rotation, which
    does not launder it into ciphertext."""
    await save_card(store, "a")
    await forget_plaintext_state(backend)
    await backend.execute(f"UPDATE records SET card_token = '{token('a')}'")
    legacy = await reopen(backend, backend.data_keys)
    try:
        record = await legacy.get("a")
        assert record is not None
        assert record.card is not None
        assert record.card.card_token == token("a")
    finally:
        await legacy.close()

    rotation = await rotate_data_key(parse_database_url(backend.url), backend.data_keys)
    assert rotation.plaintext_free
    assert sum(count.rewritten for count in rotation.counts) == 1
    assert await backend.query(PLAINTEXT_STATE) == [(NO_PLAINTEXT,)]

    await backend.execute(f"UPDATE records SET card_token = '{token('a')}'")
    enforcing = await reopen(backend, backend.data_keys)
    try:
        with pytest.raises(PlaintextCardDataError):
            await enforcing.get("a")
    finally:
        await enforcing.close()
    again = await rotate_data_key(parse_database_url(backend.url), backend.data_keys)
    assert [str(value) for value in again.unreadable] == [
        "records.card_token at vaulting_request_id 'a' (vaulting request 'a'): "
        "records.card_token of vaulting request 'a' is not encrypted, but this database "
        "holds only encrypted card data: it was written or altered outside vault-service"
    ]
    assert await backend.query("SELECT card_token FROM records") == [(token("a"),)]


async def test_a_rotation_reports_what_it_cannot_decrypt_and_rotates_the_rest(
    backend: Backend, store: Store, log: list[Event], tmp_path: Path
) -> None:
    """Guards rotate-data-key's claim of success: a corrupt value used to stop the pass with
    one line naming no row; now every other value is rotated, the corrupt one is listed by
    row (never by value), the command exits 1 and the database is not marked plaintext-free."""
    await forget_plaintext_state(backend)
    before = await damage_event(backend, "moved-from-another-event")
    key_file = tmp_path / "keys.json"
    await asyncio.to_thread(shutil.copyfile, backend.key_file, key_file)
    await asyncio.to_thread(add_data_key, key_file, key_id="k2")
    env = {
        **os.environ,
        "VAULT_DATABASE_URL": backend.url,
        "VAULT_DATA_KEY_FILE": str(key_file),
    }
    code, out, err = await run_cli("rotate-data-key", env=env)
    assert code == 1, err
    assert f"events.card_token at id {log[1].event_id} (vaulting request 'b')" in err
    assert "belongs to another row" in err
    assert "1 values cannot be decrypted" in err
    assert "plaintext" not in out
    assert token("b") not in out + err
    assert before not in out + err
    values = [v for v in await raw_values(backend) if isinstance(v, str)]
    assert sum(not value.startswith("v1:k2:") for value in values) == 1
    assert await backend.query(PLAINTEXT_STATE) == []
    ring = await asyncio.to_thread(read_data_key_file, key_file)
    assert not (await rotate_data_key(parse_database_url(backend.url), ring)).plaintext_free


async def copy_event(backend: Backend, event_id: int, copies: int, card_token: str) -> list[int]:
    """Append ``copies`` copies of event ``event_id`` holding ``card_token`` (SQL both dialects
    share); their ids, ascending."""
    await backend.execute(
        f"WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {copies}) "
        "INSERT INTO events (vaulting_request_id, owner, source, occurred_at, snapshot, "
        f"card_token) SELECT vaulting_request_id, owner, source, occurred_at, snapshot, "
        f"{card_token} FROM events, n WHERE events.id = {event_id}"
    )
    rows = await backend.query(f"SELECT id FROM events WHERE id > {event_id} ORDER BY id")
    return [event_id for (event_id,) in rows][-copies:]


async def test_a_run_of_unreadable_events_costs_a_few_reads_and_one_error_each(
    backend: Backend, store: Store, captured_log: CapturedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the refill after a nearly full page: it asked for only the events missing, so 255
    good then 300 bad rows took 301 queries in one call (blocking SQLite's store thread), each
    bad row logged again by every call. A page now reads ``limit`` rows per query, and each bad
    event is logged once, however many calls skip it."""
    first = await save_card(store, "a")
    await copy_event(backend, first.event_id, PAGE_SIZE - 2, "card_token")
    bad = await copy_event(backend, first.event_id, 300, "'v1:gone:AAAA'")
    reads: list[int] = []  # the rows of each query, in order
    fill = EventPage.fill

    def counted(page: EventPage, rows: list[EventRow]) -> int | None:
        reads.append(len(rows))
        return fill(page, rows)

    monkeypatch.setattr(EventPage, "fill", counted)

    for _ in range(2):
        events = await store.events_after(0, limit=PAGE_SIZE)
        assert len(events) == PAGE_SIZE - 1
        assert all(event.record.card for event in events)
    assert reads == [PAGE_SIZE, PAGE_SIZE, 300 - 1 - PAGE_SIZE] * 2  # 3 queries a call
    reads.clear()
    assert await store.events_after(events[-1].event_id, limit=PAGE_SIZE) == []
    assert reads == [PAGE_SIZE, 300 - PAGE_SIZE]

    errors = [line["event_id"] for line in captured_log.lines() if line["level"] == "error"]
    assert errors == bad


def test_the_memory_of_logged_events_is_bounded() -> None:
    """Guards the memory of a store that meets many bad rows: it keeps the ids met most
    recently, and an id it forgot is logged again when met again."""
    reported = ReportedEvents(capacity=2)
    assert [reported.first_time(event_id) for event_id in (1, 2, 1, 3)] == [
        True,
        True,
        False,
        True,
    ]
    assert [reported.first_time(event_id) for event_id in (1, 3, 2)] == [False, False, True]


async def open_upgraded(backend: Backend, how: Literal["migrate", "auto-migrate"]) -> Store:
    """A store of the service on ``backend``, opened after ``vault-service migrate`` or with
    auto-migration."""
    if how == "migrate":
        await backend.migrate()
    return await open_store(
        parse_database_url(backend.url),
        auto_migrate=how == "auto-migrate",
        data_keys=backend.data_keys,
    )


def plaintext_warnings(captured_log: CapturedLog) -> list[str]:
    message: list[str] = [
        line["message"]
        for line in captured_log.lines()
        if line["level"] == "warning" and "rotate-data-key" in line["message"]
    ]
    return message


@pytest.mark.parametrize("how", ["migrate", "auto-migrate"])
async def test_migrating_an_old_database_without_plaintext_refuses_plaintext(
    backend: Backend,
    store: Store,
    captured_log: CapturedLog,
    how: Literal["migrate", "auto-migrate"],
) -> None:
    """Guards databases migrated before the plaintext state existed: they kept reading
    plaintext until someone ran rotate-data-key. Migrating one that holds none (every value
    already sealed) now records so, and its stores refuse plaintext without a warning."""
    await save_card(store, "a")
    await store.record_orphan("orphan-a", b'{"cardToken": "ALIPAY-orphan"}', T0)
    await forget_plaintext_state(backend)

    upgraded = await open_upgraded(backend, how)
    try:
        assert await backend.query(PLAINTEXT_STATE) == [(NO_PLAINTEXT,)]
        await backend.execute(f"UPDATE records SET card_token = '{token('a')}'")
        with pytest.raises(PlaintextCardDataError):
            await upgraded.get("a")
    finally:
        await upgraded.close()
    assert plaintext_warnings(captured_log) == []


@pytest.mark.parametrize("how", ["migrate", "auto-migrate"])
async def test_a_database_still_reading_plaintext_warns_when_opened(
    backend: Backend,
    store: Store,
    captured_log: CapturedLog,
    how: Literal["migrate", "auto-migrate"],
) -> None:
    """Guards the operator's notice: a migrated database that still holds plaintext is not
    marked (its plaintext reads), and each store opening it logs one warning saying so and
    naming rotate-data-key, without any card value."""
    await save_card(store, "a")
    await forget_plaintext_state(backend)
    await backend.execute(f"UPDATE records SET card_token = '{token('a')}'")

    for opened in range(1, 3):
        upgraded = await open_upgraded(backend, how)
        try:
            assert await backend.query(PLAINTEXT_STATE) == []
            record = await upgraded.get("a")
            assert record is not None
            assert record.card is not None
            assert record.card.card_token == token("a")
        finally:
            await upgraded.close()
        assert len(plaintext_warnings(captured_log)) == opened
    assert token("a") not in captured_log.text
