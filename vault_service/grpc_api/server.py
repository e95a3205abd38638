"""The ``grpc.aio`` server: VaultService, standard health checking and server reflection.

Health (``grpc.health.v1``) answers for the whole server ("") and for ``vault.v1.VaultService``,
which is what Kubernetes' native gRPC probes and load balancers ask; :class:`Health` flips both
to NOT_SERVING when the process starts draining. Reflection lets ``grpcurl`` and similar tools
call the service without the .proto files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final, cast

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc
from vault_service.grpc_api.decoding import DecodeRequests
from vault_service.grpc_api.servicer import VaultServicer

VAULT_SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["VaultService"].full_name
HEALTH_SERVICE_NAME: Final = grpc_health.SERVICE_NAME

MAX_RECEIVE_MESSAGE_BYTES: Final = 1024 * 1024
"""Our largest legitimate request (CreateSession with every label and env field at its limit)
is under 20 KiB; 1 MiB leaves ample room and refuses anything absurd before it is parsed."""

MAX_CONCURRENT_STREAMS_PER_CONNECTION: Final = 10_000
"""HTTP/2 streams one connection may have open at once. StreamResults streams live for hours,
and a client that reaches the limit does not fail: its next calls wait for a free stream. So the
limit must stay above the streams one client may really keep open (a 5,000-stream burst on one
channel fits twice) while still bounding what a single connection can pin down."""

MAX_PENDING_REQUESTS: Final = 10_000
MAX_PENDING_REQUESTS_HARD_LIMIT: Final = 20_000
"""Calls the transport accepted that the Python event loop has not picked up yet. grpc.aio
takes new calls from the core one at a time, so a burst of stream opens queues up here; beyond
the soft limit (default 1,000) the core starts refusing calls at random and beyond the hard
limit (default 3,000) it refuses them all: the client sees CANCELLED for 40-45 % of a
5,000-stream burst. Raised well above any burst we expect; memory per pending call is small."""

KEEPALIVE_TIME_MS: Final = 60_000
KEEPALIVE_TIMEOUT_MS: Final = 20_000
"""The server pings a connection that has been quiet for a minute and drops it when no answer
comes within 20 s: a client that vanished without closing (a killed pod, a dropped NAT entry)
must not keep its streams, and their subscribers, alive forever."""

MIN_CLIENT_PING_INTERVAL_MS: Final = 10_000
"""How often a client may ping us without the server sending data. The default (5 minutes)
makes the server answer GOAWAY ``too_many_pings`` to clients that keep a quiet stream alive
with the common 20-30 s client keepalive, killing their streams; 10 s still stops ping floods."""


MAX_CONNECTION_AGE_GRACE_MS: Final = 30_000
"""How long calls in flight may finish on a connection past its age: enough for any unary call;
streams end then and resume, which bounds how long a connection outlives a revoked client
certificate (age + grace)."""


def server_options(*, max_connection_age: float | None = None) -> list[tuple[str, int]]:
    """The channel arguments of the server; see the constants above for each choice.

    ``max_connection_age`` (seconds) makes the server close each connection after about that
    long (with a grace of up to 30 s for calls in flight), so that long-lived streams
    spread over replicas that were added since; ended streams get UNAVAILABLE and clients
    resume from their last token. ``None`` keeps connections for as long as they live.
    """
    options = [
        ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS_PER_CONNECTION),
        ("grpc.server.max_pending_requests", MAX_PENDING_REQUESTS),
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_REQUESTS_HARD_LIMIT),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Also lets clients keep an idle connection alive with pings (otherwise allowed only
        # every two hours), and has the server ping idle connections too.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        # Keep pinging a stream that stays quiet longer than the checkpoint interval.
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if max_connection_age is not None:
        age_ms = round(max_connection_age * 1000)
        options += [
            ("grpc.max_connection_age_ms", age_ms),
            ("grpc.max_connection_age_grace_ms", min(age_ms, MAX_CONNECTION_AGE_GRACE_MS)),
        ]
    return options


class _MethodSymbolPool:
    """The default descriptor pool that also finds the file of a ``package.Service.Method``.

    grpcio-reflection answers ``file_containing_symbol`` with the pool's
    ``FindFileContainingSymbol``, which in protobuf's upb backend does not know method names
    (grpc/grpc#34743): ``grpcurl describe vault.v1.VaultService.CreateSession`` would fail with
    "Symbol not found". A method lives in its service's file, so we look the service up instead.
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:  # noqa: N802 - pool API
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                raise KeyError(symbol) from None
            if method not in service.methods_by_name:
                raise KeyError(symbol) from None
            return service.file

    def __getattr__(self, name: str) -> Any:
        """Every other lookup is the default pool's own."""
        return getattr(self._pool, name)


class Health:
    """The standard health service, SERVING for "" and VaultService once the server is built.

    :meth:`drain` is one-way: from then on every check answers NOT_SERVING, so probes take the
    replica out of rotation while it finishes its calls.
    """

    def __init__(self) -> None:
        self.servicer = grpc_health.aio.HealthServicer()

    async def set_serving(self, serving: bool) -> None:
        """Report both names SERVING or NOT_SERVING (reversible, e.g. while a dependency is
        down); ignored once :meth:`drain` was called."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", VAULT_SERVICE_NAME):
            await self.servicer.set(service, status)

    async def drain(self) -> None:
        """Report NOT_SERVING for good: the process is shutting down."""
        await self.servicer.enter_graceful_shutdown()


async def build_grpc_server(
    servicer: VaultServicer,
    *,
    listen: str,
    health: Health,
    max_connection_age: float | None = None,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int]:
    """A server with VaultService, health and reflection, bound to ``listen`` (not started);
    over TLS when ``credentials`` are given, else plaintext.

    Returns the server and the bound port (useful with port 0). Health reports SERVING; call
    ``await server.start()`` next, and on shutdown :func:`stop_grpc_server`.
    """
    server = grpc.aio.server(
        options=server_options(max_connection_age=max_connection_age),
        # Parse requests in our code: grpc's own parsing answers bad bytes with UNKNOWN.
        # In this order: callers' interceptors (authentication) see a call before decoding does.
        interceptors=[*interceptors, DecodeRequests()],
    )
    pb_grpc.add_VaultServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    reflection.enable_server_reflection(
        (VAULT_SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME),
        server,
        pool=cast(descriptor_pool.DescriptorPool, _MethodSymbolPool(descriptor_pool.Default())),
    )
    port = (
        server.add_insecure_port(listen)
        if credentials is None
        else server.add_secure_port(listen, credentials)
    )
    await health.set_serving(True)
    return server, port


async def build_health_server(health: Health, *, listen: str) -> tuple[grpc.aio.Server, int]:
    """A plaintext server with the health service alone, bound to ``listen`` (not started).

    Kubernetes' gRPC probes speak no TLS, so with mTLS on the main port they cannot reach its
    health service; this one answers them. It serves nothing else, so it may listen on any
    address, and it reports what the main server's :class:`Health` reports (NOT_SERVING while
    draining).
    """
    server = grpc.aio.server(options=server_options())
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    return server, server.add_insecure_port(listen)


async def stop_grpc_server(
    server: grpc.aio.Server, health: Health, servicer: VaultServicer, *, grace: float
) -> None:
    """Drain: report NOT_SERVING, refuse new calls, end every StreamResults with UNAVAILABLE
    (clients resume elsewhere from their last token), give unary calls in flight ``grace``
    seconds, then cancel the rest.

    Streams are told to end: they never finish by themselves, so they would hold the server for
    the whole grace. They are told once the server has started stopping (it then refuses new
    calls and tells clients to go away), so that a client resuming at once is sent to another
    replica, not back here. Returns as soon as the last call is over.
    """
    await health.drain()
    stopping = asyncio.ensure_future(server.stop(grace))
    await asyncio.sleep(0)  # the server's stop begins: from here on new calls are refused
    servicer.drain()
    await stopping
