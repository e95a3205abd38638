"""``StreamResults``: replay the event log from a resume token, then follow it live.

A stream first reads the log itself, in pages, at its own pace, from its resume position up to
where the process's :class:`~vault_service.service.fanout.StreamIndex` stood when the stream
joined it; from there on the index's one reader hands it the events it matches (by owner and
vaulting request id), so an event wakes only the streams it concerns. A stream whose queue in
the index overflowed (a client too slow to keep up) goes back to reading the log itself from
its own position and joins again. Either way the log is the source of truth: a slow client
never stalls the others, holds a bounded queue at most, and a cancelled stream just stops.
Checkpoints carry the newest position the subscriber has fully seen, so an idle or filtered
client can resume cheaply.

An event row this process cannot read (:class:`~vault_service.store.base.UnreadableEvent`) is
never passed in silence by a subscriber it belongs to (by owner and id filter, which the row
holds in the clear): one sealed under a key this process lacks ends the stream with
:class:`EventKeyMissingError`, whose resume token stops just before it, so the subscriber
resumes on a replica that has the key, or here once this one does; a corrupt one is sent as an
:class:`UnreadableItem` (it would read the same everywhere) and the stream goes on. Subscribers
it does not belong to pass it like any other event of someone else's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Final, TypeGuard

from vault_service.domain import (
    Clock,
    Event,
    InvalidResumeTokenError,
    decode_resume_token,
    encode_resume_token,
    utc_now,
)
from vault_service.errors import VAULT_DOMAIN, ErrorInfo, UnavailableError
from vault_service.events import EventHub
from vault_service.service.fanout import PAGE_SIZE, QUEUE_CAPACITY, StreamIndex
from vault_service.store import (
    EventsPrunedError,
    LogEntry,
    Store,
    Unreadable,
    UnreadableEvent,
)

DATA_KEY_MISSING_REASON: Final = "DATA_KEY_MISSING"
SHUTTING_DOWN_REASON: Final = "SHUTTING_DOWN"


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    resume_token: str
    event: Event


@dataclass(frozen=True, slots=True)
class Checkpoint:
    resume_token: str
    at: datetime


@dataclass(frozen=True, slots=True)
class UnreadableItem:
    """An event of the subscriber's that is corrupt for good: it is told, and moves past it
    with ``resume_token``; the record itself may still be read with GetResult."""

    resume_token: str
    vaulting_request_id: str


StreamItem = StreamedEvent | Checkpoint | UnreadableItem


class EventKeyMissingError(UnavailableError):
    """An event the stream must deliver is sealed under a data key this process lacks.

    A fault of this process, not of the event: another replica, or this one restarted with
    the right key file, delivers it from ``resume_token`` (the position just before it).
    """

    def __init__(self, resume_token: str, key_id: str | None) -> None:
        super().__init__(
            f"this server lacks data key {key_id!r} needed for an event of this stream"
        )
        self.resume_token = resume_token
        self.key_id = key_id

    @property
    def public_message(self) -> str:
        return (
            f"{self}; resume from ErrorInfo.metadata['resume_token'] on another server, or"
            " here once its VAULT_DATA_KEY_FILE holds the key and is reloaded"
        )

    @property
    def error_info(self) -> ErrorInfo:
        return ErrorInfo(VAULT_DOMAIN, DATA_KEY_MISSING_REASON, {"resume_token": self.resume_token})


class ShuttingDownError(UnavailableError):
    """This process is draining: the stream ends so that its client resumes on another
    replica, from its last token or from ``resume_token`` (everything the stream had looked at,
    which may be ahead of the last token sent when later events were someone else's).

    Its retry delay is zero: the other replicas are serving, so waiting the usual second
    would only leave the client's stream away that long (clients still back off a little)."""

    retry_delay: ClassVar[timedelta] = timedelta(0)

    def __init__(self, resume_token: str) -> None:
        super().__init__("the server is shutting down")
        self.resume_token = resume_token

    @property
    def public_message(self) -> str:
        return f"{self}; resume from your last token on another server"

    @property
    def error_info(self) -> ErrorInfo:
        return ErrorInfo(VAULT_DOMAIN, SHUTTING_DOWN_REASON, {"resume_token": self.resume_token})


def too_old() -> InvalidResumeTokenError:
    """The refusal of a position whose next events were pruned (the contract's "too old")."""
    return InvalidResumeTokenError(
        "the resume token is too old: the events after it were pruned (event retention);"
        " open a stream from now and catch up with ListResults"
    )


def _key_missing(entry: LogEntry) -> TypeGuard[UnreadableEvent]:
    return isinstance(entry, UnreadableEvent) and entry.cause is Unreadable.MISSING_KEY


class ResultStreams:
    """Opens subscriptions on the event log for one owner (``None``: every owner, for admins).

    Owns the process's :class:`StreamIndex`; :meth:`aclose` (on shutdown, after the gRPC server
    stopped) drains what is left and stops its reader.
    """

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        *,
        checkpoint_interval: float,
        clock: Clock = utc_now,
        queue_capacity: int = QUEUE_CAPACITY,
    ) -> None:
        self._store = store
        self._index: StreamIndex[StreamedEvent | UnreadableItem] = StreamIndex(
            store, hub, self._item, queue_capacity=queue_capacity
        )
        self._checkpoint_interval = checkpoint_interval
        self._clock = clock
        self._draining = False

    @property
    def index(self) -> StreamIndex[StreamedEvent | UnreadableItem]:
        """The stream index (whose position and reader tests and operators may look at)."""
        return self._index

    def drain(self) -> None:
        """End every stream, open or opened later, with :class:`ShuttingDownError`.

        One-way, for a process on its way out. A stream waiting for events is woken at once;
        one replaying the log stops before its next page; one blocked sending to a client that
        does not read ends when the server's grace runs out.
        """
        self._draining = True
        self._index.wake_all()

    async def aclose(self) -> None:
        """Drain, then stop the index's reader and wait until it is gone."""
        self.drain()
        await self._index.close()

    async def start_position(self, resume_token: str) -> int:
        """Where a stream starts: the token's position, or the log's head for "from now".

        Refuses (InvalidResumeTokenError) a token that is malformed, from another log, points
        past the head, or is too old (below the log's floor: events after it were pruned):
        never silently treated as "from now".
        """
        head = await self._store.last_event_id()
        if not resume_token:
            return head
        position = decode_resume_token(resume_token, self._store.log_id)
        if position > head:
            raise InvalidResumeTokenError("the resume token points past the end of the log")
        if position < await self._store.events_floor():
            raise too_old()
        return position

    async def follow(
        self,
        position: int,
        *,
        owner: str | None,
        vaulting_request_ids: frozenset[str] | None,
    ) -> AsyncGenerator[StreamItem, None]:
        """Every event after ``position`` exactly once and in order, with a checkpoint first
        and then whenever ``checkpoint_interval`` passes without one."""
        clock = asyncio.get_running_loop().time
        yield self._checkpoint(position)
        next_checkpoint = clock() + self._checkpoint_interval
        index = self._index
        subscription = await index.subscribe(owner, vaulting_request_ids)
        try:
            live = False
            while True:
                if not live:
                    # Everything matching up to ``joined`` is in the log; what comes later is
                    # handed over by the index from now on.
                    joined = index.rearm(subscription)
                    async for entry in self._read_log(position, owner, vaulting_request_ids):
                        position = entry.event_id
                        yield self._item(entry)
                    # The last page was not full, so every matching event up to ``joined``
                    # (read by the index before these queries) has been seen.
                    position = max(position, joined)
                    live = True
                for entry, item in subscription.take():
                    if entry.event_id <= position:
                        continue  # read from the log already
                    if _key_missing(entry):
                        # The index read it before: the log itself says whether it still
                        # cannot be read (the key may be back).
                        live = False
                        break
                    position = entry.event_id
                    yield item
                if not live or subscription.overflowed:
                    live = False
                    continue
                if subscription.idle:
                    # Every event up to the index's position has been looked at.
                    position = max(position, index.position)
                if clock() >= next_checkpoint:
                    yield self._checkpoint(position)
                    next_checkpoint = clock() + self._checkpoint_interval
                # Checked with no await before the wait begins: a drain wakes waiters only.
                self._unless_draining(position)
                await subscription.wait(next_checkpoint)
        finally:
            index.unsubscribe(subscription)

    def _unless_draining(self, position: int) -> None:
        """Raise :class:`ShuttingDownError` once :meth:`drain` was called."""
        if self._draining:
            raise ShuttingDownError(encode_resume_token(self._store.log_id, position))

    async def _read_log(
        self, position: int, owner: str | None, vaulting_request_ids: frozenset[str] | None
    ) -> AsyncIterator[LogEntry]:
        """A subscriber's own read of the log after ``position``, page after page until one is
        not full; refused as too old when it fell behind by more than the retention (what it
        missed is gone), ended before an event it cannot read for lack of a key."""
        while True:
            self._unless_draining(position)
            try:
                entries = await self._store.events_after(
                    position,
                    limit=PAGE_SIZE,
                    owner=owner,
                    vaulting_request_ids=vaulting_request_ids,
                )
            except EventsPrunedError:
                raise too_old() from None
            for entry in entries:
                if _key_missing(entry):
                    raise EventKeyMissingError(
                        encode_resume_token(self._store.log_id, entry.event_id - 1), entry.key_id
                    )
                position = entry.event_id
                yield entry
            if len(entries) < PAGE_SIZE:
                return

    def _item(self, entry: LogEntry) -> StreamedEvent | UnreadableItem:
        token = encode_resume_token(self._store.log_id, entry.event_id)
        if isinstance(entry, UnreadableEvent):
            return UnreadableItem(token, entry.vaulting_request_id)
        return StreamedEvent(token, entry)

    def _checkpoint(self, position: int) -> Checkpoint:
        return Checkpoint(encode_resume_token(self._store.log_id, position), self._clock())
