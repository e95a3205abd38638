"""The token file, kept current while the service runs.

Operators add and revoke callers by editing ``VAULT_AUTH_TOKENS_FILE`` (in Kubernetes, by
updating the secret it is mounted from), never by restarting: a revoked token must stop working
within seconds, and a restart would cut every open stream. The file is polled (a ``stat`` every
``interval`` seconds, in a thread) rather than watched with inotify, because secret mounts
change by swapping a symlink, which inotify on the file itself does not see.

A change that does not parse is logged and ignored: the previous callers stay in force, so a
typo in the file can neither lock everybody out nor let anybody in.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Final

from vault_service.grpc_api.callers import CallerDirectory, CallersFileError, parse_callers

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL: Final = 1.0

_Fingerprint = tuple[int, int, int, int]


class TokenFile:
    """The current :class:`CallerDirectory` of one file, reloaded when the file changes."""

    def __init__(self, path: Path, *, interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self._path = path
        self._interval = interval
        self._directory: CallerDirectory | None = None
        self._fingerprint: _Fingerprint | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def directory(self) -> CallerDirectory:
        if self._directory is None:
            raise RuntimeError("TokenFile.load() has not run")
        return self._directory

    async def load(self) -> None:
        """Read the file for the first time; a missing or malformed file raises (the service
        must not start with callers it cannot know)."""
        read = await asyncio.to_thread(self._read_if_changed)
        assert read is not None, "nothing was read before"
        self._fingerprint, self._directory = read

    async def start(self) -> None:
        """:meth:`load`, then keep the directory current until :meth:`close`."""
        await self.load()
        self._task = asyncio.create_task(self._poll(), name="token-file-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def reload(self) -> bool:
        """Re-read the file if it changed since the last read; whether the callers changed."""
        try:
            read = await asyncio.to_thread(self._read_if_changed)
        except (OSError, CallersFileError) as exc:
            log.error(  # noqa: TRY400 - the reason says it all; a traceback adds nothing
                "token file not reloaded; the previous callers stay in force",
                extra={"reason": describe(exc)},
            )
            return False
        if read is None:
            return False
        self._fingerprint, directory = read
        self._directory = directory
        log.info("token file reloaded", extra={"outcome": f"{directory.token_count} tokens"})
        return True

    async def _poll(self) -> None:
        """Never ends on an error: a poller that died would leave revoked tokens working."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.reload()
            except Exception:
                log.exception("token file check failed; the previous callers stay in force")

    def _read_if_changed(self) -> tuple[_Fingerprint, CallerDirectory] | None:
        """The file's callers if it changed since the last read (one thread hop, one stat)."""
        fingerprint = _fingerprint(self._path)
        if fingerprint == self._fingerprint:
            return None
        return fingerprint, parse_callers(self._path.read_bytes())


def _fingerprint(path: Path) -> _Fingerprint:
    """What changes when the file is rewritten or its secret-mount symlink is swapped."""
    status = os.stat(path)
    return (status.st_ino, status.st_dev, status.st_mtime_ns, status.st_size)


def describe(exc: OSError | CallersFileError) -> str:
    """Why the file could not be used, in words fit for a log line or a start-up error."""
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror}"
    return f"malformed: {exc}"
