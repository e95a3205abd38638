"""The emulator's test cards the replica tests submit, and the status each one ends in."""

from __future__ import annotations

from typing import Final

from vault_service._proto.vault.v1 import vault_service_pb2 as pb

VISA: Final = "4111111111111111"
DECLINED: Final = "4000000000000002"
THREE_DS: Final = "4000000000003220"

FINAL_STATUS: Final = {
    VISA: pb.VAULTING_STATUS_SUCCEEDED,
    DECLINED: pb.VAULTING_STATUS_FAILED,
    THREE_DS: pb.VAULTING_STATUS_SUCCEEDED,
}
