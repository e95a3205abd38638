"""The async Antom client: signs each request, verifies each answer, retries what may be retried.

One aiohttp session with a bounded pool of kept-alive connections serves every call
(:class:`~vault_service.antom.connection.AntomHttp`; why aiohttp, and nothing on top of it:
``bench/results/antom_client.md``, ``bench/results/create_session/``). Retries reuse the exact
request (same ``vaultingRequestId``, same parameters) with a fresh ``Request-Time`` and
signature, and never outlive the caller's budget.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import ValidationError

from vault_service.antom import causes
from vault_service.antom.connection import AntomHttp, HttpAnswer, proxy_address
from vault_service.antom.errors import (
    AntomError,
    AntomProtocolError,
    AntomResultError,
    AntomUnavailableError,
    AntomUnknownResultError,
    MalformedSignatureHeaderError,
    MissingSignatureError,
    SignatureError,
    failure,
)
from vault_service.antom.failure_log import FailureLog
from vault_service.antom.models import (
    AntomModel,
    CreateVaultingSessionRequest,
    CreateVaultingSessionResponse,
    InquireVaultingRequest,
    InquireVaultingResponse,
    Result,
    antom_document,
)
from vault_service.antom.signing import SignatureHeader, Signer, Verifier
from vault_service.metrics import Metrics
from vault_service.secret import Secret

CREATE_VAULTING_SESSION_PATH: Final = "/ams/api/v1/vaults/createVaultingSession"
INQUIRE_VAULTING_PATH: Final = "/ams/api/v1/vaults/inquireVaulting"
SANDBOX_CLIENT_PREFIX: Final = "SANDBOX_"
SUCCESS_CODE: Final = "SUCCESS"
"""Antom's result code of every ``S`` answer."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_RETRYABLE_HTTP_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_TYPE: Final = "application/json; charset=UTF-8"
_ResponseT = TypeVar("_ResponseT", bound=AntomModel)


def request_path(path: str, client_id: str) -> str:
    """The path to send and sign: sandbox client ids use ``/ams/sandbox/api`` instead."""
    if client_id.startswith(SANDBOX_CLIENT_PREFIX):
        return path.replace("/ams/api", "/ams/sandbox/api", 1)
    return path


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Full-jitter exponential backoff between attempts; the time budget bounds the total."""

    max_attempts: int = 6
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Seconds to wait after failed ``attempt`` (1-based)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return cap * rng()


@dataclass(frozen=True, slots=True)
class AntomClientConfig:
    """Where and how to reach Antom.

    ``gateway`` is a base URL without path (a region gateway, or an emulator);
    ``budget`` is the default total time for one call including retries, used when the caller
    sets none; ``attempt_timeout`` caps a single HTTP exchange; ``refusal_log_interval`` is how
    often, at most, failures of one cause (Antom refusing our credentials, an untrusted
    certificate, a refused connection...) are logged at ERROR, with a count. ``ca_file`` adds
    a CA bundle to the public ones and ``proxy`` is an egress proxy URL, as the settings check
    it (:mod:`vault_service.antom.connection`).
    """

    gateway: str
    client_id: str
    key_version: str = "1"
    budget: float = 15.0
    attempt_timeout: float = 10.0
    max_connections: int = 64
    refusal_log_interval: float = 60.0
    allow_plain_http: bool = False
    ca_file: Path | None = None
    proxy: Secret | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        parts = urlsplit(self.gateway)
        if parts.scheme not in {"https", "http"} or not parts.netloc:
            raise ValueError(f"the Antom gateway must be an absolute URL, got {self.gateway!r}")
        if parts.scheme == "http" and not self.allow_plain_http:
            raise ValueError("the Antom gateway must use https (plain http is for the emulator)")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError("the Antom gateway is a base URL without path or query")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the Antom gateway URL carries no credentials")
        if not self.client_id:
            raise ValueError("the Antom client id is empty")
        if self.budget <= 0 or self.attempt_timeout <= 0 or self.refusal_log_interval <= 0:
            raise ValueError("Antom time budgets must be positive")

    @property
    def base_url(self) -> str:
        return self.gateway.rstrip("/")

    @property
    def peer(self) -> str:
        """``host:port`` of the gateway, as logs name it."""
        parts = urlsplit(self.gateway)
        return parts.netloc if parts.port else f"{parts.netloc}:{_DEFAULT_PORTS[parts.scheme]}"

    @property
    def proxy_address(self) -> str | None:
        """``host:port`` of the proxy, if any: never its credentials."""
        return None if self.proxy is None else proxy_address(self.proxy)


class AntomClient:
    """Calls ``createVaultingSession`` and ``inquireVaulting``.

    Each call either returns a verified ``S`` answer or raises an :class:`AntomError`:
    :class:`AntomRejectedError` for ``F`` (never retried), :class:`AntomConfigurationError` for
    an ``F`` that refuses our credentials (never retried), :class:`AntomUnknownResultError` when
    ``U`` answers outlast the budget, :class:`AntomUnavailableError` when transport failures do,
    a ``SignatureError`` for any answer whose signature is missing or wrong. Each failed
    attempt is logged with its cause, and summarised at ERROR at most once per
    ``refusal_log_interval`` per cause, with a count, since while the way to Antom is broken
    every call fails alike (:class:`~vault_service.antom.failure_log.FailureLog`).
    """

    def __init__(
        self,
        config: AntomClientConfig,
        signer: Signer,
        verifier: Verifier,
        *,
        http: AntomHttp | None = None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics if metrics is not None else Metrics()
        self._signer = signer
        self._verifier = verifier
        self._owns_http = http is None
        self._http = (
            http
            if http is not None
            else AntomHttp(config.max_connections, ca_file=config.ca_file, proxy=config.proxy)
        )
        self._rng = rng
        self._failures = FailureLog(
            config.refusal_log_interval, clock, peer=config.peer, proxy=config.proxy_address
        )

    async def __aenter__(self) -> AntomClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP pool this client created (an injected one belongs to its creator)."""
        if self._owns_http:
            await self._http.aclose()

    async def create_vaulting_session(
        self, request: CreateVaultingSessionRequest | bytes, *, budget: float | None = None
    ) -> CreateVaultingSessionResponse:
        """Create a session; ``request`` may be the exact body of an earlier attempt, which a
        retry must repeat byte for byte (Antom answers REPEAT_REQ_INCONSISTENT otherwise)."""
        body = request if isinstance(request, bytes) else request.to_json_bytes()
        vaulting_request_id = CreateVaultingSessionRequest.model_validate_json(
            body
        ).vaulting_request_id
        return await self._call(
            CREATE_VAULTING_SESSION_PATH,
            body,
            CreateVaultingSessionResponse,
            vaulting_request_id,
            budget,
        )

    async def inquire_vaulting(
        self, request: InquireVaultingRequest, *, budget: float | None = None
    ) -> InquireVaultingResponse:
        """Antom's answer about one vaulting request.

        The answer must name the request asked about: the signature covers the answer, not
        the question, so a signed answer about another request (a replay, a gateway mix-up)
        would otherwise hand one buyer's card token to another's record.
        """
        answer = await self._call(
            INQUIRE_VAULTING_PATH,
            request.to_json_bytes(),
            InquireVaultingResponse,
            request.vaulting_request_id,
            budget,
        )
        if answer.vaulting_request_id != request.vaulting_request_id:
            raise AntomProtocolError("Antom answered an inquiry about another vaulting request")
        return answer

    async def _call(
        self,
        path: str,
        body: bytes,
        response_type: type[_ResponseT],
        vaulting_request_id: str,
        budget: float | None,
    ) -> _ResponseT:
        config = self._config
        path = request_path(path, config.client_id)
        deadline = time.monotonic() + (config.budget if budget is None else budget)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            attempt_timeout = min(remaining, config.attempt_timeout)
            try:
                if remaining <= 0:
                    raise AntomUnavailableError(
                        "the time budget ran out before Antom answered", cause=causes.timeout(0)
                    )
                return await self._attempt(path, body, response_type, attempt_timeout)
            except AntomError as exc:
                error: AntomError = exc
            except TimeoutError:
                error = AntomUnavailableError(
                    "Antom did not answer in time", cause=causes.timeout(attempt_timeout)
                )
            except (aiohttp.ClientError, OSError) as exc:
                cause = causes.of_connection_error(exc)
                error = AntomUnavailableError(f"Antom unreachable: {cause}", cause=cause)
            delay = config.retry.backoff(attempt, self._rng)
            out_of_time = time.monotonic() + delay >= deadline
            last = not error.retryable or attempt >= config.retry.max_attempts or out_of_time
            self._failures.attempt_failed(
                error,
                path=path,
                vaulting_request_id=vaulting_request_id,
                attempt=attempt,
                will_retry=not last,
            )
            if last:
                raise error
            await asyncio.sleep(delay)

    async def _attempt(
        self, path: str, body: bytes, response_type: type[_ResponseT], within: float
    ) -> _ResponseT:
        """One POST and its verified answer within ``within`` seconds, counted in the metrics
        by outcome."""
        began = time.perf_counter()
        status, code = "none", "CANCELLED"
        try:
            async with asyncio.timeout(within):
                response = await self._post(path, body)
            answer = self._accept(path, response, response_type)
        except BaseException as exc:
            status, code = _failed_attempt(exc)
            raise
        else:
            status, code = "S", SUCCESS_CODE
            return answer
        finally:
            operation = path.rpartition("/")[2]
            self._metrics.antom_call(operation, status, code, time.perf_counter() - began)

    async def _post(self, path: str, body: bytes) -> HttpAnswer:
        config = self._config
        return await self._http.post(
            config.base_url + path,
            body,
            signed_headers(self._signer, path, config.client_id, body),
        )

    def _accept(
        self, path: str, response: HttpAnswer, response_type: type[_ResponseT]
    ) -> _ResponseT:
        """Turn one HTTP answer into a verified model or the matching typed error."""
        status, raw = response.status, response.body
        if status in _RETRYABLE_HTTP_STATUSES:
            raise AntomUnavailableError(
                f"Antom answered HTTP {status}", cause=causes.http_status(status)
            )
        if status != 200:
            raise AntomProtocolError(
                f"Antom answered HTTP {status}", cause=causes.http_status(status)
            )
        document = _parse_document(raw)
        result = _parse_result(document)
        signed = check_response_signature(
            self._verifier,
            path=path,
            headers=response.headers,
            raw=raw,
            result=result,
            client_id=self._config.client_id,
        )
        if result.result_status == "F":
            raise failure(result.result_code, result.result_message, signed=signed)
        if result.result_status == "U":
            raise AntomUnknownResultError(result.result_code, "U", result.result_message)
        try:
            return response_type.model_validate(document)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, err["loc"])) for err in exc.errors())
            raise AntomProtocolError(f"Antom's answer is incomplete or invalid: {fields}") from None


def signed_headers(signer: Signer, path: str, client_id: str, body: bytes) -> dict[str, str]:
    """The headers of a request to Antom, signed now (``Request-Time`` in epoch ms)."""
    request_time = str(time.time_ns() // 1_000_000)
    return {
        "Content-Type": _CONTENT_TYPE,
        "client-id": client_id,
        "Request-Time": request_time,
        "Signature": signer.sign("POST", path, client_id, request_time, body),
    }


def answer_result(raw: bytes) -> Result:
    """The ``result`` of an answer's body, or :class:`AntomProtocolError`."""
    return _parse_result(_parse_document(raw))


def _failed_attempt(exc: BaseException) -> tuple[str, str]:
    """The result status and code the metrics count for an attempt that raised ``exc``:
    Antom's own when it answered F or U, else ``none`` and what went wrong."""
    if isinstance(exc, AntomResultError):
        return exc.result_status, exc.result_code
    if isinstance(exc, SignatureError):
        return "none", "BAD_SIGNATURE"
    if isinstance(exc, AntomProtocolError):
        return "none", "PROTOCOL_ERROR"
    if isinstance(exc, asyncio.CancelledError):
        return "none", "CANCELLED"
    return "none", "UNAVAILABLE"  # timeouts, transport failures, retryable HTTP statuses


def _parse_document(raw: bytes) -> object:
    try:
        return antom_document(raw)
    except ValueError:
        raise AntomProtocolError("Antom's answer is not JSON") from None


def _parse_result(document: object) -> Result:
    if not isinstance(document, dict) or not isinstance(document.get("result"), dict):
        raise AntomProtocolError("Antom's answer has no result object")
    try:
        return Result.model_validate(document["result"])
    except ValidationError:
        raise AntomProtocolError("Antom's answer has an invalid result object") from None


def check_response_signature(
    verifier: Verifier,
    *,
    path: str,
    headers: Mapping[str, str],
    raw: bytes,
    result: Result,
    client_id: str,
) -> bool:
    """Verify an answer's signature; tolerate an unsigned answer only for ``F``/``U``.
    Whether the answer was signed (and verified).

    That is the official Python SDK's rule (a gateway cannot sign some failures, e.g. for an
    unknown client). Unlike the SDK, absent headers count as empty ones: an unsigned failure
    can only make a call fail, never fake a success. ``headers`` must look names up without
    regard to case (Antom sends them lowercase; proxies may not keep that).
    """
    signature = headers.get("signature", "")
    response_time = headers.get("response-time", "")
    unsigned = not signature or not SignatureHeader.parse(signature).signature
    if unsigned and not response_time:
        if result.result_status in {"F", "U"}:
            return False
        raise MissingSignatureError("Antom's successful answer is not signed")
    if unsigned or not response_time:
        raise MalformedSignatureHeaderError("Antom's answer has incomplete signature headers")
    verifier.verify(
        signature,
        method="POST",
        path=path,
        client_id=headers.get("client-id", client_id),
        time=response_time,
        body=raw,
    )
    return True
