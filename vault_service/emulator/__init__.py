"""A faithful local Antom: the vaulting APIs, the buyer's card form, notifications, faults.

Start it in-process with ``async with EmulatorServer(EmulatorConfig(...)) as emulator:`` and
point an Antom client at ``emulator.base_url``; or run ``vault-service emulator``, whose
arguments (:func:`configure_parser`, :data:`DESCRIPTION`, :data:`EPILOG`) and run
(:func:`run`) live here too. It imports only the signing and key code of
:mod:`vault_service.antom` and builds Antom's JSON by hand, so it stays faithful to the wire
rather than to our client's models.

This is the package's public face: code outside ``vault_service.emulator`` imports from here,
never from its modules (tests of the package's internals aside).
"""

from vault_service.emulator.cards import TEST_CARDS
from vault_service.emulator.cli import DESCRIPTION, EPILOG, configure_parser, run
from vault_service.emulator.config import EmulatorConfig
from vault_service.emulator.faults import FaultPlan
from vault_service.emulator.notifier import ACKNOWLEDGEMENT, RETRY_INTERVALS, Outcome
from vault_service.emulator.server import EmulatorServer

__all__ = [
    "ACKNOWLEDGEMENT",
    "DESCRIPTION",
    "EPILOG",
    "RETRY_INTERVALS",
    "TEST_CARDS",
    "EmulatorConfig",
    "EmulatorServer",
    "FaultPlan",
    "Outcome",
    "configure_parser",
    "run",
]
