"""End to end: the emulator's signed notifications through the webhook into SQLite.

A session is created through the service (so the emulator knows this webhook's URL), the buyer
submits a test card to the emulator, and the emulator delivers notifyVaulting on Antom's retry
schedule (1000x faster). Each test checks the stored record, the event log, and the emulator's
attempt log, which shows whether our answer counted as an acknowledgement.
"""

from __future__ import annotations

from tests.fixtures.stack import VaultingFactory
from vault_service.antom import VaultingNotification
from vault_service.domain import ANONYMOUS_OWNER, EventSource, SessionParameters, VaultingStatus
from vault_service.emulator import RETRY_INTERVALS

from .conftest import DECLINED, PATH, THREE_DS, VISA, ServeFactory, Webhook


async def test_success_card_is_stored_once_and_acknowledged(webhook: Webhook) -> None:
    """Guards the main path: verify → persist card details + one event → Antom stops."""
    record = await webhook.open_session("vr-visa")
    await webhook.submit_card(record, VISA)

    stored = await webhook.final_record("vr-visa")
    assert stored.status is VaultingStatus.SUCCEEDED
    card = stored.card
    assert card is not None
    assert card.card_token.reveal().startswith("ALIPAY")
    assert (card.brand, card.masked_card_number, card.bin, card.last_four) == (
        "VISA",
        "************1111",
        "411111",
        "1111",
    )
    assert (card.expiry_month, card.expiry_year, card.funding, card.issuing_country) == (
        "12",
        "39",
        "CREDIT",
        "US",
    )
    assert stored.antom_result is not None
    assert stored.antom_result.result_status == "S"
    events = await webhook.store.events_after(0, limit=10)
    assert [(e.source, e.record.status) for e in events] == [
        (EventSource.NOTIFICATION, VaultingStatus.SUCCEEDED)
    ]
    attempts = await webhook.attempts("vr-visa")
    assert [(a["outcome"], a["httpStatus"]) for a in attempts] == [("acknowledged", 200)]


async def test_declined_card_is_stored_as_failed(webhook: Webhook) -> None:
    """Guards failure notifications: F is persisted as FAILED with Antom's code, and acked."""
    record = await webhook.open_session("vr-declined")
    await webhook.submit_card(record, DECLINED)

    stored = await webhook.final_record("vr-declined")
    assert stored.status is VaultingStatus.FAILED
    assert stored.antom_result is not None
    assert (stored.antom_result.result_status, stored.antom_result.result_code) == (
        "F",
        "DO_NOT_HONOR",
    )
    assert stored.card is not None
    assert stored.card.card_token.reveal() == ""
    assert stored.card.last_four == "0002"
    assert len(await webhook.store.events_after(0, limit=10)) == 1
    attempts = await webhook.attempts("vr-declined")
    assert [a["outcome"] for a in attempts] == ["acknowledged"]


async def test_three_ds_card_is_notified_once_when_final(webhook: Webhook) -> None:
    """Guards 3-D Secure: the buyer sees PROCESSING, only the final SUCCESS is notified, and
    it yields one event."""
    record = await webhook.open_session("vr-3ds")
    answer = await webhook.submit_card(record, THREE_DS)
    assert answer["vaultingStatus"] == "PROCESSING"

    stored = await webhook.final_record("vr-3ds")
    assert stored.status is VaultingStatus.SUCCEEDED
    assert stored.card is not None
    assert stored.card.card_token.reveal().startswith("ALIPAY")
    events = await webhook.store.events_after(0, limit=10)
    assert [e.record.status for e in events] == [VaultingStatus.SUCCEEDED]
    attempts = await webhook.attempts("vr-3ds")
    assert [a["outcome"] for a in attempts] == ["acknowledged"]


async def test_duplicated_delivery_yields_one_event(webhook: Webhook) -> None:
    """Guards idempotency: Antom sending the same notification twice is acked twice and
    stored once."""
    await webhook.set_faults(duplicate_notifications=1)
    record = await webhook.open_session("vr-dup")
    await webhook.submit_card(record, VISA)

    await webhook.final_record("vr-dup")
    attempts = await webhook.attempts("vr-dup")
    assert [(a["outcome"], a["httpStatus"]) for a in attempts] == [
        ("acknowledged", 200),
        ("duplicate", 200),
    ]
    assert len(await webhook.store.events_after(0, limit=10)) == 1


async def test_dropped_delivery_is_stored_from_the_retry(webhook: Webhook) -> None:
    """Guards recovery from a lost delivery: Antom's next attempt (2 min, scaled) lands and
    is persisted once."""
    await webhook.set_faults(drop_notifications=1)
    record = await webhook.open_session("vr-drop")
    await webhook.submit_card(record, VISA)

    stored = await webhook.final_record("vr-drop")
    assert stored.status is VaultingStatus.SUCCEEDED
    attempts = await webhook.attempts("vr-drop")
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "dropped"),
        (2, "acknowledged"),
    ]
    scale = webhook.emulator.config.time_scale
    assert attempts[1]["intervalSeconds"] == RETRY_INTERVALS[1] * scale
    assert len(await webhook.store.events_after(0, limit=10)) == 1


class _FlakySink:
    """The real service behind a store that is down for the first ``failures`` calls."""

    def __init__(self, webhook: Webhook, failures: int) -> None:
        self._service = webhook.service
        self.failures = failures

    async def record_notification(self, notification: VaultingNotification, raw: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("database is unavailable")
        await self._service.record_notification(notification, raw)


async def test_storage_outage_is_not_acked_and_the_retry_is_stored(
    webhook: Webhook, serve: ServeFactory, make_vaulting: VaultingFactory
) -> None:
    """Guards "never ack what was not persisted": a 500 makes Antom retry, and the retry,
    once storage is back, is stored exactly once."""
    flaky_url = await serve(_FlakySink(webhook, failures=1))
    service = make_vaulting(flaky_url + PATH)
    record = (
        await service.create_session(ANONYMOUS_OWNER, "vr-outage", SessionParameters())
    ).record
    await webhook.submit_card(record, VISA)

    stored = await webhook.final_record("vr-outage")
    assert stored.status is VaultingStatus.SUCCEEDED
    attempts = await webhook.attempts("vr-outage")
    assert [(a["outcome"], a["httpStatus"]) for a in attempts] == [
        ("rejected", 500),
        ("acknowledged", 200),
    ]
    assert len(await webhook.store.events_after(0, limit=10)) == 1
