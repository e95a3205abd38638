"""Fault injection: every fault from the config and at runtime, and the plan endpoint."""

from __future__ import annotations

import json
import time

import pytest

from tests.emulator.conftest import CREATE, INQUIRE, VISA, Api, ConfigFactory, Receiver
from vault_service.antom import InvalidSignatureError, SignatureHeader
from vault_service.emulator import EmulatorServer, FaultPlan
from vault_service.emulator.faults import Counter, FaultPlanError, Faults

ZERO_PLAN = {
    "latency_ms": 0,
    "http_5xx": 0,
    "unknown_result": 0,
    "bad_signature": 0,
    "drop_notifications": 0,
    "duplicate_notifications": 0,
}


def _create_doc(request_id: str, receiver: Receiver) -> dict[str, object]:
    return {
        "paymentMethodType": "CARD",
        "vaultingRequestId": request_id,
        "vaultingNotificationUrl": receiver.url(),
    }


async def test_plan_starts_empty_and_changes_only_named_faults(api: Api):
    assert await api.get_json("/emulator/faults") == ZERO_PLAN
    assert await api.put_faults({"http_5xx": 2}) == {**ZERO_PLAN, "http_5xx": 2}
    assert await api.put_faults({"latency_ms": 5}) == {**ZERO_PLAN, "http_5xx": 2, "latency_ms": 5}
    async with api.http.delete(api.base_url + "/emulator/faults") as response:
        assert await response.json() == ZERO_PLAN


@pytest.mark.parametrize(
    "body",
    [
        {"http_500": 1},
        {"http_5xx": -2},
        {"http_5xx": True},
        {"http_5xx": "1"},
        {"latency_ms": -1},
        {"latency_ms": 10**9},
        [1],
    ],
)
async def test_invalid_changes_are_refused_and_change_nothing(api: Api, body: object):
    async with api.http.put(api.base_url + "/emulator/faults", json=body) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "INVALID_FAULTS"
    assert await api.get_json("/emulator/faults") == ZERO_PLAN


async def test_http_5xx_answers_503_non_json_then_recovers(api: Api, receiver: Receiver):
    await api.put_faults({"http_5xx": 2})
    for _ in range(2):
        reply = await api.call(CREATE, _create_doc("vr-5xx", receiver))
        assert reply.status == 503
        with pytest.raises(json.JSONDecodeError):
            json.loads(reply.body)
    assert api.emulator.state.sessions.by_request_id("vr-5xx") is None
    assert (await api.create("vr-5xx", receiver.url()))["result"]["resultStatus"] == "S"
    assert (await api.get_json("/emulator/faults"))["http_5xx"] == 0
    stats = await api.get_json("/emulator/stats")
    assert stats["resultCodes"]["createVaultingSession"] == {"HTTP_503": 2, "SUCCESS": 1}


async def test_always_means_always(api: Api):
    await api.put_faults({"http_5xx": -1})
    for _ in range(3):
        assert (await api.call(INQUIRE, {"vaultingRequestId": "x"})).status == 503
    assert (await api.get_json("/emulator/faults"))["http_5xx"] == -1


async def test_unknown_result_is_signed_and_does_nothing(api: Api, receiver: Receiver):
    await api.put_faults({"unknown_result": 1})
    reply = await api.call(CREATE, _create_doc("vr-u", receiver))
    assert reply.status == 200
    assert reply.result == {
        "resultCode": "UNKNOWN_EXCEPTION",
        "resultStatus": "U",
        "resultMessage": reply.result["resultMessage"],
    }
    api.verify(reply, CREATE)
    assert api.emulator.state.sessions.by_request_id("vr-u") is None
    assert (await api.create("vr-u", receiver.url()))["result"]["resultStatus"] == "S"


async def test_unknown_result_spares_unauthenticated_calls(api: Api, receiver: Receiver):
    await api.put_faults({"unknown_result": 1})
    reply = await api.call(CREATE, _create_doc("vr-u2", receiver), client_id="nobody")
    assert reply.result["resultCode"] == "CLIENT_INVALID"
    assert (await api.get_json("/emulator/faults"))["unknown_result"] == 1


async def test_bad_signature_parses_but_does_not_verify(api: Api, receiver: Receiver):
    await api.put_faults({"bad_signature": 1})
    reply = await api.call(CREATE, _create_doc("vr-badsig", receiver))
    assert reply.result["resultStatus"] == "S"
    header = SignatureHeader.parse(reply.headers["signature"])
    assert len(header.signature) == 256
    with pytest.raises(InvalidSignatureError):
        api.verify(reply, CREATE)
    again = await api.call(CREATE, _create_doc("vr-badsig", receiver))
    assert again.body == reply.body
    api.verify(again, CREATE)


async def test_latency_delays_api_answers(api: Api):
    await api.put_faults({"latency_ms": 150})
    started = time.monotonic()
    await api.call(INQUIRE, {"vaultingRequestId": "x"})
    assert time.monotonic() - started >= 0.15
    await api.put_faults({"latency_ms": 0})
    started = time.monotonic()
    await api.call(INQUIRE, {"vaultingRequestId": "x"})
    assert time.monotonic() - started < 0.15


async def test_dropped_notification_keeps_the_schedule(api: Api, receiver: Receiver):
    await api.put_faults({"drop_notifications": 1})
    created = await api.create("vr-drop", receiver.url())
    await api.submit(created["vaultingSessionData"], VISA)
    await receiver.wait_for(1)
    await api.emulator.state.notifier.wait_idle()
    log = (await api.get_json("/emulator/notifications"))["attempts"]
    assert [(a["attempt"], a["outcome"]) for a in log] == [(1, "dropped"), (2, "acknowledged")]
    assert log[0]["sentAt"] is None
    assert log[0]["httpStatus"] is None
    assert len(receiver.requests) == 1


async def test_duplicated_notification_is_sent_twice_identically(api: Api, receiver: Receiver):
    await api.put_faults({"duplicate_notifications": 1})
    created = await api.create("vr-dup", receiver.url())
    await api.submit(created["vaultingSessionData"], VISA)
    first, second = await receiver.wait_for(2)
    assert first.body == second.body
    assert first.headers["signature"] == second.headers["signature"]
    assert first.headers["request-time"] == second.headers["request-time"]
    await api.emulator.state.notifier.wait_idle()
    log = (await api.get_json("/emulator/notifications"))["attempts"]
    assert [(a["attempt"], a["outcome"]) for a in log] == [(1, "acknowledged"), (1, "duplicate")]


async def test_faults_from_the_config(make_config: ConfigFactory, make_api, receiver: Receiver):
    plan = FaultPlan(http_5xx=1, unknown_result=1, bad_signature=1)
    async with EmulatorServer(make_config(faults=plan)) as server:
        caller = make_api(server)
        assert (await caller.get_json("/emulator/faults"))["http_5xx"] == 1
        assert (await caller.call(CREATE, _create_doc("vr-c", receiver))).status == 503
        unknown = await caller.call(CREATE, _create_doc("vr-c", receiver))
        assert unknown.result["resultStatus"] == "U"
        with pytest.raises(InvalidSignatureError):
            caller.verify(unknown, CREATE)
        assert (await caller.create("vr-c", receiver.url()))["result"]["resultStatus"] == "S"


def test_counters_count_down_and_always_stays():
    faults = Faults(FaultPlan(drop_notifications=2, duplicate_notifications=-1))
    assert [faults.take(Counter.DROP_NOTIFICATIONS) for _ in range(3)] == [True, True, False]
    assert all(faults.take(Counter.DUPLICATE_NOTIFICATIONS) for _ in range(5))
    assert faults.plan.duplicate_notifications == -1
    assert not faults.take(Counter.HTTP_5XX)


@pytest.mark.parametrize("settings", [{"http_5xx": -2}, {"latency_ms": -5}, {"bad_signature": 1.5}])
def test_plan_validation(settings: dict[str, object]):
    with pytest.raises((FaultPlanError, TypeError)):
        FaultPlan(**settings)  # type: ignore[arg-type]
