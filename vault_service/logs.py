"""One JSON object per log line, with an allowlist of context fields.

Modules log with the stdlib ``logging`` API and pass context as ``extra={...}``. Only the
fields named in :data:`ALLOWED_FIELDS` reach the output; anything else a call site attaches is
dropped, so a card token, key or signature put into ``extra`` by mistake never gets written.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final

ALLOWED_FIELDS: Final = frozenset(
    {
        "antom_path",
        "attempt",
        "error",
        "grpc_method",
        "grpc_code",
        "outcome",
        "owner",
        "reason",
        "result_code",
        "vaulting_request_id",
        "will_retry",
        "listen",
        "notify_url",
    }
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ALLOWED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str) -> None:
    """Send every logger's records to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
