"""Random requests against the live webhook: whatever arrives, the answer is a deliberate
4xx or the acknowledgement, never a 5xx or an escaped exception, and a refused request
changes nothing in the store.

Signatures are made with either of Antom's rotation keys under its own keyVersion, under a
version nobody configured, or under the other key's version; extra headers carry random and
huge values. The failure limit is raised out of the way here, so that every example reaches
the signature check; a second property runs the same requests against a tight limit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fixtures.antom import CLIENT_ID
from tests.fuzzing import fuzz_property
from vault_service.antom.keys import PrivateKey
from vault_service.antom.signing import Signer
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
        "vaultingStatus": st.sampled_from(["SUCCESS", "FAIL", "PROCESSING", "NOPE"]),
        "vaultingCreateTime": _printable,
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
)
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
