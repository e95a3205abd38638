"""Database pool use on ``/metrics``, which only PostgreSQL has."""

from __future__ import annotations

from tests.e2e.test_metrics import scrape, value
from tests.replicas.conftest import StartReplica


async def test_the_pools_are_reported_at_scrape_time(start_replica: StartReplica) -> None:
    """Both pools of a replica (main and creation locks) with their open, handed-out and
    maximum connections, read when scraped."""
    replica = await start_replica(VAULT_PG_POOL_SIZE="7", VAULT_PG_LOCK_POOL_SIZE="3")
    _, samples = await scrape(replica)
    assert value(samples, "vault_db_pool_connections_max", pool="main") == 7
    assert value(samples, "vault_db_pool_connections_max", pool="locks") == 3
    open_main = value(samples, "vault_db_pool_connections", pool="main")
    assert open_main >= 1
    # The reconciler's first pass may hold one at the moment of the scrape.
    assert 0 <= value(samples, "vault_db_pool_connections_in_use", pool="main") <= open_main
    assert ("vault_db_pool_connections_in_use", frozenset({("pool", "locks")})) in samples
