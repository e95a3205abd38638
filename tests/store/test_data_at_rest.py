"""Card data at rest, on every backend: what the database holds is ciphertext bound to its row,
and ``rotate-data-key`` moves it all under a new key without losing a value.

The raw columns are read with plain SQL (``Backend.query``), never through the store, so a
store that forgot to encrypt cannot hide it by decrypting symmetrically.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.store.backends import BACKEND_AT, Backend
from tests.store.strategies import T0, full_card, new_record, observe
from vault_service.antom import AntomClient, VaultingNotification
from vault_service.database_url import parse_database_url
from vault_service.domain import Event, VaultingStatus
from vault_service.events import EventHub
from vault_service.service import VaultingService
from vault_service.store import CorruptDataError, OrphanNotification, Store, UnreadableOrphan
from vault_service.store.codec import encode_snapshot, record_to_row
from vault_service.store.data_keys import (
    DataKeyRing,
    UnknownDataKeyError,
    add_data_key,
    parse_data_key_file,
    read_data_key_file,
)
from vault_service.store.factory import ROTATION_BATCH_SIZE, rotate_data_key
from vault_service.store.postgres import PostgresStore
from vault_service.store.sealing import PLAINTEXT_STATE_KEY, RECORD_TOKEN, seal_token

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTIFY_URL = "http://127.0.0.1:9/antom/vaulting/notify"
ACQUIRER_INFO = (("acquirer_card_token", "ACQ-secret-token"), ("acquirer_name", "ADYEN"))
S = VaultingStatus


def token(vaulting_request_id: str) -> str:
    return f"ALIPAY-secret-token-{vaulting_request_id}"


def notification(vaulting_request_id: str) -> bytes:
    """A notifyVaulting body of an unknown request, with the card token inside."""
    detail = {"cardToken": token(vaulting_request_id), "brand": "VISA"}
    return json.dumps(
        {"vaultingRequestId": vaulting_request_id, "paymentMethodDetail": {"card": detail}}
    ).encode()


async def save_card(store: Store, vaulting_request_id: str, *, owner: str = "checkout") -> Event:
    """A record that got a card (its one event, returned), as the webhook would leave it."""
    await store.insert(new_record(vaulting_request_id, owner=owner), next_check_at=T0)
    card = full_card(token(vaulting_request_id))
    news = replace(observe(S.SUCCEEDED, card=card), acquirer_info=ACQUIRER_INFO)
    event = await store.apply(vaulting_request_id, news)
    assert event is not None
    return event


async def forget_plaintext_state(backend: Backend) -> None:
    """Make the database one migrated before it recorded holding no plaintext (it may hold
    legacy plaintext then); stores opened afterwards read plaintext as before."""
    await backend.execute(f"DELETE FROM meta WHERE key = '{PLAINTEXT_STATE_KEY}'")


async def raw_values(backend: Backend) -> list[str | bytes]:
    """Every stored card-bearing value, straight from the database."""
    rows = await backend.query(
        "SELECT card_token FROM records WHERE card_token IS NOT NULL "
        "UNION ALL SELECT card_token FROM events WHERE card_token IS NOT NULL "
        "UNION ALL SELECT sealed FROM records UNION ALL SELECT sealed FROM events"
    )
    bodies = await backend.query("SELECT body FROM orphan_notifications")
    return [value for (value,) in rows] + [bytes(body) for (body,) in bodies]


def as_text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("ascii")


async def assert_all_read_back(store: Store, ids: list[str], orphans: list[str]) -> None:
    """Every sealed field of every record and event, and every orphan body, reads back."""
    for rid in ids:
        record = await store.get(rid)
        assert record is not None
        assert record.card == full_card(token(rid))
        assert record.acquirer_info == ACQUIRER_INFO
    events = await store.events_after(0, limit=100)
    assert {e.record.vaulting_request_id: e.record.card for e in events}.keys() == set(ids)
    assert all(
        (e.record.card, e.record.acquirer_info)
        == (full_card(token(e.record.vaulting_request_id)), ACQUIRER_INFO)
        for e in events
    )
    stored = await store.list_orphans(limit=100)
    assert [(o.vaulting_request_id, o.body) for o in stored] == [
        (rid, notification(rid)) for rid in orphans
    ]


@pytest.fixture
async def new_key_file(backend: Backend, tmp_path: Path) -> Path:
    """A copy of the session's key file with a new key "k2" added and made active."""
    path = tmp_path / "rotated-data-keys.json"
    await asyncio.to_thread(shutil.copyfile, backend.key_file, path)
    await asyncio.to_thread(add_data_key, path, key_id="k2")
    return path


@pytest.fixture
async def filled(store: Store) -> Store:
    """``store`` holding two saved cards and two orphan notifications."""
    for rid in ("a", "b"):
        await save_card(store, rid)
        await store.record_orphan(f"orphan-{rid}", notification(f"orphan-{rid}"), T0)
    return store


async def test_card_data_is_ciphertext_at_rest(backend: Backend, filled: Store) -> None:
    """Guards issue 5's acceptance: the raw card-token columns (records and events) and the
    orphan bodies hold no card token, only envelopes under the active key; the store still
    returns every value as it was given."""
    values = await raw_values(backend)
    assert len(values) == 10
    for value in values:
        text = as_text(value)
        assert text.startswith("v1:session:")
        assert "ALIPAY" not in text
        assert "secret" not in text
    await assert_all_read_back(filled, ["a", "b"], ["orphan-a", "orphan-b"])


READS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "record": lambda store: store.get("b"),
}


@pytest.mark.parametrize(
    ("move", "read"),
    [
        (
            "UPDATE records SET card_token = "
            "(SELECT card_token FROM records WHERE vaulting_request_id = 'a') "
            "WHERE vaulting_request_id = 'b'",
            "record",
        ),
        (
            "UPDATE records SET sealed = "
            "(SELECT sealed FROM records WHERE vaulting_request_id = 'a') "
            "WHERE vaulting_request_id = 'b'",
            "record",
        ),
    ],
    ids=["record-to-record", "sealed-fields-to-record"],
)
async def test_a_ciphertext_moved_to_another_row_does_not_decrypt(
    backend: Backend, filled: Store, move: str, read: str
) -> None:
    """Guards the row binding: someone with SQL access copying A's token into B's row must
    not hand A's card to B's session; B reads as corrupt data. (An event row is left out of
    reads instead: test_unreadable_data.)"""
    await READS[read](filled)  # reads before the move
    await backend.execute(move)
    with pytest.raises(CorruptDataError, match="belongs to another row"):
        await READS[read](filled)


async def test_an_orphan_body_moved_to_another_row_does_not_decrypt(
    backend: Backend, filled: Store
) -> None:
    """Guards the row binding of orphan bodies: A's body copied into B's row does not open as
    B's; B is listed as unreadable (corrupt), in its place, and A still reads."""
    await backend.execute(
        "UPDATE orphan_notifications SET body = "
        "(SELECT body FROM orphan_notifications WHERE vaulting_request_id = 'orphan-a') "
        "WHERE vaulting_request_id = 'orphan-b'"
    )
    listed = {o.vaulting_request_id: o for o in await filled.list_orphans(limit=100)}
    moved = listed["orphan-b"]
    assert isinstance(moved, UnreadableOrphan)
    assert (moved.error, moved.key_id) == ("CorruptDataError", None)
    assert isinstance(listed["orphan-a"], OrphanNotification)


async def test_an_unknown_key_id_fails_naming_it(backend: Backend, filled: Store) -> None:
    """Guards the operator's message when a key left the file too early: the key id, and no
    card data; an orphan under it is listed as unreadable, naming the key. (Events are left
    out of reads instead: test_unreadable_data.)"""
    other = await reopen(backend, DataKeyRing.generate("unrelated"))
    try:
        with pytest.raises(UnknownDataKeyError, match="data key 'session'") as refused:
            await other.get("a")
        assert "ALIPAY" not in str(refused.value)
        orphans = await other.list_orphans(limit=10)
        assert orphans
        assert all(
            isinstance(o, UnreadableOrphan)
            and (o.error, o.key_id) == ("UnknownDataKeyError", "session")
            for o in orphans
        )
    finally:
        await other.close()


async def test_legacy_plaintext_still_reads(backend: Backend, filled: Store) -> None:
    """Guards the upgrade: in a database migrated before encryption (no plaintext state
    recorded), rows written before encryption hold plaintext and must read."""
    await forget_plaintext_state(backend)
    await backend.execute(f"UPDATE records SET card_token = '{token('a')}'")
    await backend.execute(f"UPDATE events SET card_token = '{token('a')}'")
    upgraded = await reopen(backend, backend.data_keys)
    try:
        record = await upgraded.get("a")
        assert record is not None
        assert record.card is not None
        assert record.card.card_token.reveal() == token("a")
        events = await upgraded.events_after(0, limit=10, vaulting_request_ids=frozenset({"a"}))
        assert [e.record.card.card_token.reveal() for e in events if e.record.card] == [token("a")]
    finally:
        await upgraded.close()


async def test_rotation_reseals_everything_under_the_new_key(
    backend: Backend, filled: Store, new_key_file: Path
) -> None:
    """Guards ``rotate-data-key``: every value, legacy plaintext included, ends up under the
    new active key and reads back, also once the old key is gone; a second run rewrites
    nothing."""
    await forget_plaintext_state(backend)
    await backend.execute(
        f"UPDATE records SET card_token = '{token('a')}' WHERE vaulting_request_id = 'a'"
    )
    ring = await asyncio.to_thread(read_data_key_file, new_key_file)

    database = parse_database_url(backend.url)
    rotation = await rotate_data_key(database, ring, batch_size=1)  # many batches
    counts = rotation.counts
    assert {c.column.name: c.rewritten for c in counts} == {
        "records.card_token": 2,
        "events.card_token": 2,
        "orphan_notifications.body": 2,
        "records.sealed": 2,
        "events.sealed": 2,
    }
    assert all(c.changed == 0 for c in counts)
    values = await raw_values(backend)
    assert all(as_text(value).startswith("v1:k2:") for value in values)

    again = await rotate_data_key(database, ring)
    assert sum(c.rewritten for c in again.counts) == 0
    assert await raw_values(backend) == values

    reopened = await reopen(backend, await without_key(new_key_file, "session"))
    try:
        await assert_all_read_back(reopened, ["a", "b"], ["orphan-a", "orphan-b"])
    finally:
        await reopened.close()


async def test_rotate_data_key_command(backend: Backend, filled: Store, new_key_file: Path) -> None:
    """Guards the operator command end to end: exit 0 and the count on stdout; run again, it
    rewrites nothing; with a key file missing the key of every value, it lists each value's
    row naming the key, never a value, and exits 1 (not a success)."""
    env = {
        **os.environ,
        "VAULT_DATABASE_URL": backend.url,
        "VAULT_DATA_KEY_FILE": str(new_key_file),
    }
    code, out, err = await run_cli("rotate-data-key", env=env)
    assert (code, err) == (0, "")
    assert "re-encrypted 10 values under data key 'k2'" in out
    assert all(as_text(value).startswith("v1:k2:") for value in await raw_values(backend))
    code, out, _ = await run_cli("rotate-data-key", env=env)
    assert code == 0
    assert "re-encrypted 0 values" in out

    lacking = new_key_file.with_name("lacking.json")
    await asyncio.to_thread(add_data_key, lacking, key_id="k3")
    code, out, err = await run_cli(
        "rotate-data-key", env={**env, "VAULT_DATA_KEY_FILE": str(lacking)}
    )
    assert code == 1
    refused = [line for line in err.splitlines() if "cannot decrypt" in line]
    assert len(refused) == 10, err
    assert all("data key 'k2'" in line for line in refused)
    assert "events.card_token at id 1 (vaulting request 'a')" in err
    assert "10 values cannot be decrypted" in err
    assert "ALIPAY" not in err + out
    assert "v1:k2:" not in err + out


@pytest.mark.parametrize("new_backend", ["postgresql"], indirect=True)
async def test_postgres_rotation_never_overwrites_a_concurrent_write(
    backend: Backend, filled: Store, new_key_file: Path
) -> None:
    """Guards rotation while replicas serve: a record rewritten between the rotation's read and
    its write (a replica's apply) keeps the replica's value; a re-run then reseals it."""
    assert isinstance(filled, PostgresStore)  # SQLite rotates inside its write lock
    concurrent = seal_token(backend.data_keys, RECORD_TOKEN, "a", token("a"))
    writes: list[str] = []

    class AfterAReplica(asyncpg.Connection):  # type: ignore[type-arg]
        """The rotation's connections: another replica writes before its first swap."""

        async def execute(self, sql: str, *args: object, **options: float | None) -> str:
            if sql.lstrip().startswith("UPDATE records AS t") and not writes:
                # Another connection commits first: the rotation's read of "a" is now stale.
                writes.append(sql)
                await backend.execute(
                    f"UPDATE records SET card_token = '{concurrent}' "
                    "WHERE vaulting_request_id = 'a'"
                )
            return await super().execute(sql, *args, **options)

    ring = await asyncio.to_thread(read_data_key_file, new_key_file)
    rotating = await PostgresStore.open(
        parse_database_url(backend.url),
        auto_migrate=False,
        data_keys=ring,
        connection_class=AfterAReplica,
    )
    try:
        counts = (await rotating.reseal(batch_size=ROTATION_BATCH_SIZE)).counts
    finally:
        await rotating.close()
    assert writes, "the rotation never wrote records back"

    records = next(c for c in counts if c.column is RECORD_TOKEN)
    assert (records.rewritten, records.changed) == (1, 1)
    assert await backend.query(
        "SELECT card_token FROM records WHERE vaulting_request_id = 'a'"
    ) == [(concurrent,)]
    again = await rotate_data_key(parse_database_url(backend.url), ring)
    assert [c.rewritten for c in again.counts] == [1, 0, 0, 0, 0]
    assert all(as_text(value).startswith("v1:k2:") for value in await raw_values(backend))


async def reopen(backend: Backend, ring: DataKeyRing) -> Store:
    """Another store on ``backend``'s database, sealing and opening with ``ring``."""
    return await BACKEND_AT[backend.name](backend.location, backend.key_file, ring).open()


async def without_key(path: Path, key_id: str) -> DataKeyRing:
    """The ring in ``path`` with ``key_id`` removed, as an operator ends a rotation."""
    document = json.loads(await asyncio.to_thread(path.read_bytes))
    del document["keys"][key_id]
    return parse_data_key_file(json.dumps(document).encode())


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``vault-service ARGS`` as a process: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vault_service",
        *args,
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# Every sensitive value of a notification with every Antom field filled: each distinctive, so
# that finding it anywhere in the raw database can only mean it is stored in the clear.
SECRETS: dict[str, str] = {
    "cardToken": "ALIPAY-card-token-7f3a91",
    "acquirerCardToken": "ACQ-card-token-91be44",
    "acquirerFingerprint": "ACQ-fingerprint-5d20aa",
    "acquirerAccountName": "Zebulon Quixote Account",
    "fingerprint": "FP-card-c0ffee42",
    "address1": "742 Evergreen Terrace",
    "address2": "Flat Zanzibar",
    "address3": "care of Quimby",
    "city": "Springfieldia",
    "zipCode": "97403-XQ",
    "firstName": "Zebulonius",
    "middleName": "Xerxesian",
    "lastName": "Quixotelli",
    "fullName": "Zebulonius X Quixotelli",
}


def full_notification(vaulting_request_id: str) -> bytes:
    """A notifyVaulting body with every field Antom may send filled."""
    card = {
        "cardToken": SECRETS["cardToken"],
        "brand": "VISA",
        "maskedCardNo": "411111******1111",
        "lastFour": "1111",
        "bin": "411111",
        "expiryMonth": "12",
        "expiryYear": "39",
        "funding": "CREDIT",
        "issuingCountry": "US",
        "issuerName": "Example Bank",
        "fingerprint": SECRETS["fingerprint"],
        "billingAddress": {
            "region": "US",
            "state": "OR",
            **{key: SECRETS[key] for key in ("address1", "address2", "address3", "city")},
            "zipCode": SECRETS["zipCode"],
        },
        "cardholderName": {
            key: SECRETS[key] for key in ("firstName", "middleName", "lastName", "fullName")
        },
    }
    acquirer = {
        "acquirerName": "ADYEN",
        "referenceRequestId": "ref-1",
        "acquirerTransactionId": "acq-tx-1",
        "acquirerMerchantId": "acq-merchant-1",
        "acquirerResultCode": "Authorised",
        "acquirerResultMessage": "ok",
        "acquirerCardToken": SECRETS["acquirerCardToken"],
        "acquirerFingerprint": SECRETS["acquirerFingerprint"],
        "acquirerMerchantName": "Example Shop",
        "acquirerReasonDescription": "none",
        "ptspTransactionId": "ptsp-1",
        "acquirerAccountName": SECRETS["acquirerAccountName"],
    }
    return json.dumps(
        {
            "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
            "vaultingRequestId": vaulting_request_id,
            "paymentMethodDetail": {"paymentMethodType": "CARD", "card": card},
            "vaultingCreateTime": "2026-03-01T12:00:00+00:00",
            "acquirerInfo": acquirer,
            "vaultingStatus": "SUCCESS",
        }
    ).encode()


async def raw_database(backend: Backend) -> bytes:
    """Everything the database holds, as raw as it gets: SQLite's file and its write-ahead
    log byte for byte; every row of every PostgreSQL table as text."""
    if backend.name == "sqlite":
        files = [Path(backend.location), Path(f"{backend.location}-wal")]
        return b"".join([await asyncio.to_thread(path.read_bytes) for path in files])
    tables = await backend.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    rows = [
        row
        for (table,) in tables
        for (row,) in await backend.query(f"SELECT t::text FROM {table} t")
    ]
    assert any("sealed" not in row for row in rows)  # the query saw rows
    return "\n".join(rows).encode()


async def test_no_card_or_buyer_data_is_stored_in_the_clear(
    backend: Backend, store: Store, antom_client: AntomClient
) -> None:
    """Regression (issue 9 #3): the acquirer's card token, and every other acquirerInfo
    field, was stored as plain JSON in records.acquirer_info and events.snapshot, as were the
    billing address, cardholder name, expiry and fingerprint in the card JSON, while only the
    Antom card token was sealed. A notification with every Antom field filled, for a known
    request and for an unknown one (an orphan), leaves none of them in the database file, its
    WAL or any PostgreSQL row; the store still returns every one of them."""
    service = VaultingService(
        store, antom_client, EventHub(), notify_url=NOTIFY_URL, first_check_after=timedelta(0)
    )
    await store.insert(new_record("known"), next_check_at=T0)
    for rid in ("known", "orphan"):
        body = full_notification(rid)
        await service.record_notification(VaultingNotification.model_validate_json(body), body)

    raw = await raw_database(backend)
    found = [name for name, value in SECRETS.items() if value.encode() in raw]
    assert found == []
    assert b"expiry_year" not in raw  # the field names of sealed fields are sealed too

    record = await store.get("known")
    assert record is not None
    assert record.card is not None
    assert record.card.card_token.reveal() == SECRETS["cardToken"]
    assert record.card.billing_address is not None
    assert record.card.billing_address.address1 == SECRETS["address1"]
    assert (record.card.expiry_month, record.card.expiry_year) == ("12", "39")
    assert ("acquirer_card_token", SECRETS["acquirerCardToken"]) in record.acquirer_info
    (event,) = await store.events_after(0, limit=10)
    assert event.record == record
    (orphan,) = await store.list_orphans(limit=10)
    assert orphan.body == full_notification("orphan")


async def test_rotation_seals_rows_written_before_the_sealed_fields(
    backend: Backend, filled: Store, new_key_file: Path
) -> None:
    """Guards the upgrade of databases written by schema version 1, whose rows hold the
    billing address, cardholder name and acquirer info in clear JSON: they still read, and
    ``rotate-data-key`` moves those fields into sealed documents under the new key (then
    records that the database holds no plaintext), after which they read without the old
    key."""
    legacy = await filled.get("a")
    assert legacy is not None
    row = record_to_row(legacy)
    snapshot, _, sealed = encode_snapshot(legacy)
    document = json.loads(sealed)
    card = {**json.loads(row.card or ""), **document["card"]}
    acquirer_info = document["acquirer_info"]
    snapshot_document = {**json.loads(snapshot), "card": card, "acquirer_info": acquirer_info}
    await forget_plaintext_state(backend)
    await backend.execute(
        f"UPDATE records SET card = {sql_text(json.dumps(card))}, "
        f"acquirer_info = {sql_text(json.dumps(acquirer_info))}, sealed = NULL "
        "WHERE vaulting_request_id = 'a'"
    )
    await backend.execute(
        f"UPDATE events SET snapshot = {sql_text(json.dumps(snapshot_document))}, sealed = NULL "
        "WHERE vaulting_request_id = 'a'"
    )
    [(clear,)] = await backend.query(
        "SELECT card || acquirer_info FROM records WHERE vaulting_request_id = 'a'"
    )
    assert "Lovelace" in str(clear)
    assert "ACQ-secret-token" in str(clear)
    reopened = await reopen(backend, backend.data_keys)
    try:
        assert await reopened.get("a") == legacy
    finally:
        await reopened.close()

    ring = await asyncio.to_thread(read_data_key_file, new_key_file)
    rotation = await rotate_data_key(parse_database_url(backend.url), ring, batch_size=1)
    assert rotation.plaintext_free
    assert {c.column.name: c.rewritten for c in rotation.counts}["records.sealed"] == 2

    [(clear,)] = await backend.query(
        "SELECT card || acquirer_info FROM records WHERE vaulting_request_id = 'a'"
    )
    assert "Lovelace" not in str(clear)
    assert "ACQ-secret-token" not in str(clear)
    [(snapshot,)] = await backend.query(
        "SELECT snapshot FROM events WHERE vaulting_request_id = 'a'"
    )
    assert "Lovelace" not in str(snapshot)
    assert "ACQ-secret-token" not in str(snapshot)
    reopened = await reopen(backend, await without_key(new_key_file, "session"))
    try:
        assert await reopened.get("a") == legacy
        events = await reopened.events_after(0, limit=10, vaulting_request_ids=frozenset({"a"}))
        assert [event.record for event in events] == [legacy]
    finally:
        await reopened.close()


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal both dialects read."""
    return "'" + value.replace("'", "''") + "'"
