"""The vaulting use cases: create a session, record what Antom tells (observations), read a result.

Callers are identified by ``owner`` (the calling service); a record is visible only to its owner,
and another owner's id answers exactly like an unknown one so that ids leak nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vault_service.antom import (
    AntomClient,
    AntomProtocolError,
    CreateVaultingSessionRequest,
    InquireVaultingRequest,
    VaultingNotification,
)
from vault_service.domain import (
    Clock,
    Event,
    Observation,
    ResultFilter,
    Session,
    SessionParameters,
    SessionRequest,
    VaultingRecord,
    utc_now,
)
from vault_service.errors import ConflictError, NotFoundError
from vault_service.events import EventHub
from vault_service.metrics import Metrics
from vault_service.service import observations
from vault_service.service.group_commit import GroupCommit
from vault_service.service.listing import Page, list_page
from vault_service.store import (
    OrphanNotification,
    RecordExistsError,
    RecordNotFoundError,
    Store,
    UnreadableOrphan,
)

log = logging.getLogger(__name__)

ORPHAN_BATCH = 100
"""Orphan notifications adopted per reconciler pass."""


def remaining(deadline: float | None) -> float | None:
    """Seconds left until a ``time.monotonic()`` deadline, read when Antom is about to be
    called: time spent waiting (e.g. behind a concurrent duplicate) comes off the budget."""
    return None if deadline is None else deadline - time.monotonic()


@dataclass(frozen=True, slots=True)
class CreatedSession:
    record: VaultingRecord
    created: bool


class VaultingService:
    """Create sessions, record notifications and inquiries, answer result reads."""

    def __init__(
        self,
        store: Store,
        antom: AntomClient,
        hub: EventHub,
        *,
        notify_url: str,
        first_check_after: timedelta,
        clock: Clock = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._antom = antom
        self._events_appended = (metrics if metrics is not None else Metrics()).events_appended
        self._hub = hub
        self._notify_url = notify_url
        self._first_check_after = first_check_after
        self._clock = clock
        self._commits = GroupCommit(store, on_commit=self._committed)

    async def aclose(self) -> None:
        """Stop taking observations; return once every one in flight is committed (the
        drain: the webhook's last notifications are stored and answered)."""
        await self._commits.close()

    async def create_session(
        self,
        owner: str,
        vaulting_request_id: str,
        parameters: SessionParameters,
        *,
        deadline: float | None = None,
    ) -> CreatedSession:
        """Start a vaulting session, or replay the stored one for the same id and parameters.

        Concurrent calls with one id, on this replica or any other, are serialised by the
        store's creation lock so that Antom sees one call. Should a race still get past it, the
        store's unique key decides and Antom's own idempotency on ``vaultingRequestId`` makes
        it harmless.
        """
        async with self._store.creation_lock(vaulting_request_id):
            # The first attempt's request, kept before Antom sees it: a retry (after a U, a
            # timeout, a restart) sends its exact bytes even if the notify URL changed since.
            found = await self._store.record_or_request(
                vaulting_request_id,
                SessionRequest(
                    owner,
                    parameters,
                    CreateVaultingSessionRequest(
                        vaulting_request_id=vaulting_request_id,
                        vaulting_notification_url=self._notify_url,
                        payment_method_type=parameters.payment_method_type,
                        redirect_url=parameters.redirect_url or None,
                        merchant_region=parameters.merchant_region or None,
                        is_3ds_authentication=parameters.is_3ds_authentication,
                    ).to_json_bytes(),
                ),
                self._clock(),
            )
            if isinstance(found, VaultingRecord):
                return CreatedSession(_replay(found, owner, parameters), created=False)
            return await self._create(owner, vaulting_request_id, parameters, found, deadline)

    async def _create(
        self,
        owner: str,
        vaulting_request_id: str,
        parameters: SessionParameters,
        first: SessionRequest,
        deadline: float | None,
    ) -> CreatedSession:
        _check_same_request(vaulting_request_id, first.owner, first.parameters, owner, parameters)
        answer = await self._antom.create_vaulting_session(first.body, budget=remaining(deadline))
        try:
            expires_at = datetime.fromisoformat(answer.vaulting_session_expiry_time)
        except ValueError:
            raise AntomProtocolError("Antom's session expiry time is not ISO-8601") from None
        if expires_at.tzinfo is None:
            raise AntomProtocolError("Antom's session expiry time has no UTC offset")
        now = self._clock()
        record = VaultingRecord(
            vaulting_request_id=vaulting_request_id,
            owner=owner,
            parameters=parameters,
            session=Session(
                session_id=answer.vaulting_session_id,
                session_data=answer.vaulting_session_data,
                expires_at=expires_at.astimezone(UTC),
                normal_url=answer.normal_url or "",
            ),
            created_at=now,
            updated_at=now,
        )
        try:
            orphans_wait = await self._store.insert(
                record, next_check_at=now + self._first_check_after
            )
        except RecordExistsError as exc:
            return CreatedSession(_replay(exc.existing, owner, parameters), created=False)
        log.info(
            "vaulting session created",
            extra={"vaulting_request_id": vaulting_request_id, "owner": owner},
        )
        if orphans_wait:
            await self._adopt_orphans_of(vaulting_request_id)
        return CreatedSession(record, created=True)

    async def record_notification(self, notification: VaultingNotification, raw: bytes) -> None:
        """Persist a verified notification (record + event in one transaction), then wake
        the streams. An id we never created is kept as an orphan for audit."""
        now = self._clock()
        vaulting_request_id = notification.vaulting_request_id
        observation = observations.from_notification(notification, now)
        _warn_if_unrecognised(vaulting_request_id, observation)
        try:
            await self.apply(vaulting_request_id, observation)
        except RecordNotFoundError:
            await self._store.record_orphan(vaulting_request_id, raw, now)
            log.warning(
                "notification for an unknown vaulting request kept as orphan",
                extra={"vaulting_request_id": vaulting_request_id},
            )
            # CreateSession of this id may have inserted its record between the apply and the
            # orphan's commit, and found no orphan then: adopt it now rather than at the
            # reconciler's next pass.
            await self._adopt_orphans_of(vaulting_request_id)

    async def _adopt_orphans_of(self, vaulting_request_id: str) -> None:
        """Adopt the orphans of a record that now exists. What is adopted is stored already and
        the caller (CreateSession's, Antom's) must hear its own outcome, so a failure here is
        logged and left to the reconciler's next pass."""
        try:
            await self.adopt_orphans(vaulting_request_id=vaulting_request_id)
        except Exception:
            log.exception(
                "applying orphan notifications to a new record failed; the reconciler retries",
                extra={"vaulting_request_id": vaulting_request_id},
            )

    async def adopt_orphans(
        self, *, vaulting_request_id: str | None = None, limit: int = ORPHAN_BATCH
    ) -> int:
        """Apply the orphan notifications whose record exists now (of one id, or the oldest
        ``limit`` of any) as the notifications they are, then forget them; how many were.

        A notification that arrived before its record (Antom is fast, a replica wrote late, a
        database was restored) is thus not lost. Applying is idempotent, so a replica racing
        this one, or a retry after a crash between the apply and the forget, emits no second
        event; the change counts from now (its ``update_time``), when the service learned it.

        Each orphan is adopted on its own: one that does not decode, or whose apply fails, is
        logged (its error's class, never its body) and kept for the next pass, and the others
        are still adopted, since the oldest come first on every pass.
        """
        orphans = await self._store.adoptable_orphans(
            limit=limit, vaulting_request_id=vaulting_request_id
        )
        adopted = 0
        for orphan in orphans:
            rid = orphan.vaulting_request_id
            if isinstance(orphan, UnreadableOrphan):
                log.warning(
                    "an orphan notification does not decode: not applied",
                    extra={
                        "vaulting_request_id": rid,
                        "error": orphan.error,
                        "key_id": orphan.key_id,
                    },
                )
                continue
            try:
                await self._adopt(orphan)
            except Exception as exc:
                # No traceback: the error's message may quote the body.
                log.warning(
                    "applying an orphan notification failed; kept for the next pass",
                    extra={"vaulting_request_id": rid, "error": type(exc).__name__},
                )
                continue
            adopted += 1
        return adopted

    async def _adopt(self, orphan: OrphanNotification) -> None:
        rid = orphan.vaulting_request_id
        # Verified and parsed when it arrived: it parses again.
        notification = VaultingNotification.from_antom_json(orphan.body)
        await self.apply(rid, observations.from_notification(notification, self._clock()))
        await self._store.drop_orphan(rid, orphan.body)
        log.info("orphan notification applied to its record", extra={"vaulting_request_id": rid})

    async def get_result(
        self,
        owner: str | None,
        vaulting_request_id: str,
        *,
        refresh: bool = False,
        deadline: float | None = None,
    ) -> VaultingRecord:
        """The stored state; with ``refresh`` ask Antom first, unless Antom has said all it
        will (final, and a success with its card token).

        ``owner`` is the caller whose records may be read; ``None`` reads any (an admin).
        """
        record = await self._owned(owner, vaulting_request_id)
        if not refresh or not record.awaits_antom:
            return record
        await self.inquire(vaulting_request_id, budget=remaining(deadline))
        return await self._owned(owner, vaulting_request_id)

    async def list_results(self, query: ResultFilter, page_token: str, size: int) -> Page:
        """One page of ListResults (:mod:`vault_service.service.listing`); ``query.owner``
        is whose records may be read (``None``: any, an admin)."""
        return await list_page(self._store, query, page_token, size)

    async def inquire(self, vaulting_request_id: str, *, budget: float | None = None) -> bool:
        """Ask Antom's inquireVaulting and record the answer; ``True`` if the state changed."""
        answer = await self._antom.inquire_vaulting(
            InquireVaultingRequest(vaulting_request_id=vaulting_request_id), budget=budget
        )
        observation = observations.from_inquiry(answer, self._clock())
        if observation is None:
            return False
        _warn_if_unrecognised(vaulting_request_id, observation)
        return await self.apply(vaulting_request_id, observation) is not None

    async def apply(self, vaulting_request_id: str, observation: Observation) -> Event | None:
        """Apply an observation to the record (see ``Store.apply``) and, if it changed, wake the
        streams: one step that cancelling the caller cannot split.

        Concurrent applies are committed together (:mod:`vault_service.service.group_commit`),
        and the group commit's writer, not the caller, wakes the streams after the commit: a
        caller cancelled while the store commits (a GetResult whose client went away) used to
        stop between the commit and the wake-up, and on SQLite, where nothing else wakes the
        streams, the committed event then waited for some unrelated event (issue 9 #9).
        """
        return await self._commits.apply(vaulting_request_id, observation)

    def _committed(self, events: list[Event]) -> None:
        """After each committed batch: one wake-up for all its events, each one counted."""
        self._hub.notify()
        for event in events:
            self._events_appended.labels(event.source.value).inc()

    async def _owned(self, owner: str | None, vaulting_request_id: str) -> VaultingRecord:
        record = await self._store.get(vaulting_request_id)
        if record is None or (owner is not None and record.owner != owner):
            raise NotFoundError(f"no vaulting request {vaulting_request_id!r}")
        return record


def _warn_if_unrecognised(vaulting_request_id: str, observation: Observation) -> None:
    """Say so when Antom uses a vaultingStatus this build does not know: it is kept and shown,
    but only a newer build can act on it (the record waits, then expires)."""
    if observation.status is None and observation.antom_result is not None:
        log.warning(
            "Antom reported an unknown vaultingStatus; kept as is, the status does not change",
            extra={
                "vaulting_request_id": vaulting_request_id,
                "antom_vaulting_status": observation.antom_result.vaulting_status,
            },
        )


def _replay(existing: VaultingRecord, owner: str, parameters: SessionParameters) -> VaultingRecord:
    """The stored session for an idempotent repeat, or a conflict."""
    _check_same_request(
        existing.vaulting_request_id, existing.owner, existing.parameters, owner, parameters
    )
    return existing


def _check_same_request(
    vaulting_request_id: str,
    first_owner: str,
    first_parameters: SessionParameters,
    owner: str,
    parameters: SessionParameters,
) -> None:
    """A repeat of an id must come from its first caller with its first parameters: anything
    else is a conflict (Antom would refuse a changed request as REPEAT_REQ_INCONSISTENT)."""
    if first_owner != owner:
        # Another caller's: said as little as a refusal can (not whose, not with what).
        raise ConflictError(f"vaulting request {vaulting_request_id!r} is already in use")
    if first_parameters != parameters:
        raise ConflictError(
            f"vaulting request {vaulting_request_id!r} already exists with different parameters"
        )
