"""A faithful local Antom: the vaulting APIs, the buyer's card form, notifications, faults.

Start it in-process with ``async with EmulatorServer(EmulatorConfig(...)) as emulator:`` and
point an Antom client at ``emulator.base_url``; or run ``vault-service emulator``. It imports
only the signing and key code of :mod:`vault_service.antom` and builds Antom's JSON by hand, so
it stays faithful to the wire rather than to our client's models.
"""

from vault_service.emulator.cards import TEST_CARDS as TEST_CARDS
from vault_service.emulator.config import EmulatorConfig as EmulatorConfig
from vault_service.emulator.faults import FaultPlan as FaultPlan
from vault_service.emulator.notifier import ACKNOWLEDGEMENT as ACKNOWLEDGEMENT
from vault_service.emulator.notifier import RETRY_INTERVALS as RETRY_INTERVALS
from vault_service.emulator.server import EmulatorServer as EmulatorServer
