"""The buyer endpoint: every test card outcome and every refusal."""

from __future__ import annotations

from datetime import date

import pytest

from tests.emulator.conftest import (
    DECLINED,
    MASTERCARD,
    THREE_DS,
    VISA,
    Api,
    ConfigFactory,
    Receiver,
)
from vault_service.emulator import EmulatorServer


async def _session(api: Api, receiver: Receiver, request_id: str, **fields: object) -> str:
    answer = await api.create(request_id, receiver.url(), **fields)
    data: str = answer["vaultingSessionData"]
    return data


@pytest.mark.parametrize(
    ("card_no", "code", "status", "result_code"),
    [
        (VISA, "SDK_ASSET_BINDING_SUCCESSFUL", "SUCCESS", "SUCCESS"),
        (MASTERCARD, "SDK_ASSET_BINDING_SUCCESSFUL", "SUCCESS", "SUCCESS"),
        (DECLINED, "SDK_ASSET_BINDING_FAIL", "FAIL", "DO_NOT_HONOR"),
        (THREE_DS, "SDK_ASSET_BINDING_PROCESSING", "PROCESSING", "VERIFICATION_IN_PROCESS"),
    ],
)
async def test_test_card_outcomes(
    api: Api, receiver: Receiver, card_no: str, code: str, status: str, result_code: str
):
    data = await _session(api, receiver, f"vr-{card_no}")
    reply = await api.submit(data, card_no)
    assert reply.status == 200
    answer = reply.json()
    assert answer["code"] == code
    assert answer["vaultingStatus"] == status
    assert answer["vaultingResultCode"] == result_code
    assert answer["vaultingRequestId"] == f"vr-{card_no}"


async def test_brands_follow_the_card(api: Api, receiver: Receiver):
    for card_no, brand in ((VISA, "VISA"), (MASTERCARD, "MASTERCARD")):
        data = await _session(api, receiver, f"vr-brand-{brand}")
        await api.submit(data, card_no)
        card = (await api.inquire(f"vr-brand-{brand}"))["paymentMethodDetail"]["card"]
        assert card["brand"] == brand
        assert card["bin"] == card_no[:6]
        assert card["lastFour"] == card_no[-4:]


async def test_success_answer_carries_the_redirect_url(api: Api, receiver: Receiver):
    data = await _session(api, receiver, "vr-redirect", redirectUrl="https://m.example/back")
    answer = (await api.submit(data)).json()
    assert answer["redirectUrl"] == "https://m.example/back"


async def test_card_number_with_spaces_and_numeric_expiry_are_accepted(
    api: Api, receiver: Receiver
):
    data = await _session(api, receiver, "vr-spaced")
    reply = await api.submit(data, "4111 1111 1111 1111", expiryMonth=7, expiryYear=2039)
    assert reply.status == 200
    card = (await api.inquire("vr-spaced"))["paymentMethodDetail"]["card"]
    assert (card["expiryMonth"], card["expiryYear"]) == ("07", "39")


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"cardNo": "4111111111111112"}, 422, "INVALID_CARD_NUMBER"),
        ({"cardNo": "4111-1111"}, 422, "INVALID_CARD_NUMBER"),
        ({"cardNo": "4242424242424242"}, 422, "CARD_NOT_SUPPORTED"),
        ({"cardNo": None}, 400, "INVALID_REQUEST"),
        ({"expiryMonth": "13"}, 422, "INVALID_EXPIRATION_DATE"),
        ({"expiryMonth": "00"}, 422, "INVALID_EXPIRATION_DATE"),
        ({"expiryYear": "203"}, 422, "INVALID_EXPIRATION_DATE"),
        ({"expiryMonth": "01", "expiryYear": "20"}, 422, "CARD_EXPIRED"),
        ({"expiryMonth": "01", "expiryYear": "2020"}, 422, "CARD_EXPIRED"),
        ({"cvv": "12"}, 422, "INVALID_CVV"),
        ({"cvv": None}, 400, "INVALID_REQUEST"),
        ({"cardholderName": None}, 400, "INVALID_REQUEST"),
        ({"cardholderName": "  "}, 400, "INVALID_REQUEST"),
        ({"billingAddress": {"region": "USA"}}, 400, "INVALID_REQUEST"),
        ({"billingAddress": "Main Street"}, 400, "INVALID_REQUEST"),
    ],
)
async def test_refused_submissions_leave_the_session_open(
    api: Api, receiver: Receiver, fields: dict[str, object], status: int, code: str
):
    data = await _session(api, receiver, "vr-refused")
    reply = await api.submit(data, **fields)
    assert reply.status == status
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert (await api.inquire("vr-refused"))["vaultingStatus"] == "PROCESSING"
    assert (await api.submit(data)).status == 200


async def test_unknown_test_card_error_lists_the_test_cards(api: Api, receiver: Receiver):
    data = await _session(api, receiver, "vr-list")
    message = (await api.submit(data, "4242424242424242")).json()["error"]["message"]
    for card_no in (VISA, MASTERCARD, DECLINED, THREE_DS):
        assert card_no in message


async def test_card_expiring_this_month_is_still_valid(api: Api, receiver: Receiver):
    today = date.today()
    data = await _session(api, receiver, "vr-this-month")
    reply = await api.submit(data, expiryMonth=f"{today.month:02d}", expiryYear=str(today.year))
    assert reply.status == 200


async def test_unknown_session_data_is_404(api: Api):
    reply = await api.submit("not-a-session")
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "SESSION_NOT_FOUND"


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"cardNo": "4111111111111111"}'])
async def test_malformed_submission_is_400(api: Api, body: bytes):
    async with api.http.post(api.base_url + "/emulator/buyer/submit", data=body) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "INVALID_REQUEST"


async def test_finished_session_refuses_a_second_card(api: Api, receiver: Receiver):
    data = await _session(api, receiver, "vr-twice")
    await api.submit(data)
    reply = await api.submit(data, MASTERCARD)
    assert reply.status == 409
    assert reply.json()["error"]["code"] == "SESSION_FINISHED"


async def test_pending_three_ds_refuses_a_second_card(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    async with EmulatorServer(make_config(time_scale=10)) as server:
        caller = make_api(server)
        data = (await caller.create("vr-3ds-twice", receiver.url()))["vaultingSessionData"]
        await caller.submit(data, THREE_DS)
        reply = await caller.submit(data)
    assert reply.status == 409
    assert reply.json()["error"]["code"] == "SESSION_IN_PROGRESS"


async def test_expired_session_refuses_cards(
    make_config: ConfigFactory, make_api, receiver: Receiver
):
    async with EmulatorServer(make_config(session_ttl=0.05)) as server:
        caller = make_api(server)
        data = (await caller.create("vr-late", receiver.url()))["vaultingSessionData"]
        await receiver.wait_for(1)
        reply = await caller.submit(data)
    assert reply.status == 410
    assert reply.json()["error"]["code"] == "SESSION_EXPIRED"
