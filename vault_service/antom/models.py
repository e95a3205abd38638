"""Typed models of Antom's vaulting messages, field for field as the fact sheet lists them.

Antom's JSON is camelCase; Python attributes are snake_case with the wire name as alias.
Parsing is tolerant where Antom is loose (unknown fields ignored, ``"true"`` or ``true``,
``"20"`` or ``20``, both ``expiryMonth`` and the seed's ``expiredMonth``) and strict where a
wrong value would be a silent bug (``resultStatus`` must be S, F or U). Enumerations Antom may
extend (card brands, funding, failure codes) stay plain strings so a new value never rejects a
notification.

Text PostgreSQL cannot store (U+0000, and the lone surrogates a JSON ``\\ud800`` escape
decodes to) becomes U+FFFD as Antom's JSON is parsed (:func:`antom_document`), in every string
of every message. A signed notification or an inquiry answer carrying one is still Antom's
word about the vaulting: refusing it would leave the record open for ever (the webhook
answering 500 or 400 to every retry, each inquiry failing the same way), and only one backend
would fail. Replaced once here, every backend stores the same value.
"""

from __future__ import annotations

import json
import re
from typing import Final, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

ResultStatus = Literal["S", "F", "U"]

UNSTORABLE_REPLACEMENT: Final = "\ufffd"
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with every character no database can store replaced by U+FFFD."""
    return _UNSTORABLE.sub(UNSTORABLE_REPLACEMENT, text)


_MAYBE_UNSTORABLE: Final = re.compile(rb"\\u|\x00|\xed[\xa0-\xbf]")
"""What a body holding unstorable text must contain: a ``\\u`` escape (``\\u0000``,
``\\ud800``), a NUL byte (which also every UTF-16 or UTF-32 body has, JSON text starting
with an ASCII character), or a UTF-8-encoded surrogate (``json.loads`` decodes bytes with
``surrogatepass``); a body without any of them is returned as parsed."""


def antom_document(raw: bytes) -> object:
    """Antom's JSON body as Python values, every string (keys too) made storable.

    Python's ``json`` is used, not pydantic's parser: the latter refuses lone surrogate
    escapes, which would make the whole message unreadable. Raises ``ValueError`` for a body
    that is not UTF-8 JSON.

    Walking every string of the document was the largest part of parsing a notification, so
    it is skipped for a body that cannot hold unstorable text (:data:`_MAYBE_UNSTORABLE`, one
    scan of the bytes in C): nearly every body Antom sends.
    """
    document = json.loads(raw)
    if _MAYBE_UNSTORABLE.search(raw) is None:
        return document
    return _storable(document)


def _storable(value: object) -> object:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {storable_text(key): _storable(item) for key, item in value.items()}
    return value


class AntomModel(BaseModel):
    """Shared configuration: camelCase on the wire, immutable, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        coerce_numbers_to_str=True,
    )

    @classmethod
    def from_antom_json(cls, raw: bytes) -> Self:
        """Parse a body Antom sent; ``ValueError`` (a ``ValidationError`` when the JSON is
        valid but the message is not) if it is not one."""
        return cls.model_validate(antom_document(raw))

    def to_json_bytes(self) -> bytes:
        """Compact JSON of the set fields, exactly the bytes that get signed and sent."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class Result(AntomModel):
    result_code: str = Field(max_length=64)
    result_status: ResultStatus
    result_message: str = ""


class UserName(AntomModel):
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None


class Address(AntomModel):
    region: str | None = None
    state: str | None = None
    city: str | None = None
    address1: str | None = None
    address2: str | None = None
    address3: str | None = None
    zip_code: str | None = None
    label: str | None = None
    country: str | None = None


class BrowserInfo(AntomModel):
    accept_header: str | None = None
    java_enabled: bool | None = None
    java_script_enabled: bool | None = None
    language: str | None = None
    user_agent: str | None = None


class Env(AntomModel):
    """Terminal and device data (``terminalType`` WEB/WAP/APP/MINI_APP, ``osType`` IOS/ANDROID)."""

    terminal_type: str | None = None
    os_type: str | None = None
    user_agent: str | None = None
    device_token_id: str | None = None
    client_ip: str | None = None
    cookie_id: str | None = None
    extend_info: str | None = None
    store_terminal_id: str | None = None
    store_terminal_request_time: str | None = None
    browser_info: BrowserInfo | None = None
    color_depth: str | None = None
    screen_height: str | None = None
    screen_width: str | None = None
    time_zone_offset: int | None = Field(default=None, ge=-720, le=720)
    device_brand: str | None = None
    device_model: str | None = None
    device_language: str | None = None
    device_id: str | None = None
    os_version: str | None = None


class MpiData(AntomModel):
    three_ds_version: str | None = Field(default=None, alias="threeDSVersion")
    eci: str | None = None
    cavv: str | None = None
    ds_transaction_id: str | None = None
    credential_type: str | None = None


class CardPaymentMethodDetail(AntomModel):
    """``paymentMethodDetail.card``: the request-side and the response-side fields in one model.

    The repr hides the PAN, CVV and token so a logged model cannot leak them.
    """

    card_no: str | None = Field(default=None, repr=False)
    cvv: str | None = Field(default=None, repr=False)
    card_token: str | None = Field(default=None, repr=False)
    expiry_month: str | None = Field(
        default=None,
        validation_alias=AliasChoices("expiryMonth", "expiredMonth", "expiry_month"),
    )
    expiry_year: str | None = Field(
        default=None,
        validation_alias=AliasChoices("expiryYear", "expiredYear", "expiry_year"),
    )
    cardholder_name: UserName | None = Field(default=None, repr=False)
    billing_address: Address | None = Field(default=None, repr=False)
    brand: str | None = None
    selected_card_brand: str | None = None
    is_3ds_authentication: bool | None = Field(default=None, alias="is3DSAuthentication")
    request_3ds: str | None = Field(default=None, alias="request3DS")
    sca_exemption_indicator: str | None = None
    enable_authentication_upgrade: str | None = None
    mpi_data: MpiData | None = None
    date_of_birth: str | None = Field(default=None, repr=False)
    business_no: str | None = None
    card_password_digest: str | None = Field(default=None, repr=False)
    cpf: str | None = Field(default=None, repr=False)
    payer_email: str | None = Field(default=None, repr=False)
    card_issuer: str | None = None
    country_issue: str | None = None
    inst_user_name: str | None = None
    mask: str | None = None
    last4: str | None = None
    supported_brands: list[str] | None = None
    payment_method_detail_metadata: str | None = None
    authentication_flow: str | None = None
    masked_card_no: str | None = None
    last_four: str | None = None
    bin: str | None = None
    funding: str | None = None
    issuing_country: str | None = None
    issuer_name: str | None = None
    avs_result_raw: str | None = None
    cvv_result_raw: str | None = None
    fingerprint: str | None = None
    network_transaction_id: str | None = None


class Wallet(AntomModel):
    account_no: str | None = Field(default=None, repr=False)
    account_holder_name: str | None = Field(default=None, repr=False)
    phone_no: str | None = Field(default=None, repr=False)
    email: str | None = Field(default=None, repr=False)
    billing_address: Address | None = Field(default=None, repr=False)
    token: str | None = Field(default=None, repr=False)
    token_expiry_time: str | None = None


class PaymentMethodDetail(AntomModel):
    payment_method_type: str | None = None
    card: CardPaymentMethodDetail | None = None
    payment_method_detail_type: str | None = None
    wallet: Wallet | None = None
    extend_info: str | None = None
    interaction_type: str | None = None


class AcquirerInfo(AntomModel):
    acquirer_name: str | None = None
    reference_request_id: str | None = None
    acquirer_transaction_id: str | None = None
    acquirer_merchant_id: str | None = None
    acquirer_result_code: str | None = None
    acquirer_result_message: str | None = None
    acquirer_card_token: str | None = Field(default=None, repr=False)
    acquirer_fingerprint: str | None = None
    acquirer_merchant_name: str | None = None
    acquirer_reason_description: str | None = None
    ptsp_transaction_id: str | None = None
    acquirer_account_name: str | None = None


class CustomizedInfo(AntomModel):
    customized_field1: str | None = None
    customized_field2: str | None = None
    customized_field3: str | None = None
    customized_field4: str | None = None
    customized_field5: str | None = None


class CreateVaultingSessionRequest(AntomModel):
    vaulting_request_id: str = Field(min_length=1, max_length=64)
    vaulting_notification_url: str = Field(min_length=1, max_length=2048)
    payment_method_type: str = Field(default="CARD", max_length=64)
    redirect_url: str | None = Field(default=None, max_length=2048)
    merchant_region: str | None = Field(default=None, min_length=2, max_length=2)
    is_3ds_authentication: bool | None = Field(default=None, alias="is3DSAuthentication")
    pass_through_metadata: str | None = Field(default=None, max_length=2048)


class CreateVaultingSessionResponse(AntomModel):
    result: Result
    vaulting_session_data: str = Field(min_length=1, max_length=4096)
    vaulting_session_id: str = Field(min_length=1, max_length=64)
    vaulting_session_expiry_time: str = Field(min_length=1)
    normal_url: str | None = None


class InquireVaultingRequest(AntomModel):
    vaulting_request_id: str = Field(min_length=1, max_length=64)
    merchant_account_id: str | None = Field(default=None, max_length=64)


class InquireVaultingResponse(AntomModel):
    result: Result
    vaulting_request_id: str
    vaulting_status: str | None = None
    """``SUCCESS``, ``FAIL``, ``PROCESSING``, or a word Antom adds later (kept, not refused)."""
    vaulting_result_code: str | None = None
    vaulting_result_message: str | None = None
    payment_method_detail: PaymentMethodDetail | None = None
    normal_url: str | None = None
    scheme_url: str | None = None
    applink_url: str | None = None
    metadata: str | None = None
    acquirer_info: AcquirerInfo | None = None


class VaultingNotification(AntomModel):
    """The ``notifyVaulting`` body: ``result`` S means stored, F means failed."""

    result: Result
    vaulting_request_id: str = Field(min_length=1, max_length=64)
    payment_method_detail: PaymentMethodDetail | None = None
    vaulting_create_time: str | None = None
    acquirer_info: AcquirerInfo | None = None
    metadata: str | None = None
    vaulting_status: str | None = None
    """As in :class:`InquireVaultingResponse`: any word Antom sends is kept."""
    customized_info: CustomizedInfo | None = None
