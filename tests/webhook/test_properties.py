"""Random requests against the live webhook: whatever arrives, the answer is a deliberate
4xx or the acknowledgement, never a 5xx or an escaped exception, and a refused request
changes nothing in the store.

Signatures are made with either of Antom's rotation keys under its own keyVersion, under a
version nobody configured, or under the other key's version; extra headers carry random and
huge values. The failure limit is raised out of the way here, so that every example reaches
the signature check; a second property runs the same requests against a tight limit.
"""

from __future__ import annotations

import gzip
import json
import logging
import string
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from tests.fixtures.antom import CLIENT_ID
from tests.fuzzing import fuzz_property
from vault_service.antom import PrivateKey, Signer
from vault_service.store import Store

from .conftest import JSON_UTF8, PATH, ServeFactory, Webhook, WebhookCaller, notification

OPEN_ID = "vr-prop"
ACK = b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
EXPECTED = {200, 400, 401, 404, 405, 413, 415}
TIGHT_FAILURE_LIMIT = 3

_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _printable
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_printable, inner, max_size=4),
    max_leaves=12,
)
_results = st.fixed_dictionaries(
    {},
    optional={
        "resultCode": _printable | st.sampled_from(["SUCCESS", "DO_NOT_HONOR"]) | _json_values,
        "resultStatus": st.sampled_from(["S", "F", "U", "X", ""]) | _json_values,
        "resultMessage": _printable | _json_values,
    },
)
_notifications = st.fixed_dictionaries(
    {},
    optional={
        "result": _results | _json_values,
        "vaultingRequestId": st.sampled_from([OPEN_ID, "vr-other", "", "v" * 65])
        | _printable
        | _json_values,
        "paymentMethodDetail": st.fixed_dictionaries(
            {}, optional={"card": st.dictionaries(_printable, _json_values, max_size=4)}
        )
        | _json_values,
        "vaultingStatus": st.sampled_from(["SUCCESS", "FAIL", "PROCESSING", "NOPE", "CANCELLED"])
        | _json_values,
        "vaultingCreateTime": _printable,
        "acquirerInfo": st.dictionaries(
            st.sampled_from(["acquirerName", "acquirerCardToken", "acquirerResultCode"])
            | _printable,
            _json_values,
            max_size=6,
        )
        | _json_values,
    },
)


@st.composite
def _near_valid(draw: st.DrawFn) -> bytes:
    """A real notification with some fields dropped or replaced: valid or nearly so."""
    document = json.loads(notification(draw(st.sampled_from([OPEN_ID, "vr-unknown"]))))
    for key in draw(st.sets(st.sampled_from(sorted(document)), max_size=2)):
        del document[key]
    document.update(draw(st.just({}) | _notifications))
    return json.dumps(document).encode()


_bodies = st.one_of(
    st.binary(max_size=200),
    _json_values.map(lambda value: json.dumps(value).encode()),
    _notifications.map(lambda value: json.dumps(value).encode()),
    _near_valid(),
)


@dataclass(frozen=True)
class Attempt:
    """One request; ``signed_over`` is what the signature covers (None: no signature made),
    by which key (``current``: keyVersion 1's, ``next``: keyVersion 2's) under which version."""

    method: str
    target: str
    body: bytes
    headers: dict[str, str]
    signed_over: bytes | None
    key: str
    key_version: str


_PARTS = (
    "method",
    "target",
    "content-type",
    "client-id",
    "request-time",
    "signature",
    "key-version",
)
_RIGHT_KEYS = st.sampled_from([("current", "1"), ("next", "2")])
_WRONG_KEYS = st.sampled_from([("current", "2"), ("next", "1"), ("current", "3"), ("next", "77")])
_header_values = (
    _printable
    | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1).map(
        lambda text: text * 2000
    )
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, exclude_characters="\x7f"))
)
_extra_headers = st.dictionaries(
    st.sampled_from(["X-Extra", "Key-Version", "Request-Id", "User-Agent", "Forwarded"]),
    _header_values,
    max_size=2,
) | st.just({"Content-Encoding": "identity"})
_url_text = st.text(st.sampled_from("abcxyz019/._-~"), max_size=20)


@st.composite
def _attempts(draw: st.DrawFn) -> Attempt:
    """A request for Antom's notify endpoint with a random body and a few parts broken.

    Each part is right unless drawn into ``broken``, so that valid signatures over random
    bodies are common and each kind of breakage is also tried alone.
    """
    broken = draw(st.just(frozenset[str]()) | st.sets(st.sampled_from(_PARTS), max_size=3))

    def part(name: str, right: st.SearchStrategy[str], wrong: st.SearchStrategy[str]) -> str:
        return draw(wrong if name in broken else right)

    body = draw(_bodies)
    headers = {
        "Content-Type": part(
            "content-type",
            st.sampled_from([JSON_UTF8, "application/json", "APPLICATION/JSON; charset=utf-8"]),
            st.sampled_from(["text/plain", "application/json5", "", "json"]) | _printable,
        ),
        "client-id": part(
            "client-id", st.just(CLIENT_ID), st.sampled_from(["SANDBOX_OTHER", ""]) | _printable
        ),
        "request-time": part(
            "request-time",
            st.sampled_from(["1716000000000", "2024-05-18T02:40:00+00:00"])
            | st.integers(0, 10**16).map(str)
            | _printable,
            st.just(""),
        ),
        **draw(_extra_headers),
    }
    key, key_version = draw(_WRONG_KEYS if "key-version" in broken else _RIGHT_KEYS)
    signed_over: bytes | None = body
    if "signature" in broken:
        signed_over = draw(st.sampled_from([None, body + b" "]))
        if signed_over is None:
            headers["signature"] = draw(
                _printable | _printable.map(lambda t: f"algorithm=RSA256,signature={t}")
            )
    return Attempt(
        method=part("method", st.just("POST"), st.sampled_from(["GET", "PUT", "DELETE"])),
        target=part(
            "target",
            st.sampled_from([PATH, f"{PATH}?x=1"]),
            st.sampled_from([f"{PATH}/", "/", PATH.upper()]) | _url_text.map("/".__add__),
        ),
        body=body,
        headers=headers,
        signed_over=signed_over,
        key=key,
        key_version=key_version,
    )


@pytest.fixture
def vault_store(each_backend_store: Store) -> Store:
    """The service's store: every property here runs on each backend."""
    return each_backend_store


@pytest.fixture
def webhook_options() -> dict[str, Any]:
    """No failure limit in reach: every example gets its signature checked."""
    return {"failure_limit": 1_000_000}


async def _check(
    webhook: Webhook,
    caller: WebhookCaller,
    keys: dict[str, PrivateKey],
    attempt: Attempt,
    caplog: pytest.LogCaptureFixture,
    expected: set[int],
) -> None:
    """Send ``attempt`` and check the property: an expected status, the exact ack on 200,
    no stored change when refused, and no error logged (an exception escaping into aiohttp
    would log one)."""
    if await webhook.store.get(OPEN_ID) is None:
        await webhook.open_session(OPEN_ID)
    headers = dict(attempt.headers)
    if attempt.signed_over is not None:
        signer = Signer(keys[attempt.key], attempt.key_version)
        headers["signature"] = signer.sign(
            "POST", PATH, headers["client-id"], headers["request-time"], attempt.signed_over
        )
    before = await webhook.snapshot(OPEN_ID)

    reply = await caller.post(attempt.body, headers, target=attempt.target, method=attempt.method)

    event(f"HTTP {reply.status}")  # the spread of answers, for --hypothesis-show-statistics
    assert reply.status in expected, (reply.status, reply.body)
    if reply.status == 200:
        assert reply.body == ACK
    else:
        assert await webhook.snapshot(OPEN_ID) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def keys(antom_key: PrivateKey, antom_next_key: PrivateKey) -> dict[str, PrivateKey]:
    return {"current": antom_key, "next": antom_next_key}


@fuzz_property(examples=200)
@given(attempt=_attempts())
async def test_random_requests_get_a_deliberate_answer(
    webhook: Webhook,
    keys: dict[str, PrivateKey],
    caplog: pytest.LogCaptureFixture,
    attempt: Attempt,
) -> None:
    """Guards robustness of the whole gate, including validly signed random bodies and every
    keyVersion case: only the expected statuses, the exact ack on 200, no stored change when
    refused, and no error logged."""
    await _check(webhook, webhook.caller, keys, attempt, caplog, EXPECTED)


@pytest.fixture
async def tight_caller(
    webhook: Webhook, serve: ServeFactory, antom_key: PrivateKey
) -> WebhookCaller:
    """A caller of a second app over the same service and store, with a tight failure limit."""
    url = await serve(webhook.service, failure_limit=TIGHT_FAILURE_LIMIT)
    return WebhookCaller(webhook.caller.http, url, antom_key)


@fuzz_property(examples=60)
@given(attempt=_attempts())
async def test_random_requests_under_a_tight_failure_limit(
    webhook: Webhook,
    tight_caller: WebhookCaller,
    keys: dict[str, PrivateKey],
    caplog: pytest.LogCaptureFixture,
    attempt: Attempt,
) -> None:
    """Guards the limiter inside the gate: once limited, a source gets the fixed 429 (never a
    5xx, never a stored change) whatever it sends."""
    await _check(webhook, tight_caller, keys, attempt, caplog, EXPECTED | {429})


# --- what Antom may really send: the notifications of issue 9 ----------------------------------


_TEXT_EDGES = ["\x00", "\x01", "\x1f", "\x7f", "\r\n", "\t", "\u2028", "\ufeff", "\ud800", "\udfff"]
_antom_text = st.one_of(
    _printable,
    st.builds("{}{}{}".format, _printable, st.sampled_from(_TEXT_EDGES), _printable),
    st.lists(
        st.sampled_from(_TEXT_EDGES) | st.integers(0xD800, 0xDFFF).map(chr) | st.characters(),
        max_size=12,
    ).map("".join),
)
"""Any string Antom's JSON can carry: NUL, other controls and lone surrogates included (JSON
escapes them all), which some databases cannot store as text."""
_known_statuses = st.sampled_from(["SUCCESS", "FAIL", "PROCESSING"])
_unknown_statuses = st.just("CANCELLED") | st.text(
    st.sampled_from(string.ascii_uppercase + "_"), min_size=1, max_size=20
)
_ACQUIRER_FIELDS = [
    "acquirerName",
    "referenceRequestId",
    "acquirerTransactionId",
    "acquirerMerchantId",
    "acquirerResultCode",
    "acquirerResultMessage",
    "acquirerCardToken",
    "acquirerFingerprint",
    "acquirerMerchantName",
    "acquirerReasonDescription",
    "ptspTransactionId",
    "acquirerAccountName",
]


def _all_of(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({name: _antom_text for name in names})


@st.composite
def _filled_notifications(draw: st.DrawFn) -> dict[str, Any]:
    """A notification as Antom documents it with every field filled with any text, any
    vaultingStatus (known, new, or none) and acquirerInfo with fields Antom may add; its
    vaultingRequestId is the test's to set."""
    card = {
        **draw(_all_of(["cardToken", "brand", "maskedCardNo", "lastFour", "bin", "funding"])),
        **draw(_all_of(["issuingCountry", "issuerName", "expiryMonth", "expiryYear"])),
        "cardholderName": draw(_all_of(["firstName", "middleName", "lastName", "fullName"])),
        "billingAddress": draw(
            _all_of(["region", "state", "city", "address1", "address2", "zipCode", "label"])
        ),
    }
    acquirer = {
        **draw(_all_of(_ACQUIRER_FIELDS)),
        **draw(st.dictionaries(_printable, _json_values, max_size=3)),
    }
    document: dict[str, Any] = {
        "result": {
            "resultCode": draw(st.sampled_from(["SUCCESS", "PROCESS_FAIL", "UNKNOWN_EXCEPTION"])),
            "resultStatus": draw(st.sampled_from(["S", "F", "U"])),
            "resultMessage": draw(_antom_text),
        },
        "paymentMethodDetail": {"paymentMethodType": "CARD", "card": card},
        "acquirerInfo": acquirer,
        "vaultingCreateTime": draw(_antom_text),
        "metadata": draw(_antom_text),
    }
    status = draw(st.none() | _known_statuses | _unknown_statuses)
    if status is not None:
        document["vaultingStatus"] = status
    return document


_NUL_IN_THE_BILLING_ADDRESS = {
    **json.loads(notification("")),
    "paymentMethodDetail": {
        "paymentMethodType": "CARD",
        "card": {"cardToken": "t-nul", "billingAddress": {"address1": "Main St\x00 1"}},
    },
}
_CANCELLED = {**json.loads(notification("")), "vaultingStatus": "CANCELLED"}


@fuzz_property(examples=60)
@given(known=st.booleans(), document=_filled_notifications())
@example(known=True, document=_NUL_IN_THE_BILLING_ADDRESS)
@example(known=True, document=_CANCELLED)
async def test_any_signed_notification_is_acknowledged(
    webhook: Webhook, caplog: pytest.LogCaptureFixture, known: bool, document: dict[str, Any]
) -> None:
    """Guards issue 9 #4 and #5: a validly signed notification, whatever text its fields
    carry and whatever vaultingStatus it names, is acknowledged with the exact ack (for a
    session of ours or an unknown id), never 400 or 500, and logs no error."""
    vaulting_request_id = f"vr-{uuid.uuid4().hex[:16]}"
    if known:
        await webhook.open_session(vaulting_request_id)
    body = json.dumps({**document, "vaultingRequestId": vaulting_request_id}).encode()
    reply = await webhook.caller.post(body, webhook.caller.headers(body))
    assert (reply.status, reply.body) == (200, ACK)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


_BOMB = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
"""16 MiB of zeros in about 16 KB: what a stranger sends to make us inflate it."""
_INVALID_GZIP = b"\x1f\x8b\x08\x00" + b"not gzip at all" * 4
_encodings = st.sampled_from(
    [
        "gzip",
        "x-gzip",
        "GZIP",
        "deflate",
        "br",
        "zstd",
        "compress",
        "gzip, identity",
        "identity, gzip",
    ]
) | _printable.filter(lambda value: value.strip().lower() not in {"", "identity"})
_compressed_bodies = st.one_of(
    st.just(_BOMB),
    st.just(_INVALID_GZIP),
    _bodies.map(gzip.compress),
    _bodies.map(zlib.compress),
    st.binary(max_size=200),
)


@pytest.fixture
async def one_connection() -> AsyncIterator[aiohttp.ClientSession]:
    """HTTP over a single kept-alive connection: a request sent after an answer is read only
    once the server is done with the previous request's body."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        yield session


@fuzz_property(examples=40)
@given(encoding=_encodings, body=_compressed_bodies)
@example(encoding="gzip", body=_INVALID_GZIP)
async def test_compressed_bodies_are_refused_unread(
    webhook: Webhook,
    one_connection: aiohttp.ClientSession,
    antom_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    encoding: str,
    body: bytes,
) -> None:
    """Guards issue 9 #1: a validly signed body under any Content-Encoding but identity gets
    415 and changes nothing, and neither its answer nor the rest of its connection logs an
    error (aiohttp used to inflate it anyway, and an invalid gzip body logged a traceback)."""
    caller = WebhookCaller(one_connection, webhook.url.removesuffix(PATH), antom_key)
    before = await webhook.snapshot(OPEN_ID)
    reply = await caller.post(body, {**caller.headers(body), "Content-Encoding": encoding})
    assert reply.status == 415, (reply.status, reply.body)
    assert (await caller.post(b"", {}, method="GET")).status == 405  # the connection's next
    assert await webhook.snapshot(OPEN_ID) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
