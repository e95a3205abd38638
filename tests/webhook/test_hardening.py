"""Webhook hardening over loopback: keyVersion-bound Antom keys during a rotation, the
request-time skew warning, and the per-source failure limit.

The webhooks here trust keyVersion 1 (``antom_key``) and keyVersion 2 (``antom_next_key``),
as ``tests/webhook/conftest.py`` configures them.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.fixtures.antom import CLIENT_ID
from vault_service.antom import PrivateKey, Signer
from vault_service.domain import VaultingStatus

from .conftest import (
    JSON_UTF8,
    PATH,
    ServeFactory,
    Webhook,
    WebhookCaller,
    antom_time_now,
    forge,
    notification,
    raw_exchange,
)

ACK = b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
TOO_MANY = b'{"error":"too many requests"}'
WEBHOOK_LOGGER = "vault_service.webhook"


def _reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        getattr(record, "reason", "")
        for record in caplog.records
        if record.name.startswith(WEBHOOK_LOGGER)
    ]


def _skew_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith(WEBHOOK_LOGGER) and "request-time" in record.getMessage()
    ]


# -- keyVersion ----------------------------------------------------------------------------------


async def test_both_rotation_key_versions_are_accepted(
    webhook: Webhook, antom_key: PrivateKey, antom_next_key: PrivateKey
) -> None:
    """Guards the rotation window: a notification signed by the version-1 key and one signed
    by the version-2 key are both verified, stored and acknowledged."""
    caller = webhook.caller
    for vaulting_request_id, signer in (
        ("vr-key-1", Signer(antom_key, "1")),
        ("vr-key-2", Signer(antom_next_key, "2")),
    ):
        await webhook.open_session(vaulting_request_id)
        body = notification(vaulting_request_id)
        reply = await caller.post(body, caller.headers(body, signer=signer))
        assert (reply.status, reply.body) == (200, ACK)
        record = await webhook.store.get(vaulting_request_id)
        assert record is not None
        assert record.status is VaultingStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("key", "key_version", "reason"),
    [
        ("current", "3", "unknown key version"),
        ("next", "99", "unknown key version"),
        ("next", "1", "signature rejected (InvalidSignatureError)"),
        ("current", "2", "signature rejected (InvalidSignatureError)"),
    ],
)
async def test_unknown_or_mismatched_key_version_is_refused(
    webhook: Webhook,
    antom_key: PrivateKey,
    antom_next_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    key: str,
    key_version: str,
    reason: str,
) -> None:
    """Guards version binding: a keyVersion without a configured key is 401 logged as
    "unknown key version", a key signing under the other key's version is 401 too, and
    neither stores anything."""
    await webhook.open_session("vr-kv")
    signer = Signer(antom_key if key == "current" else antom_next_key, key_version)
    body = notification("vr-kv")
    before = await webhook.snapshot("vr-kv")
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        reply = await webhook.caller.post(body, webhook.caller.headers(body, signer=signer))
    assert (reply.status, reply.body) == (401, b'{"error":"unauthorized"}')
    assert await webhook.snapshot("vr-kv") == before
    assert _reasons(caplog) == [reason]


# -- request-time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_time", "direction"),
    [
        pytest.param(str(int(antom_time_now()) - 3_600_000), 1, id="epoch-ms-an-hour-ago"),
        pytest.param("2020-01-01T00:00:00Z", 1, id="iso-in-the-past"),
        pytest.param("2999-01-01T08:00:00+0800", -1, id="iso-in-the-future"),
    ],
)
async def test_clock_skew_is_logged_not_refused(
    webhook: Webhook, caplog: pytest.LogCaptureFixture, request_time: str, direction: int
) -> None:
    """Guards "log, never reject" for skew: an authentic notification with a request-time far
    from our clock is stored and acknowledged, with one warning carrying the skew in seconds
    (positive when the time lies in our past)."""
    await webhook.open_session("vr-skew")
    body = notification("vr-skew")
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        reply = await webhook.caller.post(
            body, webhook.caller.headers(body, request_time=request_time)
        )
    assert (reply.status, reply.body) == (200, ACK)
    (warning,) = _skew_records(caplog)
    assert warning.levelno == logging.WARNING
    skew = getattr(warning, "skew_seconds")  # noqa: B009 - an extra, unknown to the type checker
    assert skew * direction > 3000
    assert getattr(warning, "vaulting_request_id") == "vr-skew"  # noqa: B009


async def test_unreadable_request_time_is_logged_not_refused(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards "log, never reject" for a request-time in no known form (signed as sent)."""
    await webhook.open_session("vr-odd-time")
    body = notification("vr-odd-time")
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        reply = await webhook.caller.post(
            body, webhook.caller.headers(body, request_time="2026-05-18 10:40:05")
        )
    assert (reply.status, reply.body) == (200, ACK)
    (warning,) = _skew_records(caplog)
    assert warning.levelno == logging.WARNING
    assert "not understood" in warning.getMessage()


async def test_a_current_request_time_logs_no_warning(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards against warning noise: a notification sent now gets no skew line (which also
    shows the skew test above is not warning about every request)."""
    await webhook.open_session("vr-now")
    body = notification("vr-now")
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        reply = await webhook.caller.post(body, webhook.caller.headers(body))
    assert reply.status == 200
    assert _skew_records(caplog) == []


async def test_skew_of_an_unauthenticated_request_is_not_looked_at(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards the order: a forged request's request-time is attacker input and logs nothing
    about clocks, only its refusal."""
    body = notification("vr-forged")
    headers = {**webhook.caller.headers(body), "request-time": "1"}
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        reply = await webhook.caller.post(body, headers)
    assert reply.status == 401
    assert _skew_records(caplog) == []


# -- failure limit -------------------------------------------------------------------------------

LIMIT = 3


@pytest.fixture
async def limited_url(webhook: Webhook, serve: ServeFactory) -> str:
    """A webhook app over the same service and store whose sources get LIMIT failures."""
    return await serve(webhook.service, failure_limit=LIMIT)


async def test_failed_authentications_from_one_source_are_limited(
    webhook: Webhook,
    limited_url: str,
    other_source: aiohttp.ClientSession,
    antom_key: PrivateKey,
    foreign_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards the limiter and the choice documented in ``vault_service.webhook.limiter``:
    after LIMIT bad signatures from 127.0.0.1 that address gets the fixed 429 even for a
    correctly signed notification (no signature work is done for it), nothing is stored, and
    Antom at another address (127.0.0.2) is still accepted."""
    await webhook.open_session("vr-limit")
    attacker = WebhookCaller(webhook.caller.http, limited_url, antom_key)
    antom = WebhookCaller(other_source, limited_url, antom_key)
    before = await webhook.snapshot("vr-limit")
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        assert [await forge(attacker, "vr-limit", foreign_key) for _ in range(LIMIT)] == [401] * 3
        body = notification("vr-limit")
        limited = await attacker.post(body, attacker.headers(body))
    assert (limited.status, limited.body) == (429, TOO_MANY)
    assert await webhook.snapshot("vr-limit") == before
    refusals = [r for r in caplog.records if r.name.startswith(WEBHOOK_LOGGER)]
    assert [getattr(r, "source_limited", None) for r in refusals] == [False, False, True, None]
    assert {getattr(r, "source", None) for r in refusals} == {"127.0.0.1"}

    accepted = await antom.post(body, antom.headers(body))
    assert (accepted.status, accepted.body) == (200, ACK)


async def test_a_limited_source_is_refused_before_its_body_is_read(
    webhook: Webhook, limited_url: str, antom_key: PrivateKey, foreign_key: PrivateKey
) -> None:
    """Guards "before any work": a limited source announcing a body it never sends gets 429
    at once, not the body timeout (408) a normal request would meet."""
    attacker = WebhookCaller(webhook.caller.http, limited_url, antom_key)
    for _ in range(LIMIT):
        assert await forge(attacker, "vr-any", foreign_key) == 401
    port = int(limited_url.rpartition(":")[2])
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {JSON_UTF8}\r\n"
        f"client-id: {CLIENT_ID}\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    status_line, _, body = await raw_exchange(port, head)
    assert status_line.startswith("HTTP/1.1 429")
    assert body == TOO_MANY


async def test_successful_authentications_are_never_limited(
    webhook: Webhook, limited_url: str, antom_key: PrivateKey, foreign_key: PrivateKey
) -> None:
    """Guards that only failures count: many correctly signed notifications (Antom's retries
    of one result, duplicates included) from one source are all acknowledged, and that
    source's failure budget is still whole afterwards."""
    await webhook.open_session("vr-many")
    caller = WebhookCaller(webhook.caller.http, limited_url, antom_key)
    body = notification("vr-many")
    for _ in range(LIMIT * 4):
        reply = await caller.post(body, caller.headers(body))
        assert (reply.status, reply.body) == (200, ACK)
    assert [await forge(caller, "vr-many", foreign_key) for _ in range(LIMIT)] == [401] * 3
    assert (await caller.post(body, caller.headers(body))).status == 429
