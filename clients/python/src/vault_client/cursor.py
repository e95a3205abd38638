"""Where ``results()`` keeps its place: a cursor store, so a restarted consumer resumes
exactly where it stopped.

A store is anything with ``load() -> str | None`` and ``save(token: str) -> None``. Use
:class:`FileCursorStore` (the default kind: one small file, replaced atomically), or
:class:`CallbackCursorStore` to keep the token elsewhere, e.g. in the same database
transaction as the consumer's own writes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeAlias

PathLike: TypeAlias = str | os.PathLike[str]


class CursorStore(Protocol):
    """Persists the resume token of the last event the consumer finished with."""

    def load(self) -> str | None:
        """The saved token, or ``None`` when nothing was saved yet (start from now)."""

    def save(self, token: str) -> None:
        """Persist ``token`` durably before returning."""


class CallbackCursorStore:
    """A cursor store made of two callables."""

    def __init__(self, load: Callable[[], str | None], save: Callable[[str], None]) -> None:
        self._load = load
        self._save = save

    def load(self) -> str | None:
        return self._load()

    def save(self, token: str) -> None:
        self._save(token)


class MemoryCursorStore:
    """Keeps the token in memory only: resumes across reconnects, not across restarts."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def load(self) -> str | None:
        return self.token

    def save(self, token: str) -> None:
        self.token = token


class FileCursorStore:
    """The token in one file, replaced atomically: written to a temporary file in the same
    directory, flushed to disk (fsync), renamed over the old one, and the directory synced, so
    a crash at any moment leaves either the old token or the new one, never a torn file."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    def load(self) -> str | None:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return token or None

    def save(self, token: str) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(token)
                file.flush()
                os.fsync(file.fileno())
            os.replace(staging, self.path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        _sync_directory(directory)

    def clear(self) -> None:
        """Forget the token (after a :class:`~vault_client.errors.ResumeTokenRejectedError`)."""
        self.path.unlink(missing_ok=True)
        _sync_directory(self.path.parent)


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening one)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
