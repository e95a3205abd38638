"""The gRPC edge maps the error root's categories: what a caller is told for an error no RPC
test reaches on purpose."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2

from vault_service.errors import InternalError, UnavailableError
from vault_service.grpc_api.errors import rich_status
from vault_service.store import DataKeyFileError


def test_a_configuration_error_is_unavailable_without_its_operator_text() -> None:
    """Guards the configuration category: the caller cannot fix our settings, so it is told
    to retry (fixing them fixes the call), in a fixed text; the error's own words (file
    paths, setting values) are for the operator only."""
    status = rich_status(DataKeyFileError("VAULT_DATA_KEY_FILE: /etc/vault/keys.json: bad"))
    assert status.code == code_pb2.UNAVAILABLE
    assert status.message == "the service is not configured to answer this call; retry later"
    [packed] = status.details
    retry = error_details_pb2.RetryInfo()
    assert packed.Unpack(retry)
    assert retry.retry_delay == Duration(seconds=1)


def test_an_unavailable_error_never_echoes_its_text() -> None:
    """Guards the unavailable category's default: a driver's text may name hosts."""
    status = rich_status(UnavailableError("connection to db.internal:5432 refused"))
    assert status.code == code_pb2.UNAVAILABLE
    assert status.message == "the service is unavailable; retry later"


def test_an_internal_error_is_internal_without_its_text() -> None:
    """Guards the internal category: stored data we cannot read is our fault, told in a
    generic text (the details go to the log)."""
    status = rich_status(InternalError("row 17 of vaulting_records does not decode"))
    assert (status.code, status.message, len(status.details)) == (
        code_pb2.INTERNAL,
        "internal error",
        0,
    )
