"""ListResults over a real gRPC channel, on each backend: filters, keyset paging while results
change, visibility, page tokens, and the indexes behind a filtered page."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import StatusCode

from tests.grpc_api.support import CALLER_METADATA_KEY, bad_request, serving
from tests.store.backends import Backend
from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service.domain import (
    AntomResult,
    EventSource,
    Observation,
    ResultFilter,
    Session,
    SessionParameters,
    VaultingRecord,
    VaultingStatus,
)
from vault_service.grpc_api.callers import ADMIN_SCOPE, Caller
from vault_service.grpc_api.servicer import VaultServicer
from vault_service.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from vault_service.service.streaming import ResultStreams
from vault_service.service.vaulting import VaultingService
from vault_service.store import Store
from vault_service.store.sql_store import SQLStore, list_statement

if TYPE_CHECKING:
    from vault_service._proto.vault.v1.vault_service_pb2_grpc import VaultServiceAsyncStub

RECORDS = 1000
BASE = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = (
    VaultingStatus.SESSION_CREATED,
    VaultingStatus.PROCESSING,
    VaultingStatus.SUCCEEDED,
    VaultingStatus.FAILED,
    VaultingStatus.EXPIRED,
)
PB_STATUS = {status: pb.VaultingStatus.Value(f"VAULTING_STATUS_{status}") for status in STATUSES}
ALICE = ((CALLER_METADATA_KEY, "alice"),)


@pytest.fixture
def vault_store(each_backend_store: Store) -> Store:
    """The server's store: every test here runs on each backend."""
    return each_backend_store


def record(index: int, owner: str) -> VaultingRecord:
    """Record ``index``: status, labels and update time vary with it; several records share
    an update time, so the id breaks ties in the order."""
    status = STATUSES[index % len(STATUSES)]
    labels = {"tier": ("gold", "silver")[index % 2], "region": ("eu", "us", "ap")[index % 3]}
    updated = BASE + timedelta(seconds=index // 3)
    final = status in (VaultingStatus.FAILED, VaultingStatus.EXPIRED, VaultingStatus.SUCCEEDED)
    return VaultingRecord(
        vaulting_request_id=f"vr-{owner}-{index:04d}",
        owner=owner,
        parameters=SessionParameters(labels=tuple(sorted(labels.items()))),
        session=Session("s", "d", BASE + timedelta(days=1)),
        created_at=BASE,
        updated_at=updated,
        status=status,
        final_at=updated if final else None,
    )


async def fill(store: Store, owner: str, count: int) -> list[VaultingRecord]:
    records = [record(index, owner) for index in range(count)]
    for start in range(0, count, 50):
        batch = records[start : start + 50]
        await asyncio.gather(*(store.insert(r, next_check_at=BASE) for r in batch))
    return records


@dataclass(frozen=True)
class Filters:
    statuses: tuple[VaultingStatus, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    start: datetime | None = None
    end: datetime | None = None

    def request(self, page_size: int, page_token: str = "") -> pb.ListResultsRequest:
        request = pb.ListResultsRequest(
            page_size=page_size,
            page_token=page_token,
            statuses=[PB_STATUS[s] for s in self.statuses],
            labels=dict(self.labels),
        )
        if self.start is not None:
            request.update_time_start.FromDatetime(self.start)
        if self.end is not None:
            request.update_time_end.FromDatetime(self.end)
        return request

    def matches(self, r: VaultingRecord) -> bool:
        return (
            (not self.statuses or r.status in self.statuses)
            and set(self.labels) <= set(r.parameters.labels)
            and (self.start is None or r.updated_at >= self.start)
            and (self.end is None or r.updated_at < self.end)
        )

    def matches_result(self, result: pb.VaultingResult) -> bool:
        updated = result.update_time.ToDatetime(tzinfo=UTC)
        return (
            (not self.statuses or result.status in {PB_STATUS[s] for s in self.statuses})
            and set(self.labels) <= set(result.labels.items())
            and (self.start is None or updated >= self.start)
            and (self.end is None or updated < self.end)
        )


FILTERS = [
    Filters(statuses, labels, start, end)
    for statuses in (
        (),
        (VaultingStatus.SESSION_CREATED,),
        (VaultingStatus.FAILED, VaultingStatus.PROCESSING),
    )
    for labels in ((), (("tier", "gold"),), (("region", "eu"), ("tier", "silver")))
    for start, end in (
        (None, None),
        (BASE + timedelta(seconds=50), None),
        (None, BASE + timedelta(seconds=280)),
        (BASE + timedelta(seconds=50), BASE + timedelta(seconds=280)),
    )
]


async def list_all(
    stub: VaultServiceAsyncStub,
    filters: Filters,
    page_size: int,
    metadata: tuple[tuple[str, str], ...],
) -> list[pb.VaultingResult]:
    results: list[pb.VaultingResult] = []
    token = ""
    while True:
        page = await stub.ListResults(filters.request(page_size, token), metadata=metadata)
        assert len(page.results) <= page_size
        results += page.results
        token = page.next_page_token
        if not token:
            return results


def key(result: pb.VaultingResult) -> tuple[datetime, str]:
    return result.update_time.ToDatetime(tzinfo=UTC), result.vaulting_request_id


async def change(
    vaulting: VaultingService,
    rng: random.Random,
    changing: list[str],
    changed: set[str],
    stop: asyncio.Event,
) -> None:
    """Until ``stop``: one result of ``changing`` after another learns its outcome now
    (FAILED, update time now, later than every listed one); each is added to ``changed``."""
    while not stop.is_set() and changing:
        target = changing.pop(rng.randrange(len(changing)))
        changed.add(target)
        await vaulting.apply(
            target,
            Observation(
                VaultingStatus.FAILED,
                EventSource.INQUIRY,
                datetime.now(UTC),
                antom_result=AntomResult("DO_NOT_HONOR", "F", "declined", "FAIL"),
            ),
        )
        await asyncio.sleep(0)


async def test_every_filter_combination_pages_each_match_once_while_results_change(
    stub: VaultServiceAsyncStub, vault_store: Store, vaulting: VaultingService
) -> None:
    """Through 1,000 of alice's results (and bob's alongside), with every combination of
    filters, while results change concurrently: the listing is strictly in (update_time, id)
    order, holds only alice's results that match, every result that matched from start to
    end is there, and exactly once unless it changed during the listing (the contract's
    guarantee: a changed result moves later and may appear again, never skipped)."""
    alice = await fill(vault_store, "alice", RECORDS)
    await fill(vault_store, "bob", 200)
    rng = random.Random(14)
    changes = 0
    for filters in FILTERS:
        before = {r.vaulting_request_id: r for r in alice}
        changing = [r.vaulting_request_id for r in before.values() if not r.status.is_final]
        changed: set[str] = set()
        stop = asyncio.Event()
        changer = asyncio.create_task(change(vaulting, rng, changing, changed, stop))
        try:
            listed = await list_all(stub, filters, 97, ALICE)
        finally:
            stop.set()
            await changer
        after = {r.vaulting_request_id: r for r in alice}
        for rid in changed:
            now = await vault_store.get(rid)
            assert now is not None
            after[rid] = now
        alice = list(after.values())
        changes += len(changed)

        keys = [key(result) for result in listed]
        assert keys == sorted(set(keys)), filters  # strictly ascending: stable order, no repeat
        assert all(filters.matches_result(result) for result in listed), filters
        seen = Counter(result.vaulting_request_id for result in listed)
        assert all(rid.startswith("vr-alice-") for rid in seen), filters
        throughout = {
            rid for rid in before if filters.matches(before[rid]) and filters.matches(after[rid])
        }
        assert throughout <= set(seen), filters  # never skipped
        for rid, count in seen.items():
            if rid not in changed:
                assert count == 1, (filters, rid)
    assert changes > 50  # the listings really ran while results changed


async def test_the_admin_lists_every_callers_results(
    vaulting: VaultingService, streams: ResultStreams, vault_store: Store
) -> None:
    """An admin's listing holds every owner's results; a caller's holds only its own."""
    await fill(vault_store, "alice", 30)
    await fill(vault_store, "bob", 20)
    admin = VaultServicer(
        vaulting, streams, caller_of=lambda context: Caller("ops", frozenset({ADMIN_SCOPE}))
    )
    async with serving(admin) as stub:
        listed = await list_all(stub, Filters(), 7, ())
    assert Counter(
        r.owner for r in [await vault_store.get(x.vaulting_request_id) for x in listed] if r
    ) == {
        "alice": 30,
        "bob": 20,
    }


async def test_page_size_default_and_maximum(
    stub: VaultServiceAsyncStub, vault_store: Store
) -> None:
    """0 serves the documented default, a size above the maximum serves the maximum."""
    await fill(vault_store, "alice", MAX_PAGE_SIZE + 10)
    default = await stub.ListResults(pb.ListResultsRequest(), metadata=ALICE)
    assert len(default.results) == DEFAULT_PAGE_SIZE
    assert default.next_page_token
    largest = await stub.ListResults(pb.ListResultsRequest(page_size=10_000), metadata=ALICE)
    assert len(largest.results) == MAX_PAGE_SIZE
    rest = await stub.ListResults(
        pb.ListResultsRequest(page_size=10_000, page_token=largest.next_page_token), metadata=ALICE
    )
    assert (len(rest.results), rest.next_page_token) == (10, "")


async def test_malformed_and_foreign_page_tokens_are_invalid_argument(
    stub: VaultServiceAsyncStub, vault_store: Store
) -> None:
    """A token is bound to its listing: malformed, another caller's, or one sent with other
    filters is INVALID_ARGUMENT naming page_token (never a page of another listing)."""
    await fill(vault_store, "alice", 10)
    await fill(vault_store, "bob", 10)
    gold = Filters(labels=(("tier", "gold"),))
    first = await stub.ListResults(gold.request(2), metadata=ALICE)
    token = first.next_page_token
    assert token
    attempts = [
        (gold.request(2, token + "x"), ALICE),
        (gold.request(2, "p1.bm90IGEgdG9rZW4"), ALICE),
        (gold.request(2, token), ((CALLER_METADATA_KEY, "bob"),)),
        (Filters().request(2, token), ALICE),
        (Filters(labels=(("tier", "silver"),)).request(2, token), ALICE),
        (Filters(gold.statuses, gold.labels, start=BASE).request(2, token), ALICE),
    ]
    for request, metadata in attempts:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListResults(request, metadata=metadata)
        assert refused.value.code() is StatusCode.INVALID_ARGUMENT
        assert set(bad_request(refused.value)) == {"page_token"}
    # The token still works where it belongs.
    second = await stub.ListResults(gold.request(2, token), metadata=ALICE)
    assert second.results[0].vaulting_request_id > first.results[-1].vaulting_request_id


async def test_invalid_requests_name_their_fields(stub: VaultServiceAsyncStub) -> None:
    """Negative page size, an unknown status, bad labels and an empty time range are refused
    at once, each by its field path."""
    request = pb.ListResultsRequest(
        page_size=-1,
        statuses=[pb.VaultingStatus.ValueType(n) for n in (0, 3, 99)],
        labels={"": "x"},
    )
    request.update_time_start.FromDatetime(BASE)
    request.update_time_end.FromDatetime(BASE)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListResults(request, metadata=ALICE)
    assert refused.value.code() is StatusCode.INVALID_ARGUMENT
    assert set(bad_request(refused.value)) == {
        "page_size",
        "statuses[0]",
        "statuses[2]",
        "labels",
        "update_time_end",
    }


async def test_a_filtered_page_is_read_through_an_index(
    each_backend: Backend, vault_store: Store
) -> None:
    """A filtered page (owner, position, status, label, time range) is an index range scan on
    both backends, never a scan of the whole records table."""
    await fill(vault_store, "alice", 300)
    await fill(vault_store, "bob", 1000)
    await each_backend.execute("ANALYZE")
    assert isinstance(vault_store, SQLStore)
    filters = ResultFilter(
        owner="alice",
        statuses=frozenset({VaultingStatus.FAILED, VaultingStatus.PROCESSING}),
        labels=(("tier", "gold"),),
        updated_from=BASE + timedelta(seconds=5),
        updated_before=BASE + timedelta(seconds=90),
    )
    for query, index in (
        (filters, "records_listed_by_owner"),
        (replace(filters, owner=None), "records_listed"),
    ):
        # The store's own statement, parameters and all.
        sql, parameters = list_statement(vault_store.dialect, query, (BASE, "vr-alice-0001"))
        explain = "EXPLAIN QUERY PLAN " if each_backend.name == "sqlite" else "EXPLAIN "
        async with vault_store._session() as db:
            plan = await db.fetch(explain + sql, *parameters, 51)
        text = " | ".join(str(row[-1]) for row in plan)
        assert index in text, text
        assert "Seq Scan" not in text, text  # PostgreSQL
        assert "SCAN records" not in text, text  # SQLite: a full scan reads "SCAN records"
        assert "TEMP B-TREE" not in text, text  # SQLite: the index gives the order
