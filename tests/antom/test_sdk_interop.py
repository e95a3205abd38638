"""Our signing agrees with the official Python SDK (global-open-sdk-python 1.7.1), both ways.

The SDK runs in its own virtualenv (it pins cryptography 44.0.3) behind the session-wide
``antom_sdk`` fixture. Roles, as in production: the merchant key signs requests (our Signer in
the client, the SDK in a merchant's code); Antom's key signs responses and notifications (our
Signer in the emulator); each side verifies with the other's public key.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.antom_sdk import AntomSdk, AntomSdkError, AntomSdkWorkerDied
from tests.antom_sdk.fixtures import sdk_python
from vault_service.antom.errors import InvalidSignatureError
from vault_service.antom.rsa_keys import PrivateKey, load_private_key, load_public_key
from vault_service.antom.signing import SignatureHeader, Signer, Verifier

pytestmark = pytest.mark.antom_sdk


def bare(pem: bytes) -> str:
    return "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))


@dataclass(frozen=True)
class KeyForms:
    """One RSA key pair in every spelling either side may be given."""

    key: PrivateKey
    pkcs8_pem: str
    pkcs1_pem: str
    pkcs8_b64: str
    pkcs1_b64: str
    spki_pem: str
    spki_b64: str

    @classmethod
    def generate(cls) -> KeyForms:
        key = PrivateKey.generate()
        public = key.public_key()
        return cls(
            key=key,
            pkcs8_pem=key.to_pkcs8_pem().decode(),
            pkcs1_pem=key.to_pkcs1_pem().decode(),
            pkcs8_b64=bare(key.to_pkcs8_pem()),
            pkcs1_b64=bare(key.to_pkcs1_pem()),
            spki_pem=public.to_spki_pem().decode(),
            spki_b64=public.to_spki_base64(),
        )

    @property
    def sdk_private(self) -> str:
        """The private-key form the SDK loads under any cryptography version (bare PKCS#1)."""
        return self.pkcs1_b64


@pytest.fixture(scope="module")
def merchant() -> KeyForms:
    return KeyForms.generate()


@pytest.fixture(scope="module")
def antom() -> KeyForms:
    return KeyForms.generate()


@dataclass(frozen=True)
class Message:
    path: str
    client_id: str
    time: str
    body: bytes
    method: str = "POST"

    def sign(self, signer: Signer) -> str:
        return signer.sign(self.method, self.path, self.client_id, self.time, self.body)

    def verify(self, verifier: Verifier, header: str) -> SignatureHeader:
        return verifier.verify(
            header,
            method=self.method,
            path=self.path,
            client_id=self.client_id,
            time=self.time,
            body=self.body,
        )

    def sdk_sign(self, sdk: AntomSdk, private_key: str) -> str:
        return sdk.sign(self.method, self.path, self.client_id, self.time, self.body, private_key)

    def sdk_verify(self, sdk: AntomSdk, signature: str, public_key: str) -> bool:
        return sdk.verify(
            self.method, self.path, self.client_id, self.time, self.body, signature, public_key
        )


def sdk_header(value: str, key_version: str = "1") -> str:
    """The Signature header exactly as ``DefaultAlipayClient.execute`` assembles it."""
    return "algorithm=RSA256,keyVersion=" + key_version + ",signature=" + value


def after_signature(header: str) -> str:
    """What the SDK hands to ``verify``: everything after the first ``signature=``."""
    return header.split("signature=", 1)[1]


SANDBOX_CREATE = "/ams/sandbox/api/v1/vaults/createVaultingSession"
PRODUCTION_INQUIRE = "/ams/api/v1/vaults/inquireVaulting"
NOTIFY_PATH = "/antom/vaulting/notify"
SANDBOX_CLIENT = "SANDBOX_5YEXAMPLE00001"
PRODUCTION_CLIENT = "5YEXAMPLE00001"
MS_TIME = "1716000000000"
ISO_TIME = "2024-05-18T02:40:00+00:00"

NON_ASCII = {"vaultingRequestId": "vr_0001", "holder": "张伟", "note": "卡 💳 ok"}


def compact(document: dict[str, Any], *, ascii_only: bool) -> bytes:
    return json.dumps(document, ensure_ascii=ascii_only, separators=(",", ":")).encode()


MESSAGES = [
    pytest.param(
        Message(
            SANDBOX_CREATE,
            SANDBOX_CLIENT,
            MS_TIME,
            b'{"paymentMethodType":"CARD","vaultingRequestId":"vr_0001"}',
        ),
        id="sandbox-ms-time-compact",
    ),
    pytest.param(
        Message(
            PRODUCTION_INQUIRE,
            PRODUCTION_CLIENT,
            ISO_TIME,
            json.dumps({"vaultingRequestId": "vr_0001"}, indent=3).encode(),
        ),
        id="production-iso-time-sdk-indent3",
    ),
    pytest.param(
        Message(SANDBOX_CREATE, SANDBOX_CLIENT, ISO_TIME, json.dumps(NON_ASCII, indent=3).encode()),
        id="sdk-indent3-non-ascii-escaped",
    ),
    pytest.param(
        Message(SANDBOX_CREATE, SANDBOX_CLIENT, MS_TIME, compact(NON_ASCII, ascii_only=False)),
        id="compact-chinese-emoji-raw-utf8",
    ),
    pytest.param(
        Message(SANDBOX_CREATE, SANDBOX_CLIENT, MS_TIME, compact(NON_ASCII, ascii_only=True)),
        id="compact-chinese-emoji-escaped",
    ),
    pytest.param(
        Message(PRODUCTION_INQUIRE, PRODUCTION_CLIENT, MS_TIME, '{"e":"😀"}'.encode()),
        id="production-ms-time-emoji-raw",
    ),
    pytest.param(
        Message(
            NOTIFY_PATH,
            SANDBOX_CLIENT,
            "2024-05-18T10:40:05+08:00",
            b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"},'
            b'"vaultingRequestId":"vr_0001"}',
        ),
        id="notification-offset-time",
    ),
    pytest.param(
        Message(PRODUCTION_INQUIRE, PRODUCTION_CLIENT, "2024-05-18T02:40:00.1234567Z", b"{}"),
        id="dotnet-time",
    ),
    pytest.param(
        Message(SANDBOX_CREATE, SANDBOX_CLIENT, MS_TIME, b'{"a": 1}\r\n  '),
        id="body-crlf-trailing-space",
    ),
    pytest.param(Message(SANDBOX_CREATE, SANDBOX_CLIENT, MS_TIME, b""), id="empty-body"),
]

MESSAGE = Message(SANDBOX_CREATE, SANDBOX_CLIENT, MS_TIME, compact(NON_ASCII, ascii_only=False))


# -- the reference itself ------------------------------------------------------------------------


def test_worker_runs_the_pinned_reference_sdk(antom_sdk: AntomSdk) -> None:
    """The cross-checks are against global-open-sdk-python 1.7.1 with its pinned cryptography
    44.0.3, not against whatever happens to be installed."""
    assert antom_sdk.versions["sdk"] == "1.7.1"
    assert antom_sdk.versions["cryptography"] == "44.0.3"


# -- both directions, byte for byte --------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES)
def test_sdk_verify_accepts_our_signature(
    antom_sdk: AntomSdk, merchant: KeyForms, message: Message
) -> None:
    """signature_tool.verify accepts the header value our Signer produces."""
    header = message.sign(Signer(merchant.key))
    assert message.sdk_verify(antom_sdk, after_signature(header), merchant.spki_b64) is True


@pytest.mark.parametrize("message", MESSAGES)
def test_our_verifier_accepts_sdk_signature(
    antom_sdk: AntomSdk, antom: KeyForms, message: Message
) -> None:
    """Our Verifier accepts the header the SDK builds from signature_tool.sign."""
    header = sdk_header(message.sdk_sign(antom_sdk, antom.sdk_private))
    parsed = message.verify(Verifier(antom.key.public_key()), header)
    assert parsed.key_version == "1"


@pytest.mark.parametrize("message", MESSAGES)
def test_our_header_equals_sdk_header_byte_for_byte(
    antom_sdk: AntomSdk, merchant: KeyForms, message: Message
) -> None:
    """Same key, same content: our Signature header and the SDK's are the same string
    (PKCS#1 v1.5 is deterministic, so any difference in content, hash, padding, base64 or URL
    encoding would show here)."""
    ours = message.sign(Signer(merchant.key))
    assert ours == sdk_header(message.sdk_sign(antom_sdk, merchant.sdk_private))


@pytest.mark.parametrize("form", ["pkcs8_pem", "pkcs1_pem", "pkcs8_b64", "pkcs1_b64"])
def test_every_key_form_we_load_signs_like_the_sdk(
    antom_sdk: AntomSdk, merchant: KeyForms, form: str
) -> None:
    """Whichever spelling our loader is given, the key signs exactly as the SDK does, and our
    Verifier (SPKI PEM or base64) accepts the SDK's signature."""
    signer = Signer(load_private_key(getattr(merchant, form)))
    sdk_value = MESSAGE.sdk_sign(antom_sdk, merchant.sdk_private)
    assert MESSAGE.sign(signer) == sdk_header(sdk_value)
    for public in (merchant.spki_pem, merchant.spki_b64):
        MESSAGE.verify(Verifier(load_public_key(public)), sdk_header(sdk_value))


@pytest.mark.parametrize(
    ("form", "loads"),
    [
        ("pkcs1_b64", True),
        ("pkcs8_b64", True),  # only with cryptography 44.x (fact sheet §4.3)
        ("pkcs1_pem", True),  # the SDK finds its own markers already present
        ("pkcs8_pem", False),  # gets a second, RSA PRIVATE KEY armour around it
    ],
)
def test_private_key_forms_the_sdk_loads(
    antom_sdk: AntomSdk, merchant: KeyForms, form: str, loads: bool
) -> None:
    """Documents how the SDK reads merchant keys under its pinned cryptography 44.0.3 (it wraps
    whatever it gets in ``BEGIN RSA PRIVATE KEY`` armour); what loads signs like us."""
    if not loads:
        with pytest.raises(AntomSdkError, match="Could not deserialize key data"):
            MESSAGE.sdk_sign(antom_sdk, getattr(merchant, form))
        return
    value = MESSAGE.sdk_sign(antom_sdk, getattr(merchant, form))
    assert sdk_header(value) == MESSAGE.sign(Signer(merchant.key))


@pytest.mark.parametrize(
    ("public", "loads"),
    [
        ("spki_b64", True),
        ("spki_pem", True),
        ("pkcs1_public_b64", False),  # rsa.PublicKey.load_pkcs1_openssl_pem wants SPKI
    ],
)
def test_public_key_forms_the_sdk_loads(
    antom_sdk: AntomSdk, antom: KeyForms, public: str, loads: bool
) -> None:
    """Documents which Antom public-key spellings the SDK verifies with: SubjectPublicKeyInfo
    only, which is what our PublicKey.to_spki_base64 exports."""
    forms = {
        "spki_b64": antom.spki_b64,
        "spki_pem": antom.spki_pem,
        "pkcs1_public_b64": bare(
            antom.key.public_key().rsa.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
            )
        ),
    }
    value = after_signature(MESSAGE.sign(Signer(antom.key)))
    if loads:
        assert MESSAGE.sdk_verify(antom_sdk, value, forms[public]) is True
    else:
        with pytest.raises(AntomSdkError, match="PyAsn1Error"):
            MESSAGE.sdk_verify(antom_sdk, value, forms[public])


@pytest.mark.parametrize(
    "tampered",
    [
        pytest.param(replace(MESSAGE, body=MESSAGE.body + b" "), id="body"),
        pytest.param(replace(MESSAGE, path="/ams/api/v1/vaults/createVaultingSession"), id="path"),
        pytest.param(replace(MESSAGE, client_id="SANDBOX_OTHER"), id="client-id"),
        pytest.param(replace(MESSAGE, time="1716000000001"), id="time"),
    ],
)
def test_sdk_rejects_our_signature_over_other_content(
    antom_sdk: AntomSdk, merchant: KeyForms, tampered: Message
) -> None:
    """The agreement above is not the SDK accepting anything: change one part and it refuses."""
    value = after_signature(MESSAGE.sign(Signer(merchant.key)))
    with pytest.raises(AntomSdkError, match="VerificationError"):
        tampered.sdk_verify(antom_sdk, value, merchant.spki_b64)


def test_our_verifier_rejects_sdk_signature_over_other_content(
    antom_sdk: AntomSdk, antom: KeyForms
) -> None:
    """Nor does our Verifier accept an SDK signature for a different body."""
    header = sdk_header(MESSAGE.sdk_sign(antom_sdk, antom.sdk_private))
    with pytest.raises(InvalidSignatureError):
        replace(MESSAGE, body=b"{}").verify(Verifier(antom.key.public_key()), header)


# -- notifications: webhook_tool.check_signature -------------------------------------------------

NOTIFICATION = Message(
    NOTIFY_PATH,
    SANDBOX_CLIENT,
    "2024-05-18T10:40:05+08:00",
    b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"},'
    b'"vaultingRequestId":"vr_0001","paymentMethodDetail":{"paymentMethodType":"CARD",'
    b'"card":{"cardToken":"tok_x","brand":"VISA"}}}',
)


def test_webhook_check_signature_accepts_our_notification_header(
    antom_sdk: AntomSdk, antom: KeyForms
) -> None:
    """A notification our emulator signs with Antom's key passes the SDK's webhook check,
    which takes the whole header value."""
    n = NOTIFICATION
    header = n.sign(Signer(antom.key))
    ok = antom_sdk.check_signature(
        n.method, n.path, n.client_id, n.time, n.body, header, antom.spki_b64
    )
    assert ok is True


def test_webhook_check_signature_rejects_tampered_notification(
    antom_sdk: AntomSdk, antom: KeyForms
) -> None:
    """...and refuses it once the body changes (the check really verifies)."""
    n = NOTIFICATION
    header = n.sign(Signer(antom.key))
    with pytest.raises(AntomSdkError, match="VerificationError"):
        antom_sdk.check_signature(
            n.method, n.path, n.client_id, n.time, n.body + b"\n", header, antom.spki_b64
        )


# -- responses: DefaultAlipayClient.execute's own checks -----------------------------------------

RESPONSE_BODY = (
    b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"},'
    b'"vaultingSessionData":"data","vaultingSessionId":"vs_1","vaultingSessionExpiryTime":'
    b'"2024-05-18T03:40:00Z","note":"\xe5\x8d\xa1"}'
)


def signed_response_headers(
    antom: KeyForms,
    *,
    path: str = SANDBOX_CREATE,
    body: bytes = RESPONSE_BODY,
    client_id: str = SANDBOX_CLIENT,
    response_time: str = "2024-05-18T02:40:01Z",
) -> list[tuple[str, str]]:
    """Headers of a response signed the way our emulator signs (lowercase names, as Antom)."""
    signature = Signer(antom.key).sign("POST", path, client_id, response_time, body)
    return [
        ("content-type", "application/json; charset=UTF-8"),
        ("client-id", client_id),
        ("response-time", response_time),
        ("signature", signature),
    ]


def test_sdk_client_accepts_a_response_we_sign(antom_sdk: AntomSdk, antom: KeyForms) -> None:
    """__parse_header + __assert_response_verified, as execute runs them, accept our response."""
    headers = signed_response_headers(antom)
    antom_sdk.verify_response("POST", SANDBOX_CREATE, headers, RESPONSE_BODY, antom.spki_b64)


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        pytest.param(SANDBOX_CREATE, {}, RESPONSE_BODY.replace(b"vs_1", b"vs_2"), id="body"),
        pytest.param(PRODUCTION_INQUIRE, {}, RESPONSE_BODY, id="path"),
        pytest.param(SANDBOX_CREATE, {"client-id": "SANDBOX_OTHER"}, RESPONSE_BODY, id="client"),
        pytest.param(
            SANDBOX_CREATE,
            {"response-time": "2024-05-18T02:40:02Z"},
            RESPONSE_BODY,
            id="response-time",
        ),
    ],
)
def test_sdk_client_rejects_a_tampered_response(
    antom_sdk: AntomSdk,
    antom: KeyForms,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    """Change the body, the request path or a header after signing and the SDK client refuses
    (it wraps rsa.VerificationError as 'response verify failed')."""
    sent = [(name, headers.get(name, value)) for name, value in signed_response_headers(antom)]
    with pytest.raises(AntomSdkError, match="response verify failed"):
        antom_sdk.verify_response("POST", path, sent, body, antom.spki_b64)


def test_sdk_client_rejects_a_response_signed_with_another_key(
    antom_sdk: AntomSdk, antom: KeyForms, merchant: KeyForms
) -> None:
    """A response signed with the merchant's key (a misconfigured emulator) is refused."""
    headers = signed_response_headers(merchant)
    with pytest.raises(AntomSdkError, match="response verify failed"):
        antom_sdk.verify_response("POST", SANDBOX_CREATE, headers, RESPONSE_BODY, antom.spki_b64)


@pytest.mark.parametrize(
    ("lowercase", "spelled"),
    [("signature", "Signature"), ("response-time", "Response-Time"), ("client-id", "Client-Id")],
)
def test_sdk_client_needs_lowercase_response_header_names(
    antom_sdk: AntomSdk, antom: KeyForms, lowercase: str, spelled: str
) -> None:
    """http.client keeps the server's casing and the SDK compares names case-sensitively, so an
    emulator must send exactly ``signature``, ``response-time`` and ``client-id`` (§3.4)."""
    headers = [
        (spelled if name == lowercase else name, value)
        for name, value in signed_response_headers(antom)
    ]
    with pytest.raises(AntomSdkError, match=f"{lowercase} not exist"):
        antom_sdk.verify_response("POST", SANDBOX_CREATE, headers, RESPONSE_BODY, antom.spki_b64)


# -- unsigned responses --------------------------------------------------------------------------

EMPTY_SIGNATURE = "algorithm=RSA256,keyVersion=1,signature="
SIGNED = "<real signature>"  # replaced by a valid header for the body in the test


def result_body(status: str | None) -> bytes:
    if status is None:
        return b'{"error":"no result object"}'
    return json.dumps(
        {"result": {"resultCode": "X", "resultStatus": status, "resultMessage": "m"}}
    ).encode()


@dataclass(frozen=True)
class UnsignedCase:
    """One way a response can arrive (partly) unsigned, and who accepts it.

    ``signature`` / ``response_time`` are header values, ``None`` meaning the header is absent.
    ``sdk_accepts`` is checked against the SDK below. ``ours_accepts`` is the rule
    ``vault_service.antom.client`` implements (same as the SDK, except that an absent header
    counts as an empty one); it is exported for the client's own tests. Neither side ever
    accepts an unsigned success: an unsigned answer can only make a call fail.
    """

    signature: str | None
    response_time: str | None
    status: str | None
    sdk_accepts: bool
    ours_accepts: bool
    client_id_header: bool = True


UNSIGNED_RESPONSE_CASES = {
    # The SDK rule: empty signature= and empty response-time -> accepted for F and U only.
    "empty-both-F": UnsignedCase(EMPTY_SIGNATURE, "", "F", sdk_accepts=True, ours_accepts=True),
    "empty-both-U": UnsignedCase(EMPTY_SIGNATURE, "", "U", sdk_accepts=True, ours_accepts=True),
    "empty-both-S": UnsignedCase(EMPTY_SIGNATURE, "", "S", sdk_accepts=False, ours_accepts=False),
    "empty-both-no-result": UnsignedCase(EMPTY_SIGNATURE, "", None, False, False),
    # Only one of the two empty: "incomplete signature headers", whatever the status.
    "empty-signature-with-time-F": UnsignedCase(EMPTY_SIGNATURE, MS_TIME, "F", False, False),
    "signed-with-empty-time-F": UnsignedCase(
        SIGNED, "", "F", sdk_accepts=False, ours_accepts=False
    ),
    # Where the SDK fails while parsing headers and we treat absent as empty.
    "empty-header-value-F": UnsignedCase("", "", "F", sdk_accepts=False, ours_accepts=True),
    "no-signature-header-F": UnsignedCase(None, "", "F", sdk_accepts=False, ours_accepts=True),
    "no-time-header-F": UnsignedCase(EMPTY_SIGNATURE, None, "F", False, ours_accepts=True),
    "no-headers-F": UnsignedCase(None, None, "F", sdk_accepts=False, ours_accepts=True),
    "no-headers-S": UnsignedCase(None, None, "S", sdk_accepts=False, ours_accepts=False),
    "no-client-id-header-F": UnsignedCase(
        EMPTY_SIGNATURE, "", "F", sdk_accepts=False, ours_accepts=True, client_id_header=False
    ),
    # A signed F is verified like any other answer.
    "signed-F": UnsignedCase(SIGNED, MS_TIME, "F", sdk_accepts=True, ours_accepts=True),
}


@pytest.mark.parametrize("case", UNSIGNED_RESPONSE_CASES.values(), ids=UNSIGNED_RESPONSE_CASES)
def test_sdk_unsigned_response_rule(
    antom_sdk: AntomSdk, antom: KeyForms, case: UnsignedCase
) -> None:
    """The SDK tolerates a response without signature only when ``signature=`` is empty, the
    ``response-time`` header is empty and ``result.resultStatus`` is F or U; the table above
    (and our client) encodes exactly that."""
    body = result_body(case.status)
    signature = case.signature
    if signature == SIGNED:
        signature = Signer(antom.key).sign(
            "POST", SANDBOX_CREATE, SANDBOX_CLIENT, case.response_time or "", body
        )
    headers = [("content-type", "application/json")]
    if case.client_id_header:
        headers.append(("client-id", SANDBOX_CLIENT))
    if signature is not None:
        headers.append(("signature", signature))
    if case.response_time is not None:
        headers.append(("response-time", case.response_time))
    if case.sdk_accepts:
        antom_sdk.verify_response("POST", SANDBOX_CREATE, headers, body, antom.spki_b64)
    else:
        with pytest.raises(AntomSdkError):
            antom_sdk.verify_response("POST", SANDBOX_CREATE, headers, body, antom.spki_b64)


# -- requests the SDK builds ---------------------------------------------------------------------

NOW = 1716000000.75  # 2024-05-18T02:40:00.75Z; the SDK drops the fraction
OPERATIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "createVaultingSession",
        {
            "paymentMethodType": "CARD",
            "vaultingRequestId": "vr_0001",
            "vaultingNotificationUrl": "https://merchant.example/n",
            "redirectUrl": "https://merchant.example/r",
            "is3DSAuthentication": True,
        },
    ),
    (
        "vaultPaymentMethod",
        {
            "vaultingRequestId": "vr_0001",
            "vaultingNotificationUrl": "https://merchant.example/n",
            "paymentMethodDetail": {
                "paymentMethodType": "CARD",
                "card": {
                    "cardNo": "4111111111111111",
                    "expiryYear": "30",
                    "expiryMonth": "12",
                    "cardholderName": {"firstName": "伟", "lastName": "张"},
                },
            },
        },
    ),
    ("inquireVaulting", {"vaultingRequestId": "vr_0001"}),
    ("fetchNonce", {"card": {"cardNo": "4111111111111111", "expiryYear": "30"}}),
]


@pytest.mark.parametrize(("operation", "fields"), OPERATIONS, ids=[op for op, _ in OPERATIONS])
@pytest.mark.parametrize(
    ("client_id", "prefix"), [(SANDBOX_CLIENT, "/ams/sandbox/api"), (PRODUCTION_CLIENT, "/ams/api")]
)
def test_sdk_request_is_signed_exactly_like_ours(
    antom_sdk: AntomSdk,
    merchant: KeyForms,
    operation: str,
    fields: dict[str, Any],
    client_id: str,
    prefix: str,
) -> None:
    """For a request built by the SDK's own execute (body, sandbox path rewrite, ISO time):
    our Signer over what it sent gives its exact Signature header, and our Verifier (the
    emulator's side) accepts it."""
    sent = antom_sdk.build_request(
        operation, fields, client_id=client_id, private_key=merchant.sdk_private, now=NOW
    )
    assert sent.path == f"{prefix}/v1/vaults/{operation}"
    assert sent.url == "https://open-sea-global.alipay.com" + sent.path
    assert sent.request_time == "2024-05-18T02:40:00+00:00"
    assert sent.headers["client-id"] == client_id
    message = Message(sent.path, client_id, sent.request_time, sent.body_bytes)
    assert message.sign(Signer(merchant.key)) == sent.signature
    message.verify(Verifier(merchant.key.public_key()), sent.signature)


@pytest.mark.parametrize("operation", ["createVaultingSession", "inquireVaulting"])
def test_sdk_body_is_json_dumps_indent3_ascii(
    antom_sdk: AntomSdk, merchant: KeyForms, operation: str
) -> None:
    """The SDK's body is ``json.dumps(fields, indent=3)``: 3-space indents, ``": "``, non-ASCII
    escaped as ``\\uXXXX`` (emoji as a surrogate pair), no trailing newline."""
    fields = dict(OPERATIONS)[operation] | {"vaultingRequestId": "vr_卡_😀"}
    sent = antom_sdk.build_request(
        operation, fields, client_id=SANDBOX_CLIENT, private_key=merchant.sdk_private, now=NOW
    )
    assert sent.body == json.dumps(fields, indent=3)
    assert sent.body.isascii()
    assert '"vr_\\u5361_\\ud83d\\ude00"' in sent.body


def test_sdk_request_key_version(antom_sdk: AntomSdk, merchant: KeyForms) -> None:
    """A request's key_version goes into the header; our Signer with that version matches."""
    sent = antom_sdk.build_request(
        "inquireVaulting",
        {"vaultingRequestId": "vr_0001"},
        client_id=SANDBOX_CLIENT,
        private_key=merchant.sdk_private,
        now=NOW,
        key_version="2",
    )
    assert SignatureHeader.parse(sent.signature).key_version == "2"
    message = Message(sent.path, SANDBOX_CLIENT, sent.request_time, sent.body_bytes)
    assert message.sign(Signer(merchant.key, key_version="2")) == sent.signature


def test_sdk_request_time_on_the_real_clock(antom_sdk: AntomSdk, merchant: KeyForms) -> None:
    """Without a frozen clock the SDK sends whole-second UTC ISO-8601 with ``+00:00`` (§3.3)."""
    sent = antom_sdk.build_request(
        "inquireVaulting",
        {"vaultingRequestId": "vr_0001"},
        client_id=SANDBOX_CLIENT,
        private_key=merchant.sdk_private,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", sent.request_time)


# -- the harness itself --------------------------------------------------------------------------


def test_worker_answers_bad_requests_and_keeps_running(antom_sdk: AntomSdk) -> None:
    """Bad input gets an error line, never a dead worker."""
    pid = antom_sdk.pid
    assert antom_sdk.raw("not json")["error"].startswith("JSONDecodeError: ")
    assert antom_sdk.raw("[1, 2]")["error"].startswith("TypeError: ")
    with pytest.raises(AntomSdkError, match="unknown op 'nope'") as unknown:
        antom_sdk.call("nope")
    assert unknown.value.error_type == "LookupError"
    with pytest.raises(AntomSdkError, match="TypeError"):
        antom_sdk.call("sign", method="POST")
    with pytest.raises(AntomSdkError, match="KeyError"):
        antom_sdk.build_request("noSuchOperation", {}, client_id="x", private_key="x")
    assert antom_sdk.call("versions")["sdk"] == "1.7.1"
    assert (antom_sdk.pid, antom_sdk.returncode) == (pid, None)


def process_exists(pid: int) -> bool:
    """True while ``pid`` is running or an unreaped zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.usefixtures("antom_sdk")  # skips/fails like the other checks when the venv is absent
def test_close_ends_the_worker_process() -> None:
    """close() ends the worker (exit status 0 on end of input) and reaps it; later calls fail
    cleanly."""
    sdk = AntomSdk.start(sdk_python())
    assert process_exists(sdk.pid)
    assert sdk.close() == 0
    assert not process_exists(sdk.pid)
    assert sdk.close() == 0  # idempotent
    with pytest.raises(AntomSdkWorkerDied):
        sdk.call("versions")


# Inner sessions load only what the fixture needs (faster, and no unrelated plugin warnings).
# Inner sessions load the fixture plugin and nothing slow or unrelated (hypothesis' plugin alone
# would re-import hypothesis, since pytester restores sys.modules after each inner run).
INNER_ARGS = ["-p", "tests.antom_sdk.fixtures"] + [
    arg
    for plugin in ("cacheprovider", "asyncio", "anyio", "hypothesispytest")
    for arg in ("-p", f"no:{plugin}")
]

INNER_SESSION = """
from pathlib import Path

def record(sdk):
    with Path("pids").open("a") as out:
        out.write(f"{sdk.pid}\\n")

def test_one(antom_sdk):
    record(antom_sdk)

def test_two(antom_sdk):
    record(antom_sdk)
"""


def test_session_fixture_shares_one_worker_and_ends_it(
    antom_sdk: AntomSdk, pytester: pytest.Pytester
) -> None:
    """In a separate pytest session, both tests get the same worker (its own, not ours), and
    once that session has ended the worker process is gone (not even a zombie)."""
    pytester.makepyfile(INNER_SESSION)
    result = pytester.runpytest(*INNER_ARGS)
    result.assert_outcomes(passed=2)
    pids = {int(line) for line in (pytester.path / "pids").read_text().split()}
    assert len(pids) == 1
    pid = pids.pop()
    assert pid != antom_sdk.pid
    assert not process_exists(pid)


@pytest.mark.parametrize(("ci", "outcome"), [("true", "errors"), (None, "skipped")])
def test_missing_sdk_interpreter_fails_in_ci_and_skips_elsewhere(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    ci: str | None,
    outcome: str,
) -> None:
    """$VAULT_ANTOM_SDK_PYTHON is honoured; when the interpreter is missing, CI=true turns the
    fixture into an error saying how to create the venv, and elsewhere it is a loud skip."""
    monkeypatch.setenv("VAULT_ANTOM_SDK_PYTHON", str(tmp_path / "absent" / "python"))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile("def test_uses_sdk(antom_sdk):\n    pass\n")
    result = pytester.runpytest(*INNER_ARGS, "-rs")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(
        ["*absent/python does not exist*python3.11 -m venv .venv-antom-sdk*"]
    )
    if outcome == "skipped":
        result.stdout.fnmatch_lines(["*NOT CHECKED AGAINST THE OFFICIAL SDK*"])


def test_interpreter_without_the_sdk_fails_even_outside_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interpreter that exists but cannot import the SDK is a broken setup: an error, never
    a skip."""
    monkeypatch.setenv("VAULT_ANTOM_SDK_PYTHON", sys.executable)  # the project's venv: no SDK
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile("def test_uses_sdk(antom_sdk):\n    pass\n")
    result = pytester.runpytest(*INNER_ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the Antom SDK worker did not start*", "*ModuleNotFoundError*"])
