"""The asyncio client: :class:`AsyncVaultClient` and its resuming :class:`AsyncResultStream`.

The same behaviour as :mod:`vault_client.sync`, on ``grpc.aio``; cursor store calls (which may
block on disk) run in a worker thread so they never stall the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias

import grpc
import grpc.aio

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

if TYPE_CHECKING:
    StreamCall: TypeAlias = grpc.aio.UnaryStreamCall[
        pb.StreamResultsRequest, pb.StreamResultsResponse
    ]
MetadataSource = Callable[[], tuple[tuple[str, str], ...]]


class AsyncVaultClient:
    """The asyncio twin of :class:`vault_client.VaultClient` (same arguments); create it
    inside a running event loop and close it with ``await client.close()`` or ``async with``."""

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
            grpc.aio.insecure_channel(target, options=all_options)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, options=all_options)
        )
        self._stub = pb_grpc.VaultServiceStub(self._channel)
        self._token = token
        self._retry = retry
        self._reconnect = reconnect

    async def __aenter__(self) -> AsyncVaultClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def create_session(
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
        """See :meth:`vault_client.VaultClient.create_session`."""
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
                return await self._stub.CreateSession(
                    request,
                    timeout=self._retry.attempt_timeout_within(deadline),
                    metadata=self._metadata(),
                )
            except grpc.aio.AioRpcError as error:
                failure = from_rpc_error(error)
                delay = self._retry.delay(failure, attempt, deadline - time.monotonic())
                if delay is None:
                    raise failure from error
                await asyncio.sleep(delay)

    async def get_result(
        self,
        vaulting_request_id: str,
        *,
        refresh: bool = False,
        timeout: float = GET_RESULT_TIMEOUT,
    ) -> pb.VaultingResult:
        """See :meth:`vault_client.VaultClient.get_result`."""
        try:
            response = await self._stub.GetResult(
                pb.GetResultRequest(vaulting_request_id=vaulting_request_id, refresh=refresh),
                timeout=timeout,
                metadata=self._metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return response.result

    async def list_results(
        self,
        filters: ResultFilter = ALL_RESULTS,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float = LIST_RESULTS_TIMEOUT,
    ) -> pb.ListResultsResponse:
        """See :meth:`vault_client.VaultClient.list_results`."""
        try:
            response: pb.ListResultsResponse = await self._stub.ListResults(
                filters.request(page_size, page_token),
                timeout=timeout,
                metadata=self._metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return response

    async def iter_results(
        self,
        filters: ResultFilter = ALL_RESULTS,
        *,
        page_size: int = 0,
        timeout: float = LIST_RESULTS_TIMEOUT,
    ) -> AsyncIterator[pb.VaultingResult]:
        """See :meth:`vault_client.VaultClient.iter_results`; iterate with ``async for``."""
        token = ""
        while True:
            page = await self.list_results(
                filters, page_size=page_size, page_token=token, timeout=timeout
            )
            for result in page.results:
                yield result
            token = page.next_page_token
            if not token:
                return

    def results(
        self,
        cursor_store: CursorStore | None = None,
        *,
        vaulting_request_ids: Iterable[str] = (),
    ) -> AsyncResultStream:
        """See :meth:`vault_client.VaultClient.results`; iterate with ``async for``."""
        return AsyncResultStream(
            self._stub,
            cursor_store if cursor_store is not None else MemoryCursorStore(),
            StreamPosition(vaulting_request_ids, self._reconnect),
            self._metadata,
        )

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return authorization_metadata(self._token)


class AsyncResultStream:
    """The asyncio twin of :class:`vault_client.sync.ResultStream`, with the same cursor
    semantics (``async with`` marks the last event done on a clean exit)."""

    def __init__(
        self,
        stub: pb_grpc.VaultServiceAsyncStub,
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

    def __aiter__(self) -> AsyncResultStream:
        return self

    async def __aenter__(self) -> AsyncResultStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None and not self._closed:
            await self._save(self._position.finished())
        self.close()

    def close(self) -> None:
        """Stop: cancel the open call. The event handed last is not marked done."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def __anext__(self) -> StreamItem:
        if self._closed:
            raise StopAsyncIteration
        await self._save(self._position.finished())
        if not self._started:
            self._position.start(await asyncio.to_thread(self._store.load))
            self._started = True
        while True:
            if self._call is None:
                self._call = self._stub.StreamResults(
                    self._position.request(), metadata=self._metadata()
                )
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as error:
                self._call = None
                await asyncio.sleep(self._position.reconnect_delay(from_rpc_error(error)))
                continue
            if not isinstance(message, pb.StreamResultsResponse):  # grpc.aio.EOF
                self._call = None
                await asyncio.sleep(self._position.ended_without_status())
                continue
            event, checkpoint = self._position.receive(message)
            await self._save(checkpoint)
            if event is not None:
                return event

    async def _save(self, token: str | None) -> None:
        if token is not None:
            await asyncio.to_thread(self._store.save, token)
