"""The structlog pipeline: allowlisted context only, then redaction of everything written."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
import structlog

import vault_service
from tests.fixtures.logs import CapturedLog
from vault_service.antom import PrivateKey
from vault_service.logs import ALLOWED_FIELDS, formatter
from vault_service.redaction import REDACTED

CARD = "4111111111111111"


def format_record(
    message: str = "stored",
    *args: object,
    exc_info: logging._SysExcInfoType | None = None,
    **extra: object,
) -> dict[str, object]:
    record = logging.LogRecord("vault", logging.INFO, __file__, 1, message, args, exc_info)
    record.__dict__.update(extra)
    line: dict[str, object] = json.loads(formatter().format(record))
    return line


def test_every_line_leads_with_time_level_logger_and_message() -> None:
    """Operators scan these four columns; %-style arguments are merged into the message."""
    line = format_record("refused with HTTP %d", 401)
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert line["message"] == "refused with HTTP 401"
    assert line["level"] == "info"
    assert line["logger"] == "vault"
    assert str(line["time"]).endswith("+00:00")


@pytest.mark.parametrize("name", sorted(ALLOWED_FIELDS))
def test_every_allowlisted_field_is_written(name: str) -> None:
    """Request ids, callers, outcomes: every allowlisted field reaches the line unchanged."""
    line = format_record(**{name: f"value-of-{name}"})
    assert line[name] == f"value-of-{name}"


def test_numbers_and_booleans_keep_their_json_type() -> None:
    """Counters and flags stay numbers and booleans for log queries."""
    line = format_record(attempt=3, will_retry=False, skew_seconds=-1.5)
    assert (line["attempt"], line["will_retry"], line["skew_seconds"]) == (3, False, -1.5)


def test_context_outside_the_allowlist_is_dropped() -> None:
    """A card token or signature passed as context by mistake never reaches the log."""
    line = format_record(
        card_token="tok-in-extra",
        signature="sig-in-extra",
        cardNo=CARD,
        vaulting_request_id="vr-1",
    )
    text = json.dumps(line)
    assert "tok-in-extra" not in text
    assert "sig-in-extra" not in text
    assert CARD not in text
    assert line["vaulting_request_id"] == "vr-1"


def test_every_extra_field_used_by_the_service_is_allowlisted() -> None:
    """A field added at a call site but not to the allowlist would vanish from the log
    silently; this finds every literal ``extra={...}`` (and ``extra = {...}``) in the package."""
    used: dict[str, str] = {}
    root = Path(vault_service.__file__).parent
    for path in root.rglob("*.py"):
        if "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for mapping in _extra_dicts(node):
                for key in mapping.keys:
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        used[key.value] = f"{path.relative_to(root)}:{key.lineno}"
    assert used, "the scan found no extra= fields at all"
    missing = {name: where for name, where in used.items() if name not in ALLOWED_FIELDS}
    assert not missing


def _extra_dicts(node: ast.AST) -> list[ast.Dict]:
    if isinstance(node, ast.Call):
        return [
            kw.value for kw in node.keywords if kw.arg == "extra" and isinstance(kw.value, ast.Dict)
        ]
    if (
        isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Dict)
        and any(isinstance(t, ast.Name) and t.id == "extra" for t in node.targets)
    ):
        return [node.value]
    return []


def test_secrets_in_the_message_and_in_allowed_fields_are_redacted() -> None:
    """The allowlist lets ``reason`` and ``error`` through; what is inside them is still
    scrubbed, including a card number given as a number and secrets inside containers."""
    line = format_record(
        "payload %s",
        '{"cardToken": "tok-9", "cvv": "737"}',
        reason=f"card {CARD} refused",
        attempt=int(CARD),
        error={"nested": [f"Bearer tok-{CARD[:4]}xyz"]},
        vaulting_request_id="vr-2024-05-01-000042",
    )
    text = json.dumps(line)
    for secret in ("tok-9", "737", CARD, "tok-4111xyz"):
        assert secret not in text
    assert line["attempt"] == REDACTED
    assert line["reason"] == f"card {REDACTED} refused"
    assert line["vaulting_request_id"] == "vr-2024-05-01-000042"


def test_an_exception_carrying_secrets_is_scrubbed(merchant_key: PrivateKey) -> None:
    """A library's exception text can quote a request body or a key; the traceback is kept
    for the operator, the secrets in it are not."""
    pem = merchant_key.to_pkcs8_pem().decode()
    body_line = pem.splitlines()[1]
    try:
        raise ValueError(f"bad key {pem} for {{'cardNo': '{CARD}', 'cardToken': 'ALIPAYzz'}}")
    except ValueError as exc:
        line = format_record("key load failed", exc_info=(type(exc), exc, exc.__traceback__))
    exception = str(line["exception"])
    assert "Traceback (most recent call last)" in exception
    assert "ValueError: bad key" in exception
    for secret in (body_line, "PRIVATE KEY", CARD, "ALIPAYzz"):
        assert secret not in exception


def test_configure_routes_stdlib_and_structlog_loggers_through_one_pipeline(
    captured_log: CapturedLog,
) -> None:
    """A structlog-native call gets the same allowlist and redaction as a stdlib one."""
    logging.getLogger("vault_service.test").debug(
        "stdlib %s", CARD, extra={"owner": "checkout", "cvv": "737"}
    )
    structlog.get_logger("vault_service.native").info(
        "native", vaulting_request_id="vr-n", card_token="tok-native", reason=f"cardNo={CARD}"
    )
    stdlib, native = captured_log.lines()
    assert stdlib == {
        "time": stdlib["time"],
        "level": "debug",
        "logger": "vault_service.test",
        "message": f"stdlib {REDACTED}",
        "owner": "checkout",
    }
    assert native == {
        "time": native["time"],
        "level": "info",
        "logger": "vault_service.native",
        "message": "native",
        "vaulting_request_id": "vr-n",
        "reason": f"cardNo={REDACTED}",
    }


def test_underscore_fields_are_not_a_way_around_the_allowlist(captured_log: CapturedLog) -> None:
    """Regression: every field whose name began with "_" passed unfiltered and unredacted (the
    rule was meant for structlog's own bookkeeping, which is two named fields)."""
    structlog.get_logger("vault_service.native").info("native", _card=CARD, _extra="x")
    (line,) = captured_log.lines()
    assert "_card" not in line
    assert "_extra" not in line
    assert CARD not in json.dumps(line)
