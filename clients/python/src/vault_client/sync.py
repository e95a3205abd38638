"""The blocking client: :class:`VaultClient` and its resuming :class:`ResultStream`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Protocol

import grpc

from vault_client._core import (
    ALL_RESULTS,
    ResultFilter,
    StreamItem,
    StreamPosition,
    create_session_request,
)
from vault_client._proto.vault.v1 import vault_service_pb2 as pb
from vault_client._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_client.credentials import TokenSource, authorization_metadata
from vault_client.cursor import CursorStore, MemoryCursorStore
from vault_client.errors import from_rpc_error
from vault_client.policy import (
    CREATE_SESSION_TIMEOUT,
    DEFAULT_RECONNECT,
    DEFAULT_RETRY,
    GET_RESULT_TIMEOUT,
    LIST_RESULTS_TIMEOUT,
    ReconnectPolicy,
    RetryPolicy,
    channel_options,
)


class StreamCall(Protocol):
    """A StreamResults call in progress (grpc's call iterator)."""

    def __next__(self) -> pb.StreamResultsResponse: ...

    def cancel(self) -> bool: ...


MetadataSource = Callable[[], tuple[tuple[str, str], ...]]


class VaultClient:
    """A client of ``vault.v1.VaultService`` on one channel; close it (or use ``with``).

    ``target`` is a gRPC target: ``host:port``, or ``dns:///name.namespace.svc:50051`` with
    ``load_balancing="round_robin"`` to spread calls over every replica behind a headless
    Kubernetes Service. ``credentials`` (see :mod:`vault_client.credentials`) makes the channel
    TLS or mTLS; without them it is plaintext. ``token`` is sent as ``authorization: Bearer``
    on every call. ``options`` are extra gRPC channel options (they override the defaults of
    :mod:`vault_client.policy`, the service config included).
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: TokenSource | None = None,
        load_balancing: str | None = None,
        options: tuple[tuple[str, int | str], ...] = (),
        retry: RetryPolicy = DEFAULT_RETRY,
        reconnect: ReconnectPolicy = DEFAULT_RECONNECT,
    ) -> None:
        all_options = channel_options(options, load_balancing=load_balancing)
        self._channel = (
            grpc.insecure_channel(target, options=all_options)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=all_options)
        )
        self._stub = pb_grpc.VaultServiceStub(self._channel)
        self._token = token
        self._retry = retry
        self._reconnect = reconnect

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def create_session(
        self,
        vaulting_request_id: str,
        *,
        payment_method_type: str = "",
        redirect_url: str = "",
        merchant_region: str = "",
        is_3ds_authentication: bool | None = None,
        env: pb.Env | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float = CREATE_SESSION_TIMEOUT,
    ) -> pb.CreateSessionResponse:
        """Start (or, for a repeat of the same id and parameters, return) a vaulting session.

        UNAVAILABLE is retried with the same request (CreateSession is idempotent on
        ``vaulting_request_id``) per the client's :class:`RetryPolicy`, honouring the server's
        ``RetryInfo``; every attempt and wait fits in ``timeout`` seconds. Raises a
        :class:`~vault_client.errors.VaultError`.
        """
        request = create_session_request(
            vaulting_request_id,
            payment_method_type=payment_method_type,
            redirect_url=redirect_url,
            merchant_region=merchant_region,
            is_3ds_authentication=is_3ds_authentication,
            env=env,
            labels=labels,
        )
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                response: pb.CreateSessionResponse = self._stub.CreateSession(
                    request,
                    timeout=self._retry.attempt_timeout_within(deadline),
                    metadata=self._metadata(),
                )
            except grpc.RpcError as error:
                failure = from_rpc_error(error)
                delay = self._retry.delay(failure, attempt, deadline - time.monotonic())
                if delay is None:
                    raise failure from error
                time.sleep(delay)
            else:
                return response

    def get_result(
        self,
        vaulting_request_id: str,
        *,
        refresh: bool = False,
        timeout: float = GET_RESULT_TIMEOUT,
    ) -> pb.VaultingResult:
        """The current result of one vaulting request (``refresh`` asks Antom first)."""
        try:
            response: pb.GetResultResponse = self._stub.GetResult(
                pb.GetResultRequest(vaulting_request_id=vaulting_request_id, refresh=refresh),
                timeout=timeout,
                metadata=self._metadata(),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return response.result

    def list_results(
        self,
        filters: ResultFilter = ALL_RESULTS,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float = LIST_RESULTS_TIMEOUT,
    ) -> pb.ListResultsResponse:
        """One page of the caller's results matching ``filters``, oldest change first
        (``page_size`` 0: the server's default, 50). Pass ``next_page_token`` back as
        ``page_token``, with the same filters, until it is empty; :meth:`iter_results` does."""
        try:
            response: pb.ListResultsResponse = self._stub.ListResults(
                filters.request(page_size, page_token),
                timeout=timeout,
                metadata=self._metadata(),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return response

    def iter_results(
        self,
        filters: ResultFilter = ALL_RESULTS,
        *,
        page_size: int = 0,
        timeout: float = LIST_RESULTS_TIMEOUT,
    ) -> Iterator[pb.VaultingResult]:
        """Every result :meth:`list_results` lists, page after page (``timeout`` is per
        page). A result that changes meanwhile may come again, newer: keep the copy with the
        latest ``update_time``."""
        page = self.list_results(filters, page_size=page_size, timeout=timeout)
        yield from page.results
        while page.next_page_token:
            page = self.list_results(
                filters, page_size=page_size, page_token=page.next_page_token, timeout=timeout
            )
            yield from page.results

    def results(
        self,
        cursor_store: CursorStore | None = None,
        *,
        vaulting_request_ids: Iterable[str] = (),
    ) -> ResultStream:
        """Every result event from the stored cursor on (from now when the store is empty),
        resuming by itself; see :class:`ResultStream`."""
        return ResultStream(
            self._stub,
            cursor_store if cursor_store is not None else MemoryCursorStore(),
            StreamPosition(vaulting_request_ids, self._reconnect),
            self._metadata,
        )

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return authorization_metadata(self._token)


class ResultStream:
    """An endless iterator of :class:`ResultEvent` messages (and, in the place of an event the
    server could not read, an :class:`UnreadableEvent`: see :data:`StreamItem`), each exactly
    once and in order, across reconnects and (with a persistent cursor store) restarts of the
    consumer.

    The stream reopens by itself when it ends with UNAVAILABLE (jittered backoff, see
    :class:`~vault_client.policy.ReconnectPolicy`) from the newest token it holds. The cursor
    store is written with a checkpoint's token when it arrives, and with an event's token once
    the consumer is done with the event: when it asks for the next one, or leaves the ``with``
    block without an exception. An exception out of the loop body, or a crash, leaves the
    event unsaved, so it is delivered again next time (at least once into the loop body;
    exactly once for a body whose effects are saved with the token).

    A refused stored token raises :class:`~vault_client.errors.ResumeTokenRejectedError`;
    any other status but UNAVAILABLE raises its :class:`~vault_client.errors.VaultError`.
    """

    def __init__(
        self,
        stub: pb_grpc.VaultServiceStub,
        store: CursorStore,
        position: StreamPosition,
        metadata: MetadataSource,
    ) -> None:
        self._stub = stub
        self._store = store
        self._position = position
        self._metadata = metadata
        self._call: StreamCall | None = None
        self._started = False
        self._closed = False

    def __iter__(self) -> ResultStream:
        return self

    def __enter__(self) -> ResultStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None and not self._closed:
            self._save(self._position.finished())
        self.close()

    def close(self) -> None:
        """Stop: cancel the open call. The event handed last is not marked done."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def __next__(self) -> StreamItem:
        if self._closed:
            raise StopIteration
        self._save(self._position.finished())
        if not self._started:
            self._position.start(self._store.load())
            self._started = True
        while True:
            if self._call is None:
                self._call = self._open()
            try:
                message = next(self._call)
            except StopIteration:
                self._call = None
                time.sleep(self._position.ended_without_status())
                continue
            except grpc.RpcError as error:
                self._call = None
                time.sleep(self._position.reconnect_delay(from_rpc_error(error)))
                continue
            event, checkpoint = self._position.receive(message)
            self._save(checkpoint)
            if event is not None:
                return event

    def _open(self) -> StreamCall:
        return self._stub.StreamResults(self._position.request(), metadata=self._metadata())

    def _save(self, token: str | None) -> None:
        if token is not None:
            self._store.save(token)
