"""Request checks at the edge, so that nothing Antom would refuse, or that we could not store,
gets past the transport.

Each ``*_violations`` function returns every problem of a request at once (field path -> what
is wrong), so that a caller fixes its request in one round trip; :func:`ensure_valid` turns a
non-empty result into :class:`InvalidArgumentError` (INVALID_ARGUMENT with a BadRequest).
Field paths are proto paths (``env.time_zone_offset``, ``vaulting_request_ids[3]``), as the
contract promises. Messages never repeat a caller's value: only lengths, counts and rules.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import MAX_VAULTING_REQUEST_ID_CHARS
from vault_service.errors import InvalidArgumentError
from vault_service.service import MAX_PAGE_TOKEN_CHARS

MAX_REDIRECT_URL_CHARS: Final = 2048
MAX_LABELS: Final = 16
MAX_LABEL_KEY_CHARS: Final = 63
MAX_LABEL_VALUE_CHARS: Final = 256
MAX_STREAM_IDS: Final = 100
MAX_RESUME_TOKEN_CHARS: Final = 200
MAX_TIME_ZONE_OFFSET: Final = 720
MAX_LIST_STATUSES: Final = 5
# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS: Final = -62_135_596_800
MAX_TIMESTAMP_SECONDS: Final = 253_402_300_799
COLOR_DEPTHS: Final = frozenset({1, 4, 8, 15, 16, 24, 30, 32, 48})

_REQUEST_ID: Final = re.compile(r"[\x21-\x7e]+")
_REGION: Final = re.compile(r"[A-Z]{2}")
_CONTROL_CHARACTER: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_CHARACTER_RULE: Final = "must not contain control characters (such as NUL, CR or LF)"

ENV_STRING_LIMITS: Final[dict[str, int]] = {
    # Antom's documented limits (fact sheet §5.6).
    "device_token_id": 64,
    "device_brand": 64,
    "device_model": 128,
    # Antom documents no limit for these; ours keeps a stored record bounded while leaving
    # room for the longest real values (user agents run to several hundred characters).
    "user_agent": 2048,
    "cookie_id": 256,
    "device_language": 64,
    "device_id": 256,
    "os_version": 64,
}
BROWSER_INFO_STRING_LIMITS: Final[dict[str, int]] = {
    "accept_header": 2048,
    "language": 64,
    "user_agent": 2048,
}

Violations = dict[str, str]


def ensure_valid(violations: Violations) -> None:
    """Raise :class:`InvalidArgumentError` carrying ``violations`` unless there are none."""
    if violations:
        raise InvalidArgumentError(violations)


def create_session_violations(request: pb.CreateSessionRequest) -> Violations:
    found: list[tuple[str, str]] = []
    found += _request_id("vaulting_request_id", request.vaulting_request_id)
    if request.payment_method_type not in {"", "CARD"}:
        found.append(("payment_method_type", 'must be empty or "CARD"'))
    found += _redirect_url(request.redirect_url)
    if request.merchant_region and not _REGION.fullmatch(request.merchant_region):
        found.append(("merchant_region", "must be an ISO 3166-1 alpha-2 code in upper case"))
    found += _labels(request.labels)
    if request.HasField("env"):
        found += _env(request.env)
    found += _control_characters(request, "")
    return _merged(found)


def get_result_violations(request: pb.GetResultRequest) -> Violations:
    found = _request_id("vaulting_request_id", request.vaulting_request_id)
    found += _control_characters(request, "")
    return _merged(found)


def stream_results_violations(request: pb.StreamResultsRequest) -> Violations:
    found: list[tuple[str, str]] = []
    if len(request.resume_token) > MAX_RESUME_TOKEN_CHARS:
        found.append(("resume_token", f"must be at most {MAX_RESUME_TOKEN_CHARS} characters"))
    ids = request.vaulting_request_ids
    if len(ids) > MAX_STREAM_IDS:
        found.append(("vaulting_request_ids", f"must list at most {MAX_STREAM_IDS} ids"))
    for index, vaulting_request_id in enumerate(ids[:MAX_STREAM_IDS]):
        found += _request_id(f"vaulting_request_ids[{index}]", vaulting_request_id)
    found += _control_characters(request, "")
    return _merged(found)


def list_results_violations(request: pb.ListResultsRequest) -> Violations:
    found: list[tuple[str, str]] = []
    if request.page_size < 0:
        found.append(("page_size", "must not be negative"))
    if len(request.page_token) > MAX_PAGE_TOKEN_CHARS:
        found.append(("page_token", f"must be at most {MAX_PAGE_TOKEN_CHARS} characters"))
    if len(request.statuses) > MAX_LIST_STATUSES:
        found.append(("statuses", f"must list at most {MAX_LIST_STATUSES} statuses"))
    known = set(pb.VaultingStatus.values()) - {pb.VAULTING_STATUS_UNSPECIFIED}
    found += [
        (f"statuses[{index}]", "must be a known status other than VAULTING_STATUS_UNSPECIFIED")
        for index, status in enumerate(request.statuses)
        if status not in known
    ]
    found += _labels(request.labels)
    start, end = request.update_time_start, request.update_time_end
    has_start, has_end = request.HasField("update_time_start"), request.HasField("update_time_end")
    if has_start and not _valid_timestamp(start):
        found.append(("update_time_start", "must be a valid timestamp (years 1 to 9999)"))
    elif has_end and not _valid_timestamp(end):
        found.append(("update_time_end", "must be a valid timestamp (years 1 to 9999)"))
    elif has_start and has_end and end.ToDatetime() <= start.ToDatetime():
        found.append(("update_time_end", "must be after update_time_start"))
    found += _control_characters(request, "")
    return _merged(found)


REQUEST_VIOLATIONS: Final[Mapping[type[Message], Callable[[Any], Violations]]] = {
    pb.CreateSessionRequest: create_session_violations,
    pb.GetResultRequest: get_result_violations,
    pb.StreamResultsRequest: stream_results_violations,
    pb.ListResultsRequest: list_results_violations,
}
"""The check of each request message, by type (tests walk it against the service descriptor)."""


def _merged(found: Iterable[tuple[str, str]]) -> Violations:
    """One entry per field: several problems with one field are joined into one description."""
    merged: dict[str, list[str]] = {}
    for field, why in found:
        merged.setdefault(field, []).append(why)
    return {field: "; ".join(whys) for field, whys in merged.items()}


def _request_id(field: str, value: str) -> list[tuple[str, str]]:
    if not value:
        return [(field, "is required")]
    if len(value) > MAX_VAULTING_REQUEST_ID_CHARS:
        return [(field, f"must be at most {MAX_VAULTING_REQUEST_ID_CHARS} characters")]
    if not _REQUEST_ID.fullmatch(value):
        return [(field, "must be printable ASCII without spaces")]
    return []


def _redirect_url(url: str) -> list[tuple[str, str]]:
    if not url:
        return []
    if len(url) > MAX_REDIRECT_URL_CHARS:
        return [("redirect_url", f"must be at most {MAX_REDIRECT_URL_CHARS} characters")]
    try:
        parts = urlsplit(url)
        absolute = parts.scheme in {"http", "https"} and bool(parts.hostname)
    except ValueError:  # for example an unbalanced "[" in the host
        absolute = False
    return [] if absolute else [("redirect_url", "must be an absolute http or https URL")]


def _labels(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if len(labels) > MAX_LABELS:
        found.append(("labels", f"must have at most {MAX_LABELS} entries"))
    if any(not 1 <= len(key) <= MAX_LABEL_KEY_CHARS for key in labels):
        found.append(("labels", f"keys must be 1 to {MAX_LABEL_KEY_CHARS} characters"))
    if any(len(value) > MAX_LABEL_VALUE_CHARS for value in labels.values()):
        found.append(("labels", f"values must be at most {MAX_LABEL_VALUE_CHARS} characters"))
    return found


def _env(env: pb.Env) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if env.terminal_type not in pb.TerminalType.DESCRIPTOR.values_by_number:
        found.append(("env.terminal_type", "is not a known TerminalType"))
    if env.os_type not in pb.OsType.DESCRIPTOR.values_by_number:
        found.append(("env.os_type", "is not a known OsType"))
    found += _lengths(env, ENV_STRING_LIMITS, "env.")
    if env.client_ip and not _is_ip_address(env.client_ip):
        found.append(("env.client_ip", "must be an IPv4 or IPv6 address"))
    for name in ("screen_width", "screen_height"):
        if getattr(env, name) < 0:
            found.append((f"env.{name}", "must not be negative (0 means not given)"))
    if env.color_depth and env.color_depth not in COLOR_DEPTHS:
        depths = ", ".join(map(str, sorted(COLOR_DEPTHS)))
        found.append(("env.color_depth", f"must be one of {depths} (0 means not given)"))
    if env.HasField("time_zone_offset") and abs(env.time_zone_offset) > MAX_TIME_ZONE_OFFSET:
        found.append(
            (
                "env.time_zone_offset",
                f"must be between -{MAX_TIME_ZONE_OFFSET} and {MAX_TIME_ZONE_OFFSET} minutes",
            )
        )
    found += _lengths(env.browser_info, BROWSER_INFO_STRING_LIMITS, "env.browser_info.")
    return found


def _lengths(message: Message, limits: Mapping[str, int], prefix: str) -> list[tuple[str, str]]:
    return [
        (prefix + name, f"must be at most {limit} characters")
        for name, limit in limits.items()
        if len(getattr(message, name)) > limit
    ]


def _control_characters(message: Message, prefix: str) -> list[tuple[str, str]]:
    """Every given string, map keys and values and repeated items included, that holds a
    control character (Unicode category Cc: C0, DEL, C1).

    Walked from the descriptor, so a field added later is covered without a change here.
    PostgreSQL stores no NUL in ``text`` or ``jsonb`` (such a request used to reach Antom and
    then fail to be stored), and a CR or LF in a URL or label is a header-injection or
    log-forging vector that ``urlsplit`` silently strips while checking, so the value went to
    Antom raw. No real URL, label, id or device field carries one.
    """
    found: list[tuple[str, str]] = []
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            texts = [text for entry in value.items() for text in entry if isinstance(text, str)]
        elif field.message_type is not None:
            for index, item in enumerate(value) if field.is_repeated else [(None, value)]:
                found += _control_characters(item, _indexed(path, index) + ".")
            continue
        elif field.is_repeated:
            found += [
                (_indexed(path, index), CONTROL_CHARACTER_RULE)
                for index, text in enumerate(value)
                if isinstance(text, str) and _CONTROL_CHARACTER.search(text)
            ]
            continue
        else:
            texts = [value] if isinstance(value, str) else []
        if any(_CONTROL_CHARACTER.search(text) for text in texts):
            found.append((path, CONTROL_CHARACTER_RULE))
    return found


def _valid_timestamp(stamp: Timestamp) -> bool:
    return (
        MIN_TIMESTAMP_SECONDS <= stamp.seconds <= MAX_TIMESTAMP_SECONDS
        and 0 <= stamp.nanos < 1_000_000_000
    )


def _indexed(path: str, index: int | None) -> str:
    return path if index is None else f"{path}[{index}]"


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
