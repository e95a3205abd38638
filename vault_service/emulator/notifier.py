"""Signed notifyVaulting delivery with Antom's retry schedule, and a log of every attempt.

Antom resends a notification until the merchant acknowledges it, at intervals of 0 s, 2 min,
10 min, 10 min, 1 h, 2 h, 6 h and 15 h. The docs do not say what each interval is measured
from; here attempt *k* is due that interval after attempt *k-1* was due (attempt 1 right after
the result became final), so slow receivers do not stretch the schedule. Intervals are
multiplied by the time scale. A ``SANDBOX_`` client gets no resend when its acknowledgement is
an HTTP 200 with the wrong body, as Antom documents for its sandbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from vault_service.antom import Signer
from vault_service.emulator.faults import Counter, Faults
from vault_service.emulator.wire import JSON_CONTENT_TYPE, WallClock, antom_time, precise_time

log = logging.getLogger(__name__)

RETRY_INTERVALS: Final = (0.0, 120.0, 600.0, 600.0, 3600.0, 7200.0, 21600.0, 54000.0)
ACKNOWLEDGEMENT: Final = {
    "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"}
}
SANDBOX_PREFIX: Final = "SANDBOX_"
_MAX_ACK_BYTES: Final = 64 * 1024
_MAX_CONNECTIONS: Final = 32


class Outcome(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    ERROR = "error"
    DROPPED = "dropped"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class NotificationAttempt:
    """One delivery attempt; a duplicate copy is logged under the same attempt number.

    Times are epoch seconds; ``sent_at`` is None for a dropped attempt, ``http_status`` is None
    when no HTTP answer arrived (then ``error`` says why).
    """

    vaulting_request_id: str
    attempt: int
    interval_seconds: float
    scheduled_at: float
    sent_at: float | None
    url: str
    http_status: int | None
    error: str | None
    outcome: Outcome

    def to_json(self) -> dict[str, object]:
        return {
            "vaultingRequestId": self.vaulting_request_id,
            "attempt": self.attempt,
            "intervalSeconds": self.interval_seconds,
            "scheduledAt": precise_time(self.scheduled_at),
            "sentAt": None if self.sent_at is None else precise_time(self.sent_at),
            "url": self.url,
            "httpStatus": self.http_status,
            "error": self.error,
            "outcome": self.outcome.value,
        }


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int | None
    error: str | None
    acknowledged: bool


class Notifier:
    """Delivers notifications over one shared HTTP client; one tracked task per delivery."""

    def __init__(
        self,
        *,
        signer: Signer,
        client_id: str,
        time_scale: float,
        attempt_timeout: float,
        faults: Faults,
        clock: WallClock,
    ) -> None:
        self._signer = signer
        self._clock = clock
        self._client_id = client_id
        self._time_scale = time_scale
        self._timeout = aiohttp.ClientTimeout(total=attempt_timeout)
        self._faults = faults
        self._sandbox = client_id.startswith(SANDBOX_PREFIX)
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._attempts: list[NotificationAttempt] = []

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=_MAX_CONNECTIONS),
            trust_env=False,
            headers={"User-Agent": "vault-service-emulator"},
        )

    async def aclose(self) -> None:
        """Cancel every pending delivery, wait for them to end, then close the HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def deliver(self, vaulting_request_id: str, url: str, body: bytes) -> None:
        """Start delivering ``body`` to ``url`` on the retry schedule."""
        if self._http is None:
            raise RuntimeError("the notifier is not running")
        task = asyncio.get_running_loop().create_task(
            self._deliver(self._http, vaulting_request_id, url, body),
            name=f"notifyVaulting {vaulting_request_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def wait_idle(self) -> None:
        """Wait until no delivery is pending (including ones started while waiting)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def attempts(self, vaulting_request_id: str | None = None) -> list[NotificationAttempt]:
        if vaulting_request_id is None:
            return list(self._attempts)
        return [a for a in self._attempts if a.vaulting_request_id == vaulting_request_id]

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("notification delivery crashed", exc_info=error)

    async def _deliver(
        self, http: aiohttp.ClientSession, vaulting_request_id: str, url: str, body: bytes
    ) -> None:
        loop = asyncio.get_running_loop()
        # Attempts follow a fixed grid from the first one (as Antom's do), so a late attempt
        # does not push the later ones back; ``scheduled_at`` is the grid time, not when the
        # loop got round to it.
        start, wall_start = loop.time(), self._clock()
        due = start
        for number, interval in enumerate(RETRY_INTERVALS, start=1):
            scaled = interval * self._time_scale
            due += scaled
            scheduled_at = wall_start + (due - start)
            await asyncio.sleep(max(0.0, due - loop.time()))
            attempt = _AttemptInfo(vaulting_request_id, number, scaled, scheduled_at, url)
            outcome, status = await self._attempt(http, attempt, body)
            if outcome is Outcome.ACKNOWLEDGED:
                return
            if self._sandbox and outcome is Outcome.REJECTED and status == 200:
                log.info(
                    "notifyVaulting vaultingRequestId=%s: sandbox client, no resend after a "
                    "malformed acknowledgement",
                    vaulting_request_id,
                )
                return
        log.warning(
            "notifyVaulting vaultingRequestId=%s: gave up after %d attempts",
            vaulting_request_id,
            len(RETRY_INTERVALS),
        )

    async def _attempt(
        self, http: aiohttp.ClientSession, attempt: _AttemptInfo, body: bytes
    ) -> tuple[Outcome, int | None]:
        if self._faults.take(Counter.DROP_NOTIFICATIONS):
            self._record(attempt, None, _Reply(None, "dropped by fault injection", False))
            return Outcome.DROPPED, None
        duplicate = self._faults.take(Counter.DUPLICATE_NOTIFICATIONS)
        request_time = antom_time(self._clock())
        path = urlsplit(attempt.url).path or "/"
        headers = {
            "client-id": self._client_id,
            "request-time": request_time,
            "signature": self._signer.sign("POST", path, self._client_id, request_time, body),
            "Content-Type": JSON_CONTENT_TYPE,
        }
        sent_at = self._clock()
        reply = await self._post(http, attempt.url, headers, body)
        outcome = self._record(attempt, sent_at, reply)
        if duplicate:
            copy_sent_at = self._clock()
            copy = await self._post(http, attempt.url, headers, body)
            self._record(attempt, copy_sent_at, copy, duplicate=True)
        return outcome, reply.status

    async def _post(
        self, http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes
    ) -> _Reply:
        try:
            async with http.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=self._timeout
            ) as response:
                raw = await _read_limited(response.content)
                status = response.status
        except TimeoutError:
            return _Reply(None, "timed out", False)
        except aiohttp.ClientError as exc:
            return _Reply(None, f"{type(exc).__name__}: {exc}", False)
        return _Reply(status, None, status == 200 and _is_acknowledgement(raw))

    def _record(
        self,
        attempt: _AttemptInfo,
        sent_at: float | None,
        reply: _Reply,
        *,
        duplicate: bool = False,
    ) -> Outcome:
        if duplicate:
            outcome = Outcome.DUPLICATE
        elif sent_at is None:
            outcome = Outcome.DROPPED
        elif reply.acknowledged:
            outcome = Outcome.ACKNOWLEDGED
        elif reply.status is not None:
            outcome = Outcome.REJECTED
        else:
            outcome = Outcome.ERROR
        self._attempts.append(
            NotificationAttempt(
                vaulting_request_id=attempt.vaulting_request_id,
                attempt=attempt.number,
                interval_seconds=attempt.interval,
                scheduled_at=attempt.scheduled_at,
                sent_at=sent_at,
                url=attempt.url,
                http_status=reply.status,
                error=reply.error,
                outcome=outcome,
            )
        )
        log.info(
            "notifyVaulting vaultingRequestId=%s attempt=%d outcome=%s httpStatus=%s",
            attempt.vaulting_request_id,
            attempt.number,
            outcome.value,
            reply.status,
        )
        return outcome


@dataclass(frozen=True, slots=True)
class _AttemptInfo:
    vaulting_request_id: str
    number: int
    interval: float
    scheduled_at: float
    url: str


async def _read_limited(stream: aiohttp.StreamReader) -> bytes:
    """The body, or its first bytes past the limit (too long to be an acknowledgement)."""
    raw = bytearray()
    async for chunk in stream.iter_chunked(_MAX_ACK_BYTES):
        raw += chunk
        if len(raw) > _MAX_ACK_BYTES:
            break
    return bytes(raw)


def _is_acknowledgement(raw: bytes) -> bool:
    try:
        return bool(json.loads(raw) == ACKNOWLEDGEMENT)
    except ValueError:
        return False
