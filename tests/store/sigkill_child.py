"""Child process of the SIGKILL durability test (``python -m tests.store.sigkill_child``).

Arguments: backend name, database location, data key file, vaulting request id. It applies a
success to the record, prints ``committed <event id>`` once ``apply`` has returned, then waits
to be killed without ever closing the store.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.store.backends import BACKEND_AT
from tests.store.strategies import observe
from vault_service.domain import VaultingStatus
from vault_service.store.data_keys import DataKeyRing, read_data_key_file


async def main(
    backend_name: str, location: str, key_file: Path, keys: DataKeyRing, vaulting_request_id: str
) -> None:
    store = await BACKEND_AT[backend_name](location, key_file, keys).open()
    event = await store.apply(vaulting_request_id, observe(VaultingStatus.SUCCEEDED))
    assert event is not None
    print("committed", event.event_id, flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    name, location, key_path, request_id = sys.argv[1:5]
    asyncio.run(
        main(name, location, Path(key_path), read_data_key_file(Path(key_path)), request_id)
    )
