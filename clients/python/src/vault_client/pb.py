"""The contract's messages and enums (``vault.v1``), generated from protos/ by
scripts/gen-proto: ``pb.VaultingResult``, ``pb.VAULTING_STATUS_SUCCEEDED``, ``pb.Env``, ..."""

from vault_client._proto.vault.v1.vault_service_pb2 import *  # noqa: F403
