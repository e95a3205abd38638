"""The typed Antom models accept what Antom (and its SDKs) send and serialise what Antom expects."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from vault_service.antom.models import (
    CardPaymentMethodDetail,
    CreateVaultingSessionRequest,
    Env,
    InquireVaultingResponse,
    VaultingNotification,
)

SEED_NOTIFICATION = {
    "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMsg": "ignored"},
    "vaultingRequestId": "vr_0001",
    "vaultingCreateTime": "2023-10-16T01:07:22-07:00",
    "paymentMethodDetail": {
        "paymentMethodType": "CARD",
        "card": {
            "cardToken": "ALIPAYabc",
            "brand": "VISA",
            "maskedCardNo": "************8764",
            "bin": "409280",
            "lastFour": "8764",
            "expiredMonth": "02",
            "expiredYear": "26",
            "funding": "CREDIT",
            "billingAddress": {"region": "US", "zipCode": "94107"},
            "cardholderName": {"firstName": "Ada", "lastName": "Lovelace"},
            "avsResultRaw": "4",
            "cvvResultRaw": "1",
        },
    },
    "acquirerInfo": {
        "acquirerName": "ADYEN",
        "acquirerTransactionId": "t1",
        "referenceRequestId": "r1",
    },
    "futureField": {"anything": True},
}


def test_seed_notification_with_expired_spelling_parses() -> None:
    """The seed's sample spells expiry `expiredMonth`; the SDKs say `expiryMonth`: accept both."""
    notification = VaultingNotification.model_validate(SEED_NOTIFICATION)
    card = notification.payment_method_detail.card  # type: ignore[union-attr]
    assert card is not None
    assert (card.expiry_month, card.expiry_year) == ("02", "26")
    assert card.billing_address is not None
    assert card.billing_address.zip_code == "94107"
    assert notification.acquirer_info is not None
    assert notification.acquirer_info.acquirer_name == "ADYEN"
    assert notification.result.result_message == ""


def test_expiry_spelling_serialises_as_the_sdk_spelling() -> None:
    """What we send (and store) uses the SDK spelling whatever the input spelling was."""
    card = CardPaymentMethodDetail.model_validate({"expiredMonth": "03", "expiryYear": 2027})
    assert json.loads(card.to_json_bytes()) == {"expiryMonth": "03", "expiryYear": "2027"}


def test_card_repr_hides_card_data() -> None:
    """A model that ends up in a log line must not carry the PAN, CVV or token with it."""
    card = CardPaymentMethodDetail(card_no="4111111111111111", cvv="123", card_token="ALIPAYsecret")
    text = repr(card) + str(card)
    for secret in ("4111111111111111", "123", "ALIPAYsecret"):
        assert secret not in text


def test_scalars_accept_strings_and_native_values() -> None:
    """Antom's docs send every scalar as a string; the SDKs send booleans and numbers natively."""
    env = Env.model_validate(
        {"timeZoneOffset": "-120", "browserInfo": {"javaEnabled": "true"}, "screenWidth": 1920}
    )
    assert env.time_zone_offset == -120
    assert env.browser_info is not None
    assert env.browser_info.java_enabled is True
    assert env.screen_width == "1920"
    request = CreateVaultingSessionRequest.model_validate(
        {
            "vaultingRequestId": "vr_1",
            "vaultingNotificationUrl": "https://m.example/n",
            "is3DSAuthentication": "false",
        }
    )
    assert request.is_3ds_authentication is False


def test_create_request_serialises_compact_camel_case_without_unset_fields() -> None:
    """The body bytes are what gets signed: compact, camelCase, no nulls, Antom's exact names."""
    request = CreateVaultingSessionRequest(
        vaulting_request_id="vr_0001",
        vaulting_notification_url="https://merchant.example/antom/notify",
        redirect_url="https://merchant.example/return",
        is_3ds_authentication=True,
    )
    assert request.to_json_bytes() == (
        b'{"vaultingRequestId":"vr_0001",'
        b'"vaultingNotificationUrl":"https://merchant.example/antom/notify",'
        b'"paymentMethodType":"CARD","redirectUrl":"https://merchant.example/return",'
        b'"is3DSAuthentication":true}'
    )


@pytest.mark.parametrize(
    "override",
    [
        {"vaultingRequestId": ""},
        {"vaultingRequestId": "x" * 65},
        {"merchantRegion": "SGP"},
        {"vaultingNotificationUrl": "h" * 2049},
    ],
)
def test_create_request_enforces_antom_limits(override: dict[str, str]) -> None:
    """Limits Antom documents are caught before a request is signed and sent."""
    fields = {"vaultingRequestId": "vr", "vaultingNotificationUrl": "https://m.example/n"}
    with pytest.raises(ValidationError):
        CreateVaultingSessionRequest.model_validate(fields | override)


def test_result_status_outside_s_f_u_is_rejected() -> None:
    """An unknown resultStatus would silently be treated as something it is not: refuse it."""
    with pytest.raises(ValidationError):
        InquireVaultingResponse.model_validate(
            {"result": {"resultCode": "X", "resultStatus": "Q"}, "vaultingRequestId": "vr"}
        )


def test_inquiry_success_carries_card_details() -> None:
    """inquireVaulting's SUCCESS answer exposes the same card fields as the notification."""
    response = InquireVaultingResponse.model_validate(
        {
            "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success."},
            "vaultingRequestId": "vr",
            "vaultingStatus": "SUCCESS",
            "vaultingResultCode": "SUCCESS",
            "paymentMethodDetail": SEED_NOTIFICATION["paymentMethodDetail"],
        }
    )
    assert response.vaulting_status == "SUCCESS"
    assert response.payment_method_detail is not None
    assert response.payment_method_detail.card is not None
    assert response.payment_method_detail.card.card_token == "ALIPAYabc"
