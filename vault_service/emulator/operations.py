"""createVaultingSession and inquireVaulting, from a checked request to Antom's answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from vault_service.emulator.messages import (
    Answer,
    create_response,
    failure,
    inquiry_response,
)
from vault_service.emulator.params import parse_create, parse_inquire
from vault_service.emulator.sessions import RepeatInconsistentError
from vault_service.emulator.state import EmulatorState

Operation = Callable[[EmulatorState, Mapping[str, object]], Answer]

NOT_EXIST: Final = "ORDER_NOT_EXIST"


def create_vaulting_session(state: EmulatorState, document: Mapping[str, object]) -> Answer:
    """Open a session, or replay the stored answer for a repeat with identical parameters."""
    params = parse_create(document)
    try:
        session, new = state.sessions.open(params)
    except RepeatInconsistentError:
        return failure(
            "REPEAT_REQ_INCONSISTENT",
            "The vaultingRequestId was already used with different parameters.",
        )
    if new:
        session.create_response = create_response(session)
    return Answer(session.create_response, "S", "SUCCESS")


def inquire_vaulting(state: EmulatorState, document: Mapping[str, object]) -> Answer:
    """The current vaulting status; ``result`` says only that the inquiry itself worked."""
    session = state.sessions.by_request_id(parse_inquire(document))
    if session is None:
        return failure(NOT_EXIST, "The vaultingRequestId does not exist.")
    return Answer(inquiry_response(session), "S", "SUCCESS")


OPERATIONS: Final[Mapping[str, Operation]] = {
    "createVaultingSession": create_vaulting_session,
    "inquireVaulting": inquire_vaulting,
}
