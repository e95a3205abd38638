"""What the sync and the asyncio clients share: requests and the bookkeeping of a resuming
stream. The two APIs differ only in how they wait (threads or the event loop)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import grpc

from vault_client._proto.vault.v1 import vault_service_pb2 as pb
from vault_client.errors import ErrorDetails, UnavailableError, VaultError
from vault_client.policy import ReconnectPolicy

STREAM_ENDED: Final = "the stream ended without a status"


def create_session_request(
    vaulting_request_id: str,
    *,
    payment_method_type: str = "",
    redirect_url: str = "",
    merchant_region: str = "",
    is_3ds_authentication: bool | None = None,
    env: pb.Env | None = None,
    labels: Mapping[str, str] | None = None,
) -> pb.CreateSessionRequest:
    request = pb.CreateSessionRequest(
        vaulting_request_id=vaulting_request_id,
        payment_method_type=payment_method_type,
        redirect_url=redirect_url,
        merchant_region=merchant_region,
        env=env,
        labels=labels,
    )
    if is_3ds_authentication is not None:
        request.is_3ds_authentication = is_3ds_authentication
    return request


@dataclass(frozen=True)
class ResultFilter:
    """What ``list_results`` and ``iter_results`` return: results matching every condition
    given (``statuses``: any of them; ``labels``: all of these pairs, exactly;
    ``update_time_start`` <= update time < ``update_time_end``). A page token is bound to the
    filter it came with: page with the same one. Datetimes must be timezone-aware (a naive one
    is refused, so no local time is silently taken for UTC)."""

    statuses: Sequence[pb.VaultingStatus.ValueType] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    update_time_start: datetime | None = None
    update_time_end: datetime | None = None

    def __post_init__(self) -> None:
        for moment in (self.update_time_start, self.update_time_end):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError("update_time_start and update_time_end must be timezone-aware")

    def request(self, page_size: int, page_token: str) -> pb.ListResultsRequest:
        request = pb.ListResultsRequest(
            statuses=list(self.statuses),
            labels=dict(self.labels),
            page_size=page_size,
            page_token=page_token,
        )
        if self.update_time_start is not None:
            request.update_time_start.FromDatetime(self.update_time_start)
        if self.update_time_end is not None:
            request.update_time_end.FromDatetime(self.update_time_end)
        return request


ALL_RESULTS: Final = ResultFilter()
"""No condition: every result the caller may see."""


StreamItem = pb.ResultEvent | pb.UnreadableEvent
"""What ``results()`` yields: an event, or in its place an event the server could not read
(``vaulting_request_id`` and ``reason``; re-read that request with ``get_result``)."""


class StreamPosition:
    """Where one ``results()`` iteration stands.

    ``token`` is where a reconnect resumes: the newest event handed to the consumer, or the
    newest checkpoint. The store is written only with a token the consumer is done with: a
    checkpoint's at once, an event's when the consumer asks for the next event (or leaves the
    ``with`` block without an exception). So after a crash the consumer gets again at most the
    one event it was working on, and never misses one.
    """

    def __init__(self, vaulting_request_ids: Iterable[str], reconnect: ReconnectPolicy) -> None:
        self.token = ""
        self._ids = tuple(vaulting_request_ids)
        self._reconnect = reconnect
        self._unfinished: str | None = None
        self._failures = 0
        self._messages_on_call = 0

    def start(self, stored: str | None) -> None:
        self.token = stored or ""

    def request(self) -> pb.StreamResultsRequest:
        """The request that opens (or resumes) the stream; counts a new call."""
        self._messages_on_call = 0
        return pb.StreamResultsRequest(resume_token=self.token, vaulting_request_ids=self._ids)

    def finished(self) -> str | None:
        """The consumer is done with the event handed last: its token, to save now."""
        token, self._unfinished = self._unfinished, None
        return token

    def receive(self, message: pb.StreamResultsResponse) -> tuple[StreamItem | None, str | None]:
        """The item to hand to the consumer (if ``message`` is an event, or an event the server
        could not read) and a token to save now (a checkpoint's). A kind of message this client
        does not know (a newer server's) is skipped: the next event or checkpoint moves the
        cursor past it."""
        self._messages_on_call += 1
        # A stream that delivers more than its opening checkpoint is healthy again.
        if self._messages_on_call > 1:
            self._failures = 0
        kind = message.WhichOneof("kind")
        if kind == "event":
            self._failures = 0
            self.token = self._unfinished = message.event.resume_token
            return message.event, None
        if kind == "unreadable_event":
            # Handed over like an event, so that its token is saved only once the consumer
            # has dealt with it (re-read that vaulting request with GetResult).
            self._failures = 0
            self.token = self._unfinished = message.unreadable_event.resume_token
            return message.unreadable_event, None
        if kind == "checkpoint":
            self.token = message.checkpoint.resume_token
            return None, self.token
        return None, None

    def reconnect_delay(self, error: VaultError) -> float:
        """Seconds to wait before resuming after the stream ended with ``error``; raises
        ``error`` when it is not resumable (or the reconnect policy gives up)."""
        self._failures += 1
        delay = self._reconnect.delay(error, self._failures)
        if delay is None:
            raise error
        return delay

    def ended_without_status(self) -> float:
        """The server closed the stream with OK, which the contract never does: resume."""
        return self.reconnect_delay(
            UnavailableError(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED, ErrorDetails())
        )
