"""The callers file is reloaded while the service runs, and a broken edit changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vault_service.grpc_api.callers import CallersFileError
from vault_service.grpc_api.token_file import TokenFile
from vault_service.secret import Secret


def write_callers(path: Path, **tokens: str) -> None:
    entries = [
        {
            "name": name,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "scopes": ["vault"],
        }
        for name, token in tokens.items()
    ]
    path.write_text(json.dumps({"callers": entries}))


@pytest.fixture
async def token_file(tmp_path: Path) -> AsyncIterator[TokenFile]:
    path = tmp_path / "callers.json"
    write_callers(path, checkout="t-1")
    watched = TokenFile(path, interval=0.05)
    await watched.start()
    yield watched
    await watched.close()


def names(watched: TokenFile, *tokens: str) -> list[str | None]:
    found = [watched.directory.by_token(Secret(token)) for token in tokens]
    return [None if caller is None else caller.name for caller in found]


async def test_a_missing_or_malformed_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await TokenFile(tmp_path / "absent.json").load()
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(CallersFileError):
        await TokenFile(broken).load()


async def test_changes_are_picked_up_by_polling(tmp_path: Path, token_file: TokenFile) -> None:
    path = tmp_path / "callers.json"
    write_callers(path, checkout="t-1", billing="t-2-longer-so-the-size-changes")
    async with asyncio.timeout(5):
        while names(token_file, "t-2-longer-so-the-size-changes") != ["billing"]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert names(token_file, "t-1") == ["checkout"]


async def test_a_broken_or_removed_file_keeps_the_callers_in_force(
    tmp_path: Path, token_file: TokenFile, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "callers.json"
    path.write_text('{"callers": [')
    assert not await token_file.reload()
    assert names(token_file, "t-1") == ["checkout"]
    assert "previous callers stay in force" in caplog.text
    path.unlink()
    assert not await token_file.reload()
    assert names(token_file, "t-1") == ["checkout"]


async def test_a_secret_mount_symlink_swap_is_seen(tmp_path: Path) -> None:
    """Kubernetes updates a mounted secret by re-pointing a ``..data`` symlink at a new folder;
    the file's own path never changes, only what it resolves to."""
    for version, token in (("v1", "t-1"), ("v2", "t-2")):
        (tmp_path / version).mkdir()
        write_callers(tmp_path / version / "callers.json", checkout=token)
    data = tmp_path / "..data"
    data.symlink_to("v1")
    (tmp_path / "callers.json").symlink_to("..data/callers.json")
    watched = TokenFile(tmp_path / "callers.json")
    await watched.load()
    assert names(watched, "t-1", "t-2") == ["checkout", None]
    staging = tmp_path / "..data_tmp"
    staging.symlink_to("v2")
    os.replace(staging, data)
    assert await watched.reload()
    assert names(watched, "t-1", "t-2") == [None, "checkout"]
    assert not await watched.reload()


async def test_a_pathological_file_neither_stops_polling_nor_keeps_revoked_tokens(
    tmp_path: Path, token_file: TokenFile
) -> None:
    """Regression: a file of 200,000 "[" raised RecursionError in the JSON parser, which ended
    the polling task silently; a later edit revoking a token was then never seen."""
    path = tmp_path / "callers.json"
    path.write_text("[" * 200_000)
    await asyncio.sleep(0.2)
    assert names(token_file, "t-1") == ["checkout"]
    write_callers(path, billing="t-2")
    async with asyncio.timeout(5):
        while names(token_file, "t-1") != [None]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert names(token_file, "t-2") == ["billing"]
