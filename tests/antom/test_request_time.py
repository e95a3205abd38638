"""The request-time forms Antom and its SDKs send, read by the webhook and the emulator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vault_service.antom.request_time import request_epoch


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1716000000000", datetime(2024, 5, 18, 2, 40, tzinfo=UTC)),
        ("2024-05-18T02:40:00+00:00", datetime(2024, 5, 18, 2, 40, tzinfo=UTC)),
        ("2024-05-18T10:40:00+0800", datetime(2024, 5, 18, 2, 40, tzinfo=UTC)),
        ("2024-05-18T02:40:00.5Z", datetime(2024, 5, 18, 2, 40, 0, 500_000, tzinfo=UTC)),
    ],
)
def test_request_time_forms_antom_sdks_send(value: str, expected: datetime) -> None:
    """Guards reading both epoch milliseconds and the ISO-8601 forms (fact sheet §3.3)."""
    assert request_epoch(value) == expected.timestamp()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "tomorrow",
        "2024-05-18T02:40:00",
        "2024-05-18",
        "\uff19\uff19",
        "1" * 40,
        "T" * 1000,
        "-5",
    ],
)
def test_request_times_in_no_known_form_are_none(value: str) -> None:
    """Guards the unreadable case (no offset, non-ASCII digits, absurd lengths): ``None``,
    never an exception."""
    assert request_epoch(value) is None
