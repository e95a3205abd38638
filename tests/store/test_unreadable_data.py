"""Card data that does not decrypt, on every backend: one bad event row is reported in its place
to the readers of the log (and to the streams it belongs to) instead of breaking them all or
vanishing; plaintext in a database that records holding none reads as corrupt data; a rotation
reports what it cannot decrypt.

Rows are damaged with plain SQL (``Backend.execute``), as an operator or an attacker would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pytest

from tests.fixtures.clock import ManualClock
from tests.fixtures.data_keys import ring_with_new_key
from tests.fixtures.logs import CapturedLog
from tests.grpc_api.support import eventually
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
from vault_service.antom import AntomClient
from vault_service.database_url import parse_database_url
from vault_service.domain import Event, SessionParameters, decode_resume_token
from vault_service.emulator import EmulatorServer
from vault_service.events import EventHub
from vault_service.service import (
    Checkpoint,
    EventKeyMissingError,
    Reconciler,
    ResultStreams,
    StreamedEvent,
    StreamItem,
    UnreadableItem,
    VaultingService,
)
from vault_service.store import Store, UnreadableOrphan
from vault_service.store.base import LogEntry, Unreadable, UnreadableEvent
from vault_service.store.data_keys import DataKeyRing, add_data_key, read_data_key_file
from vault_service.store.event_rows import ReportedEvents
from vault_service.store.factory import open_store, rotate_data_key
from vault_service.store.sealing import (
    EVENT_TOKEN,
    NO_PLAINTEXT,
    PLAINTEXT_STATE_KEY,
    RECORD_TOKEN,
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


def follow(
    store: Store,
    hub: EventHub,
    position: int,
    owner: str | None,
    ids: frozenset[str] | None = None,
    *,
    checkpoint_interval: float = 30,
) -> AsyncIterator[StreamItem]:
    """A stream of ``owner``'s events after ``position`` (``None``: an admin's, every owner)."""
    streams = ResultStreams(store, hub, checkpoint_interval=checkpoint_interval)
    return streams.follow(position, owner=owner, vaulting_request_ids=ids)


async def take(items: AsyncIterator[StreamItem], count: int) -> list[str]:
    """The request ids of the next ``count`` events ``items`` streams; an unreadable event
    counts as ``"unreadable <id>"``."""
    taken: list[str] = []
    async with asyncio.timeout(10):
        async for item in items:
            if isinstance(item, StreamedEvent):
                taken.append(item.event.record.vaulting_request_id)
            elif isinstance(item, UnreadableItem):
                taken.append(f"unreadable {item.vaulting_request_id}")
            if len(taken) == count:
                break
    return taken


def ids(entries: list[LogEntry]) -> list[str]:
    return [
        f"unreadable {entry.vaulting_request_id} {entry.cause.value}"
        if isinstance(entry, UnreadableEvent)
        else entry.record.vaulting_request_id
        for entry in entries
    ]


def expected_cause(damage: str) -> Unreadable:
    return Unreadable.MISSING_KEY if damage == "unknown-key" else Unreadable.CORRUPT


@pytest.mark.parametrize("damage", sorted(DAMAGE))
async def test_an_unreadable_event_is_reported_in_its_place_and_logged_once(
    backend: Backend, store: Store, log: list[Event], damage: str, captured_log: CapturedLog
) -> None:
    """Regression (issue 9 #2): an event row that did not decrypt or decode was left out of
    every read, so the streams' cursors moved past it for good. Reads now return it in its
    place, with its ids, owner and cause (a missing key or corruption for good), on every
    page size and filter; it is logged once with its event id and request id and without any
    card value, and its record still reads."""
    before = await damage_event(backend, damage)
    bad = f"unreadable b {expected_cause(damage).value}"
    for _ in range(2):
        assert ids(await store.events_after(0, limit=100)) == ["a", bad, "c", "o"]
    paged: list[LogEntry] = []
    while page := await store.events_after(paged[-1].event_id if paged else 0, limit=1):
        paged += page
    assert ids(paged) == ["a", bad, "c", "o"]
    assert ids(await store.events_after(0, limit=2, owner="checkout")) == ["a", bad]
    assert ids(await store.events_after(0, limit=9, owner="billing")) == ["o"]
    assert ids(await store.events_after(0, limit=9, vaulting_request_ids=frozenset("ac"))) == [
        "a",
        "c",
    ]

    errors = [line for line in captured_log.lines() if line["level"] == "error"]
    assert [(line["event_id"], line["vaulting_request_id"]) for line in errors] == [
        (log[1].event_id, "b")
    ]
    assert errors[0]["reason"] == expected_cause(damage).value
    assert token("b") not in captured_log.text
    assert before not in captured_log.text
    record = await store.get("b")
    assert record is not None
    assert record.card is not None
    assert record.card.card_token.reveal() == token("b")


async def test_streams_report_a_corrupt_event_to_its_subscribers_and_go_on(
    backend: Backend, store: Store, log: list[Event], hub: EventHub, captured_log: CapturedLog
) -> None:
    """Regression (issue 9 #2): a corrupt event was skipped in silence. The streams it belongs
    to (its owner's, an admin's, a resumed one) now get an unreadable-event item in its place
    and then the events after it, also live ones; a stream it does not belong to (another
    owner, an id filter without it) never sees it."""
    await damage_event(backend, "moved-from-another-event")
    checkout = follow(store, hub, 0, "checkout")
    billing = follow(store, hub, 0, "billing")
    admin = follow(store, hub, 0, None)
    resumed = follow(store, hub, log[0].event_id, "checkout")
    filtered = follow(store, hub, 0, "checkout", frozenset({"a", "c", "d"}))
    assert await take(checkout, 3) == ["a", "unreadable b", "c"]
    assert await take(billing, 1) == ["o"]
    assert await take(admin, 4) == ["a", "unreadable b", "c", "o"]
    assert await take(resumed, 2) == ["unreadable b", "c"]
    assert await take(filtered, 2) == ["a", "c"]

    await save_card(store, "d")
    hub.notify()
    for items in (checkout, admin, resumed, filtered):
        assert await take(items, 1) == ["d"]
    for items in (checkout, billing, admin, resumed, filtered):
        await items.aclose()
    assert token("b") not in captured_log.text


async def test_a_live_stream_reports_a_corrupt_newest_event(
    backend: Backend, store: Store, log: list[Event], hub: EventHub
) -> None:
    """Regression (issue 9 #2): with the unreadable event the newest of the log, a stream from
    before it neither fails nor loops on it: it reports it, then delivers the next event."""
    await backend.execute(
        f"UPDATE events SET card_token = 'v1:x:AAAA' WHERE id = {log[-1].event_id}"
    )
    items = follow(store, hub, log[2].event_id, None)
    assert await take(items, 1) == ["unreadable o"]
    await save_card(store, "d")
    hub.notify()
    assert await take(items, 1) == ["d"]
    await items.aclose()


async def save_under_key_others_lack(backend: Backend, ring: DataKeyRing) -> Event:
    """Event "b" of owner checkout, written by a replica whose key file (``ring``) already
    holds a new active key that the test's ``store`` (the replica under test) lacks."""
    writer = await reopen(backend, ring)
    try:
        return await save_card(writer, "b")
    finally:
        await writer.close()


async def collect(items: AsyncIterator[StreamItem], into: list[StreamItem]) -> None:
    """Every item of a stream, in ``into``, until it ends (or fails)."""
    async for item in items:
        into.append(item)


def delivered(items: list[StreamItem]) -> list[str]:
    return [
        item.event.record.vaulting_request_id for item in items if isinstance(item, StreamedEvent)
    ]


@pytest.mark.parametrize("live", [False, True], ids=["replay", "live"])
async def test_a_replica_missing_a_key_ends_its_streams_before_the_event(
    backend: Backend, store: Store, hub: EventHub, tmp_path: Path, live: bool
) -> None:
    """Regression (issue 9 #2): on a replica whose key ring lacked the key of one event, that
    event was left out and the streams' cursors and checkpoints moved past it, so no replica
    resumed from them ever delivered it. Now the streams it belongs to end with
    EventKeyMissingError carrying the token just before it, no checkpoint passes it (the
    streams checkpoint often here), streams it does not belong to go on past it, and a
    replica with the full ring (a restart with the right key file) delivers it from that
    token. Both paths: replayed from the log, and live from the shared tail buffer."""
    first = await save_card(store, "a")
    streams = ResultStreams(store, hub, checkpoint_interval=0.01)
    start = first.event_id if live else 0
    seen: dict[str, list[StreamItem]] = {"checkout": [], "billing": [], "a and c": []}
    tasks = {
        name: asyncio.create_task(
            collect(
                streams.follow(
                    start,
                    owner="billing" if name == "billing" else "checkout",
                    vaulting_request_ids=frozenset("ac") if name == "a and c" else None,
                ),
                seen[name],
            )
        )
        for name in seen
    }
    if live:  # every stream caught up, waiting on the hub between checkpoints
        await eventually(lambda: all(len(items) > 2 for items in seen.values()), within=10)
    full_ring = await asyncio.to_thread(ring_with_new_key, backend.key_file, tmp_path, "newer")
    bad = await save_under_key_others_lack(backend, full_ring)
    await save_card(store, "c")
    await save_card(store, "o", owner="billing")
    hub.notify()

    with pytest.raises(EventKeyMissingError) as ended:
        await asyncio.wait_for(tasks["checkout"], 10)
    assert decode_resume_token(ended.value.resume_token, store.log_id) == bad.event_id - 1
    assert ended.value.key_id == "newer"
    positions = [
        decode_resume_token(item.resume_token, store.log_id)
        for item in seen["checkout"]
        if isinstance(item, Checkpoint | StreamedEvent)
    ]
    assert max(positions) < bad.event_id
    assert delivered(seen["checkout"]) == ([] if live else ["a"])
    await eventually(lambda: delivered(seen["billing"]) == ["o"], within=10)
    await eventually(
        lambda: delivered(seen["a and c"]) == (["c"] if live else ["a", "c"]), within=10
    )
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    with pytest.raises(EventKeyMissingError) as admin_ended:  # an admin's stream too
        await asyncio.wait_for(
            collect(streams.follow(0, owner=None, vaulting_request_ids=None), []), 10
        )
    assert admin_ended.value.resume_token == ended.value.resume_token

    restarted = await reopen(backend, full_ring)
    try:
        resumed = follow(
            restarted,
            EventHub(),
            decode_resume_token(ended.value.resume_token, restarted.log_id),
            "checkout",
        )
        assert await take(resumed, 2) == ["b", "c"]
        await resumed.aclose()
    finally:
        await restarted.close()


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
    # An orphan's body is listed as unreadable in its place (issue 14: one bad body must not
    # hide the others, nor stop their adoption).
    assert await store.list_orphans(limit=10) == [
        UnreadableOrphan("orphan-a", T0, "PlaintextCardDataError")
    ]


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
        assert record.card.card_token.reveal() == token("a")
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
            assert record.card.card_token.reveal() == token("a")
        finally:
            await upgraded.close()
        assert len(plaintext_warnings(captured_log)) == opened
    assert token("a") not in captured_log.text


async def test_one_undecodable_due_record_does_not_stop_reconciliation(
    backend: Backend,
    store: Store,
    antom_client: AntomClient,
    emulator: EmulatorServer,
    captured_log: CapturedLog,
) -> None:
    """Regression (issue 9 #8): a due row that did not decode (here: its card data under a
    key the ring lacks) failed the whole claim. On SQLite the claim decoded inside the lease
    transaction, so the lease rolled back and the bad row stayed first in line for ever: no
    inquiry and no expiry for anyone; on PostgreSQL its batch-mates failed with it every
    lease period. Now every other due record is inquired in the same pass, and the bad one is
    logged once and waits the longest delay."""
    clock = ManualClock()
    service = VaultingService(
        store,
        antom_client,
        EventHub(),
        notify_url="http://127.0.0.1:9/antom/vaulting/notify",
        first_check_after=timedelta(seconds=60),
        clock=clock,
    )
    reconciler = Reconciler(
        store,
        service,
        interval=1.0,
        min_delay=timedelta(seconds=30),
        max_delay=timedelta(minutes=15),
        expiry_grace=timedelta(minutes=5),
        inquiry_budget=2.0,
        clock=clock,
    )
    for rid in ("vr-bad", "vr-1", "vr-2"):  # the bad one first in line
        await service.create_session("checkout", rid, SessionParameters())
        clock.advance(seconds=1)
    unknown = seal_token(DataKeyRing.generate("gone"), RECORD_TOKEN, "vr-bad", token("vr-bad"))
    await backend.execute(
        f"UPDATE records SET card = '{{}}', card_token = '{unknown}' "
        "WHERE vaulting_request_id = 'vr-bad'"
    )

    clock.advance(seconds=61)
    assert await reconciler.run_once() == 3
    assert [emulator.state.stats.calls("inquireVaulting", rid) for rid in ("vr-1", "vr-2")] == [
        1,
        1,
    ]
    assert emulator.state.stats.calls("inquireVaulting", "vr-bad") == 0

    clock.advance(minutes=14)  # the good ones are due again, the bad one is not
    assert await reconciler.run_once() == 2
    clock.advance(minutes=2)
    assert await reconciler.run_once() == 1
    errors = [
        (line["vaulting_request_id"], line["error"], line["key_id"])
        for line in captured_log.lines()
        if line["level"] == "error"
    ]
    assert errors == [("vr-bad", "UnknownDataKeyError", "gone")] * 2  # once per try
    assert "ALIPAY" not in captured_log.text
