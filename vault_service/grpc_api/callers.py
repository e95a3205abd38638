"""Callers and their scopes, and the directory that maps credentials to them.

The directory is parsed from the token file (``VAULT_AUTH_TOKENS_FILE``)::

    {"callers": [
        {"name": "checkout", "token_sha256": "<64 hex>", "scopes": ["vault"]},
        {"name": "checkout", "token_sha256": "<64 hex>", "scopes": ["vault"]},
        {"name": "ops-console", "scopes": ["admin"]}
    ]}

Only SHA-256 digests of tokens are stored, so the file (a Kubernetes secret, a backup, a log of
a config change) never holds a usable token. Tokens are high-entropy random strings, which is
why a plain digest is enough and no slow password hash is needed. A caller may have several
entries (one per token, to rotate without downtime). An entry without ``token_sha256`` names a
caller that authenticates with a client certificate and gives it scopes. Where a file exists it
is the whole list of callers: a certificate whose name it does not list is refused, so a
certificate from a broad (mesh or company) CA cannot become a token caller of the same name.
Without a file, the client CA alone decides, and certificate callers have the ``vault`` scope.

A token is checked against every entry with :func:`hmac.compare_digest` and without an early
exit, so the time taken does not depend on which entry (if any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from vault_service.domain import ANONYMOUS_OWNER
from vault_service.errors import ConfigurationError
from vault_service.secret import Secret

Scope = Literal["vault", "admin"]
VAULT_SCOPE: Final[Scope] = "vault"
ADMIN_SCOPE: Final[Scope] = "admin"
SCOPES: Final[frozenset[str]] = frozenset({VAULT_SCOPE, ADMIN_SCOPE})
MAX_TOKEN_LENGTH: Final = 4096
MAX_NAME_LENGTH: Final = 200

_NAME = re.compile(rf"[\x21-\x7e]{{1,{MAX_NAME_LENGTH}}}")  # printable ASCII, no spaces
_DIGEST = re.compile(r"[0-9a-f]{64}")


class CallersFileError(ConfigurationError):
    """The token file is malformed; the message says where, never what a digest is."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: ``name`` owns the sessions it creates."""

    name: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class _TokenEntry:
    digest: bytes
    caller: Caller


class CallerDirectory:
    """The callers of one version of the token file."""

    __slots__ = ("_certificate_scopes", "_listed_only", "_tokens")

    def __init__(
        self,
        tokens: Iterable[_TokenEntry],
        certificate_scopes: Mapping[str, frozenset[str]],
        *,
        listed_only: bool,
    ) -> None:
        self._tokens = tuple(tokens)
        self._certificate_scopes = dict(certificate_scopes)
        self._listed_only = listed_only

    def __repr__(self) -> str:
        return f"CallerDirectory(tokens={len(self._tokens)})"

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    def by_token(self, token: Secret) -> Caller | None:
        """The caller whose token this is, compared against every entry in constant time."""
        candidate = hashlib.sha256(token.reveal().encode()).digest()
        found: Caller | None = None
        for entry in self._tokens:
            if hmac.compare_digest(entry.digest, candidate):
                found = entry.caller
        return found

    def by_certificate(self, name: str) -> Caller | None:
        """The caller a verified client certificate names, with the scopes the file gives it;
        ``None`` for a name the file does not list (see the module docstring)."""
        scopes = self._certificate_scopes.get(name)
        if scopes is None:
            return None if self._listed_only else Caller(name, frozenset({VAULT_SCOPE}))
        return Caller(name, scopes)


NO_FILE: Final = CallerDirectory((), {}, listed_only=False)
"""The callers when there is no token file: any certificate the client CA signed."""


def is_caller_name(name: str) -> bool:
    """Whether ``name`` may name a caller: printable ASCII without spaces, and not the owner
    of the sessions created while no identity source was configured (which no caller may
    inherit)."""
    return bool(_NAME.fullmatch(name)) and name != ANONYMOUS_OWNER


def parse_callers(raw: bytes) -> CallerDirectory:
    """The directory described by a token file's bytes; :class:`CallersFileError` if malformed."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CallersFileError(f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict) or not isinstance(document.get("callers"), list):
        raise CallersFileError('expected an object {"callers": [...]}')
    unknown = set(document) - {"callers"}
    if unknown:
        raise CallersFileError(f"unknown top-level keys {sorted(unknown)}")
    tokens: list[_TokenEntry] = []
    seen_digests: set[str] = set()
    certificate_scopes: dict[str, frozenset[str]] = {}
    for index, entry in enumerate(document["callers"]):
        where = f"callers[{index}]"
        name, digest, scopes = _entry(entry, where)
        if digest is None:
            if name in certificate_scopes:
                raise CallersFileError(f"{where}: a second certificate entry for {name!r}")
            certificate_scopes[name] = scopes
            continue
        if digest in seen_digests:
            raise CallersFileError(f"{where}: this token_sha256 is already listed")
        seen_digests.add(digest)
        tokens.append(_TokenEntry(bytes.fromhex(digest), Caller(name, scopes)))
    return CallerDirectory(tokens, certificate_scopes, listed_only=True)


def _entry(entry: object, where: str) -> tuple[str, str | None, frozenset[str]]:
    if not isinstance(entry, dict):
        raise CallersFileError(f"{where}: expected an object")
    unknown = set(entry) - {"name", "token_sha256", "scopes"}
    if unknown:
        raise CallersFileError(f"{where}: unknown keys {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not is_caller_name(name):
        raise CallersFileError(
            f"{where}.name: 1 to {MAX_NAME_LENGTH} printable ASCII characters without spaces,"
            f" not {ANONYMOUS_OWNER!r}"
        )
    digest = entry.get("token_sha256")
    if digest is not None and (not isinstance(digest, str) or not _DIGEST.fullmatch(digest)):
        raise CallersFileError(f"{where}.token_sha256: 64 lowercase hex digits")
    scopes = entry.get("scopes")
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(scope, str) and scope in SCOPES for scope in scopes)
    ):
        raise CallersFileError(f"{where}.scopes: a non-empty list of {sorted(SCOPES)}")
    return name, digest, frozenset(scopes)
