"""The fault plan: what the emulator does wrong, and how many more times.

A plan is set per run (CLI flags or :class:`EmulatorConfig`) and changed at runtime through
``PUT /emulator/faults``. Each counter is consumed one unit per use; ``-1`` means "always", so a
test can switch a fault on, watch the client cope, and switch it off again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Final

ALWAYS: Final = -1
MAX_LATENCY_MS: Final = 600_000


class FaultPlanError(ValueError):
    """A fault plan, or a change to one, names an unknown fault or an out-of-range value."""


class Counter(StrEnum):
    """The counted faults; values are the JSON keys and dataclass fields of :class:`FaultPlan`."""

    HTTP_5XX = "http_5xx"
    UNKNOWN_RESULT = "unknown_result"
    BAD_SIGNATURE = "bad_signature"
    DROP_NOTIFICATIONS = "drop_notifications"
    DUPLICATE_NOTIFICATIONS = "duplicate_notifications"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Faults to inject.

    ``latency_ms`` delays every API answer; ``http_5xx`` answers the next N API calls with
    HTTP 503 and a non-JSON body; ``unknown_result`` answers the next N authenticated API calls
    with a signed ``U``/``UNKNOWN_EXCEPTION`` without acting on them; ``bad_signature`` gives the
    next N signed API answers a well-formed signature over different content;
    ``drop_notifications`` skips the next N notification attempts (recorded as dropped, the retry
    schedule goes on); ``duplicate_notifications`` sends the next N attempts twice.
    Counters accept N >= 0 or -1 for "always".
    """

    latency_ms: int = 0
    http_5xx: int = 0
    unknown_result: int = 0
    bad_signature: int = 0
    drop_notifications: int = 0
    duplicate_notifications: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{item.name} must be an integer")
            if item.name == "latency_ms":
                if not 0 <= value <= MAX_LATENCY_MS:
                    raise FaultPlanError(f"latency_ms must be between 0 and {MAX_LATENCY_MS}")
            elif value < ALWAYS:
                raise FaultPlanError(f"{item.name} must be >= 0, or -1 for always")

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    def updated(self, changes: Mapping[str, object]) -> FaultPlan:
        """This plan with the given JSON keys changed; :class:`FaultPlanError` names a bad key."""
        known = {item.name for item in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise FaultPlanError(
                f"unknown fault {unknown[0]!r}; known faults: {', '.join(sorted(known))}"
            )
        numbers: dict[str, int] = {}
        for key, value in changes.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise FaultPlanError(f"{key} must be an integer")
            numbers[key] = value
        return replace(self, **numbers)


class Faults:
    """The live plan of one emulator; counters are consumed as the faults fire."""

    __slots__ = ("_plan",)

    def __init__(self, plan: FaultPlan) -> None:
        self._plan = plan

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @property
    def latency_seconds(self) -> float:
        return self._plan.latency_ms / 1000

    def set(self, plan: FaultPlan) -> None:
        self._plan = plan

    def update(self, changes: Mapping[str, object]) -> FaultPlan:
        """Apply ``changes`` (JSON keys of :class:`FaultPlan`); keys not given keep their value."""
        self._plan = self._plan.updated(changes)
        return self._plan

    def take(self, counter: Counter) -> bool:
        """Whether the fault fires now, consuming one unit of its counter if it does."""
        remaining: int = getattr(self._plan, counter.value)
        if remaining == 0:
            return False
        if remaining != ALWAYS:
            self._plan = replace(self._plan, **{counter.value: remaining - 1})
        return True
