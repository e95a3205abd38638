"""``StreamResults``: replay the event log from a resume token, then follow it live.

Live subscribers share one read of the log per wake-up: :class:`LogTail` keeps the newest events
of this replica's view of the log in a bounded buffer, refreshed by whichever subscriber wakes
first, and every caught-up subscriber filters that buffer in memory. (Before it existed, every
stream ran two queries per event: see "After the shared log tail" in bench/results/service.md.)
A subscriber behind the buffer — resuming from an old token, or too slow to keep up —
reads the log itself, in pages, at its own pace, until it is caught up. Either way a subscriber
owns nothing but its cursor, so a slow client never stalls the others and never grows memory,
and a cancelled stream just stops. Checkpoints carry the newest position the subscriber has
fully seen, so an idle or filtered client can resume cheaply.

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
import collections
import time
from collections.abc import AsyncIterator
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
from vault_service.store import (
    EventsPrunedError,
    LogEntry,
    Store,
    Unreadable,
    UnreadableEvent,
    entry_owner,
    entry_request_id,
)

PAGE_SIZE = 256
TAIL_CAPACITY = 4096
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


class LogTail:
    """The newest events of the log, read once per wake-up for every live subscriber.

    Invariant: every event with ``floor < event_id <= position`` is in the buffer, in order,
    and the log holds no other event up to ``position`` (positions are commit-ordered in both
    backends, so nothing can appear below ``position`` later).

    An event row that does not decode is buffered as the store's
    :class:`~vault_service.store.base.UnreadableEvent`; what it means is each subscriber's
    business (:meth:`ResultStreams.follow`), so one bad row never fails the tail.
    """

    def __init__(self, store: Store, hub: EventHub, *, capacity: int = TAIL_CAPACITY) -> None:
        self._store = store
        self._hub = hub
        self._capacity = capacity
        self._events: collections.deque[LogEntry] = collections.deque()
        self._floor = -1
        self._position = -1
        self._synced_generation = -1
        self._lock = asyncio.Lock()

    @property
    def position(self) -> int:
        return self._position

    async def catch_up(self) -> None:
        """Make the buffer current as of the hub's present generation (one reader at a time;
        the others find the work done)."""
        generation = self._hub.generation
        if self._synced_generation == generation:
            return
        async with self._lock:
            if self._synced_generation == generation:
                return
            if self._position < 0:
                self._floor = self._position = await self._store.last_event_id()
            while True:
                try:
                    page = await self._store.events_after(self._position, limit=PAGE_SIZE)
                except EventsPrunedError:
                    # Quiet for longer than the retention: start again at the head. Every
                    # subscriber is then behind the buffer and reads (and is refused) itself.
                    self._events.clear()
                    self._floor = self._position = await self._store.last_event_id()
                    continue
                for event in page:
                    self._append(event)
                if len(page) < PAGE_SIZE:
                    break
            self._synced_generation = generation

    def since(self, position: int) -> list[LogEntry] | None:
        """The buffered events after ``position``, or ``None`` when ``position`` is older than
        the buffer (the caller must read the log itself)."""
        if position < self._floor:
            return None
        newer: list[LogEntry] = []
        for event in reversed(self._events):
            if event.event_id <= position:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def _append(self, event: LogEntry) -> None:
        self._events.append(event)
        self._position = event.event_id
        if len(self._events) > self._capacity:
            self._floor = self._events.popleft().event_id


def _matches(entry: LogEntry, owner: str | None, ids: frozenset[str] | None) -> bool:
    return (owner is None or entry_owner(entry) == owner) and (
        ids is None or entry_request_id(entry) in ids
    )


def _key_missing(entry: LogEntry) -> TypeGuard[UnreadableEvent]:
    return isinstance(entry, UnreadableEvent) and entry.cause is Unreadable.MISSING_KEY


class ResultStreams:
    """Opens subscriptions on the event log for one owner (``None``: every owner, for admins)."""

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        *,
        checkpoint_interval: float,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._hub = hub
        self._tail = LogTail(store, hub)
        self._checkpoint_interval = checkpoint_interval
        self._clock = clock
        self._draining = False

    def drain(self) -> None:
        """End every stream, open or opened later, with :class:`ShuttingDownError`.

        One-way, for a process on its way out. A stream waiting for events is woken at once (a
        spurious hub wake-up costs every subscriber one read of the tail, nothing more); one
        replaying the log stops before its next page; one blocked sending to a client that
        does not read ends when the server's grace runs out.
        """
        self._draining = True
        self._hub.notify()

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
    ) -> AsyncIterator[StreamItem]:
        """Every event after ``position`` exactly once and in order, with a checkpoint first
        and then whenever ``checkpoint_interval`` passes without one."""
        store, hub, tail = self._store, self._hub, self._tail
        yield self._checkpoint(position)
        next_checkpoint = time.monotonic() + self._checkpoint_interval
        while True:
            self._unless_draining(position)
            generation = hub.generation
            await tail.catch_up()
            horizon = tail.position
            buffered = tail.since(position)
            if buffered is not None:
                for entry in buffered:
                    if not _matches(entry, owner, vaulting_request_ids):
                        continue
                    if _key_missing(entry):
                        # The buffer read it before: the log itself says whether it still
                        # cannot be read (the key may be back).
                        buffered = None
                        break
                    position = entry.event_id
                    yield self._item(entry)
                else:
                    # Every event up to the tail's position has been looked at.
                    position = max(position, horizon)
            if buffered is None:
                entries = await self._read_log(position, owner, vaulting_request_ids)
                for entry in entries:
                    if _key_missing(entry):
                        raise EventKeyMissingError(
                            encode_resume_token(store.log_id, entry.event_id - 1), entry.key_id
                        )
                    position = entry.event_id
                    yield self._item(entry)
                if len(entries) == PAGE_SIZE:
                    continue
                # The page was not full, so every matching event up to ``horizon`` (read by the
                # tail before this query) has been seen: skip ahead over what did not match.
                position = max(position, horizon)
                if tail.since(position) is None:
                    continue
            if time.monotonic() >= next_checkpoint:
                yield self._checkpoint(position)
                next_checkpoint = time.monotonic() + self._checkpoint_interval
            await hub.wait(generation, max(0.0, next_checkpoint - time.monotonic()))

    def _unless_draining(self, position: int) -> None:
        """Raise :class:`ShuttingDownError` once :meth:`drain` was called."""
        if self._draining:
            raise ShuttingDownError(encode_resume_token(self._store.log_id, position))

    async def _read_log(
        self, position: int, owner: str | None, vaulting_request_ids: frozenset[str] | None
    ) -> list[LogEntry]:
        """A subscriber's own page of the log; refused as too old when it fell behind by more
        than the retention (what it missed is gone)."""
        try:
            return await self._store.events_after(
                position, limit=PAGE_SIZE, owner=owner, vaulting_request_ids=vaulting_request_ids
            )
        except EventsPrunedError:
            raise too_old() from None

    def _item(self, entry: LogEntry) -> StreamedEvent | UnreadableItem:
        token = encode_resume_token(self._store.log_id, entry.event_id)
        if isinstance(entry, UnreadableEvent):
            return UnreadableItem(token, entry.vaulting_request_id)
        return StreamedEvent(token, entry)

    def _checkpoint(self, position: int) -> Checkpoint:
        return Checkpoint(encode_resume_token(self._store.log_id, position), self._clock())
