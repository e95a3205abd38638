"""``StreamResults``: replay the event log from a resume token, then follow it live.

Each subscriber owns nothing but its cursor: it reads the log in pages at its own pace and
sleeps on the :class:`EventHub` between pages. A slow client therefore never stalls the others
and never grows memory; a cancelled stream just stops reading. Checkpoints carry the newest
position the subscriber has fully seen, so an idle or filtered client can resume cheaply.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from vault_service.domain import (
    Event,
    InvalidResumeTokenError,
    decode_resume_token,
    encode_resume_token,
)
from vault_service.events import EventHub
from vault_service.service.vaulting import Clock, utc_now
from vault_service.store.base import Store

PAGE_SIZE = 256


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    resume_token: str
    event: Event


@dataclass(frozen=True, slots=True)
class Checkpoint:
    resume_token: str
    at: datetime


StreamItem = StreamedEvent | Checkpoint


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
        self._checkpoint_interval = checkpoint_interval
        self._clock = clock

    async def start_position(self, resume_token: str) -> int:
        """Where a stream starts: the token's position, or the log's head for "from now".

        Refuses (InvalidResumeTokenError) a token that is malformed, from another log, or
        points past the head: never silently treated as "from now".
        """
        head = await self._store.last_event_id()
        if not resume_token:
            return head
        position = decode_resume_token(resume_token, self._store.log_id)
        if position > head:
            raise InvalidResumeTokenError("the resume token points past the end of the log")
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
        store, hub = self._store, self._hub
        yield self._checkpoint(position)
        next_checkpoint = time.monotonic() + self._checkpoint_interval
        while True:
            generation = hub.generation
            head = await store.last_event_id()
            events = await store.events_after(
                position, limit=PAGE_SIZE, owner=owner, vaulting_request_ids=vaulting_request_ids
            )
            for event in events:
                position = event.event_id
                yield StreamedEvent(encode_resume_token(store.log_id, position), event)
            if len(events) == PAGE_SIZE:
                continue
            # The page was not full, so every matching event up to ``head`` has been seen:
            # a filtered stream may skip ahead over what it does not match.
            position = max(position, head)
            if time.monotonic() >= next_checkpoint:
                yield self._checkpoint(position)
                next_checkpoint = time.monotonic() + self._checkpoint_interval
            await hub.wait(generation, max(0.0, next_checkpoint - time.monotonic()))

    def _checkpoint(self, position: int) -> Checkpoint:
        return Checkpoint(encode_resume_token(self._store.log_id, position), self._clock())
