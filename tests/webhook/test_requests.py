"""The webhook's HTTP surface, request by request: what is refused, with which status, and
that a refused request stores nothing; what is accepted, and the exact acknowledgement.

Requests are signed here with Antom's key (``Signer(antom_key)``); each rejection case breaks
exactly one thing in an otherwise valid notification for an open session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.fixtures.antom import CLIENT_ID
from vault_service.antom import PrivateKey, SignatureHeader, Signer, VaultingNotification, Verifier
from vault_service.domain import VaultingStatus
from vault_service.logs import formatter
from vault_service.store import StoreBusyError
from vault_service.webhook import ACKNOWLEDGEMENT, build_webhook_app

from .conftest import (
    JSON_UTF8,
    PATH,
    Reply,
    ServeFactory,
    Webhook,
    WebhookCaller,
    eventually,
    notification,
    raw_exchange,
)

OPEN_ID = "vr-open"
ACK = b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'


@pytest.fixture
async def open_webhook(webhook: Webhook) -> Webhook:
    """The webhook with one open session (``vr-open``) that a forged notification could hit."""
    await webhook.open_session(OPEN_ID)
    return webhook


Forgery = Callable[[WebhookCaller, bytes, PrivateKey], Awaitable[Reply]]


def _with(**changes: str) -> Forgery:
    """Valid headers with some values replaced after signing."""

    async def send(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
        return await caller.post(body, {**caller.headers(body), **changes})

    return send


def _signed(body: bytes, content_type: str = JSON_UTF8) -> Forgery:
    """A validly signed request carrying ``body`` instead of the notification."""

    async def send(caller: WebhookCaller, _: bytes, __: PrivateKey) -> Reply:
        return await caller.post(body, {**caller.headers(body), "Content-Type": content_type})

    return send


async def _unsigned(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
    return await caller.post(body, caller.headers(body), drop=("signature",))


async def _foreign(caller: WebhookCaller, body: bytes, key: PrivateKey) -> Reply:
    return await caller.post(body, caller.headers(body, signer=Signer(key)))


async def _tampered(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
    signed = notification(OPEN_ID, status="F", code="DO_NOT_HONOR")
    return await caller.post(body, caller.headers(signed))


async def _other_path(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
    return await caller.post(body, caller.headers(body, sign_path="/elsewhere"))


async def _other_client(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
    return await caller.post(body, caller.headers(body, client_id="SANDBOX_SOMEONEELSE01"))


async def _no_client_id(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
    return await caller.post(body, caller.headers(body), drop=("client-id",))


async def _no_request_time(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
    return await caller.post(body, caller.headers(body, request_time=""), drop=("request-time",))


async def _two_signatures(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
    headers = CIMultiDict(caller.headers(body))
    headers.add("signature", headers["signature"])
    async with caller.http.post(caller.base_url + PATH, data=body, headers=headers) as response:
        return Reply(response.status, response.headers, await response.read())


async def _no_content_type(caller: WebhookCaller, body: bytes, _: PrivateKey) -> Reply:
    return await caller.post(body, caller.headers(body), drop=("Content-Type",))


_RANDOM_SIGNATURE = SignatureHeader("RSA256", "1", os.urandom(256)).render()
_NO_RESULT = json.dumps({"vaultingRequestId": OPEN_ID}).encode()
_NO_ID = json.dumps({"result": json.loads(notification(OPEN_ID))["result"]}).encode()
_BAD_STATUS = notification(OPEN_ID).replace(b'"resultStatus":"S"', b'"resultStatus":"X"')
_LONG_ID = notification("v" * 65)

REFUSALS: list[tuple[str, int, bytes, Forgery]] = [
    ("unsigned", 401, b"unauthorized", _unsigned),
    ("empty-signature", 401, b"unauthorized", _with(signature="")),
    ("malformed-signature", 401, b"unauthorized", _with(signature="RSA256 abc")),
    ("signature-not-base64", 401, b"unauthorized", _with(signature="signature=%%%")),
    ("bad-signature", 401, b"unauthorized", _with(signature=_RANDOM_SIGNATURE)),
    ("foreign-key", 401, b"unauthorized", _foreign),
    ("tampered-body", 401, b"unauthorized", _tampered),
    ("signed-for-another-path", 401, b"unauthorized", _other_path),
    ("another-client-id", 401, b"unauthorized", _other_client),
    ("client-id-swapped-after-signing", 401, b"unauthorized", _with(**{"client-id": "X"})),
    ("missing-client-id", 401, b"unauthorized", _no_client_id),
    ("missing-request-time", 401, b"unauthorized", _no_request_time),
    ("request-time-changed", 401, b"unauthorized", _with(**{"request-time": "1716000000000"})),
    ("repeated-signature-header", 401, b"unauthorized", _two_signatures),
    ("malformed-json", 400, b"bad request", _signed(b'{"result": {')),
    ("empty-body", 400, b"bad request", _signed(b"")),
    ("not-utf8", 400, b"bad request", _signed(b'{"vaultingRequestId": "\xff\xfe"}')),
    ("json-array", 400, b"bad request", _signed(b"[1, 2]")),
    ("missing-result", 400, b"bad request", _signed(_NO_RESULT)),
    ("missing-vaultingRequestId", 400, b"bad request", _signed(_NO_ID)),
    ("unknown-resultStatus", 400, b"bad request", _signed(_BAD_STATUS)),
    ("vaultingRequestId-too-long", 400, b"bad request", _signed(_LONG_ID)),
    ("text-plain", 415, b"unsupported media type", _with(**{"Content-Type": "text/plain"})),
    ("form", 415, b"unsupported media type", _with(**{"Content-Type": "multipart/form-data"})),
    (
        "json-lookalike",
        415,
        b"unsupported media type",
        _with(**{"Content-Type": "application/jsonp"}),
    ),
    ("missing-content-type", 415, b"unsupported media type", _no_content_type),
    ("gzip", 415, b"unsupported media type", _with(**{"Content-Encoding": "gzip"})),
]


@pytest.mark.parametrize(
    ("status", "error", "forgery"),
    [pytest.param(status, error, forgery, id=name) for name, status, error, forgery in REFUSALS],
)
async def test_refused_requests_store_nothing(
    open_webhook: Webhook, foreign_key: PrivateKey, status: int, error: bytes, forgery: Forgery
) -> None:
    """Guards the gate: each broken authenticity, shape or media type is refused with its
    status and a fixed body, and the record, the event log and the orphans stay untouched."""
    before = await open_webhook.snapshot(OPEN_ID)

    reply = await forgery(open_webhook.caller, notification(OPEN_ID), foreign_key)

    assert (reply.status, reply.body) == (status, b'{"error":"' + error + b'"}')
    assert reply.headers["Content-Type"] == "application/json"
    assert await open_webhook.snapshot(OPEN_ID) == before
    record = await open_webhook.store.get(OPEN_ID)
    assert record is not None
    assert record.status is VaultingStatus.SESSION_CREATED


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_on_the_path_are_405(open_webhook: Webhook, method: str) -> None:
    """Guards "POST only": other methods learn only that POST is allowed, and store nothing."""
    before = await open_webhook.snapshot(OPEN_ID)
    body = notification(OPEN_ID)
    reply = await open_webhook.caller.post(body, method=method)
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert reply.body == (b"" if method == "HEAD" else b'{"error":"method not allowed"}')
    assert await open_webhook.snapshot(OPEN_ID) == before


@pytest.mark.parametrize(
    "target",
    ["/", "/other", f"{PATH}/", f"{PATH}/more", PATH.upper(), "/antom/vaulting", "/healthz"],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_every_other_path_is_404(open_webhook: Webhook, target: str, method: str) -> None:
    """Guards "nothing else is served": even a validly signed POST to another path is 404."""
    before = await open_webhook.snapshot(OPEN_ID)
    body = notification(OPEN_ID)
    headers = open_webhook.caller.headers(body, sign_path=target)
    reply = await open_webhook.caller.post(body, headers, target=target, method=method)
    assert (reply.status, reply.body) == (404, b'{"error":"not found"}')
    assert await open_webhook.snapshot(OPEN_ID) == before


@pytest.mark.parametrize(
    "request_line",
    [
        b"OPTIONS * HTTP/1.1",
        b"POST /antom/vaulting%2Fnotify HTTP/1.1",
        b"POST /antom/./vaulting/notify HTTP/1.1",
        b"POST /antom/x/../vaulting/notify HTTP/1.1",
    ],
)
async def test_odd_targets_get_the_fixed_404(open_webhook: Webhook, request_line: bytes) -> None:
    """Guards the raw-path match: encoded or dotted spellings of the path, and targets the
    router cannot match at all, get the same short 404 rather than reaching the gate."""
    before = await open_webhook.snapshot(OPEN_ID)
    head = request_line + b"\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    status, headers, body = await raw_exchange(open_webhook.port, head)
    assert status.split(" ")[1] == "404"
    assert body == b'{"error":"not found"}'
    assert headers["content-type"] == "application/json"
    assert await open_webhook.snapshot(OPEN_ID) == before


def _padded(vaulting_request_id: str, size: int) -> bytes:
    """A valid notification padded with JSON whitespace to exactly ``size`` bytes."""
    body = notification(vaulting_request_id)
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def test_body_size_limit_is_exact(
    open_webhook: Webhook, serve: ServeFactory, antom_key: PrivateKey
) -> None:
    """Guards the limit's boundary: a body of exactly max_body_bytes is processed, one byte
    more is 413 even when validly signed."""
    base_url = await serve(open_webhook.service, max_body_bytes=1024)
    caller = WebhookCaller(open_webhook.caller.http, base_url, antom_key)
    before = await open_webhook.snapshot(OPEN_ID)

    too_big = await caller.post(_padded(OPEN_ID, 1025))
    assert (too_big.status, too_big.body) == (413, b'{"error":"payload too large"}')
    assert await open_webhook.snapshot(OPEN_ID) == before

    at_limit = await caller.post(_padded(OPEN_ID, 1024))
    assert (at_limit.status, at_limit.body) == (200, ACK)


async def test_oversized_chunked_body_is_413(open_webhook: Webhook) -> None:
    """Guards the streamed cap: without Content-Length the read stops past 64 KiB."""
    before = await open_webhook.snapshot(OPEN_ID)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 20_000

    headers = {**open_webhook.caller.headers(b""), "Content-Type": JSON_UTF8}
    reply = await open_webhook.caller.post(chunks(), headers)
    assert (reply.status, reply.body) == (413, b'{"error":"payload too large"}')
    assert await open_webhook.snapshot(OPEN_ID) == before


async def test_declared_oversize_is_refused_before_the_body(open_webhook: Webhook) -> None:
    """Guards "without reading it all": a 1 GB Content-Length is answered at once, with the
    connection closed, although not one body byte was sent."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000000\r\n\r\n"
    ).encode()
    status, headers, body = await raw_exchange(open_webhook.port, head)
    assert status.split(" ")[1] == "413"
    assert headers["connection"] == "close"
    assert body == b'{"error":"payload too large"}'


async def test_endless_chunked_body_is_cut_off(open_webhook: Webhook) -> None:
    """Guards the streamed cap against a sender that never ends its chunked body: the 413
    arrives while the body is still open."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
    status, headers, body = await raw_exchange(open_webhook.port, head, (chunk,) * 5)
    assert status.split(" ")[1] == "413"
    assert headers["connection"] == "close"
    assert body == b'{"error":"payload too large"}'


async def test_stalled_body_times_out(open_webhook: Webhook, serve: ServeFactory) -> None:
    """Guards against slow senders holding a handler: a body that stops arriving is 408."""
    base_url = await serve(open_webhook.service, body_timeout=0.2)
    port = int(base_url.rsplit(":", 1)[1])
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    status, headers, body = await raw_exchange(port, head, (b'{"result"',))
    assert status.split(" ")[1] == "408"
    assert headers["connection"] == "close"
    assert body == b'{"error":"request timeout"}'


@pytest.mark.parametrize(
    ("content_type", "target", "separator", "request_time"),
    [
        pytest.param("application/json", PATH, ",", "1716000000000", id="bare-json"),
        pytest.param("Application/JSON;Charset=utf-8", PATH, ",", "1716000000000", id="case"),
        pytest.param(JSON_UTF8, f"{PATH}?tenant=7", ",", "2024-05-18T02:40:00+00:00", id="query"),
        pytest.param(JSON_UTF8, PATH, ", ", "2024-05-18T02:40:00.1234567Z", id="docs-spacing"),
    ],
)
async def test_antom_variants_are_accepted(
    open_webhook: Webhook, content_type: str, target: str, separator: str, request_time: str
) -> None:
    """Guards tolerance for what Antom may send: any case and charset of application/json, a
    query string (not signed), the docs' ", " in the signature header, either time format."""
    caller = open_webhook.caller
    body = notification(OPEN_ID)
    headers = caller.headers(body, request_time=request_time)
    headers["Content-Type"] = content_type
    headers["signature"] = headers["signature"].replace(",", separator)
    reply = await caller.post(body, headers, target=target)
    assert (reply.status, reply.body) == (200, ACK)
    record = await open_webhook.store.get(OPEN_ID)
    assert record is not None
    assert record.status is VaultingStatus.SUCCEEDED


async def test_acknowledgement_is_byte_for_byte_antoms(open_webhook: Webhook) -> None:
    """Guards the ack Antom compares against: exact bytes and Content-Type, HTTP 200."""
    assert ACKNOWLEDGEMENT == ACK
    reply = await open_webhook.caller.post(notification(OPEN_ID))
    assert reply.status == 200
    assert reply.body == ACK
    assert reply.headers["Content-Type"] == "application/json"


async def test_header_names_are_case_insensitive(open_webhook: Webhook) -> None:
    """Guards header lookup: Antom's docs call them Client-Id/Request-Time/Signature."""
    body = notification(OPEN_ID)
    headers = {name.title(): value for name, value in open_webhook.caller.headers(body).items()}
    reply = await open_webhook.caller.post(body, headers)
    assert (reply.status, reply.body) == (200, ACK)


async def test_unknown_id_is_kept_as_orphan_once_and_acked(webhook: Webhook) -> None:
    """Guards the orphan decision: a signed notification for an id we never created is
    stored for audit and acknowledged (so Antom stops); its retries are not stored again."""
    body = notification("vr-never-created")
    first = await webhook.caller.post(body)
    retry = await webhook.caller.post(
        body, webhook.caller.headers(body, request_time="1716000099999")
    )
    assert (first.status, first.body) == (200, ACK)
    assert (retry.status, retry.body) == (200, ACK)
    orphans = await webhook.store.list_orphans(limit=10)
    assert [(o.vaulting_request_id, o.body) for o in orphans] == [("vr-never-created", body)]
    assert await webhook.store.last_event_id() == 0


class _BrokenSink:
    """A store that is down."""

    calls = 0

    async def record_notification(self, notification: VaultingNotification, raw: bytes) -> None:
        self.calls += 1
        raise RuntimeError("disk I/O error")


async def test_storage_failure_is_500_not_an_ack(
    serve: ServeFactory, http: aiohttp.ClientSession, antom_key: PrivateKey
) -> None:
    """Guards "never ack what was not persisted": the sink raising gives 500 (Antom retries),
    with a fixed body that is not the acknowledgement."""
    sink = _BrokenSink()
    caller = WebhookCaller(http, await serve(sink), antom_key)
    reply = await caller.post(notification("vr-any"))
    assert (reply.status, reply.body) == (500, b'{"error":"internal error"}')
    assert sink.calls == 1


class _BusySink:
    """A store whose connection pool is exhausted."""

    async def record_notification(self, notification: VaultingNotification, raw: bytes) -> None:
        raise StoreBusyError("no connection to db.internal:5432 became free within 2.0 s")


async def test_a_storage_outage_is_500_and_a_warning_in_public_words(
    serve: ServeFactory,
    http: aiohttp.ClientSession,
    antom_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards the webhook's mapping by category: an outage (the unavailable category) is
    answered 500 like any storage failure, so Antom retries, and logged as a warning in the
    error's public words, without the driver's text or a traceback."""
    caller = WebhookCaller(http, await serve(_BusySink()), antom_key)
    with caplog.at_level(logging.INFO, logger="vault_service.webhook"):
        reply = await caller.post(notification("vr-any"))
    assert (reply.status, reply.body) == (500, b'{"error":"internal error"}')
    [record] = [r for r in caplog.records if r.name.startswith("vault_service.webhook")]
    line = json.loads(formatter().format(record))
    assert (line["level"], line["outcome"], line["reason"]) == (
        "warning",
        "failed",
        "every database connection is busy; retry later",
    )
    assert record.exc_info is None
    assert "db.internal" not in caplog.text


async def test_one_log_line_per_request_without_secrets(
    open_webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards the log contract: one line per request with outcome, reason and (once
    authenticated) the id; never the body, the card token or the signature."""
    caller = open_webhook.caller
    body = notification(OPEN_ID, card_token="ALIPAYsecret-token-42")
    headers = caller.headers(body)
    with caplog.at_level(logging.INFO, logger="vault_service.webhook"):
        await caller.post(body, {**headers, "request-time": "tampered"})
        await caller.post(body, headers)
    lines = [
        json.loads(formatter().format(r))
        for r in caplog.records
        if r.name.startswith("vault_service.webhook")
    ]
    assert [(line["outcome"], line.get("vaulting_request_id")) for line in lines] == [
        ("rejected", None),
        ("acknowledged", OPEN_ID),
    ]
    assert all(line["reason"] for line in lines)
    signature_value = headers["signature"].rpartition("signature=")[2]
    for line in map(json.dumps, lines):
        assert "secret-token" not in line
        assert signature_value not in line
        assert "paymentMethodDetail" not in line


def test_app_options_are_checked(antom_key: PrivateKey) -> None:
    """Guards configuration mistakes that would silently serve the wrong thing."""
    verifier = Verifier(antom_key.public_key())
    sink = _BrokenSink()
    for bad in ("antom/notify", "/notify?x=1", "/notify#frag", ""):
        with pytest.raises(ValueError, match="path"):
            build_webhook_app(sink, path=bad, client_id=CLIENT_ID, verifier=verifier)
    with pytest.raises(ValueError, match="client id"):
        build_webhook_app(sink, path=PATH, client_id="", verifier=verifier)
    with pytest.raises(ValueError, match="max_body_bytes"):
        build_webhook_app(sink, path=PATH, client_id=CLIENT_ID, verifier=verifier, max_body_bytes=0)
    with pytest.raises(ValueError, match="body_timeout"):
        build_webhook_app(sink, path=PATH, client_id=CLIENT_ID, verifier=verifier, body_timeout=0)
    with pytest.raises(ValueError, match="max_clock_skew"):
        build_webhook_app(sink, path=PATH, client_id=CLIENT_ID, verifier=verifier, max_clock_skew=0)
    with pytest.raises(ValueError, match="failure limit"):
        build_webhook_app(sink, path=PATH, client_id=CLIENT_ID, verifier=verifier, failure_limit=0)
    with pytest.raises(ValueError, match="failure window"):
        build_webhook_app(sink, path=PATH, client_id=CLIENT_ID, verifier=verifier, failure_window=0)


async def test_sender_vanishing_mid_body_stores_nothing(
    open_webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards the body read against a sender that disconnects half-way: the request ends as
    a logged refusal, nothing is stored, and no error escapes into aiohttp."""
    before = await open_webhook.snapshot(OPEN_ID)
    _, writer = await asyncio.open_connection("127.0.0.1", open_webhook.port)
    writer.write(
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        'Content-Length: 100\r\n\r\n{"result":'.encode()
    )
    await writer.drain()
    with caplog.at_level(logging.INFO, logger="vault_service.webhook"):
        await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()

        async def refused() -> bool:
            return any(
                getattr(r, "reason", "").startswith("body incomplete") for r in caplog.records
            )

        await eventually(refused, within=2.0)
    assert await open_webhook.snapshot(OPEN_ID) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
