"""The notifyVaulting endpoint: verify, persist, then acknowledge — and serve nothing else.

Every request walks the same gate, cheapest and least trusting check first, so that a stranger
costs us as little as possible and learns nothing:

1. routing: only ``POST <path>`` exists (other paths 404, other methods 405 with ``Allow``);
2. the failure limit: a source that failed authentication too often lately gets 429 before
   anything else is done for it (see :mod:`vault_service.webhook.limiter`; the source is the
   sender behind any trusted proxies, see :mod:`vault_service.webhook.source`);
3. size and media type: a declared ``Content-Length`` above the limit is refused before a byte
   of body is read, so is a ``Content-Encoding`` other than identity (415, and the connection
   is closed: the body is never inflated, see :mod:`vault_service.webhook.server`), a
   non-JSON body is refused (415), and the streamed read stops one byte past the limit (413)
   or after ``body_timeout`` seconds (408);
4. authenticity: exactly one ``client-id`` (ours), ``request-time`` and ``signature`` header,
   and a signature over ``POST <path>\\n<client-id>.<request-time>.<raw body>`` by Antom's key
   of the ``keyVersion`` the signature names (401 otherwise, and one failure counted against
   the source) — before the body is parsed, so unauthenticated input never reaches the JSON
   parser or the logs;
5. shape: the body must be a notification with ``result`` and ``vaultingRequestId`` (400);
6. persistence: the sink stores it (record + event, or an orphan for an unknown id;
   :class:`~vault_service.service.VaultingService` commits the notifications that arrive
   together in one transaction and returns once this one's has committed); if that
   fails the answer is 500 so that Antom retries — an acknowledgement is only ever sent for
   what is stored, and the store deduplicates the retries (the error's category of
   :mod:`vault_service.errors` decides only how the failure is logged);
7. the acknowledgement, byte for byte what Antom documents.

``request-time`` is required (it is part of the signed content) but never refused for its
value: Antom does not document the tolerated skew, its retries may reuse the time, and a
replayed notification is harmless because recording is idempotent and transitions are
monotonic. Once a notification is authentic, a time further than ``max_clock_skew`` from our
clock (or one that cannot be read) is logged as a warning, because it usually means our clock
is wrong.

Only failed authentications count against the failure limit, not the refusals of step 3
(compressed bodies included). The limit exists to make a source that keeps failing the
signature check cheap: it skips the body read and the RSA verification. A step-3 refusal is
already that cheap (decided from the headers, the body never inflated or parsed), so counting
it would save nothing, while it would widen what can get a source refused: every sender
behind one NAT, or behind a proxy missing from the trusted ones, shares a bucket, and a
misconfigured hop that compresses or relabels bodies would get Antom's own source limited for
what is not an authentication failure. The connection cap and the header deadline bound what
such requests can hold.

Requests that are not well-formed HTTP (a bad request line or header, a duplicated
``Content-Type``) are answered 400 by aiohttp's protocol layer before this application runs;
broken chunk framing in the middle of a body surfaces here as a body that never completes (408).

Error bodies are short fixed JSON (``{"error":"unauthorized"}``) that say which gate refused,
never why: no parser messages, no echo of the input. Each request logs one line with the
outcome, the reason and — once the body is authenticated and parsed — the vaultingRequestId;
never the body, card data, headers or the signature.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDictProxy
from prometheus_client import Counter

from vault_service.antom import (
    SignatureError,
    UnknownKeyVersionError,
    VaultingNotification,
    Verifier,
    request_epoch,
)
from vault_service.errors import UnavailableError
from vault_service.metrics import Metrics
from vault_service.webhook.limiter import (
    DEFAULT_FAILURE_LIMIT,
    DEFAULT_FAILURE_WINDOW,
    FailureLimiter,
)
from vault_service.webhook.source import FORWARDED_FOR, Network, SourceResolver

log = logging.getLogger(__name__)

ACKNOWLEDGEMENT: Final = (
    b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
)
"""The exact body Antom expects; anything else (even equivalent JSON) may be retried."""

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
DEFAULT_BODY_TIMEOUT: Final = 10.0
DEFAULT_MAX_CLOCK_SKEW: Final = 300.0
JSON_MEDIA_TYPE: Final = "application/json"
_IDENTITY: Final = "identity"


class NotificationSink(Protocol):
    """Where verified notifications go; :class:`VaultingService` is one.

    ``record_notification`` must return only once the notification is durably stored (an unknown
    id included, as an orphan), and raise if it could not be: the webhook acknowledges exactly
    when it returns.
    """

    async def record_notification(self, notification: VaultingNotification, raw: bytes) -> None:
        """Persist ``notification`` (``raw`` is the verified body as received)."""
        ...


@dataclass(frozen=True, slots=True)
class _Refusal:
    """One fixed answer: the status, a short public error word, and whether to drop the
    connection (when part of the body may still be unread)."""

    status: int
    error: str
    close: bool = False

    def response(self) -> web.Response:
        response = web.Response(
            status=self.status,
            body=b'{"error":"' + self.error.encode() + b'"}',
            content_type=JSON_MEDIA_TYPE,
        )
        if self.status == 405:
            response.headers[hdrs.ALLOW] = hdrs.METH_POST
        if self.close:
            response.force_close()
        return response


_NOT_FOUND: Final = _Refusal(404, "not found")
_METHOD_NOT_ALLOWED: Final = _Refusal(405, "method not allowed")
_TOO_LARGE: Final = _Refusal(413, "payload too large", close=True)
_TIMEOUT: Final = _Refusal(408, "request timeout", close=True)
_UNSUPPORTED: Final = _Refusal(415, "unsupported media type")
_COMPRESSED: Final = _Refusal(415, "unsupported media type", close=True)
_UNAUTHORIZED: Final = _Refusal(401, "unauthorized")
_TOO_MANY: Final = _Refusal(429, "too many requests", close=True)
_BAD_REQUEST: Final = _Refusal(400, "bad request")
_NOT_STORED: Final = _Refusal(500, "internal error")
_OUTCOME: Final = web.ResponseKey("outcome", tuple[str, str])


class _NotifyHandler:
    """The request gate described in the module docstring, for one configured endpoint."""

    __slots__ = (
        "_body_timeout",
        "_client_id",
        "_failures",
        "_max_body_bytes",
        "_max_clock_skew",
        "_path",
        "_sink",
        "_sources",
        "_verifier",
    )

    def __init__(
        self,
        sink: NotificationSink,
        *,
        path: str,
        client_id: str,
        verifier: Verifier,
        max_body_bytes: int,
        body_timeout: float,
        failures: FailureLimiter,
        sources: SourceResolver,
        max_clock_skew: float,
    ) -> None:
        self._sink = sink
        self._path = path
        self._client_id = client_id
        self._verifier = verifier
        self._max_body_bytes = max_body_bytes
        self._body_timeout = body_timeout
        self._failures = failures
        self._sources = sources
        self._max_clock_skew = max_clock_skew

    async def handle(self, request: web.Request) -> web.Response:
        # The raw (still percent-encoded) path is what Antom signed, so it is what must match.
        if request.rel_url.raw_path != self._path:
            return _refuse(_NOT_FOUND, "unknown path", level=logging.INFO)
        if request.method != hdrs.METH_POST:
            return _refuse(_METHOD_NOT_ALLOWED, "method not allowed", level=logging.INFO)
        # The sender behind any trusted proxies, keyed by network (see webhook.source).
        source = self._sources.source(request.remote, request.headers.getall(FORWARDED_FOR, []))
        if self._failures.is_limited(source):
            return _refuse(
                _TOO_MANY, "too many failed authentications", level=logging.INFO, source=source
            )
        declared = request.content_length
        if declared is not None and declared > self._max_body_bytes:
            return _refuse(_TOO_LARGE, "declared body too large")
        if not _is_identity(request.headers):
            return _refuse(_COMPRESSED, "content-encoding not identity")
        if not _is_json(request.headers):
            return _refuse(_UNSUPPORTED, "not application/json")
        try:
            raw = await self._read_body(request)
        except TimeoutError:
            return _refuse(_TIMEOUT, "body not received in time")
        except (ConnectionError, HttpProcessingError, web.RequestPayloadError):
            return _refuse(_BAD_REQUEST, "body incomplete or malformed framing")
        if raw is None:
            return _refuse(_TOO_LARGE, "body too large")
        reason = self._authentication_failure(request.headers, raw)
        if reason is not None:
            limited = self._failures.record_failure(source)
            return _refuse(_UNAUTHORIZED, reason, source=source, source_limited=limited)
        try:
            notification = VaultingNotification.from_antom_json(raw)
        except ValueError:
            return _refuse(_BAD_REQUEST, "not a valid notification")
        vaulting_request_id = notification.vaulting_request_id
        self._warn_if_clock_skewed(request.headers["request-time"], vaulting_request_id)
        try:
            await self._sink.record_notification(notification, raw)
        except Exception as exc:
            return _not_stored(exc, vaulting_request_id)
        log.info(
            "notifyVaulting acknowledged",
            extra={
                "outcome": "acknowledged",
                "reason": "stored",
                "vaulting_request_id": vaulting_request_id,
            },
        )
        return _with_outcome(
            web.Response(body=ACKNOWLEDGEMENT, content_type=JSON_MEDIA_TYPE),
            "acknowledged",
            "stored",
        )

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The whole body, or ``None`` as soon as it exceeds the limit (the rest stays unread,
        so a chunked or lying sender cannot make us buffer more than the limit plus one)."""
        limit = self._max_body_bytes
        body = bytearray()
        async with asyncio.timeout(self._body_timeout):
            while chunk := await request.content.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    return None
        return bytes(body)

    def _authentication_failure(self, headers: CIMultiDictProxy[str], raw: bytes) -> str | None:
        """Why the request is not authentically Antom's, or ``None`` when it is."""
        client_id = _single(headers, "client-id")
        request_time = _single(headers, "request-time")
        signature = _single(headers, "signature")
        if client_id is None or client_id != self._client_id:
            return "client-id missing or not ours"
        if not request_time:
            return "request-time missing"
        if signature is None:
            return "signature missing"
        try:
            self._verifier.verify(
                signature,
                method=hdrs.METH_POST,
                path=self._path,
                client_id=client_id,
                time=request_time,
                body=raw,
            )
        except UnknownKeyVersionError:
            return "unknown key version"
        except SignatureError as exc:
            return f"signature rejected ({type(exc).__name__})"
        return None

    def _warn_if_clock_skewed(self, request_time: str, vaulting_request_id: str) -> None:
        """Log (never refuse) an authentic notification whose time is far from our clock;
        ``skew_seconds`` is positive when the time lies in our past."""
        sent = request_epoch(request_time)
        if sent is None:
            log.warning(
                "notifyVaulting request-time not understood; accepted anyway",
                extra={
                    "reason": "request-time neither epoch milliseconds nor ISO-8601 with offset",
                    "vaulting_request_id": vaulting_request_id,
                },
            )
            return
        skew = time.time() - sent
        if abs(skew) > self._max_clock_skew:
            log.warning(
                "notifyVaulting request-time is %.0f s from our clock; accepted anyway",
                skew,
                extra={
                    "reason": "clock skew",
                    "skew_seconds": round(skew, 3),
                    "vaulting_request_id": vaulting_request_id,
                },
            )


def _not_stored(exc: Exception, vaulting_request_id: str) -> web.Response:
    """The answer when a notification could not be stored: 500 whatever the cause, because
    only the acknowledgement stops Antom's retries (and the store deduplicates them).

    The error's category decides the log line: an outage (:class:`UnavailableError`) is
    expected and cured by a retry, so it is a warning naming the trouble in the error's public
    words (never a driver's text); anything else may be a bug and is an error with its
    traceback.
    """
    message = "notifyVaulting not stored; answering 500 so that Antom retries"
    fields = {"outcome": "failed", "vaulting_request_id": vaulting_request_id}
    if isinstance(exc, UnavailableError):
        log.warning(message, extra={**fields, "reason": exc.public_message})
        reason = "storage unavailable"
    else:
        log.error(message, exc_info=exc, extra={**fields, "reason": "storage failure"})
        reason = "storage failure"
    return _with_outcome(_NOT_STORED.response(), "failed", reason)


def _single(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """The header's value when it is present exactly once; a repeated authentication header
    is ambiguous (which one was signed?) and counts as missing."""
    values = headers.getall(name, [])
    return values[0] if len(values) == 1 else None


def _is_identity(headers: CIMultiDictProxy[str]) -> bool:
    """No ``Content-Encoding`` but identity, in any of its values and list entries: a second
    header or a list must not slip an encoding past the check."""
    return all(
        coding.strip().lower() == _IDENTITY
        for value in headers.getall(hdrs.CONTENT_ENCODING, [])
        for coding in value.split(",")
    )


def _is_json(headers: CIMultiDictProxy[str]) -> bool:
    """``application/json`` with any parameters (``charset=UTF-8`` is what Antom sends),
    compared case-insensitively; parsed by hand so odd input meets no lenient parser."""
    values = headers.getall(hdrs.CONTENT_TYPE, [])
    if len(values) != 1:
        return False
    media_type = values[0].partition(";")[0].strip().lower()
    return media_type == JSON_MEDIA_TYPE


def _refuse(
    refusal: _Refusal, reason: str, *, level: int = logging.WARNING, **fields: str | bool
) -> web.Response:
    """The refusal's fixed answer, after its one log line (``fields`` add to that line: the
    ``source`` address, whether it is now ``source_limited``)."""
    extra = {"outcome": "rejected", "reason": reason, **fields}
    log.log(level, "notifyVaulting refused with HTTP %d", refusal.status, extra=extra)
    return _with_outcome(refusal.response(), "rejected", reason)


def _with_outcome(response: web.Response, outcome: str, reason: str) -> web.Response:
    """``response``, marked with the outcome and reason its log line gives (each from a
    small fixed set) for :func:`_answered` to count."""
    response[_OUTCOME] = (outcome, reason)
    return response


def _answered(metrics: Metrics) -> Middleware:
    """The one middleware (each layer costs every request a call): a request that never
    reaches the gate (a target the router cannot match) gets the same fixed answer instead of
    aiohttp's text page, and every answer is counted by the outcome and reason it was marked
    with (``unmarked``: an answer aiohttp made itself)."""
    counters: dict[tuple[str, str], Counter] = {}  # one per (outcome, reason): a small fixed set

    @web.middleware
    async def answered(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = _refuse(_NOT_FOUND, "unroutable target", level=logging.INFO)
        marked = response.get(_OUTCOME, ("rejected", "unmarked"))
        counter = counters.get(marked)
        if counter is None:
            counter = counters[marked] = metrics.webhook_requests.labels(*marked)
        counter.inc()
        return response

    return answered


def build_webhook_app(
    sink: NotificationSink,
    *,
    path: str,
    client_id: str,
    verifier: Verifier,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    failure_limit: int = DEFAULT_FAILURE_LIMIT,
    failure_window: float = DEFAULT_FAILURE_WINDOW,
    trusted_proxies: Iterable[Network] = (),
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW,
    metrics: Metrics | None = None,
) -> web.Application:
    """The public webhook application: ``POST <path>`` and nothing else.

    ``path`` is the path of the notify URL given to Antom, exactly as written there (Antom
    signs it; any query string of that URL is not part of it). ``client_id`` is our Antom
    client id: a notification for another merchant is refused. ``verifier`` holds Antom's
    public key(s) by version; swapping its keys takes effect on the next request.

    A source gets ``failure_limit`` failed authentications, refilled evenly over
    ``failure_window`` seconds, before it is answered 429 (the limiter bounds how many
    sources it remembers). A source is the TCP peer or, when the peer is inside one of the
    ``trusted_proxies`` networks, the sender it names in ``X-Forwarded-For``; IPv6 sources
    are grouped by /64 (:mod:`vault_service.webhook.source`). ``max_clock_skew`` is how many
    seconds an authentic notification's ``request-time`` may be from our clock before a
    warning is logged. Every answer is counted in ``metrics`` by outcome and reason.
    """
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ValueError(f"the webhook path must be an absolute path without query, got {path!r}")
    if not client_id:
        raise ValueError("the Antom client id must not be empty")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    if not body_timeout > 0:
        raise ValueError("body_timeout must be > 0 seconds")
    if not max_clock_skew > 0:
        raise ValueError("max_clock_skew must be > 0 seconds")
    failures = FailureLimiter(limit=failure_limit, window=failure_window)
    handler = _NotifyHandler(
        sink,
        path=path,
        client_id=client_id,
        verifier=verifier,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        failures=failures,
        sources=SourceResolver(trusted_proxies),
        max_clock_skew=max_clock_skew,
    )
    app = web.Application(middlewares=[_answered(metrics if metrics is not None else Metrics())])
    # One catch-all route: the handler matches the raw path itself, so that the router's
    # pattern syntax and path decoding never decide what counts as the notify path.
    app.router.add_route("*", "/{tail:.*}", handler.handle)
    return app
