"""The gateway: authentication order, signatures both ways, transport quirks, routing."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from tests.emulator.conftest import (
    CLIENT_ID,
    CREATE,
    INQUIRE,
    PROD_API,
    Api,
    Receiver,
    raw_exchange,
)
from vault_service.antom import InvalidSignatureError, Signer, Verifier
from vault_service.emulator import EmulatorServer

UNSIGNED = "algorithm=RSA256,keyVersion=1,signature="


def _create_doc(request_id: str, receiver: Receiver) -> dict[str, object]:
    return {
        "paymentMethodType": "CARD",
        "vaultingRequestId": request_id,
        "vaultingNotificationUrl": receiver.url(),
    }


async def test_signed_success_verifies_with_the_emulator_key(api: Api, receiver: Receiver):
    reply = await api.call(CREATE, _create_doc("vr-sig", receiver))
    assert reply.status == 200
    assert reply.result == {
        "resultCode": "SUCCESS",
        "resultStatus": "S",
        "resultMessage": "success.",
    }
    assert reply.headers["client-id"] == CLIENT_ID
    assert reply.headers["Content-Type"] == "application/json; charset=UTF-8"
    api.verify(reply, CREATE)


async def test_answers_are_compact_json(api: Api, receiver: Receiver):
    reply = await api.call(CREATE, _create_doc("vr-compact", receiver))
    document = reply.json()
    assert reply.body == json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


async def test_production_path_works_and_is_signed_over_itself(api: Api, receiver: Receiver):
    path = f"{PROD_API}/createVaultingSession"
    reply = await api.call(path, _create_doc("vr-prod", receiver))
    assert reply.result["resultStatus"] == "S"
    api.verify(reply, path)
    with pytest.raises(InvalidSignatureError):
        api.verify(reply, CREATE)


async def test_tampered_body_is_invalid_signature_and_unsigned(api: Api, receiver: Receiver):
    reply = await api.call(
        CREATE,
        _create_doc("vr-tamper", receiver),
        tamper=lambda body: body.replace(b"vr-tamper", b"vr-tampeR"),
    )
    assert reply.status == 200
    assert reply.result["resultStatus"] == "F"
    assert reply.result["resultCode"] == "INVALID_SIGNATURE"
    assert reply.headers["signature"] == UNSIGNED
    assert reply.headers["response-time"] == ""
    assert reply.headers["client-id"] == CLIENT_ID
    assert api.emulator.state.sessions.by_request_id("vr-tamper") is None


async def test_signature_over_another_path_is_rejected(api: Api, receiver: Receiver):
    reply = await api.call(
        CREATE, _create_doc("vr-path", receiver), sign_path=f"{PROD_API}/createVaultingSession"
    )
    assert reply.result["resultCode"] == "INVALID_SIGNATURE"


async def test_signature_by_another_key_is_rejected(api: Api, receiver: Receiver, antom_key):
    body = json.dumps(_create_doc("vr-key", receiver)).encode()
    wrong = Signer(antom_key).sign("POST", CREATE, CLIENT_ID, "1716000000000", body)
    reply = await api.call(CREATE, body, signature=wrong)
    assert reply.result["resultCode"] == "INVALID_SIGNATURE"


@pytest.mark.parametrize("signature", ["", "garbage", UNSIGNED])
async def test_missing_or_malformed_signature_is_rejected(
    api: Api, receiver: Receiver, signature: str
):
    reply = await api.call(CREATE, _create_doc("vr-bad", receiver), signature=signature)
    assert reply.result["resultCode"] == "INVALID_SIGNATURE"
    assert reply.headers["signature"] == UNSIGNED


async def test_unknown_client_id_comes_first_and_is_unsigned(api: Api, receiver: Receiver):
    reply = await api.call(
        CREATE, _create_doc("vr-client", receiver), client_id="SANDBOX_SOMEONE_ELSE"
    )
    assert reply.status == 200
    assert reply.result["resultStatus"] == "F"
    assert reply.result["resultCode"] == "CLIENT_INVALID"
    assert reply.headers["signature"] == UNSIGNED
    assert reply.headers["response-time"] == ""


async def test_client_id_header_name_is_case_insensitive(api: Api, receiver: Receiver):
    body = json.dumps(_create_doc("vr-case", receiver)).encode()
    signature = api.signer.sign("POST", CREATE, CLIENT_ID, "1716000000000", body)
    async with api.http.post(
        api.base_url + CREATE,
        data=body,
        headers={"CLIENT-ID": CLIENT_ID, "REQUEST-TIME": "1716000000000", "SIGNATURE": signature},
    ) as response:
        assert (await response.json())["result"]["resultStatus"] == "S"


async def test_missing_request_time_is_param_illegal(api: Api, receiver: Receiver):
    reply = await api.call(CREATE, _create_doc("vr-time", receiver), request_time="")
    assert reply.result["resultCode"] == "PARAM_ILLEGAL"
    assert "request-time" in reply.result["resultMessage"]
    assert reply.headers["signature"] == UNSIGNED


@pytest.mark.parametrize(
    "request_time",
    [
        "1716000000000",
        "2024-05-18T02:40:00+00:00",
        "2024-05-18T10:40:00+0800",
        "2024-05-18T02:40:00.1234567Z",
        "2019-05-28T12:12:12+08:00",
    ],
)
async def test_every_sdk_time_format_is_accepted(api: Api, receiver: Receiver, request_time: str):
    reply = await api.call(
        CREATE, _create_doc(f"vr-{request_time}", receiver), request_time=request_time
    )
    assert reply.result["resultStatus"] == "S"


@pytest.mark.parametrize("request_time", ["yesterday", "2024-05-18 02:40:00", "2024-05-18"])
async def test_unparseable_time_is_param_illegal(api: Api, receiver: Receiver, request_time: str):
    reply = await api.call(CREATE, _create_doc("vr-bad-time", receiver), request_time=request_time)
    assert reply.result["resultCode"] == "PARAM_ILLEGAL"


async def test_signature_header_with_spaces_and_lowercase_escapes(api: Api, receiver: Receiver):
    body = json.dumps(_create_doc("vr-spaces", receiver)).encode()
    canonical = api.signer.sign("POST", CREATE, CLIENT_ID, "1716000000000", body)
    assert "%2B" in canonical or "%2F" in canonical or "%3D" in canonical
    variant = (
        canonical.replace(",", ", ")
        .replace("%2B", "%2b")
        .replace("%2F", "%2f")
        .replace("%3D", "%3d")
    )
    reply = await api.call(CREATE, body, signature=variant)
    assert reply.result["resultStatus"] == "S"


async def test_python_sdk_style_body_is_verified_over_its_raw_bytes(api: Api, receiver: Receiver):
    body = json.dumps(_create_doc("vr-indent", receiver), indent=3).encode()
    reply = await api.call(CREATE, body, request_time="2024-05-18T02:40:00+00:00")
    assert reply.result["resultStatus"] == "S"


async def test_response_header_names_go_out_lowercase(api: Api, receiver: Receiver):
    reply = await api.call(CREATE, _create_doc("vr-raw", receiver))
    names = [name.decode() for name, _ in reply.raw_headers]
    assert {"client-id", "response-time", "signature"} <= set(names)
    assert not {"Client-Id", "Response-Time", "Signature"} & set(names)


async def test_unsigned_headers_go_out_lowercase_and_empty(api: Api, receiver: Receiver):
    reply = await api.call(CREATE, _create_doc("vr-raw-f", receiver), client_id="NOPE")
    raw = {name.decode(): value.decode() for name, value in reply.raw_headers}
    assert raw["signature"] == UNSIGNED
    assert raw["response-time"] == ""
    assert raw["client-id"] == CLIENT_ID


def _raw_request(target: str, host: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


async def test_absolute_form_target_as_the_python_sdk_sends_it(api: Api, receiver: Receiver):
    """``POST https://open-sea-global.alipay.com/ams/sandbox/... HTTP/1.1`` over a raw socket."""
    body = json.dumps(_create_doc("vr-absolute", receiver), indent=3).encode()
    request_time = "2024-05-18T02:40:00+00:00"
    signature = api.signer.sign("POST", CREATE, CLIENT_ID, request_time, body)
    request = _raw_request(
        f"https://open-sea-global.alipay.com{CREATE}",
        "open-sea-global.alipay.com",
        [
            ("Content-type", "application/json; charset=UTF-8"),
            ("Request-Time", request_time),
            ("client-id", CLIENT_ID),
            ("Signature", signature),
        ],
        body,
    )
    address = urlsplit(api.base_url)
    assert address.hostname is not None
    assert address.port is not None
    status, headers, answer = await raw_exchange(address.hostname, address.port, request)
    assert status == "HTTP/1.1 200 OK"
    fields = {name: value.strip() for name, _, value in (h.partition(":") for h in headers)}
    assert json.loads(answer)["result"]["resultStatus"] == "S"
    Verifier(api.emulator.antom_public_key).verify(
        fields["signature"],
        method="POST",
        path=CREATE,
        client_id=fields["client-id"],
        time=fields["response-time"],
        body=answer,
    )
    assert api.emulator.state.sessions.by_request_id("vr-absolute") is not None


async def test_duplicate_content_type_headers_as_the_go_sdk_sends_them(
    api: Api, receiver: Receiver
):
    address = urlsplit(api.base_url)
    assert address.hostname is not None
    assert address.port is not None
    body = json.dumps(_create_doc("vr-go", receiver)).encode()
    signature = api.signer.sign("POST", CREATE, CLIENT_ID, "1716000000000", body)
    request = _raw_request(
        CREATE,
        address.netloc,
        [
            ("Content-Type", "application/json"),
            ("Content-Type", "application/json; charset=UTF-8"),
            ("Request-Time", "1716000000000"),
            ("Client-Id", CLIENT_ID),
            ("Key-Version", "1"),
            ("Signature", signature),
        ],
        body,
    )
    status, _, answer = await raw_exchange(address.hostname, address.port, request)
    assert status == "HTTP/1.1 200 OK"
    assert json.loads(answer)["result"]["resultStatus"] == "S"


async def test_unknown_interface_is_no_interface_def_signed(api: Api):
    path = "/ams/sandbox/api/v1/vaults/vaultPaymentMethod"
    reply = await api.call(path, {"vaultingRequestId": "x"})
    assert reply.status == 200
    assert reply.result["resultCode"] == "NO_INTERFACE_DEF"
    assert reply.result["resultStatus"] == "F"
    api.verify(reply, path)


async def test_get_on_an_api_path_is_method_not_supported(api: Api):
    async with api.http.get(api.base_url + INQUIRE) as response:
        assert response.status == 200
        document = await response.json()
    assert document["result"]["resultCode"] == "METHOD_NOT_SUPPORTED"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            {"vaultingRequestId": "a", "vaultingNotificationUrl": "https://m.example/n"},
            "paymentMethodType",
        ),
        (
            {
                "paymentMethodType": "WALLET",
                "vaultingRequestId": "a",
                "vaultingNotificationUrl": "https://m.example/n",
            },
            "paymentMethodType",
        ),
        (
            {"paymentMethodType": "CARD", "vaultingNotificationUrl": "https://m.example/n"},
            "vaultingRequestId",
        ),
        (
            {
                "paymentMethodType": "CARD",
                "vaultingRequestId": "x" * 65,
                "vaultingNotificationUrl": "https://m.example/n",
            },
            "vaultingRequestId",
        ),
        ({"paymentMethodType": "CARD", "vaultingRequestId": "a"}, "vaultingNotificationUrl"),
        (
            {
                "paymentMethodType": "CARD",
                "vaultingRequestId": "a",
                "vaultingNotificationUrl": "/relative/notify",
            },
            "vaultingNotificationUrl",
        ),
        (
            {
                "paymentMethodType": "CARD",
                "vaultingRequestId": "a",
                "vaultingNotificationUrl": "https://m.example/" + "n" * 2048,
            },
            "vaultingNotificationUrl",
        ),
        (
            {
                "paymentMethodType": "CARD",
                "vaultingRequestId": "a",
                "vaultingNotificationUrl": "https://m.example/n",
                "redirectUrl": "https://m.example/" + "r" * 2048,
            },
            "redirectUrl",
        ),
        (
            {
                "paymentMethodType": "CARD",
                "vaultingRequestId": "a",
                "vaultingNotificationUrl": "https://m.example/n",
                "merchantRegion": "SGP",
            },
            "merchantRegion",
        ),
        (
            {
                "paymentMethodType": "CARD",
                "vaultingRequestId": "a",
                "vaultingNotificationUrl": "https://m.example/n",
                "is3DSAuthentication": "maybe",
            },
            "is3DSAuthentication",
        ),
        (
            {
                "paymentMethodType": "CARD",
                "vaultingRequestId": "a",
                "vaultingNotificationUrl": "https://m.example/n",
                "passThroughMetadata": "m" * 2049,
            },
            "passThroughMetadata",
        ),
    ],
)
async def test_invalid_create_fields_are_param_illegal_naming_the_field(
    api: Api, document: dict[str, object], field: str
):
    reply = await api.call(CREATE, document)
    assert reply.result["resultCode"] == "PARAM_ILLEGAL"
    assert reply.result["resultStatus"] == "F"
    assert reply.result["resultMessage"].startswith(field)
    api.verify(reply, CREATE)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe{}"])
async def test_unparseable_body_is_param_illegal(api: Api, body: bytes):
    reply = await api.call(CREATE, body)
    assert reply.result["resultCode"] == "PARAM_ILLEGAL"


async def test_inquiry_without_request_id_is_param_illegal(api: Api):
    reply = await api.call(INQUIRE, {"merchantAccountId": "m1"})
    assert reply.result["resultCode"] == "PARAM_ILLEGAL"
    assert reply.result["resultMessage"].startswith("vaultingRequestId")


async def test_string_and_native_booleans_and_unknown_fields_are_accepted(
    api: Api, receiver: Receiver
):
    for request_id, flag in (("vr-b1", True), ("vr-b2", "true"), ("vr-b3", "false")):
        answer = await api.create(
            request_id,
            receiver.url(),
            is3DSAuthentication=flag,
            merchantRegion="SG",
            someFutureField={"nested": 1},
        )
        assert answer["result"]["resultStatus"] == "S"


async def test_native_boolean_and_its_string_form_are_the_same_parameters(
    api: Api, receiver: Receiver
):
    first = await api.create("vr-same", receiver.url(), is3DSAuthentication=True)
    again = await api.create("vr-same", receiver.url(), is3DSAuthentication="true")
    assert again == first


async def test_gateway_instance_per_client_id(make_config, make_api, receiver: Receiver):
    async with EmulatorServer(make_config(client_id="PRODCLIENT01")) as server:
        caller = make_api(server)
        answer = await caller.create("vr-prod-client", receiver.url())
        assert answer["result"]["resultStatus"] == "S"
        reply = await caller.call(
            CREATE, _create_doc("vr-x", receiver), client_id="SANDBOX_VAULTDEV0001"
        )
        assert reply.result["resultCode"] == "CLIENT_INVALID"
