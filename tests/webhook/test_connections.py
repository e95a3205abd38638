"""What a sender can hold: the header deadline and the connection cap, over real sockets.

The webhook here runs with a 0.5 s header timeout and a cap of 3 connections
(``serve_options``); the bounds waited for below are generous multiples of those.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fixtures.logs import CapturedLog
from vault_service.webhook import ACKNOWLEDGEMENT
from vault_service.webhook.connections import REFUSAL

from .conftest import PATH, Webhook, eventually, notification

HEADER_TIMEOUT = 0.5
CAP = 3
CLOSED_WITHIN = 5.0


@pytest.fixture
def serve_options() -> dict[str, Any]:
    return {"header_timeout": HEADER_TIMEOUT, "max_connections": CAP}


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def connect(webhook: Webhook) -> AsyncIterator[Any]:
    """``await connect()``: a raw connection to the webhook, closed at teardown."""
    opened: list[asyncio.StreamWriter] = []

    async def open_one() -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", webhook.port)
        opened.append(writer)
        return reader, writer

    yield open_one
    for writer in opened:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def signed_request(webhook: Webhook, vaulting_request_id: str) -> tuple[bytes, bytes]:
    """A signed notification's request head (up to, not including, the blank line) and
    the rest: the blank line and the body."""
    body = notification(vaulting_request_id)
    headers = webhook.caller.headers(body)
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode(), b"\r\n" + body


async def read_to_close(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(CLOSED_WITHIN):
        return await reader.read(-1)


async def test_a_silent_connection_is_closed(webhook: Webhook, connect: Any) -> None:
    """Regression (issue 9 #12): a connection could stay open for 95 s and more without
    sending a request. Now it is closed, unanswered, once the header timeout has passed."""
    reader, _ = await connect()
    assert await read_to_close(reader) == b""
    await eventually(lambda: _no_open_connections(webhook), within=CLOSED_WITHIN)


async def test_a_trickled_head_is_closed_at_the_deadline(webhook: Webhook, connect: Any) -> None:
    """Regression (issue 9 #12): a sender trickling its headers, a byte at a time, held its
    connection for as long as it kept trickling. The deadline counts from the connection's
    start, not from the last byte, so the trickle is cut off unanswered."""
    reader, writer = await connect()
    head, _ = signed_request(webhook, "vr-trickle")

    async def trickle() -> None:
        for byte in head:
            writer.write(bytes([byte]))
            await asyncio.sleep(HEADER_TIMEOUT / 10)

    trickling = asyncio.create_task(trickle())
    try:
        assert await read_to_close(reader) == b""
    finally:
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await trickling


async def test_the_deadline_covers_the_head_not_the_body(webhook: Webhook, connect: Any) -> None:
    """Guards the depth of the deadline: once the head is complete, a body that arrives
    later than the header timeout (but within the body timeout) is still read, stored and
    acknowledged."""
    await webhook.open_session("vr-slow-body")
    reader, writer = await connect()
    head, rest = signed_request(webhook, "vr-slow-body")
    writer.write(head + rest[:2])
    await asyncio.sleep(HEADER_TIMEOUT * 3)
    writer.write(rest[2:])
    # Read to the close: once answered, the idle keep-alive connection meets the same deadline.
    answer = await read_to_close(reader)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(ACKNOWLEDGEMENT)


async def test_connections_beyond_the_cap_get_503_and_the_admitted_ones_are_served(
    webhook: Webhook, connect: Any, captured_log: CapturedLog
) -> None:
    """Regression (issue 9 #12): the number of open webhook connections had no bound. Now with
    the cap held by slow senders, more connections are answered the fixed 503 (Retry-After,
    Connection: close) and closed without being read, one warning says so, and the admitted
    connections are still served: one finishes its stalled body and is acknowledged."""
    await webhook.open_session("vr-capped")
    head, rest = signed_request(webhook, "vr-capped")
    admitted = [await connect() for _ in range(CAP)]
    for _, writer in admitted:
        writer.write(head + rest[:3])  # a complete head, then a stalled body
    await eventually(lambda: _open_connections(webhook, CAP), within=CLOSED_WITHIN)
    for _ in range(3):
        reader, _ = await connect()
        assert await read_to_close(reader) == REFUSAL
    assert webhook.server.open_connections == CAP
    reader, writer = admitted[0]
    writer.write(rest[3:])
    answer = await read_to_close(reader)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(ACKNOWLEDGEMENT)
    refusals = [
        line for line in captured_log.lines() if line.get("reason") == "connection limit reached"
    ]
    assert [(line["level"], line["suppressed"]) for line in refusals] == [("warning", 0)]


async def test_the_cap_is_exact_under_a_burst_and_frees_slots(
    webhook: Webhook, connect: Any
) -> None:
    """Guards the count: of ten connections opened at once, exactly the cap is admitted and
    the rest refused; once the admitted ones are gone, a notification gets through again."""
    burst = await asyncio.gather(*(connect() for _ in range(10)))
    answers = await asyncio.gather(*(read_to_close(reader) for reader, _ in burst))
    assert sorted(answers) == [b""] * CAP + [REFUSAL] * (10 - CAP)
    await eventually(lambda: _no_open_connections(webhook), within=CLOSED_WITHIN)
    await webhook.open_session("vr-after-burst")
    reply = await webhook.caller.post(notification("vr-after-burst"))
    assert (reply.status, reply.body) == (200, ACKNOWLEDGEMENT)


async def _open_connections(webhook: Webhook, count: int) -> bool:
    return webhook.server.open_connections == count


async def _no_open_connections(webhook: Webhook) -> bool:
    return webhook.server.open_connections == 0
