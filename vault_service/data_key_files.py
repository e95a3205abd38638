"""The card-data key file (``VAULT_DATA_KEY_FILE``): loaded at start, re-read on SIGHUP.

The key ring it holds is shared by every store of the process, which seal and open card data
with it; ``serve`` and ``rotate-data-key`` both load it from here, and a reload swaps the keys
into the ring in place, so every store sees the new keys at once.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Final

from vault_service.store import DataKeyFileError, DataKeyRing, read_data_key_file

log = logging.getLogger(__name__)

DATA_KEY_SETTING: Final = "VAULT_DATA_KEY_FILE"


async def load_data_keys(path: Path) -> DataKeyRing:
    """The card-data key ring in ``path``, the file ``VAULT_DATA_KEY_FILE`` names; a bad file
    raises :class:`DataKeyFileError` naming that setting."""
    try:
        return await asyncio.to_thread(read_data_key_file, path)
    except DataKeyFileError as exc:
        raise DataKeyFileError(f"{DATA_KEY_SETTING}: {exc}") from None


async def reload_data_keys(ring: DataKeyRing, path: Path) -> bool:
    """Re-read the data key file (on SIGHUP) and swap its keys into ``ring``; a file that
    cannot be read or parsed leaves the old keys in force and says so in one line (the reason
    names the file and the problem, never key material). Returns whether the keys were
    swapped."""
    try:
        new = await load_data_keys(path)
    except DataKeyFileError as exc:
        log.error(  # noqa: TRY400 - the message says it all; a traceback adds nothing
            "data keys not reloaded; the previous key ring stays in use",
            extra={"reason": str(exc)},
        )
        return False
    ring.swap(new)
    log.info("data keys reloaded", extra={"key_id": new.active_key_id})
    return True
