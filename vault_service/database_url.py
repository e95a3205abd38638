"""The database URL (``VAULT_DATABASE_URL``), which names the backend by its scheme and may carry
the database password.

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: the embedded SQLite
  backend (one replica).
* ``postgresql://user:password@host:port/database?sslmode=...`` (or ``postgres://``): the
  PostgreSQL backend, shared by any number of replicas; the URL is passed to asyncpg as is.

Like :class:`~vault_service.secret.Secret`, a :class:`DatabaseURL` keeps its secret out of
``repr`` and ``str``, so settings, log lines and error messages that show one never show the
password; they show :func:`redact_dsn`'s form instead. The code that connects asks for the real
location by name with :meth:`DatabaseURL.reveal`.
"""

from __future__ import annotations

from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from vault_service.secret import Secret

SQLITE_PREFIX: Final = "sqlite:///"
POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")

Backend = Literal["sqlite", "postgresql"]


class DatabaseURL:
    """A parsed database URL: which backend, and where (a file path or a DSN, kept secret)."""

    __slots__ = ("_location", "backend")

    def __init__(self, backend: Backend, location: str) -> None:
        self.backend: Final[Backend] = backend
        self._location = Secret(location)

    def reveal(self) -> str:
        """Where to connect: the SQLite file's path, or the PostgreSQL DSN with its password."""
        return self._location.reveal()

    def __str__(self) -> str:
        """The URL for messages and logs, without a password."""
        if self.backend == "sqlite":
            return f"{SQLITE_PREFIX}{self.reveal()}"
        return redact_dsn(self.reveal())

    def __repr__(self) -> str:
        return f"DatabaseURL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatabaseURL):
            return NotImplemented
        return self.backend == other.backend and self._location == other._location

    def __hash__(self) -> int:
        raise TypeError("database URLs are not hashable: their password is a secret")

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("database URLs are not picklable: their password is a secret")


def parse_database_url(url: str) -> DatabaseURL:
    """``url`` as a backend and a location; :class:`ValueError` for anything else."""
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        return DatabaseURL("sqlite", url[len(SQLITE_PREFIX) :])
    if url.startswith(POSTGRES_SCHEMES) and len(url) > len(url.partition("://")[0]) + 3:
        return DatabaseURL("postgresql", url)
    shown = redact_dsn(url) if "://" in url else url
    raise ValueError(
        f"unsupported database URL {shown!r}: expected sqlite:///PATH or "
        "postgresql://[user[:password]@]host[:port]/database"
    )


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password (in the user info or a ``password`` query parameter), for
    messages and logs."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        user_info, _, hosts = netloc.rpartition("@")
        netloc = f"{user_info.partition(':')[0]}@{hosts}"
    query = urlencode(
        [
            (key, "redacted" if key.lower() == "password" else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
