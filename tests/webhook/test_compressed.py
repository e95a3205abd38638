"""Compressed and malformed bodies: refused from the headers, never inflated, one log line.

The 100-bomb acceptance with ``GetResult`` answering meanwhile, on both backends, is in
``tests/e2e/test_webhook_abuse.py``; the CPU figure is in ``bench/results/webhook_abuse.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from typing import Any

import pytest
from aiohttp import http_parser, web_protocol

from tests.fixtures.logs import CapturedLog
from vault_service.antom import PrivateKey
from vault_service.webhook import ACKNOWLEDGEMENT

from .conftest import PATH, Webhook, forge, notification, raw_exchange

HEAD = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
WEBHOOK_LOGGER = "vault_service.webhook"


def gzip_of_zeros(mib: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join(compressor.compress(zeros) for _ in range(mib)) + compressor.flush()


async def exchange_to_close(port: int, request: bytes, within: float = 5.0) -> bytes:
    """Send ``request`` whole, then read until the server closes the connection: by then it
    has done everything it will do with this request, the drain of an unread body included."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(within):
            return await reader.read(-1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def webhook_lines(log: CapturedLog) -> list[dict[str, Any]]:
    return [line for line in log.lines() if line["logger"].startswith(WEBHOOK_LOGGER)]


async def test_a_compressed_body_is_refused_before_it_is_sent(webhook: Webhook) -> None:
    """Regression (issue 9 #1): aiohttp inflated a body sent with Content-Encoding while the
    415 lingered, 60 MiB for a 61 KB gzip body. The refusal now comes from the headers alone:
    it arrives although not one byte of the declared body was sent, and it closes the
    connection."""
    head = f"{HEAD}Content-Encoding: gzip\r\nContent-Length: 61000\r\n\r\n".encode()
    status, headers, body = await raw_exchange(webhook.port, head)
    assert status == "HTTP/1.1 415 Unsupported Media Type"
    assert headers["connection"] == "close"
    assert body == b'{"error":"unsupported media type"}'


@pytest.mark.parametrize(
    ("encoding", "framing", "body"),
    [
        pytest.param("gzip", "length", b"this is not gzip at all", id="invalid-gzip"),
        pytest.param("gzip", "chunked", b"\x1f\x8b\x08\x00garbage", id="invalid-gzip-chunked"),
        pytest.param("deflate", "length", b"not deflate", id="invalid-deflate"),
        pytest.param("br", "length", b"not brotli", id="brotli"),
        pytest.param("identity, gzip", "length", b"not gzip", id="gzip-in-a-list"),
        pytest.param("gzip", "length", gzip_of_zeros(60), id="bomb-60-MiB"),
    ],
)
async def test_a_compressed_body_logs_one_warning_and_no_error(
    webhook: Webhook,
    captured_log: CapturedLog,
    inflations: list[str],
    encoding: str,
    framing: str,
    body: bytes,
) -> None:
    """Regression (issue 9 #1): a body that is not valid gzip logged an ERROR with a traceback
    (aiohttp's decoder failed while the refused body was drained, and RequestPayloadError is
    not an HttpProcessingError), and a valid bomb was inflated whole. Now no body is handed to
    a decoder: one warning, the 415, nothing else."""
    if framing == "chunked":
        framed = f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode() + body
        framed += b"\r\n0\r\n\r\n"
    else:
        framed = f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    request = f"{HEAD}Content-Encoding: {encoding}\r\n".encode() + framed
    answer = await exchange_to_close(webhook.port, request)
    assert answer.startswith(b"HTTP/1.1 415 ")
    assert inflations == []
    lines = webhook_lines(captured_log)
    assert [(line["level"], line["reason"]) for line in lines] == [
        ("warning", "content-encoding not identity")
    ]
    assert "Traceback" not in captured_log.text
    assert "exception" not in lines[0]


@pytest.mark.parametrize("webhook_options", [{"failure_limit": 1}])
async def test_compressed_refusals_do_not_count_against_the_failure_limit(
    webhook: Webhook, foreign_key: PrivateKey
) -> None:
    """Guards the decision documented in ``webhook.notify``: refusals decided from the headers
    are no authentication failures. After five compressed requests from one source its signed
    notification is still acknowledged, while one forged signature does limit it."""
    await webhook.open_session("vr-open")
    head = f"{HEAD}Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\n".encode()
    for _ in range(5):
        assert (await exchange_to_close(webhook.port, head + b"gzip")).startswith(b"HTTP/1.1 415 ")
    body = notification("vr-open")
    reply = await webhook.caller.post(body)
    assert (reply.status, reply.body) == (200, ACKNOWLEDGEMENT)
    assert await forge(webhook.caller, "vr-open", foreign_key) == 401
    assert (await webhook.caller.post(body)).status == 429


@pytest.fixture
def python_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's pure-Python request parser (used where its C extension is not available,
    or with AIOHTTP_NO_EXTENSIONS): it reports bad chunk framing in a body as
    RequestPayloadError, where the C parser stops the connection instead."""
    monkeypatch.setattr(web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)


@pytest.mark.usefixtures("python_parser")
@pytest.mark.parametrize(
    ("content_type", "answer", "reason"),
    [
        ("application/json", b"HTTP/1.1 400 ", "body incomplete or malformed framing"),
        ("text/plain", b"HTTP/1.1 415 ", "not application/json"),
    ],
)
async def test_a_malformed_body_logs_one_warning_and_no_error(
    webhook: Webhook,
    captured_log: CapturedLog,
    content_type: str,
    answer: bytes,
    reason: str,
) -> None:
    """Regression (issue 9 #1): a malformed body raised RequestPayloadError, which is not an
    HttpProcessingError, so it escaped as an ERROR with a traceback: from the body read (500)
    or, after an early answer, from the drain of the unread body. Now it is one warning line:
    the request's own refusal."""
    reader, writer = await asyncio.open_connection("127.0.0.1", webhook.port)
    try:
        head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        writer.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.1)  # the handler is reading (or draining) the body by now
        writer.write(b'5\r\n{"a":\r\nnot-a-chunk-size\r\n')
        await writer.drain()
        async with asyncio.timeout(5):
            received = await reader.read(-1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert received.startswith(answer)
    warnings = [line for line in webhook_lines(captured_log) if line["level"] != "debug"]
    assert [(line["level"], line["reason"]) for line in warnings] == [("warning", reason)]
    assert "Traceback" not in captured_log.text
