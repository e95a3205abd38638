"""What Antom may send or do that the service must survive, on every store backend: text no
database stores, a vaultingStatus word added after this build, a gateway refusing our key, a
success without its card token, and a session retried after its notify URL changed.

Each test runs the real use cases over one backend (``backend`` is parametrised as in
``tests/store``), the emulator, and, where Antom notifies, the real webhook app.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from google.rpc import code_pb2

from tests.fixtures.antom import CLIENT_ID, buyer_submits
from tests.fixtures.clock import ManualClock
from tests.fixtures.logs import CapturedLog
from tests.store.backends import BACKENDS, Backend, MakeBackend
from vault_service.antom import (
    AntomClient,
    AntomClientConfig,
    AntomConfigurationError,
    AntomHttp,
    AntomUnknownResultError,
    HttpAnswer,
    InquireVaultingResponse,
    PrivateKey,
    RetryPolicy,
    Signer,
    Verifier,
)
from vault_service.domain import EventSource, SessionParameters, VaultingStatus
from vault_service.emulator import EmulatorServer
from vault_service.events import EventHub
from vault_service.grpc_api import mapping
from vault_service.grpc_api.errors import rich_status
from vault_service.service import observations
from vault_service.service.reconciler import Reconciler
from vault_service.service.vaulting import VaultingService
from vault_service.store import Store
from vault_service.webhook import bind, build_webhook_app, serve_webhook

PATH = "/antom/vaulting/notify"
OWNER = "checkout"
VISA = "4111111111111111"
NUL_AND_SURROGATE = "Ada\x00Love\ud800lace"
STORED_AS = "Ada\ufffdLove\ufffdlace"
NUL = "Ada\x00Lovelace"
NUL_STORED_AS = "Ada\ufffdLovelace"


@pytest.fixture(params=sorted(BACKENDS))
def new_backend(request: pytest.FixtureRequest) -> MakeBackend:
    name: str = request.param
    return BACKENDS[name](request)


@pytest.fixture
async def backend(new_backend: MakeBackend) -> Backend:
    """A fresh database of one backend, migrated."""
    made = await new_backend()
    await made.migrate()
    return made


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_service(
    store: Store, antom: AntomClient, clock: ManualClock, notify_url: str = "http://127.0.0.1:9/n"
) -> VaultingService:
    return VaultingService(
        store,
        antom,
        EventHub(),
        notify_url=notify_url,
        first_check_after=timedelta(seconds=60),
        clock=clock,
    )


def make_reconciler(store: Store, service: VaultingService, clock: ManualClock) -> Reconciler:
    return Reconciler(
        store,
        service,
        interval=0.01,
        min_delay=timedelta(seconds=30),
        max_delay=timedelta(minutes=15),
        expiry_grace=timedelta(minutes=5),
        inquiry_budget=2.0,
        clock=clock,
    )


@pytest.fixture
def service(store: Store, antom_client: AntomClient, clock: ManualClock) -> VaultingService:
    return make_service(store, antom_client, clock)


@pytest.fixture
async def notify(service: VaultingService, antom_key: PrivateKey) -> AsyncIterator[Any]:
    """``await notify(document)``: post a notification signed with Antom's key to the real
    webhook app over ``service``; the HTTP status."""
    sock = bind("127.0.0.1", 0)
    app = build_webhook_app(
        service, path=PATH, client_id=CLIENT_ID, verifier=Verifier(antom_key.public_key())
    )
    runner = await serve_webhook(app, sock)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}"
    signer = Signer(antom_key)

    async def post(document: dict[str, Any]) -> int:
        # ensure_ascii: a lone surrogate travels as the \ud800 escape Antom's JSON would use.
        body = json.dumps(document).encode()
        request_time = str(time.time_ns() // 1_000_000)
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "client-id": CLIENT_ID,
            "request-time": request_time,
            "signature": signer.sign("POST", PATH, CLIENT_ID, request_time, body),
        }
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
            return r.status

    yield post
    await runner.cleanup()


def success_notification(vaulting_request_id: str, text: str, **extra: object) -> dict[str, Any]:
    address = {"region": "US", "city": text, "address1": text, "zipCode": text}
    return {
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": text},
        "vaultingRequestId": vaulting_request_id,
        "paymentMethodDetail": {
            "paymentMethodType": "CARD",
            "card": {
                "cardToken": "ALIPAYtok" + text,
                "brand": text,
                "issuerName": text,
                "billingAddress": address,
                "cardholderName": {"fullName": text, "firstName": text},
            },
        },
        "acquirerInfo": {"acquirerName": text, "acquirerResultMessage": text},
        **extra,
    }


async def test_unstorable_text_in_a_notification_is_stored_as_replacement_characters(
    service: VaultingService, store: Store, notify: Any
) -> None:
    """Regression (issue 9 #4): a signed notification with U+0000 in the billing address was
    stored on SQLite but refused by PostgreSQL, so the webhook answered 500 until Antom gave
    up; a lone surrogate escape made it unparseable (400). Now both are acknowledged and the
    record is final, with U+FFFD in their place on every backend."""
    await service.create_session(OWNER, "vr-nul", SessionParameters())
    assert await notify(success_notification("vr-nul", NUL_AND_SURROGATE)) == 200
    record = await store.get("vr-nul")
    assert record is not None
    assert record.status is VaultingStatus.SUCCEEDED
    assert record.card is not None
    assert record.card.billing_address is not None
    assert record.card.card_token.reveal() == "ALIPAYtok" + STORED_AS
    assert record.card.billing_address.address1 == STORED_AS
    assert record.card.cardholder_name is not None
    assert record.card.cardholder_name.full_name == STORED_AS
    assert record.card.issuer_name == record.card.brand == STORED_AS
    assert record.antom_result is not None
    assert record.antom_result.result_message == STORED_AS
    assert ("acquirer_name", STORED_AS) in record.acquirer_info
    [event] = await store.events_after(0, limit=10)
    assert event.record == record


async def test_unstorable_text_in_an_inquiry_answer_is_stored_as_replacement_characters(
    service: VaultingService, store: Store, emulator: EmulatorServer
) -> None:
    """Regression (issue 9 #4): the same text in an inquiry answer failed every inquiry of the
    record on PostgreSQL, rescheduled for ever. (The emulator cannot send a lone surrogate;
    the notification test covers that, through the same parser.)"""
    await set_faults(emulator, drop_notifications=-1)
    created = await service.create_session(OWNER, "vr-nul-inq", SessionParameters())
    await buyer_submits(
        emulator,
        created.record.session.session_data,
        VISA,
        cardholder_name=NUL,
        billing_address={"region": "US", "address1": NUL},
    )
    record = await service.get_result(OWNER, "vr-nul-inq", refresh=True)
    assert record.status is VaultingStatus.SUCCEEDED
    assert record.card is not None
    assert record.card.billing_address is not None
    assert record.card.billing_address.address1 == NUL_STORED_AS
    assert record.card.cardholder_name is not None
    assert NUL_STORED_AS in record.card.cardholder_name.full_name


async def test_an_unknown_vaulting_status_is_acknowledged_kept_shown_and_still_expires(
    service: VaultingService,
    store: Store,
    notify: Any,
    clock: ManualClock,
    captured_log: CapturedLog,
) -> None:
    """Regression (issue 9 #5): vaultingStatus was a Literal, so a signed notification saying
    "CANCELLED" got 400 (Antom retried in vain) and an inquiry saying it raised a protocol
    error, treated as no answer: the record was polled every 15 minutes for ever. Now the
    notification is acknowledged with a warning, the record keeps its status and Antom's word
    (GetResult's antom_vaulting_status), and the reconciler expires it like any open one."""
    created = await service.create_session(OWNER, "vr-cancel", SessionParameters())
    document = success_notification("vr-cancel", "x", vaultingStatus="CANCELLED")
    assert await notify(document) == 200
    assert await notify(document) == 200  # Antom's retry: no second event
    record = await store.get("vr-cancel")
    assert record is not None
    assert record.status is VaultingStatus.SESSION_CREATED
    assert record.card is None
    result = mapping.vaulting_result(record)
    assert result.antom_vaulting_status == "CANCELLED"
    assert len(await store.events_after(0, limit=10)) == 1
    warnings = [line for line in captured_log.lines() if line["level"] == "warning"]
    assert [line.get("antom_vaulting_status") for line in warnings] == ["CANCELLED"] * 2

    clock.now = created.record.session.expires_at + timedelta(minutes=6)
    assert await make_reconciler(store, service, clock).run_once() == 1
    expired = await store.get("vr-cancel")
    assert expired is not None
    assert expired.status is VaultingStatus.EXPIRED


async def test_an_unknown_vaulting_status_in_an_inquiry_answer_is_kept() -> None:
    """Regression (issue 9 #5): the inquiry side of the same hole: the answer parses, and its
    word reaches the record without moving the status."""
    answer = InquireVaultingResponse.from_antom_json(
        b'{"result":{"resultCode":"SUCCESS","resultStatus":"S"},'
        b'"vaultingRequestId":"vr-1","vaultingStatus":"CANCELLED"}'
    )
    observation = observations.from_inquiry(answer, datetime.now(UTC))
    assert observation is not None
    assert observation.status is None
    assert observation.antom_result is not None
    assert observation.antom_result.vaulting_status == "CANCELLED"


async def test_a_wrong_merchant_key_never_expires_a_record(
    service: VaultingService,
    store: Store,
    emulator: EmulatorServer,
    antom_key: PrivateKey,
    clock: ManualClock,
    captured_log: CapturedLog,
) -> None:
    """Regression (issue 9 #6): with a wrong merchant key Antom answers an unsigned
    INVALID_SIGNATURE, which the reconciler took for Antom's answer and so expired records
    past expiry + grace (one lost notification would bury a saved card). Now nothing expires,
    CreateSession is UNAVAILABLE naming the key settings, and the log says it once."""
    created = await service.create_session(OWNER, "vr-key", SessionParameters())
    await service.create_session(OWNER, "vr-key-2", SessionParameters())
    config = AntomClientConfig(
        gateway=emulator.base_url, client_id=CLIENT_ID, allow_plain_http=True, budget=2.0
    )
    wrong = AntomClient(config, Signer(PrivateKey.generate()), Verifier(antom_key.public_key()))
    async with wrong:
        misconfigured = make_service(store, wrong, clock)
        clock.now = created.record.session.expires_at + timedelta(hours=1)
        assert await make_reconciler(store, misconfigured, clock).run_once() == 2
        with pytest.raises(AntomConfigurationError) as refused:
            await misconfigured.create_session(OWNER, "vr-key-3", SessionParameters())
    for vaulting_request_id in ("vr-key", "vr-key-2"):
        record = await store.get(vaulting_request_id)
        assert record is not None
        assert record.status is VaultingStatus.SESSION_CREATED
    status = rich_status(refused.value)
    assert status.code == code_pb2.UNAVAILABLE
    assert "VAULT_MERCHANT_PRIVATE_KEY_FILE / VAULT_ANTOM_KEY_VERSION" in status.message
    errors = [line for line in captured_log.lines() if line["level"] == "error"]
    assert len(errors) == 1, errors
    assert not [line for line in captured_log.lines() if "reconciliation" in line["message"]]


async def tokenless_success(
    service: VaultingService, store: Store, emulator: EmulatorServer, vaulting_request_id: str
) -> None:
    """A record made SUCCEEDED by an inquiry answer without paymentMethodDetail (twice: the
    repeat changes nothing), while Antom (the emulator) does hold the card, its notification
    lost."""
    await set_faults(emulator, drop_notifications=-1)
    created = await service.create_session(OWNER, vaulting_request_id, SessionParameters())
    await buyer_submits(emulator, created.record.session.session_data, VISA)
    tokenless = InquireVaultingResponse.from_antom_json(
        json.dumps(
            {
                "result": {"resultCode": "SUCCESS", "resultStatus": "S"},
                "vaultingRequestId": vaulting_request_id,
                "vaultingStatus": "SUCCESS",
            }
        ).encode()
    )
    observation = observations.from_inquiry(tokenless, datetime.now(UTC))
    assert observation is not None
    assert await store.apply(vaulting_request_id, observation) is not None
    assert await store.apply(vaulting_request_id, observation) is None
    record = await store.get(vaulting_request_id)
    assert record is not None
    assert record.status is VaultingStatus.SUCCEEDED
    assert record.card_pending
    assert not record.reconciled


async def test_a_success_without_its_card_token_stays_refreshable_until_the_token_arrives(
    service: VaultingService, store: Store, emulator: EmulatorServer
) -> None:
    """Regression (issue 9 #7): refresh skipped Antom for any SUCCEEDED record, so a success
    first learned without its card token never learned the token. Now refresh asks Antom
    until the token is known, and not after."""
    await tokenless_success(service, store, emulator, "vr-refresh")
    refreshed = await service.get_result(OWNER, "vr-refresh", refresh=True)
    assert refreshed.card is not None
    assert refreshed.card.card_token
    assert emulator.state.stats.calls("inquireVaulting", "vr-refresh") == 1
    await service.get_result(OWNER, "vr-refresh", refresh=True)
    assert emulator.state.stats.calls("inquireVaulting", "vr-refresh") == 1


async def test_a_success_without_its_card_token_stays_scheduled_until_the_token_arrives(
    service: VaultingService, store: Store, emulator: EmulatorServer, clock: ManualClock
) -> None:
    """Regression (issue 9 #7): a SUCCEEDED record left the reconciliation schedule even
    without its card token, so a lost notification meant the token was never learned. Now the
    reconciler keeps asking until the token arrives, then the record leaves the schedule, and
    news that changes nothing makes no event."""
    await tokenless_success(service, store, emulator, "vr-scheduled")
    reconciler = make_reconciler(store, service, clock)
    clock.now += timedelta(hours=1)
    assert await reconciler.run_once() == 1
    done = await store.get("vr-scheduled")
    assert done is not None
    assert done.card is not None
    assert done.card.card_token
    assert done.reconciled
    clock.now += timedelta(days=2)
    assert await reconciler.run_once() == 0
    events = await store.events_after(0, limit=10)
    assert [e.source for e in events] == [EventSource.INQUIRY] * 2


async def set_faults(emulator: EmulatorServer, **faults: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{emulator.base_url}/emulator/faults", json=faults) as answer,
    ):
        assert answer.status == 200, await answer.text()


async def test_a_retried_session_sends_its_first_body_whatever_the_notify_url_says_now(
    backend: Backend,
    emulator: EmulatorServer,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
    clock: ManualClock,
) -> None:
    """Regression (issue 9 #15): the notify URL is in the signed createVaultingSession body;
    a retry after it changed (new settings, a restart) sent a different body, which Antom
    refuses as REPEAT_REQ_INCONSISTENT, burning the id. Now the first attempt's bytes are
    kept and every later attempt, in a new process over the same database, sends them."""
    sent: list[bytes] = []
    opened: list[AntomHttp] = []

    class Recording(AntomHttp):
        """The client's HTTP session, keeping every createVaultingSession body it sends."""

        async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
            if url.endswith("createVaultingSession"):
                sent.append(body)
            return await super().post(url, body, headers)

    def client() -> AntomClient:
        config = AntomClientConfig(
            gateway=emulator.base_url,
            client_id=CLIENT_ID,
            allow_plain_http=True,
            budget=5.0,
            retry=RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02),
        )
        http = Recording(2)
        opened.append(http)
        return AntomClient(
            config, Signer(merchant_key), Verifier(antom_key.public_key()), http=http
        )

    await set_faults(emulator, unknown_result=2)
    first_store = await backend.open()
    async with client() as antom:
        before = make_service(first_store, antom, clock, notify_url="https://old.example/n")
        with pytest.raises(AntomUnknownResultError):
            await before.create_session(OWNER, "vr-moved", SessionParameters())
    await first_store.close()

    restarted = await backend.open()
    try:
        async with client() as antom:
            after = make_service(restarted, antom, clock, notify_url="https://new.example/n")
            created = await after.create_session(OWNER, "vr-moved", SessionParameters())
    finally:
        await restarted.close()
        for http in opened:
            await http.aclose()
    assert created.created
    assert len(sent) == 3
    assert sent[0] == sent[1] == sent[2]
    assert b"https://old.example/n" in sent[2]
