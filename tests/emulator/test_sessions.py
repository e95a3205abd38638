"""createVaultingSession and inquireVaulting: shapes, idempotency, states, expiry, stats."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from tests.emulator.conftest import (
    CREATE,
    DECLINED,
    INQUIRE,
    PROD_API,
    THREE_DS,
    Api,
    ConfigFactory,
    Receiver,
    eventually,
)
from vault_service.emulator import EmulatorServer


async def test_session_answer_is_shaped_like_antoms(api: Api, receiver: Receiver):
    before = time.time()
    answer = await api.create("vr-shape", receiver.url(), redirectUrl="https://m.example/back")
    session_id = answer["vaultingSessionId"]
    assert len(session_id) == 64
    assert len(base64.b64decode(session_id, validate=True)) == 48

    data = answer["vaultingSessionData"]
    assert len(data) <= 4096
    opaque, region, number, config = data.split("&&")
    assert len(opaque) == 88
    assert len(base64.b64decode(opaque, validate=True)) == 64
    assert opaque[:42] == session_id[:42]
    assert region == "SG"
    assert number.isdigit()
    decoded = json.loads(base64.b64decode(config))
    assert decoded["paymentSessionConfig"] == {
        "paymentMethodCategoryType": "CARD",
        "productScene": "VAULTING",
        "productSceneVersion": "1.0",
    }
    version_map = json.loads(decoded["extendInfo"])["versionMap"]
    assert set(version_map) == {"web", "iOS", "Android"}
    assert version_map["web"]["1.1.0"] == {"targetWebVerison": "1.1.0"}

    expiry = datetime.fromisoformat(answer["vaultingSessionExpiryTime"])
    assert expiry.utcoffset() is not None
    assert before + 1800 - 2 <= expiry.timestamp() <= time.time() + 1800

    page = urlsplit(answer["normalUrl"])
    assert f"{page.scheme}://{page.netloc}" == api.base_url
    assert parse_qs(page.query)["vaultingSessionId"] == [session_id]


async def test_hosted_page_serves_a_card_form(api: Api, receiver: Receiver):
    answer = await api.create("vr-page", receiver.url())
    async with api.http.get(answer["normalUrl"]) as response:
        assert response.status == 200
        page = await response.text()
    assert "vr-page" in page
    assert "4000000000003220" in page
    assert "/emulator/buyer/submit" in page
    async with api.http.get(api.base_url + "/emulator/buyer?vaultingSessionId=nope") as response:
        assert response.status == 404


async def test_session_ttl_sets_the_expiry_time(make_config: ConfigFactory, make_api, receiver):
    async with EmulatorServer(make_config(session_ttl=90)) as server:
        answer = await make_api(server).create("vr-ttl", receiver.url())
    expiry = datetime.fromisoformat(answer["vaultingSessionExpiryTime"]).timestamp()
    assert abs(expiry - (time.time() + 90)) < 3


async def test_same_parameters_replay_the_identical_body(api: Api, receiver: Receiver):
    fields = {
        "paymentMethodType": "CARD",
        "vaultingRequestId": "vr-idem",
        "vaultingNotificationUrl": receiver.url(),
        "merchantRegion": "SG",
    }
    first = await api.call(CREATE, fields)
    second = await api.call(CREATE, {**fields, "unknownExtra": 1})
    assert first.body == second.body
    api.verify(second, CREATE)
    assert len(api.emulator.state.sessions) == 1


async def test_replay_after_the_buyer_finished_is_still_the_same_body(api: Api, receiver: Receiver):
    first = await api.create("vr-idem-final", receiver.url())
    await api.submit(first["vaultingSessionData"])
    assert await api.create("vr-idem-final", receiver.url()) == first


async def test_different_parameters_are_repeat_req_inconsistent(api: Api, receiver: Receiver):
    await api.create("vr-clash", receiver.url())
    reply = await api.call(
        CREATE,
        {
            "paymentMethodType": "CARD",
            "vaultingRequestId": "vr-clash",
            "vaultingNotificationUrl": receiver.url("/other"),
        },
    )
    assert reply.result["resultStatus"] == "F"
    assert reply.result["resultCode"] == "REPEAT_REQ_INCONSISTENT"
    api.verify(reply, CREATE)


async def test_unknown_request_id_inquiry_is_a_signed_failure(api: Api):
    answer = await api.inquire("vr-never-created")
    assert answer["result"]["resultStatus"] == "F"
    assert answer["result"]["resultCode"] == "ORDER_NOT_EXIST"


async def test_inquiry_before_the_buyer_submits_is_processing(api: Api, receiver: Receiver):
    await api.create("vr-wait", receiver.url())
    answer = await api.inquire("vr-wait")
    assert answer == {
        "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success."},
        "vaultingRequestId": "vr-wait",
        "vaultingStatus": "PROCESSING",
        "vaultingResultCode": "VERIFICATION_IN_PROCESS",
        "vaultingResultMessage": "The verification is still under process.",
    }


async def test_inquiry_after_success_carries_the_card(api: Api, receiver: Receiver):
    created = await api.create("vr-ok", receiver.url())
    await api.submit(created["vaultingSessionData"])
    answer = await api.inquire("vr-ok")
    assert answer["vaultingStatus"] == "SUCCESS"
    assert answer["vaultingResultCode"] == "SUCCESS"
    detail = answer["paymentMethodDetail"]
    assert detail["paymentMethodType"] == "CARD"
    card = detail["card"]
    assert card["cardToken"].startswith("ALIPAY")
    assert card["maskedCardNo"] == "************1111"
    assert card["brand"] == "VISA"
    assert card["expiryMonth"] == "12"
    assert card["expiryYear"] == "39"


async def test_inquiry_after_decline_is_fail_with_the_code(api: Api, receiver: Receiver):
    created = await api.create("vr-no", receiver.url())
    await api.submit(created["vaultingSessionData"], DECLINED)
    answer = await api.inquire("vr-no")
    assert answer["result"]["resultStatus"] == "S"
    assert answer["vaultingStatus"] == "FAIL"
    assert answer["vaultingResultCode"] == "DO_NOT_HONOR"
    assert "paymentMethodDetail" not in answer


async def test_three_ds_is_processing_then_success(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    """The challenge lasts 1 s here: at 0.02 (100 ms) a loaded CI machine could take longer
    than that to make the first signed inquiry, which then already saw SUCCESS."""
    async with EmulatorServer(make_config(time_scale=0.2)) as server:
        caller = make_api(server)
        created = await caller.create("vr-3ds", receiver.url())
        await caller.submit(created["vaultingSessionData"], THREE_DS)
        pending = await caller.inquire("vr-3ds")
        assert pending["vaultingStatus"] == "PROCESSING"
        assert pending["vaultingResultCode"] == "VERIFICATION_IN_PROCESS"

        async def succeeded() -> bool:
            return (await caller.inquire("vr-3ds"))["vaultingStatus"] == "SUCCESS"

        await eventually(succeeded, within=10)
        notified = await receiver.wait_for(1)
    assert notified[0].json()["result"]["resultStatus"] == "S"


async def test_expired_session_is_closed_and_notified(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    async with EmulatorServer(make_config(session_ttl=0.05)) as server:
        caller = make_api(server)
        await caller.create("vr-expire", receiver.url())
        notified = await receiver.wait_for(1)
        answer = await caller.inquire("vr-expire")
    assert answer["vaultingStatus"] == "FAIL"
    assert answer["vaultingResultCode"] == "ORDER_IS_CLOSED"
    body = notified[0].json()
    assert body["result"]["resultStatus"] == "F"
    assert body["result"]["resultCode"] == "ORDER_IS_CLOSED"
    assert body["paymentMethodDetail"] == {"paymentMethodType": "CARD"}


class MovableClock:
    """The emulator's wall clock, real time plus an offset a test sets to jump ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_expiry_is_applied_on_lookup_before_the_timer(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    clock = MovableClock()
    async with EmulatorServer(make_config(session_ttl=600), clock=clock) as server:
        caller = make_api(server)
        await caller.create("vr-lookup", receiver.url())
        clock.offset = 601
        answer = await caller.inquire("vr-lookup")
        clock.offset = 0
        assert answer["vaultingResultCode"] == "ORDER_IS_CLOSED"
        await receiver.wait_for(1)


async def test_three_ds_pending_at_expiry_is_closed(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    async with EmulatorServer(make_config(session_ttl=0.3, time_scale=10)) as server:
        caller = make_api(server)
        created = await caller.create("vr-3ds-late", receiver.url())
        await caller.submit(created["vaultingSessionData"], THREE_DS)
        notified = await receiver.wait_for(1)
        assert notified[0].json()["result"]["resultCode"] == "ORDER_IS_CLOSED"
        assert (await caller.inquire("vr-3ds-late"))["vaultingStatus"] == "FAIL"


async def test_stats_count_every_call_per_operation_and_request_id(api: Api, receiver: Receiver):
    await api.create("vr-count", receiver.url())
    await api.create("vr-count", receiver.url())
    await api.call(f"{PROD_API}/createVaultingSession", {"vaultingRequestId": "vr-count"})
    await api.inquire("vr-count")
    await api.inquire("vr-other")
    stats = await api.get_json("/emulator/stats")
    assert stats["calls"] == {"createVaultingSession": 3, "inquireVaulting": 2}
    assert stats["callsByVaultingRequestId"]["vr-count"] == {
        "createVaultingSession": 3,
        "inquireVaulting": 1,
    }
    assert stats["resultCodes"]["createVaultingSession"] == {"SUCCESS": 2, "PARAM_ILLEGAL": 1}
    assert stats["resultCodes"]["inquireVaulting"] == {"SUCCESS": 1, "ORDER_NOT_EXIST": 1}
    assert stats["sessions"] == 1
    assert api.emulator.state.stats.calls("createVaultingSession", "vr-count") == 3


async def test_failed_authentication_is_counted_too(api: Api, receiver: Receiver):
    await api.call(INQUIRE, {"vaultingRequestId": "vr-anon"}, client_id="nobody")
    stats = await api.get_json("/emulator/stats")
    assert stats["calls"] == {"inquireVaulting": 1}
    assert stats["resultCodes"]["inquireVaulting"] == {"CLIENT_INVALID": 1}


async def test_concurrent_repeats_make_one_session(api: Api, receiver: Receiver):
    await api.put_faults({"latency_ms": 20})
    fields = {
        "paymentMethodType": "CARD",
        "vaultingRequestId": "vr-race",
        "vaultingNotificationUrl": receiver.url(),
    }
    replies = await asyncio.gather(*(api.call(CREATE, fields) for _ in range(5)))
    assert len({reply.body for reply in replies}) == 1
    assert len(api.emulator.state.sessions) == 1
    assert api.emulator.state.stats.calls("createVaultingSession", "vr-race") == 5
