"""Group commit: the applies that arrive together share one transaction.

Each notification used to be one write transaction of its own, and a commit (SQLite's WAL
append on its one writer thread, PostgreSQL's round trips, commit and event-log lock) cost
more than everything else a notification needs. Here concurrent callers queue their apply;
one writer takes everything queued (up to ``max_batch``) and commits it with
:meth:`Store.apply_batch`; whatever arrives meanwhile waits for the next batch. A lone caller
is a batch of one, so there is no timer and no added delay: batches grow only as large as the
load makes them.

Each caller is answered only after its batch has committed, with its own apply's outcome
(its event, ``None`` when nothing changed, or its own exception): what ``apply`` guaranteed,
an acknowledgement only for what is durably stored, holds per caller. When the batch's commit
fails as a whole, every caller of the batch gets that error.

The writer, not the callers, wakes the streams and counts the events (``on_commit``, once per
batch), right after the commit: a caller that stops waiting (a GetResult whose client went
away) can neither stop its queued apply nor come between the commit and the wake-up (issue 9
#9). The writer is a task that exists only while there is work; :meth:`GroupCommit.close`
refuses new applies and waits until the queued ones are committed (a drain).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from vault_service.domain import Event, Observation
from vault_service.errors import InternalError
from vault_service.store import Store

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH: Final = 256
"""Applies per transaction at most: enough to amortise a commit many times over, small enough
that one batch's statements stay short."""


class GroupCommitClosedError(InternalError):
    """An apply after :meth:`GroupCommit.close`: a shutdown ordering bug in the caller."""


class GroupCommitFailedError(InternalError):
    """The writer itself failed (a bug, not the store): the apply's fate is unknown."""


@dataclass(frozen=True, slots=True)
class _Pending:
    vaulting_request_id: str
    observation: Observation
    answer: asyncio.Future[Event | None]


class GroupCommit:
    """Applies of concurrent callers committed in batches by one writer (module docstring)."""

    __slots__ = ("_closed", "_max_batch", "_on_commit", "_queue", "_store", "_writer")

    def __init__(
        self,
        store: Store,
        *,
        on_commit: Callable[[list[Event]], None],
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, not {max_batch}")
        self._store = store
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._queue: collections.deque[_Pending] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def apply(self, vaulting_request_id: str, observation: Observation) -> Event | None:
        """``Store.apply``'s outcome for this observation, once its batch has committed.

        Cancelling the caller does not withdraw the apply: it is committed (and the streams
        woken) all the same, the caller just stops waiting for the answer.
        """
        if self._closed:
            raise GroupCommitClosedError("the group commit is closed")
        answer: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(vaulting_request_id, observation, answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await answer

    async def close(self) -> None:
        """Refuse new applies; return once every queued one is committed and answered."""
        self._closed = True
        if self._writer is not None:
            # Shielded: a cancelled close still lets the writer finish the drain.
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        """Commit batches until the queue is empty, then end (the next apply starts anew)."""
        batch: list[_Pending] = []
        try:
            while self._queue:
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                await self._commit(batch)
                batch = []
        except asyncio.CancelledError:
            # Only the loop's own end cancels the writer: nobody will answer these callers.
            for pending in (*batch, *self._queue):
                pending.answer.cancel()
            self._queue.clear()
            raise
        except Exception as exc:
            # A bug of the writer's own, not the store's (that is each caller's answer): the
            # callers hear of it as an error, the log has the cause, and the next apply starts
            # a new writer.
            log.exception("the group commit's writer failed")
            for pending in (*batch, *self._queue):
                if not pending.answer.done():
                    pending.answer.set_exception(GroupCommitFailedError(str(exc)))
            self._queue.clear()
        finally:
            self._writer = None

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._store.apply_batch(
                [(pending.vaulting_request_id, pending.observation) for pending in batch]
            )
        except Exception as exc:
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(_own_copy(exc))
            return
        if len(outcomes) != len(batch):  # answering any caller would give it another's outcome
            raise InternalError(f"{len(outcomes)} outcomes for a batch of {len(batch)} applies")
        events = [outcome for outcome in outcomes if isinstance(outcome, Event)]
        if events:
            try:
                self._on_commit(events)
            except Exception:  # committed all the same: the callers get their outcomes
                log.exception("waking the streams after a group commit failed")
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.answer.done():  # its caller was cancelled
                continue
            if isinstance(outcome, Exception):
                pending.answer.set_exception(outcome)
            else:
                pending.answer.set_result(outcome)


def _own_copy(exc: Exception) -> Exception:
    """A copy of a batch's failure for one of its callers, caused by it: raising one object in
    up to ``max_batch`` callers would pile every caller's frames onto its one traceback and
    tie their logs together."""
    try:
        mine = copy.copy(exc)
    except Exception:  # an exception type that cannot be copied: share it after all
        return exc
    mine.__cause__ = exc
    return mine
