"""The service's Prometheus metrics: one :class:`Metrics` per process, on its own registry.

Components are handed the :class:`Metrics` they record to (``app`` wires one); a component
built without one records to a private instance nobody reads, so tests stay isolated and no
module-level registry exists. Every label takes values from a small fixed set (methods, codes,
outcomes) or is bounded by :class:`BoundedLabel`: never a request id, caller or address.

The names, what they count and the dashboard built on them are listed in
``docs/kubernetes.md`` ("Watching the service"); a test keeps the two in step.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Seconds, from a cached GetResult (~1 ms) to an Antom call at its whole budget."""

LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0)
"""Seconds from an event's commit to its sending: live streams in milliseconds, resumed ones
(a client that was away) in minutes."""

OTHER: Final = "OTHER"
MAX_LABEL_VALUES: Final = 64


class BoundedLabel:
    """A label fed by values we do not choose (Antom's result codes): the first
    ``limit`` distinct values pass, later new ones become ``OTHER``, so a misbehaving peer
    cannot grow the series without bound."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


@dataclass(frozen=True, slots=True)
class PoolUse:
    """One database connection pool at this moment."""

    pool: str
    size: int
    in_use: int
    max_size: int


class _PoolCollector(Collector):
    """Reads the pools at scrape time (nothing to update on every acquire)."""

    def __init__(self, pools: Callable[[], Iterable[PoolUse]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pools = list(self._pools())
        families = {
            "size": GaugeMetricFamily(
                "vault_db_pool_connections", "Open connections per pool.", labels=["pool"]
            ),
            "in_use": GaugeMetricFamily(
                "vault_db_pool_connections_in_use",
                "Connections handed out per pool.",
                labels=["pool"],
            ),
            "max_size": GaugeMetricFamily(
                "vault_db_pool_connections_max", "Pool size limit per pool.", labels=["pool"]
            ),
        }
        for use in pools:
            families["size"].add_metric([use.pool], use.size)
            families["in_use"].add_metric([use.pool], use.in_use)
            families["max_size"].add_metric([use.pool], use.max_size)
        yield from families.values()


class Metrics:
    """Every metric of the service, registered on :attr:`registry` (what ``/metrics`` shows)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._antom_codes = BoundedLabel()
        self.rpcs_started = Counter(
            "vault_grpc_server_started",
            "gRPC calls started, by method and kind.",
            ["grpc_method", "grpc_type"],
            registry=registry,
        )
        self.rpcs_handled = Counter(
            "vault_grpc_server_handled",
            "gRPC calls finished, by method and status code.",
            ["grpc_method", "grpc_type", "grpc_code"],
            registry=registry,
        )
        self.rpc_seconds = Histogram(
            "vault_grpc_server_handling_seconds",
            "Time from a gRPC call's start to its status, by method.",
            ["grpc_method", "grpc_type"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.antom_calls = Counter(
            "vault_antom_requests",
            "Antom API calls (each attempt), by operation, result status and result code.",
            ["operation", "result_status", "result_code"],
            registry=registry,
        )
        self.antom_seconds = Histogram(
            "vault_antom_request_seconds",
            "Time of one Antom API attempt, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.webhook_requests = Counter(
            "vault_webhook_requests",
            "notifyVaulting requests answered, by outcome and reason.",
            ["outcome", "reason"],
            registry=registry,
        )
        self.open_streams = Gauge(
            "vault_streams_open", "StreamResults streams open now.", registry=registry
        )
        self.events_appended = Counter(
            "vault_events_appended",
            "Events this process appended to the event log, by source.",
            ["source"],
            registry=registry,
        )
        self.delivery_lag = Histogram(
            "vault_event_delivery_lag_seconds",
            "Time from an event's commit to its sending on a stream.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.reconciler_due = Gauge(
            "vault_reconciler_due_records",
            "Records the last reconciler pass claimed (at the batch size: a backlog).",
            registry=registry,
        )
        self.reconciler_inquiries = Counter(
            "vault_reconciler_inquiries",
            "Reconciler inquiries, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.build = Info("vault_build", "The running build.", registry=registry)
        self.build.info(
            {"version": metadata.version("vault-service"), "python": platform.python_version()}
        )

    def watch_open_streams(self, count: Callable[[], int]) -> None:
        """Read the open stream count from ``count`` at scrape time."""
        self.open_streams.set_function(count)

    def watch_pools(self, pools: Callable[[], Iterable[PoolUse]]) -> None:
        """Report the database pools ``pools`` lists at scrape time."""
        self.registry.register(_PoolCollector(pools))

    def antom_call(self, operation: str, status: str, code: str, seconds: float) -> None:
        """One Antom attempt: ``status`` S/F/U, or ``none`` with our error kind as ``code``
        when no result came back."""
        self.antom_calls.labels(operation, status, self._antom_codes(code)).inc()
        self.antom_seconds.labels(operation).observe(seconds)
