"""``vault.v1.VaultService``: validate, call the use case, map the answer.

Each method is a thin edge over :mod:`vault_service.service`: it asks who the caller is,
checks the request, hands the caller's remaining time to anything that may call Antom, and maps
the result. Errors are raised, never answered here: :mod:`.errors` turns them into statuses.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from datetime import UTC, datetime
from typing import Final

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.errors import DeadlineExceededError, PermissionDeniedError
from vault_service.grpc_api import mapping, validation
from vault_service.grpc_api.auth import ANONYMOUS
from vault_service.grpc_api.callers import VAULT_SCOPE, Caller
from vault_service.grpc_api.errors import Context, stream_errors, unary_errors
from vault_service.metrics import Metrics
from vault_service.service import (
    ResultStreams,
    StreamedEvent,
    StreamItem,
    VaultingService,
    page_size,
)

DEFAULT_DEADLINE_MARGIN: Final = 0.05
"""Seconds kept back from the caller's deadline so that an Antom call that runs out of time
still leaves room to send the caller a retryable UNAVAILABLE instead of a bare timeout."""
EVENT_MESSAGE_CACHE: Final = 4096
"""Stream messages of this many recent events are kept, built once for every stream."""

CallerOf = Callable[[Context], Caller]
"""Who is calling (raises UnauthenticatedError to refuse the call)."""

CredentialsVersion = Callable[[], object]
"""Changes (by identity) whenever the callers in force change, e.g. the token file reloads."""


def _unchanging() -> object:
    return None


def anonymous_caller(context: Context) -> Caller:
    """Every call as the one anonymous caller: no identity source is configured."""
    return ANONYMOUS


def _creator(caller: Caller) -> str:
    """The owner of the sessions ``caller`` creates; only the ``vault`` scope creates."""
    if not caller.may(VAULT_SCOPE):
        raise PermissionDeniedError("creating sessions needs the vault scope")
    return caller.name


def _reader(caller: Caller) -> str | None:
    """Whose results ``caller`` may read: its own, or everyone's (``None``) for an admin."""
    if caller.is_admin:
        return None
    if not caller.may(VAULT_SCOPE):
        raise PermissionDeniedError("reading results needs the vault or admin scope")
    return caller.name


class _Gauge:
    """How many calls are inside a block right now (visible to tests and metrics)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.value += 1
        try:
            yield
        finally:
            self.value -= 1


class VaultServicer(pb_grpc.VaultServiceServicer):
    """The three RPCs of the contract over one :class:`VaultingService` and its streams.

    ``caller_of`` is the authentication seam: it maps a call to its owner and may raise to
    refuse it. ``active_calls`` and ``active_streams`` count calls in progress, which proves
    that a cancelled or timed-out call leaves nothing running behind it.
    """

    def __init__(
        self,
        vaulting: VaultingService,
        streams: ResultStreams,
        *,
        caller_of: CallerOf = anonymous_caller,
        credentials_version: CredentialsVersion = _unchanging,
        deadline_margin: float = DEFAULT_DEADLINE_MARGIN,
        metrics: Metrics | None = None,
    ) -> None:
        self._vaulting = vaulting
        self._streams = streams
        self._caller_of = caller_of
        self._credentials_version = credentials_version
        self._deadline_margin = deadline_margin
        self._calls = _Gauge()
        self._streams_open = _Gauge()
        self._event_messages: dict[int, pb.StreamResultsResponse] = {}
        self._delivery_lag = (metrics if metrics is not None else Metrics()).delivery_lag

    @property
    def active_calls(self) -> int:
        """Unary calls (CreateSession, GetResult, ListResults) being handled now."""
        return self._calls.value

    @property
    def active_streams(self) -> int:
        """StreamResults streams open now."""
        return self._streams_open.value

    def drain(self) -> None:
        """End every open stream now, and any opened later, with a resumable UNAVAILABLE:
        the process is shutting down."""
        self._streams.drain()

    @unary_errors
    async def CreateSession(  # noqa: N802 - the name is the RPC's, as in the .proto
        self, request: pb.CreateSessionRequest, context: Context
    ) -> pb.CreateSessionResponse:
        with self._calls.held():
            owner = _creator(self._caller_of(context))
            validation.ensure_valid(validation.create_session_violations(request))
            vaulting_request_id, parameters = mapping.session_request(request)
            created = await self._vaulting.create_session(
                owner, vaulting_request_id, parameters, deadline=self._antom_deadline(context)
            )
            return mapping.created_session(created)

    @unary_errors
    async def GetResult(  # noqa: N802 - the name is the RPC's, as in the .proto
        self, request: pb.GetResultRequest, context: Context
    ) -> pb.GetResultResponse:
        with self._calls.held():
            owner = _reader(self._caller_of(context))
            validation.ensure_valid(validation.get_result_violations(request))
            record = await self._vaulting.get_result(
                owner,
                request.vaulting_request_id,
                refresh=request.refresh,
                deadline=self._antom_deadline(context) if request.refresh else None,
            )
            return pb.GetResultResponse(result=mapping.vaulting_result(record))

    @unary_errors
    async def ListResults(  # noqa: N802 - the name is the RPC's, as in the .proto
        self, request: pb.ListResultsRequest, context: Context
    ) -> pb.ListResultsResponse:
        with self._calls.held():
            owner = _reader(self._caller_of(context))
            validation.ensure_valid(validation.list_results_violations(request))
            page = await self._vaulting.list_results(
                mapping.result_filter(owner, request),
                request.page_token,
                page_size(request.page_size),
            )
            return mapping.list_results(page)

    @stream_errors
    async def StreamResults(  # noqa: N802 - the name is the RPC's, as in the .proto
        self, request: pb.StreamResultsRequest, context: Context
    ) -> AsyncGenerator[pb.StreamResultsResponse, None]:
        """Refusals (bad request, bad token) happen before the first message, so a client never
        mistakes a refused stream for an open one; then the log is followed until the client
        goes away, which cancels this generator where it waits, or its credentials go."""
        version = self._credentials_version()
        owner = _reader(self._caller_of(context))
        validation.ensure_valid(validation.stream_results_violations(request))
        position = await self._streams.start_position(request.resume_token)
        items = self._streams.follow(
            position,
            owner=owner,
            vaulting_request_ids=frozenset(request.vaulting_request_ids) or None,
        )
        with self._streams_open.held():
            try:
                async for item in items:
                    if (current := self._credentials_version()) is not version:
                        version = current
                        self._still_allowed(context, owner)
                    yield self._message(item)
                    if isinstance(item, StreamedEvent):
                        lag = datetime.now(UTC) - item.event.occurred_at
                        self._delivery_lag.observe(lag.total_seconds())
            finally:
                # Closed here, not left to the garbage collector, so that the stream leaves
                # the process's stream index as soon as its call ends.
                await items.aclose()

    def _still_allowed(self, context: Context, owner: str | None) -> None:
        """A stream outlives the credentials it opened with: once the callers change, a
        revoked token (UNAUTHENTICATED) or a lost scope (PERMISSION_DENIED) ends it before it
        sends anything more — at the latest at its next checkpoint when it is idle."""
        if _reader(self._caller_of(context)) != owner:
            raise PermissionDeniedError("the caller's access changed; open a new stream")

    def _message(self, item: StreamItem) -> pb.StreamResultsResponse:
        """The message for a stream item; an event's is built once for all the streams that
        carry it (mapping it per stream cost more than sending it)."""
        if not isinstance(item, StreamedEvent):
            return mapping.stream_item(item)
        event_id = item.event.event_id
        message = self._event_messages.get(event_id)
        if message is None:
            message = mapping.stream_item(item)
            self._event_messages[event_id] = message
            if len(self._event_messages) > EVENT_MESSAGE_CACHE:
                del self._event_messages[next(iter(self._event_messages))]
        return message

    def _antom_deadline(self, context: Context) -> float | None:
        """When an Antom call must be over (``time.monotonic()``): the caller's deadline less
        the margin, or ``None`` (the Antom client's own default) when the caller set none."""
        remaining: float | None = context.time_remaining()
        if remaining is None:
            return None
        if remaining <= self._deadline_margin:
            raise DeadlineExceededError("the deadline leaves no time to call Antom")
        return time.monotonic() + remaining - self._deadline_margin
