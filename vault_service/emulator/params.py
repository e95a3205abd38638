"""Request fields of the vaulting APIs, checked the way Antom answers ``PARAM_ILLEGAL``.

Antom's docs type every scalar as a string ("true", "20") while its SDKs send native JSON
booleans and numbers, so both are accepted. Unknown fields are ignored, as Antom does for fields
newer than the caller's SDK. Every error message starts with the offending field's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

_MAX_ID: Final = 64
_MAX_URL: Final = 2048
_MAX_METADATA: Final = 2048
_REGION: Final = re.compile(r"[A-Z]{2}")


class ParamIllegalError(Exception):
    """A request field is missing or invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class CreateParams:
    """The parameters of createVaultingSession that decide idempotent replays."""

    payment_method_type: str
    vaulting_request_id: str
    vaulting_notification_url: str
    redirect_url: str | None
    merchant_region: str | None
    is_3ds_authentication: bool | None
    pass_through_metadata: str | None


def parse_document(body: bytes) -> Mapping[str, object]:
    """The request body as a JSON object (UTF-8 only, as Antom requires)."""
    try:
        document = json.loads(body.decode("utf-8"))
    except ValueError:
        raise ParamIllegalError("the request body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise ParamIllegalError("the request body is not a JSON object")
    return document


def peek_vaulting_request_id(body: bytes) -> str | None:
    """The request's ``vaultingRequestId`` if it has a usable one, for call counting."""
    try:
        document = parse_document(body)
    except ParamIllegalError:
        return None
    value = document.get("vaultingRequestId")
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_ID else None


def parse_create(document: Mapping[str, object]) -> CreateParams:
    payment_method_type = _required(document, "paymentMethodType", _MAX_ID)
    if payment_method_type != "CARD":
        raise ParamIllegalError("paymentMethodType must be CARD")
    region = _string(document, "merchantRegion", 2)
    if region is not None and not _REGION.fullmatch(region):
        raise ParamIllegalError("merchantRegion must be an ISO 3166 alpha-2 code such as SG")
    return CreateParams(
        payment_method_type=payment_method_type,
        vaulting_request_id=_required(document, "vaultingRequestId", _MAX_ID),
        vaulting_notification_url=_url(document, "vaultingNotificationUrl"),
        redirect_url=_string(document, "redirectUrl", _MAX_URL),
        merchant_region=region,
        is_3ds_authentication=_boolean(document, "is3DSAuthentication"),
        pass_through_metadata=_string(document, "passThroughMetadata", _MAX_METADATA),
    )


def parse_inquire(document: Mapping[str, object]) -> str:
    """The ``vaultingRequestId`` to look up (``merchantAccountId`` is checked, then unused)."""
    _string(document, "merchantAccountId", _MAX_ID)
    return _required(document, "vaultingRequestId", _MAX_ID)


def _required(document: Mapping[str, object], name: str, limit: int) -> str:
    value = _string(document, name, limit)
    if value is None:
        raise ParamIllegalError(f"{name} is required")
    return value


def _string(document: Mapping[str, object], name: str, limit: int) -> str | None:
    """A string field; a JSON number is taken as its decimal text. ``null`` counts as absent."""
    value = document.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ParamIllegalError(f"{name} must be a string")
    if len(value) > limit:
        raise ParamIllegalError(f"{name} must be at most {limit} characters")
    return value


def _url(document: Mapping[str, object], name: str) -> str:
    value = _required(document, name, _MAX_URL)
    try:
        parts = urlsplit(value)
        valid = parts.scheme in {"http", "https"} and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ParamIllegalError(f"{name} must be an absolute http or https URL")
    return value


def _boolean(document: Mapping[str, object], name: str) -> bool | None:
    value = document.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise ParamIllegalError(f"{name} must be true or false")
