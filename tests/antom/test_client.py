"""The Antom client against the emulator over loopback: happy paths, every fault, budgets.

Each emulator fault is met the way the fact sheet says: 5xx and ``U`` are retried with the same
``vaultingRequestId``; ``F`` is never retried; a bad signature is rejected at once; and a
client that cannot get an answer gives up with a typed error inside its time budget.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.fixtures.antom import CLIENT_ID
from tests.fixtures.logs import CapturedLog
from vault_service.antom import causes
from vault_service.antom.client import (
    AntomClient,
    AntomClientConfig,
    RetryPolicy,
    check_response_signature,
    request_path,
)
from vault_service.antom.connection import MAX_ANSWER_BYTES, AntomHttp
from vault_service.antom.errors import (
    AntomConfigurationError,
    AntomProtocolError,
    AntomRejectedError,
    AntomUnavailableError,
    AntomUnknownResultError,
    InvalidSignatureError,
    MalformedSignatureHeaderError,
    MissingSignatureError,
    SignatureError,
    UnknownKeyVersionError,
    failure,
)
from vault_service.antom.models import (
    CreateVaultingSessionRequest,
    InquireVaultingRequest,
    Result,
)
from vault_service.antom.rsa_keys import PrivateKey
from vault_service.antom.signing import Signer, Verifier
from vault_service.emulator import EmulatorConfig, EmulatorServer, FaultPlan

CREATE = "createVaultingSession"
FAST_RETRY = RetryPolicy(max_attempts=6, initial_backoff=0.01, max_backoff=0.05)


def session_request(vaulting_request_id: str, **fields: Any) -> CreateVaultingSessionRequest:
    return CreateVaultingSessionRequest(
        vaulting_request_id=vaulting_request_id,
        vaulting_notification_url="http://127.0.0.1:9/antom/notify",
        **fields,
    )


def make_client(
    emulator: EmulatorServer,
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
    **config: Any,
) -> AntomClient:
    settings: dict[str, Any] = {
        "gateway": emulator.base_url,
        "client_id": CLIENT_ID,
        "allow_plain_http": True,
        "retry": FAST_RETRY,
        "budget": 5.0,
    }
    settings.update(config)
    return AntomClient(
        AntomClientConfig(**settings), Signer(merchant_key), Verifier(antom_key.public_key())
    )


@pytest.fixture
async def client(
    emulator: EmulatorServer, merchant_key: PrivateKey, antom_key: PrivateKey
) -> AsyncIterator[AntomClient]:
    async with make_client(emulator, merchant_key, antom_key) as antom:
        yield antom


async def set_faults(emulator: EmulatorServer, **faults: int) -> None:
    """Change the emulator's faults at runtime, through its HTTP control endpoint."""
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{emulator.base_url}/emulator/faults", json=faults) as response,
    ):
        response.raise_for_status()


@contextlib.asynccontextmanager
async def hand_made_gateway(
    body: bytes,
    signer: Signer,
    path: str,
    *,
    calls: list[str] | None = None,
    encoding: str | None = None,
) -> AsyncIterator[str]:
    """A gateway on a loopback port answering every POST with ``body``, signed by ``signer``
    for ``path`` (what Antom, or the emulator, would never answer), sent with ``encoding`` as
    its ``Content-Encoding``; its base URL. Each request's path is appended to ``calls``."""

    async def answer(request: web.Request) -> web.Response:
        if calls is not None:
            calls.append(request.path)
        signature = signer.sign("POST", path, CLIENT_ID, "1", body)
        headers = {"signature": signature, "response-time": "1", "client-id": CLIENT_ID}
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        return web.Response(body=body, headers=headers, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_sandbox_client_ids_use_the_sandbox_path() -> None:
    """The SANDBOX_ prefix rewrites the first /ams/api to /ams/sandbox/api, before signing."""
    path = "/ams/api/v1/vaults/createVaultingSession"
    assert request_path(path, "SANDBOX_5Y01") == "/ams/sandbox/api/v1/vaults/createVaultingSession"
    assert request_path(path, "5Y01") == path
    assert request_path(path, "sandbox_5Y01") == path


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ("open-sea-global.alipay.com", "absolute URL"),
        ("http://127.0.0.1:8090", "https"),
        ("https://open-sea-global.alipay.com/ams/api", "without path"),
    ],
)
def test_gateway_urls_are_checked(gateway: str, message: str) -> None:
    """A wrong gateway is a configuration error at start, not a confusing failure per call."""
    with pytest.raises(ValueError, match=message):
        AntomClientConfig(gateway=gateway, client_id="5Y01")


async def test_create_and_inquire_session(client: AntomClient, emulator: EmulatorServer) -> None:
    """A signed request is accepted, the signed answer verifies and parses into the model."""
    created = await client.create_vaulting_session(session_request("vr-happy"))
    assert created.result.result_status == "S"
    assert created.vaulting_session_data.count("&&") == 3
    assert created.vaulting_session_id
    inquiry = await client.inquire_vaulting(InquireVaultingRequest(vaulting_request_id="vr-happy"))
    assert inquiry.vaulting_status == "PROCESSING"
    assert emulator.state.stats.calls(CREATE, "vr-happy") == 1


async def test_repeat_with_same_parameters_returns_the_same_session(client: AntomClient) -> None:
    """Antom's idempotency on vaultingRequestId, as the client sees it."""
    first = await client.create_vaulting_session(session_request("vr-same"))
    second = await client.create_vaulting_session(session_request("vr-same"))
    assert first == second


async def test_f_result_is_raised_and_never_retried(
    client: AntomClient, emulator: EmulatorServer
) -> None:
    """F is definitive: REPEAT_REQ_INCONSISTENT surfaces at once, after exactly one call."""
    await client.create_vaulting_session(session_request("vr-incons"))
    with pytest.raises(AntomRejectedError) as caught:
        await client.create_vaulting_session(
            session_request("vr-incons", redirect_url="https://m.example/other")
        )
    assert caught.value.result_code == "REPEAT_REQ_INCONSISTENT"
    assert caught.value.result_status == "F"
    assert emulator.state.stats.calls(CREATE, "vr-incons") == 2


async def test_unknown_inquiry_is_a_typed_rejection(client: AntomClient) -> None:
    """An inquiry for an id Antom does not know is an F with Antom's code, not a crash."""
    with pytest.raises(AntomRejectedError) as caught:
        await client.inquire_vaulting(InquireVaultingRequest(vaulting_request_id="vr-nobody"))
    assert caught.value.result_code


async def test_wrong_merchant_key_gets_invalid_signature_unsigned(
    emulator: EmulatorServer, antom_key: PrivateKey
) -> None:
    """Antom answers INVALID_SIGNATURE unsigned; the unsigned-F rule lets the F through, as
    a refusal of our configuration (never Antom's word about the request)."""
    stranger = PrivateKey.generate()
    async with make_client(emulator, stranger, antom_key) as antom:
        with pytest.raises(AntomConfigurationError) as caught:
            await antom.create_vaulting_session(session_request("vr-badkey"))
    assert caught.value.result_code == "INVALID_SIGNATURE"
    assert "VAULT_MERCHANT_PRIVATE_KEY_FILE" in caught.value.hint


@pytest.mark.parametrize(
    ("code", "signed", "expected"),
    [
        ("INVALID_SIGNATURE", True, AntomConfigurationError),
        ("KEY_NOT_FOUND", True, AntomConfigurationError),
        ("ACCESS_DENIED", True, AntomConfigurationError),
        ("CLIENT_INVALID", True, AntomConfigurationError),
        ("NO_INTERFACE_DEF", True, AntomConfigurationError),
        ("PARAM_ILLEGAL", False, AntomConfigurationError),
        ("PARAM_ILLEGAL", True, AntomRejectedError),
        ("PROCESS_FAIL", True, AntomRejectedError),
    ],
)
def test_only_a_signed_business_failure_is_antoms_word_about_the_request(
    code: str, signed: bool, expected: type[Exception]
) -> None:
    """Regression (issue 9 #6): any F counted as Antom's answer, so an unsigned
    INVALID_SIGNATURE (a wrong merchant key) let the reconciler expire records."""
    error = failure(code, "message", signed=signed)
    assert type(error) is expected


async def test_refusals_of_our_key_are_logged_once_per_interval_with_a_count(
    emulator: EmulatorServer, antom_key: PrivateKey, captured_log: CapturedLog
) -> None:
    """Regression (issue 9 #6): with a wrong merchant key every call logs the same failure;
    now one ERROR line per interval says it, with how many refusals it stands for."""
    now = [1000.0]
    config = AntomClientConfig(
        gateway=emulator.base_url,
        client_id=CLIENT_ID,
        allow_plain_http=True,
        retry=FAST_RETRY,
        refusal_log_interval=60.0,
    )
    signer, verifier = Signer(PrivateKey.generate()), Verifier(antom_key.public_key())
    async with AntomClient(config, signer, verifier, clock=lambda: now[0]) as antom:
        for attempt in range(5):
            if attempt == 4:
                now[0] += 61
            with pytest.raises(AntomConfigurationError):
                await antom.inquire_vaulting(InquireVaultingRequest(vaulting_request_id="vr-k"))
    refusals = [
        line
        for line in captured_log.lines()
        if line["logger"].startswith("vault_service.antom") and line["level"] == "error"
    ]
    assert [(line["level"], line["suppressed"]) for line in refusals] == [
        ("error", 0),
        ("error", 3),
    ]
    assert "VAULT_MERCHANT_PRIVATE_KEY_FILE" in refusals[0]["message"]


async def test_fault_http_5xx_is_retried_with_the_same_request_id(
    client: AntomClient, emulator: EmulatorServer
) -> None:
    """Two 503s, then success: three calls, all for one vaultingRequestId, one session."""
    await set_faults(emulator, http_5xx=2)
    created = await client.create_vaulting_session(session_request("vr-5xx"))
    assert created.result.result_code == "SUCCESS"
    assert emulator.state.stats.calls(CREATE, "vr-5xx") == 3


async def test_fault_http_5xx_forever_gives_up_unavailable(
    client: AntomClient, emulator: EmulatorServer
) -> None:
    """Antom down: the client stops after max_attempts with AntomUnavailableError."""
    await set_faults(emulator, http_5xx=-1)
    with pytest.raises(AntomUnavailableError, match="503"):
        await client.create_vaulting_session(session_request("vr-5xx-down"))
    assert emulator.state.stats.calls(CREATE) == FAST_RETRY.max_attempts


async def test_fault_unknown_result_is_retried_with_the_same_request_id(
    client: AntomClient, emulator: EmulatorServer
) -> None:
    """U means "unknown, ask again": same vaultingRequestId, same parameters, then success."""
    await set_faults(emulator, unknown_result=2)
    created = await client.create_vaulting_session(session_request("vr-u"))
    assert created.result.result_status == "S"
    assert emulator.state.stats.calls(CREATE, "vr-u") == 3


async def test_fault_unknown_result_forever_gives_up_with_the_antom_code(
    client: AntomClient, emulator: EmulatorServer
) -> None:
    """A U that never clears ends in AntomUnknownResultError carrying Antom's code."""
    await set_faults(emulator, unknown_result=-1)
    with pytest.raises(AntomUnknownResultError) as caught:
        await client.create_vaulting_session(session_request("vr-u-forever"))
    assert caught.value.result_code == "UNKNOWN_EXCEPTION"
    assert caught.value.retryable


async def test_fault_bad_signature_is_rejected_without_retry(
    client: AntomClient, emulator: EmulatorServer
) -> None:
    """A success whose signature does not verify is refused at once: never trusted, never
    retried (a retry would only hide an attack or a key mix-up)."""
    await set_faults(emulator, bad_signature=1)
    with pytest.raises(InvalidSignatureError):
        await client.create_vaulting_session(session_request("vr-badsig"))
    assert emulator.state.stats.calls(CREATE, "vr-badsig") == 1


async def test_fault_latency_beyond_the_budget_gives_up_within_it(
    emulator: EmulatorServer, merchant_key: PrivateKey, antom_key: PrivateKey
) -> None:
    """A slow Antom cannot hold a call past its budget: the caller's deadline is honoured."""
    await set_faults(emulator, latency_ms=2_000)
    async with make_client(emulator, merchant_key, antom_key) as antom:
        started = time.monotonic()
        with pytest.raises(AntomUnavailableError, match="in time"):
            await antom.create_vaulting_session(session_request("vr-slow"), budget=0.3)
        assert time.monotonic() - started < 1.5


async def test_fault_latency_within_the_budget_is_waited_for(
    client: AntomClient, emulator: EmulatorServer
) -> None:
    """Latency below the budget is just latency."""
    await set_faults(emulator, latency_ms=100)
    created = await client.create_vaulting_session(session_request("vr-lag"), budget=3.0)
    assert created.result.result_status == "S"


async def test_faults_set_per_run_through_the_config(
    antom_key: PrivateKey, merchant_key: PrivateKey
) -> None:
    """The same faults configured at start (the CLI flags' path) behave the same way."""
    config = EmulatorConfig(
        antom_private_key=antom_key,
        merchant_public_key=merchant_key.public_key(),
        client_id=CLIENT_ID,
        faults=FaultPlan(http_5xx=1, unknown_result=1),
    )
    async with (
        EmulatorServer(config) as emulator,
        make_client(emulator, merchant_key, antom_key) as antom,
    ):
        created = await antom.create_vaulting_session(session_request("vr-config"))
        assert created.result.result_status == "S"
        assert emulator.state.stats.calls(CREATE, "vr-config") == 3


async def test_unreachable_antom_gives_up_unavailable(
    merchant_key: PrivateKey, antom_key: PrivateKey
) -> None:
    """Connection refused is a transport error: retried, then AntomUnavailableError."""
    config = AntomClientConfig(
        gateway="http://127.0.0.1:9",
        client_id=CLIENT_ID,
        allow_plain_http=True,
        retry=FAST_RETRY,
        budget=2.0,
    )
    async with AntomClient(config, Signer(merchant_key), Verifier(antom_key.public_key())) as c:
        with pytest.raises(AntomUnavailableError, match="unreachable"):
            await c.create_vaulting_session(session_request("vr-refused"))


async def test_an_owned_http_pool_is_closed_and_an_injected_one_is_not(
    emulator: EmulatorServer, merchant_key: PrivateKey, antom_key: PrivateKey
) -> None:
    """Closing the client closes what it opened, and only that."""
    antom = make_client(emulator, merchant_key, antom_key)
    await antom.create_vaulting_session(session_request("vr-pool"))
    await antom.aclose()
    assert antom._http.closed
    injected = AntomHttp(1)
    config = AntomClientConfig(
        gateway=emulator.base_url, client_id=CLIENT_ID, allow_plain_http=True
    )
    async with AntomClient(
        config, Signer(merchant_key), Verifier(antom_key.public_key()), http=injected
    ):
        pass
    assert not injected.closed
    await injected.aclose()


async def test_the_http_session_opens_on_the_first_post_and_closes_with_the_pool(
    emulator: EmulatorServer,
) -> None:
    """Guards AntomHttp's lifetime: the aiohttp session it makes (inside the running loop, on
    the first POST) is closed by ``aclose``, and a closed pool opens no new one."""
    http = AntomHttp(1)
    answer = await http.post(f"{emulator.base_url}/ams/api/v1/vaults/inquireVaulting", b"{}", {})
    assert b"CLIENT_INVALID" in answer.body  # no client-id: refused, but answered
    session = http._session
    assert session is not None
    assert not session.closed
    await http.aclose()
    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await http.post(f"{emulator.base_url}/ams/api/v1/vaults/inquireVaulting", b"{}", {})


# -- the unsigned-answer rule, case by case (the same table the SDK cross-check uses) --------

PATH = "/ams/sandbox/api/v1/vaults/createVaultingSession"


def answer(status: str) -> tuple[bytes, Result]:
    body = json.dumps({"result": {"resultCode": "X", "resultStatus": status}}).encode()
    return body, Result(result_code="X", result_status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "status", "expected"),
    [
        ({"signature": "algorithm=RSA256,keyVersion=1,signature=", "response-time": ""}, "F", None),
        ({"signature": "algorithm=RSA256,keyVersion=1,signature=", "response-time": ""}, "U", None),
        ({}, "F", None),
        ({}, "S", MissingSignatureError),
        (
            {"signature": "algorithm=RSA256,keyVersion=1,signature=", "response-time": ""},
            "S",
            MissingSignatureError,
        ),
        (
            {"signature": "algorithm=RSA256,keyVersion=1,signature=", "response-time": "1"},
            "F",
            MalformedSignatureHeaderError,
        ),
        ({"signature": "garbage", "response-time": ""}, "F", MalformedSignatureHeaderError),
    ],
)
def test_unsigned_answers_pass_only_for_f_and_u(
    antom_key: PrivateKey, headers: dict[str, str], status: str, expected: type[Exception] | None
) -> None:
    """An unsigned answer may only ever make a call fail; a success must be signed."""
    body, result = answer(status)
    verify = Verifier(antom_key.public_key())
    lowered = CIMultiDict(headers)
    if expected is None:
        check_response_signature(
            verify, path=PATH, headers=lowered, raw=body, result=result, client_id=CLIENT_ID
        )
    else:
        with pytest.raises(expected):
            check_response_signature(
                verify, path=PATH, headers=lowered, raw=body, result=result, client_id=CLIENT_ID
            )


def test_signed_answer_uses_the_answer_client_id_and_any_header_case(
    antom_key: PrivateKey,
) -> None:
    """Verification rebuilds the content with the answer's own client-id and response-time,
    found whatever case a proxy gave the header names."""
    body, result = answer("S")
    signature = Signer(antom_key).sign("POST", PATH, "SANDBOX_ECHOED", "2026-01-01T00:00:00Z", body)
    headers = CIMultiDict(
        {
            "Signature": signature,
            "Response-Time": "2026-01-01T00:00:00Z",
            "Client-Id": "SANDBOX_ECHOED",
        }
    )
    check_response_signature(
        Verifier(antom_key.public_key()),
        path=PATH,
        headers=headers,
        raw=body,
        result=result,
        client_id=CLIENT_ID,
    )
    with pytest.raises(InvalidSignatureError):
        check_response_signature(
            Verifier(antom_key.public_key()),
            path=PATH,
            headers=headers,
            raw=body + b" ",
            result=result,
            client_id=CLIENT_ID,
        )


async def test_an_inquiry_answer_about_another_request_is_refused(
    merchant_key: PrivateKey, antom_key: PrivateKey
) -> None:
    """Antom's signature covers the answer, not the question: a correctly signed answer about
    another vaulting request (a replay, a gateway mix-up) must not be taken for this one.
    Antom (the emulator) never does this, so a hand-made gateway answers here."""
    path = "/ams/sandbox/api/v1/vaults/inquireVaulting"
    body = json.dumps(
        {
            "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success."},
            "vaultingRequestId": "vr-someone-else",
            "vaultingStatus": "SUCCESS",
        }
    ).encode()

    async with hand_made_gateway(body, Signer(antom_key), path) as url:
        config = AntomClientConfig(gateway=url, client_id=CLIENT_ID, allow_plain_http=True)
        async with AntomClient(
            config, Signer(merchant_key), Verifier(antom_key.public_key())
        ) as antom:
            with pytest.raises(AntomProtocolError, match="another vaulting request"):
                await antom.inquire_vaulting(InquireVaultingRequest(vaulting_request_id="vr-mine"))


@pytest.mark.parametrize(
    ("signed_by", "key_version", "expected"),
    [
        ("current", "1", None),
        ("next", "2", None),
        ("next", "1", InvalidSignatureError),
        ("current", "3", UnknownKeyVersionError),
    ],
)
async def test_answers_are_checked_with_the_key_of_their_version(
    merchant_key: PrivateKey,
    antom_key: PrivateKey,
    antom_next_key: PrivateKey,
    signed_by: str,
    key_version: str,
    expected: type[SignatureError] | None,
) -> None:
    """Guards keyVersion on Antom's answers: during a rotation an answer signed under either
    configured version is accepted, one whose key does not match its version or whose version
    has no key is refused at once (not retried)."""
    path = "/ams/sandbox/api/v1/vaults/createVaultingSession"
    body = json.dumps(
        {
            "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success."},
            "vaultingSessionData": "session-data",
            "vaultingSessionId": "vs-1",
            "vaultingSessionExpiryTime": "2026-05-18T11:10:00+08:00",
        }
    ).encode()
    key = antom_key if signed_by == "current" else antom_next_key
    calls: list[str] = []
    rotating = Verifier({"1": antom_key.public_key(), "2": antom_next_key.public_key()})
    async with hand_made_gateway(body, Signer(key, key_version), path, calls=calls) as url:
        config = AntomClientConfig(gateway=url, client_id=CLIENT_ID, allow_plain_http=True)
        async with AntomClient(config, Signer(merchant_key), rotating) as antom:
            if expected is None:
                answer = await antom.create_vaulting_session(session_request("vr-rotating"))
                assert answer.vaulting_session_id == "vs-1"
            else:
                with pytest.raises(expected):
                    await antom.create_vaulting_session(session_request("vr-rotating"))
    assert calls == [path]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
async def test_an_answer_larger_than_a_megabyte_is_refused_unread(
    merchant_key: PrivateKey, antom_key: PrivateKey, compressed: bool
) -> None:
    """Regression: the client read Antom's answer whole and decompressed it with no bound, so
    a misbehaving gateway or egress proxy could make every call hold hundreds of megabytes.
    Past a megabyte (counted after decompression) the answer is unavailable, never parsed."""
    path = "/ams/sandbox/api/v1/vaults/inquireVaulting"
    big = b'{"padding": "' + b"x" * MAX_ANSWER_BYTES + b'"}'
    body = gzip.compress(big) if compressed else big
    calls: list[str] = []
    encoding = "gzip" if compressed else None
    async with hand_made_gateway(
        body, Signer(antom_key), path, calls=calls, encoding=encoding
    ) as url:
        config = AntomClientConfig(
            gateway=url,
            client_id=CLIENT_ID,
            allow_plain_http=True,
            retry=RetryPolicy(max_attempts=1),
        )
        async with AntomClient(
            config, Signer(merchant_key), Verifier(antom_key.public_key())
        ) as antom:
            with pytest.raises(AntomUnavailableError, match="larger than") as caught:
                await antom.inquire_vaulting(InquireVaultingRequest(vaulting_request_id="vr-big"))
    assert caught.value.cause == causes.MALFORMED_ANSWER
    assert calls == [path]
