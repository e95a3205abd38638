"""One structlog pipeline turns every log record into one redacted JSON line.

Modules log with the stdlib ``logging`` API and pass context as ``extra={...}``; structlog's
:class:`~structlog.stdlib.ProcessorFormatter` takes those records (and any structlog-native
event) through the same processors, so there is one place that decides what reaches the log:

1. only the context fields named in :data:`ALLOWED_FIELDS` are kept; anything else a call site
   attaches is dropped, so a card token, key or signature put into ``extra`` by mistake never
   gets written;
2. the exception and traceback become text;
3. :func:`vault_service.redaction.redact` scrubs the message, every field and that text, as the
   last line of defence against a secret inside an exception message or an allowlisted value.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, TextIO

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.types import EventDict, Processor, WrappedLogger

from vault_service.redaction import REDACTED, redact

ALLOWED_FIELDS: Final = frozenset(
    {
        "antom_path",
        "antom_vaulting_status",
        "attempt",
        "batch_size",
        "cause",
        "error",
        "event_id",
        "grpc_code",
        "grpc_method",
        "key_id",
        "key_versions",
        "listen",
        "notify_url",
        "outcome",
        "owner",
        "peer",
        "proxy",
        "pruned_events",
        "pruned_orphans",
        "pruned_records",
        "reason",
        "result_code",
        "skew_seconds",
        "source",
        "source_limited",
        "suppressed",
        "vaulting_request_id",
        "will_retry",
    }
)
"""Context fields that may reach a log line; request ids and caller names always do."""

_LINE_FIELDS: Final = frozenset({"event", "time", "level", "logger", "exc_info", "stack_info"})
_LEADING: Final = ("time", "level", "logger", "message")
_PROCESSOR_META: Final = frozenset({"_record", "_from_structlog"})
"""structlog's own bookkeeping (removed before rendering); any other field is user data."""
_SCALARS: Final = (bool, int, float, type(None))


def _allowed_extra_from_record(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A stdlib record carries its ``extra`` as record attributes: copy the allowlisted ones
    into the event, where a structlog-native call already has its keyword arguments."""
    record: logging.LogRecord = event_dict["_record"]
    for name in ALLOWED_FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            event_dict[name] = value
    return event_dict


def _keep_allowed(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {
        key: value
        for key, value in event_dict.items()
        if key in _LINE_FIELDS or key in ALLOWED_FIELDS or key in _PROCESSOR_META
    }


def _record_time(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """When the record was made, not when it was formatted (a handler may run later)."""
    record: logging.LogRecord = event_dict["_record"]
    created = datetime.fromtimestamp(record.created, UTC)
    event_dict["time"] = created.isoformat(timespec="milliseconds")
    return event_dict


def _stack_text(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``stack_info=True`` on a stdlib call arrives here already rendered as text."""
    stack = event_dict.pop("stack_info", None)
    if isinstance(stack, str):
        event_dict["stack"] = stack
    return event_dict


def _redact_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {
        key: value if key in _PROCESSOR_META else _redacted(value)
        for key, value in event_dict.items()
    }


def _redacted(value: object) -> object:
    """Strings are scrubbed; a number that turns out to be a card number is replaced whole;
    containers are walked; anything else is scrubbed as the text the renderer would write."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _SCALARS):
        return value if redact(str(value)) == str(value) else REDACTED
    if isinstance(value, Mapping):
        return {redact(str(key)): _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(item) for item in value]
    return redact(str(value))


def _line_order(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Time, level, logger and message lead every line, so a person can scan a column."""
    leading = {key: event_dict.pop(key) for key in _LEADING if key in event_dict}
    leading.update(event_dict)
    return leading


def _processors() -> list[Processor]:
    return [
        _keep_allowed,
        _record_time,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.format_exc_info,
        _stack_text,
        _redact_values,
        ProcessorFormatter.remove_processors_meta,
        structlog.processors.EventRenamer("message"),
        _line_order,
        structlog.processors.JSONRenderer(default=str),
    ]


def formatter() -> ProcessorFormatter:
    """The formatter every handler of the service uses."""
    return ProcessorFormatter(
        foreign_pre_chain=[_allowed_extra_from_record],
        processors=_processors(),
    )


def configure(level: str, stream: TextIO | None = None) -> None:
    """Send every logger's records, stdlib and structlog alike, to ``stream`` (stderr by
    default) as redacted JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
