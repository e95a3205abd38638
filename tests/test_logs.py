"""The JSON log formatter writes only allowlisted context fields."""

from __future__ import annotations

import json
import logging

from vault_service.logs import JsonFormatter


def format_record(**extra: object) -> dict[str, object]:
    record = logging.LogRecord("vault", logging.INFO, __file__, 1, "stored", None, None)
    record.__dict__.update(extra)
    line: dict[str, object] = json.loads(JsonFormatter().format(record))
    return line


def test_allowlisted_context_is_written() -> None:
    """Operators need the request id, the caller and the outcome on every line."""
    line = format_record(vaulting_request_id="vr-1", owner="checkout", outcome="acknowledged")
    assert line["vaulting_request_id"] == "vr-1"
    assert line["owner"] == "checkout"
    assert line["message"] == "stored"


def test_context_outside_the_allowlist_is_dropped() -> None:
    """A card token or signature passed as context by mistake never reaches the log."""
    line = format_record(card_token="ALIPAYsecret", signature="abc", vaulting_request_id="vr-1")
    text = json.dumps(line)
    assert "ALIPAYsecret" not in text
    assert "abc" not in text
