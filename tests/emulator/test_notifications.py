"""notifyVaulting: signed delivery, body shape, the retry schedule, the sandbox rule, the log."""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import datetime

import pytest

from tests.emulator.conftest import (
    CLIENT_ID,
    DECLINED,
    TEST_TIME_SCALE,
    VISA,
    Api,
    ConfigFactory,
    Receiver,
    eventually,
)
from vault_service.antom import Verifier
from vault_service.emulator import RETRY_INTERVALS, EmulatorServer

NOT_ACK = json.dumps({"result": {"resultCode": "SUCCESS", "resultStatus": "S"}}).encode()


async def _vault(api: Api, receiver: Receiver, request_id: str, card_no: str = VISA, **kw):
    created = await api.create(request_id, kw.pop("url", None) or receiver.url(), **kw)
    reply = await api.submit(created["vaultingSessionData"], card_no)
    assert reply.status == 200
    return created


async def test_success_notification_is_signed_and_complete(api: Api, receiver: Receiver):
    before = time.time()
    await _vault(api, receiver, "vr-notify")
    (received,) = await receiver.wait_for(1)
    assert received.path == "/antom/notify"
    names = {name.decode() for name, _ in received.raw_headers}
    assert {"client-id", "request-time", "signature"} <= names
    assert received.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert received.headers["client-id"] == CLIENT_ID
    Verifier(api.emulator.antom_public_key).verify(
        received.headers["signature"],
        method="POST",
        path="/antom/notify",
        client_id=received.headers["client-id"],
        time=received.headers["request-time"],
        body=received.body,
    )
    body = received.json()
    assert body["result"] == {
        "resultCode": "SUCCESS",
        "resultStatus": "S",
        "resultMessage": "success",
    }
    assert body["vaultingRequestId"] == "vr-notify"
    created = datetime.fromisoformat(body["vaultingCreateTime"])
    assert created.utcoffset() is not None
    assert abs(created.timestamp() - before) < 2
    detail = body["paymentMethodDetail"]
    assert detail["paymentMethodType"] == "CARD"
    card = detail["card"]
    assert re.fullmatch(r"ALIPAY[A-Za-z0-9+/=]+", card["cardToken"])
    assert re.fullmatch(r"[0-9a-f]{64}", card["fingerprint"])
    assert card == {
        "cardToken": card["cardToken"],
        "brand": "VISA",
        "maskedCardNo": "************1111",
        "bin": "411111",
        "lastFour": "1111",
        "expiryMonth": "12",
        "expiryYear": "39",
        "funding": "CREDIT",
        "issuingCountry": "US",
        "issuerName": card["issuerName"],
        "cardholderName": {"fullName": "Ada Lovelace"},
        "fingerprint": card["fingerprint"],
    }
    inquired = await api.inquire("vr-notify")
    assert inquired["paymentMethodDetail"]["card"] == card


async def test_fingerprint_is_stable_per_card_and_tokens_are_not(api: Api, receiver: Receiver):
    await _vault(api, receiver, "vr-fp1")
    await _vault(api, receiver, "vr-fp2")
    first, second = (r.json()["paymentMethodDetail"]["card"] for r in await receiver.wait_for(2))
    assert first["fingerprint"] == second["fingerprint"]
    assert first["cardToken"] != second["cardToken"]


async def test_billing_address_and_structured_name_are_returned(api: Api, receiver: Receiver):
    created = await api.create("vr-address", receiver.url())
    address = {"region": "SG", "city": "Singapore", "address1": "1 Raffles Place", "zipCode": "1"}
    name = {"firstName": "Ada", "lastName": "Lovelace"}
    await api.submit(created["vaultingSessionData"], cardholderName=name, billingAddress=address)
    card = (await receiver.wait_for(1))[0].json()["paymentMethodDetail"]["card"]
    assert card["billingAddress"] == address
    assert card["cardholderName"] == name


async def test_decline_notification_is_a_failure_without_token(api: Api, receiver: Receiver):
    await _vault(api, receiver, "vr-declined", DECLINED)
    body = (await receiver.wait_for(1))[0].json()
    assert body["result"]["resultStatus"] == "F"
    assert body["result"]["resultCode"] == "DO_NOT_HONOR"
    assert body["result"]["resultMessage"]
    card = body["paymentMethodDetail"]["card"]
    assert "cardToken" not in card
    assert "fingerprint" not in card
    assert card["lastFour"] == "0002"


async def test_notify_url_query_string_is_not_signed(api: Api, receiver: Receiver):
    await _vault(api, receiver, "vr-query", url=receiver.url("/hook?tenant=7"))
    (received,) = await receiver.wait_for(1)
    assert received.query == "tenant=7"
    Verifier(api.emulator.antom_public_key).verify(
        received.headers["signature"],
        method="POST",
        path="/hook",
        client_id=received.headers["client-id"],
        time=received.headers["request-time"],
        body=received.body,
    )


async def test_seed_expiry_spelling_on_request(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    async with EmulatorServer(make_config(expiry_spelling="expired")) as server:
        await _vault(make_api(server), receiver, "vr-spelling")
        card = (await receiver.wait_for(1))[0].json()["paymentMethodDetail"]["card"]
    assert (card["expiredMonth"], card["expiredYear"]) == ("12", "39")
    assert "expiryMonth" not in card


async def test_retries_stop_at_the_first_acknowledgement(api: Api, receiver: Receiver):
    receiver.replies.extend([(500, b"oops"), (502, b"not json")])
    await _vault(api, receiver, "vr-retry")
    await receiver.wait_for(3)
    await api.emulator.state.notifier.wait_idle()
    log = (await api.get_json("/emulator/notifications?vaultingRequestId=vr-retry"))["attempts"]
    assert [a["outcome"] for a in log] == ["rejected", "rejected", "acknowledged"]
    assert [a["httpStatus"] for a in log] == [500, 502, 200]
    assert [a["attempt"] for a in log] == [1, 2, 3]
    assert [a["intervalSeconds"] for a in log] == [
        interval * TEST_TIME_SCALE for interval in RETRY_INTERVALS[:3]
    ]
    assert len(receiver.requests) == 3


async def test_full_schedule_then_give_up(make_config: ConfigFactory, make_api, receiver: Receiver):
    receiver.default_reply = (503, b"busy")
    async with EmulatorServer(make_config(time_scale=2e-6)) as server:
        await _vault(make_api(server), receiver, "vr-give-up")
        await server.state.notifier.wait_idle()
        attempts = server.state.notifier.attempts("vr-give-up")
    assert len(receiver.requests) == 8
    assert [a.attempt for a in attempts] == list(range(1, 9))
    assert [a.interval_seconds for a in attempts] == [i * 2e-6 for i in RETRY_INTERVALS]
    assert all(a.outcome == "rejected" for a in attempts)
    for earlier, later in itertools.pairwise(attempts):
        assert later.scheduled_at - earlier.scheduled_at >= later.interval_seconds - 1e-3
        assert later.sent_at is not None
        assert later.sent_at >= later.scheduled_at - 1e-3


async def test_sandbox_does_not_resend_after_a_malformed_ack(api: Api, receiver: Receiver):
    receiver.default_reply = (200, NOT_ACK)
    await _vault(api, receiver, "vr-sandbox")
    await receiver.wait_for(1)
    await api.emulator.state.notifier.wait_idle()
    attempts = api.emulator.state.notifier.attempts("vr-sandbox")
    assert [(a.outcome, a.http_status) for a in attempts] == [("rejected", 200)]


async def test_production_client_resends_after_a_malformed_ack(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    receiver.replies.append((200, NOT_ACK))
    async with EmulatorServer(make_config(client_id="VAULTDEV0001")) as server:
        await _vault(make_api(server), receiver, "vr-prod-retry")
        await server.state.notifier.wait_idle()
        outcomes = [a.outcome for a in server.state.notifier.attempts()]
    assert outcomes == ["rejected", "acknowledged"]


async def test_acknowledgement_is_compared_as_json(api: Api, receiver: Receiver):
    receiver.replies.append(
        (
            200,
            b'{"result": {"resultMessage": "success.", "resultStatus": "S", '
            b'"resultCode": "SUCCESS"}}',
        )
    )
    receiver.default_reply = (
        200,
        b'{\n  "result": {"resultStatus": "S", "resultMessage": "success",\n'
        b'  "resultCode": "SUCCESS"}\n}',
    )
    await _vault(api, receiver, "vr-json-ack")
    await receiver.wait_for(1)
    await api.emulator.state.notifier.wait_idle()
    assert [a.outcome for a in api.emulator.state.notifier.attempts()] == ["rejected"]


async def test_pretty_printed_ack_is_accepted(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    receiver.default_reply = (
        200,
        b'{\n  "result": {"resultStatus": "S", "resultMessage": "success",\n'
        b'  "resultCode": "SUCCESS"}\n}',
    )
    async with EmulatorServer(make_config(client_id="VAULTDEV0001")) as server:
        await _vault(make_api(server), receiver, "vr-pretty")
        await server.state.notifier.wait_idle()
        assert [a.outcome for a in server.state.notifier.attempts()] == ["acknowledged"]


async def test_unreachable_webhook_is_an_error_and_retried(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    async with EmulatorServer(make_config(time_scale=2e-6)) as server:
        await _vault(make_api(server), receiver, "vr-down", url="http://127.0.0.1:9/notify")
        await server.state.notifier.wait_idle()
        attempts = server.state.notifier.attempts()
    assert len(attempts) == 8
    assert all(a.outcome == "error" and a.http_status is None and a.error for a in attempts)


async def test_slow_webhook_times_out(make_config: ConfigFactory, make_api, receiver: Receiver):
    receiver.delay = 0.3
    async with EmulatorServer(make_config(notification_timeout=0.05, time_scale=1)) as server:
        await _vault(make_api(server), receiver, "vr-slow")
        await receiver.wait_for(1)

        async def attempted() -> bool:
            return bool(server.state.notifier.attempts())

        await eventually(attempted)
        (attempt,) = server.state.notifier.attempts()
    assert attempt.outcome == "error"
    assert attempt.error == "timed out"


async def test_attempt_log_format_and_filter(api: Api, receiver: Receiver):
    await _vault(api, receiver, "vr-log-a")
    await _vault(api, receiver, "vr-log-b", DECLINED)
    await receiver.wait_for(2)
    await api.emulator.state.notifier.wait_idle()
    everything = (await api.get_json("/emulator/notifications"))["attempts"]
    assert {a["vaultingRequestId"] for a in everything} == {"vr-log-a", "vr-log-b"}
    (only_b,) = (await api.get_json("/emulator/notifications?vaultingRequestId=vr-log-b"))[
        "attempts"
    ]
    assert set(only_b) == {
        "vaultingRequestId",
        "attempt",
        "intervalSeconds",
        "scheduledAt",
        "sentAt",
        "url",
        "httpStatus",
        "error",
        "outcome",
    }
    assert only_b["url"] == receiver.url()
    assert only_b["outcome"] == "acknowledged"
    assert only_b["httpStatus"] == 200
    assert only_b["error"] is None
    assert datetime.fromisoformat(only_b["sentAt"]) >= datetime.fromisoformat(only_b["scheduledAt"])


async def test_shutdown_cancels_pending_deliveries(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    receiver.default_reply = (500, b"down")
    server = EmulatorServer(make_config(time_scale=1.0))
    async with server:
        await _vault(make_api(server), receiver, "vr-pending")
        await receiver.wait_for(1)
        started = time.monotonic()
    assert time.monotonic() - started < 1.5
    assert not server.state.notifier._tasks
    assert len(server.state.notifier.attempts()) == 1
    with pytest.raises(RuntimeError):
        server.state.notifier.deliver("late", receiver.url(), b"{}")
