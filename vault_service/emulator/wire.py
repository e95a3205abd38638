"""Wire-level conventions shared by every part of the emulator.

Antom's answers are compact JSON with times in ISO-8601 carrying a ``+08:00`` offset (as in
Antom's own samples), and signatures cover the path exactly as the caller sent it — which, for
the official Python SDK, arrives inside an absolute-form request target.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Final
from urllib.parse import urlsplit

from vault_service.antom import request_epoch

ANTOM_TZ: Final = timezone(timedelta(hours=8))
JSON_CONTENT_TYPE: Final = "application/json; charset=UTF-8"
_MAX_EPOCH_MS_DIGITS: Final = 16

WallClock = Callable[[], float]
"""The emulated Antom's wall time, in epoch seconds (``time.time`` unless a test moves it): it
stamps the times on the wire and decides when a session has expired. Delays (retry intervals,
the 3-D Secure wait, the expiry timer) run on the event loop's clock and do not follow it."""


def compact_json(document: object) -> bytes:
    """Compact UTF-8 JSON, the form Antom's gateway sends (no spaces, non-ASCII kept)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def antom_time(epoch: float) -> str:
    """A whole-second ISO-8601 time with offset, e.g. ``2026-05-18T10:40:00+08:00``."""
    return datetime.fromtimestamp(int(epoch), ANTOM_TZ).isoformat()


def precise_time(epoch: float) -> str:
    """An ISO-8601 time with milliseconds, for the emulator's own logs and views."""
    return datetime.fromtimestamp(epoch, ANTOM_TZ).isoformat(timespec="milliseconds")


def signed_path(raw_target: str) -> str:
    """The path a caller signed, taken from the request target as received.

    An absolute-form target (``POST https://host/ams/... HTTP/1.1``, what the Python SDK sends)
    loses its scheme and host; escapes are kept exactly as sent. A query string stays part of the
    path, because Antom signs the "HTTP-URI-with-query-string".
    """
    if raw_target.startswith("/"):
        return raw_target
    parts = urlsplit(raw_target)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def is_request_time(value: str) -> bool:
    """Whether ``value`` is a time form some Antom SDK sends.

    Epoch milliseconds (Java, Go, current docs) or an ISO-8601 time with an offset: ``+hh:mm``
    (Python), ``+hhmm`` (PHP), ``Z`` with up to seven fraction digits (.NET).
    """
    return request_epoch(value, max_epoch_digits=_MAX_EPOCH_MS_DIGITS) is not None
