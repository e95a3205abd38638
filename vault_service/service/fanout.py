"""The stream index: one reader per process follows the event log and hands each event to the
live ``StreamResults`` subscriptions it can match, and to no other.

Before it, every committed event woke every open stream, and each queued through one lock to
filter a shared buffer: about 13 ms of event-loop CPU per event at 1,000 streams and 150-205 ms
at 10,000, even when the event concerned a single stream (issue 13). Now the
reader reads each event once, after the hub's wake-up (in-process commits, or another
replica's through LISTEN/NOTIFY), builds its stream item once (its resume token is encoded
once, not once per stream) and looks its subscribers up by owner (unfiltered streams, and
admins' under ``None``) and by (owner, vaulting request id) (filtered streams).

A subscription holds a bounded queue of what it was handed. When a slow client lets it fill
up, the queue is dropped and the subscription marked overflowed: its stream then reads the log
itself from its own position (:meth:`~vault_service.service.streaming.ResultStreams.follow`)
and re-arms. The log stays the source of truth, so an overflow costs reads, never an event, and
one slow stream holds at most ``QUEUE_CAPACITY`` items and never stalls the others.

The reader runs only while subscriptions exist: the first one starts it, the last one to leave
cancels it, and :meth:`StreamIndex.close` (on shutdown) cancels and awaits it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable
from typing import Final, Generic, TypeVar

from vault_service.events import EventHub
from vault_service.store import EventsPrunedError, LogEntry, Store, entry_owner, entry_request_id

PAGE_SIZE: Final = 256
QUEUE_CAPACITY: Final = 1024
"""Items one subscription may hold before it falls back to reading the log itself."""
READER_TASK: Final = "stream-index"
"""The reader task's name (in task dumps, and for tests proving it is gone)."""
RETRY_DELAY: Final = 1.0
"""Seconds the reader waits after a failed read of the log before reading again."""
DISPATCH_SLICE: Final = 0.005
"""Seconds the reader hands out events before it lets the loop run other work."""

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
Delivery = tuple[LogEntry, ItemT]
"""An event as the reader read it, and the stream item built from it once for all streams."""


class Subscription(Generic[ItemT]):
    """One stream's place in the index: what it matches and what it was handed since it last
    took its queue. Slotted and with a queue made only when something arrives, since 10,000
    idle streams each hold one."""

    __slots__ = (
        "_capacity",
        "_overflowed",
        "_pending",
        "_timer",
        "_waiter",
        "owner",
        "request_ids",
    )

    def __init__(
        self, owner: str | None, request_ids: frozenset[str] | None, capacity: int
    ) -> None:
        self.owner = owner
        self.request_ids = request_ids
        self._capacity = capacity
        self._pending: collections.deque[Delivery[ItemT]] | None = None
        self._overflowed = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def overflowed(self) -> bool:
        """Items were dropped since the last :meth:`StreamIndex.rearm`: read the log."""
        return self._overflowed

    @property
    def idle(self) -> bool:
        """Nothing handed over is waiting to be taken (and nothing was dropped)."""
        return not self._pending and not self._overflowed

    def take(self) -> Iterable[Delivery[ItemT]]:
        """What was handed over since the last take, oldest first."""
        pending, self._pending = self._pending, None
        return pending if pending is not None else ()

    async def wait(self, deadline: float) -> None:
        """Until something is handed over, the queue overflows, :meth:`wake` is called or the
        loop's clock reaches ``deadline``.

        The deadline's timer is kept across waits until it rings or the deadline changes:
        a stream is woken once per event it matches, and a timer made and cancelled at each
        wake cost 5-8 % of the loop's time in a fan-out to 10,000 streams.
        """
        if not self.idle:
            return
        loop = asyncio.get_running_loop()
        timer = self._timer
        if timer is None or timer.when() != deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._ring)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        """Cancel the deadline's timer (the stream is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ring(self) -> None:
        self._timer = None
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _offer(self, delivery: Delivery[ItemT]) -> None:
        if self._overflowed:
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = collections.deque()
        if len(pending) < self._capacity:
            pending.append(delivery)
        else:
            self._overflow()
        self.wake()

    def _overflow(self) -> None:
        self._pending = None
        self._overflowed = True
        self.wake()

    def _rearm(self) -> None:
        self._pending = None
        self._overflowed = False


class StreamIndex(Generic[ItemT]):
    """This process's live subscriptions, indexed for the reader that feeds them.

    Invariant: every event of the log up to :attr:`position` has been handed to every
    subscription it matches that was armed when the reader read it (an overflowed one has
    not been handed anything since, and knows). ``item_of`` builds the stream item of an event,
    once, when at least one subscription matches it.
    """

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        item_of: Callable[[LogEntry], ItemT],
        *,
        queue_capacity: int = QUEUE_CAPACITY,
    ) -> None:
        self._store = store
        self._hub = hub
        self._item_of = item_of
        self._queue_capacity = queue_capacity
        self._by_owner: dict[str | None, set[Subscription[ItemT]]] = {}
        self._by_request: dict[tuple[str | None, str], set[Subscription[ItemT]]] = {}
        self._subscriptions = 0
        self._position = -1
        self._reader: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._starting = asyncio.Lock()
        self._closed = False

    @property
    def position(self) -> int:
        """The newest event id the reader has handed out (``-1`` before it first ran)."""
        return self._position

    @property
    def reading(self) -> bool:
        """Whether the reader task exists (it exists exactly while subscriptions do)."""
        return self._reader is not None

    async def subscribe(
        self, owner: str | None, request_ids: frozenset[str] | None
    ) -> Subscription[ItemT]:
        """A subscription to what ``owner`` (``None``: every owner) may see, limited to
        ``request_ids`` unless ``None``; armed from :attr:`position` (see :meth:`rearm`).

        The first subscription starts the reader at the log's head. After :meth:`close` no
        reader starts: the subscription is never fed (the streams were drained first).
        """
        async with self._starting:
            if self._reader is None and not self._closed:
                head = await self._store.last_event_id()
                if not self._closed:  # close() may have run during the read: no reader then
                    self._position = head
                    self._reader = asyncio.create_task(self._read(), name=READER_TASK)
        subscription: Subscription[ItemT] = Subscription(owner, request_ids, self._queue_capacity)
        if request_ids is None:
            self._by_owner.setdefault(owner, set()).add(subscription)
        else:
            for request_id in request_ids:
                self._by_request.setdefault((owner, request_id), set()).add(subscription)
        self._subscriptions += 1
        return subscription

    def unsubscribe(self, subscription: Subscription[ItemT]) -> None:
        """Take ``subscription`` out; the last one out stops the reader."""
        owner, request_ids = subscription.owner, subscription.request_ids
        if request_ids is None:
            _discard(self._by_owner, owner, subscription)
        else:
            for request_id in request_ids:
                _discard(self._by_request, (owner, request_id), subscription)
        subscription.close()
        self._subscriptions -= 1
        if self._subscriptions == 0 and self._reader is not None:
            self._stop_reader()

    def rearm(self, subscription: Subscription[ItemT]) -> int:
        """Empty ``subscription``'s queue and clear its overflow; the position from which it is
        fed again: its stream must read every matching event up to there from the log."""
        subscription._rearm()
        return self._position

    def wake_all(self) -> None:
        """Wake every waiting subscription (the streams are draining)."""
        for group in (*self._by_owner.values(), *self._by_request.values()):
            for subscription in group:
                subscription.wake()

    async def close(self) -> None:
        """Stop the reader for good and wait until it is gone."""
        self._closed = True
        if self._reader is not None:
            self._stop_reader()
        if self._stopping:
            await asyncio.wait(self._stopping)

    def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        assert reader is not None
        reader.cancel()
        self._stopping.add(reader)
        reader.add_done_callback(self._stopping.discard)

    async def _read(self) -> None:
        """Follow the log from :attr:`position`, one page after another, waiting for the hub
        between; never ends by itself. A failed read is logged and retried; the streams keep
        waiting meanwhile (nothing was handed out, so none of them is behind the reader), rather
        than all asking the struggling database at once."""
        while True:
            generation = self._hub.generation
            try:
                page = await self._next_page()
            except Exception:  # whatever the store raises: the reader must go on
                log.exception("the stream index could not read the event log; retrying")
                await asyncio.sleep(RETRY_DELAY)
                continue
            await self._dispatch_page(page)
            if len(page) < PAGE_SIZE:
                await self._hub.wait(generation, None)

    async def _dispatch_page(self, page: list[LogEntry]) -> None:
        """Hand out ``page``, letting the loop run every :data:`DISPATCH_SLICE` seconds: a page
        matched by thousands of streams is seconds of work, and the webhook's acknowledgements
        and the other calls must not wait for all of it. Between two events the index is
        consistent (:attr:`position` is the last event handed out), so streams may join, leave
        or rearm meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DISPATCH_SLICE
        for entry in page:
            self._dispatch(entry)
            if loop.time() >= deadline:
                await asyncio.sleep(0)
                deadline = loop.time() + DISPATCH_SLICE

    async def _next_page(self) -> list[LogEntry]:
        try:
            return await self._store.events_after(self._position, limit=PAGE_SIZE)
        except EventsPrunedError:
            # Quiet for longer than the retention: start again at the head. Every stream reads
            # the log itself, and is refused as too old when it missed events. Both in one
            # step after the await, so that a stream joining meanwhile is sent back too.
            head = await self._store.last_event_id()
            self._position = head
            self._overflow_all()
            return await self._store.events_after(head, limit=PAGE_SIZE)

    def _dispatch(self, entry: LogEntry) -> None:
        self._position = entry.event_id
        owner, request_id = entry_owner(entry), entry_request_id(entry)
        delivery: Delivery[ItemT] | None = None
        for group in (
            self._by_owner.get(owner),
            self._by_owner.get(None),
            self._by_request.get((owner, request_id)),
            self._by_request.get((None, request_id)),
        ):
            if not group:
                continue
            if delivery is None:
                delivery = (entry, self._item_of(entry))
            for subscription in group:
                subscription._offer(delivery)

    def _overflow_all(self) -> None:
        for group in (*self._by_owner.values(), *self._by_request.values()):
            for subscription in group:
                subscription._overflow()


_K = TypeVar("_K")


def _discard(index: dict[_K, set[Subscription[ItemT]]], key: _K, item: Subscription[ItemT]) -> None:
    group = index[key]
    group.discard(item)
    if not group:
        del index[key]
