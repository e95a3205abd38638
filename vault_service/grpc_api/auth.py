"""Who is calling: bearer tokens and client certificates, mapped to a :class:`Caller`.

Both sources may be configured at once. A call that carries an ``authorization`` header is
judged by it alone (a bad token is refused even on a connection with a good certificate, so a
caller never silently runs as someone else); otherwise the verified client certificate names the
caller. With neither source configured the service runs in its loopback-only (or explicitly
insecure) mode and every call is the one anonymous caller.

A certificate names its caller by, in order: the first URI subject alternative name (a SPIFFE id
such as ``spiffe://cluster.local/ns/shop/sa/checkout``), the first DNS subject alternative name,
then the subject's common name. The TLS layer has already verified the chain against
``VAULT_GRPC_TLS_CLIENT_CA_FILE`` before any of this runs, as that file was when the connection
opened; every call on a mutual-TLS port is also checked against the file as it is now (a
reloaded CA), whichever credential names its caller, since the handshake would now refuse it.

Refusals say what kind of credential is wrong, never which part of it; their wording avoids
the shapes the log redaction scrubs (a scheme word followed by a space and a value).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, Final

import grpc

from vault_service.domain import ANONYMOUS_OWNER
from vault_service.errors import UnauthenticatedError
from vault_service.grpc_api.callers import (
    MAX_TOKEN_LENGTH,
    VAULT_SCOPE,
    Caller,
    CallerDirectory,
    is_caller_name,
)
from vault_service.grpc_api.client_trust import ClientTrust
from vault_service.grpc_api.errors import Context, abort
from vault_service.grpc_api.handlers import Handler, preceded
from vault_service.secret import Secret

AUTHORIZATION: Final = "authorization"
ANONYMOUS: Final = Caller(ANONYMOUS_OWNER, frozenset({VAULT_SCOPE}))
HEALTH_PREFIX: Final = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES: Final = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
# A token is RFC 6750's b64token: no quote, comma or semicolon that could cut it short where a
# log line's redaction looks for it.
_BEARER = re.compile(rf"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]{{1,{MAX_TOKEN_LENGTH}}}=*)")

_AUTHENTICATED: ContextVar[tuple[Context, object, Caller] | None] = ContextVar(
    "vault_authenticated", default=None
)
"""The last call authenticated in this task (grpc.aio runs each call in a task of its own)."""

Directory = Callable[[], CallerDirectory]
"""The callers in force now (the token file may be reloaded between two calls)."""

Trust = Callable[[], ClientTrust | None]
"""The client CA bundle in force now (reloaded on SIGHUP)."""

_PEER_CHAIN: Final = "x509_pem_cert_chain"
_PEER_CERTIFICATE: Final = "x509_pem_cert"


class Authenticator:
    """Maps a call to its caller, or raises :class:`UnauthenticatedError`."""

    def __init__(
        self,
        *,
        tokens: Directory | None,
        certificates: Directory | None,
        trust: Trust | None = None,
    ) -> None:
        self._tokens = tokens
        self._certificates = certificates
        self._trust = trust
        self._version: tuple[CallerDirectory | None, ClientTrust | None] = (None, None)

    def version(self) -> object:
        """The callers in force, by identity: a new object after every reload of the token
        file or of the client CA."""
        tokens = None if self._tokens is None else self._tokens()
        trust = None if self._trust is None else self._trust()
        if self._version[0] is not tokens or self._version[1] is not trust:
            self._version = (tokens, trust)
        return self._version

    @property
    def anonymous(self) -> bool:
        """Whether no identity source is configured (every call is the anonymous caller)."""
        return self._tokens is None and self._certificates is None

    def caller(self, context: Context) -> Caller:
        """The caller of this call. The interceptor and then the method ask for each call, so
        the answer is kept for the call (the same context) until the callers change."""
        version = self.version()
        seen = _AUTHENTICATED.get()
        if seen is not None and seen[0] is context and seen[1] is version:
            return seen[2]
        found = self.caller_of(context.invocation_metadata() or (), context.auth_context())
        _AUTHENTICATED.set((context, version, found))
        return found

    def caller_of(
        self, metadata: Iterable[tuple[str, str | bytes]], auth_context: Mapping[str, Any]
    ) -> Caller:
        trust = None if self._trust is None else self._trust()
        if trust is not None and not trust.trusts(_peer_chain(auth_context)):
            raise UnauthenticatedError(
                "the client certificate is not trusted by the client CA now in force"
            )
        headers = [value for key, value in metadata if key == AUTHORIZATION]
        if len(headers) > 1:
            raise UnauthenticatedError("more than one authorization header")
        if headers:
            return self._by_token(headers[0])
        if self._certificates is not None:
            name = certificate_name(auth_context)
            if name is not None:
                caller = self._certificates().by_certificate(name)
                if caller is None:
                    raise UnauthenticatedError(
                        "the client certificate names no caller of the callers file"
                    )
                return caller
        if self.anonymous:
            return ANONYMOUS
        raise UnauthenticatedError("credentials required: a token or a client certificate")

    def _by_token(self, header: str | bytes) -> Caller:
        if self._tokens is None:
            raise UnauthenticatedError(
                "this server does not accept tokens (it has no callers file)"
            )
        match = _BEARER.fullmatch(header) if isinstance(header, str) else None
        if match is None:
            raise UnauthenticatedError(
                "the authorization header must be the word Bearer, a space, then the token"
            )
        caller = self._tokens().by_token(Secret(match.group(1)))
        if caller is None:
            raise UnauthenticatedError("the token is not valid")
        return caller


def _peer_chain(auth_context: Mapping[str, Any]) -> bytes:
    """The peer's certificate, then the ones it sent with it, as PEM (gRPC reports the two
    apart); empty without a certificate."""
    return b"".join(
        value
        for prop in (_PEER_CERTIFICATE, _PEER_CHAIN)
        for value in auth_context.get(prop, ())[:1]
        if isinstance(value, bytes)
    )


def certificate_name(auth_context: Mapping[str, Any]) -> str | None:
    """The caller name a verified peer certificate gives (see the module docstring), or
    ``None`` when the name it gives is not a valid caller name (the call is then refused,
    never mapped to a less specific name further down the list)."""
    for prop in ("peer_uri", "peer_dns", "x509_common_name"):
        values = auth_context.get(prop, ())
        if values:
            return _caller_name(values[0])
    return None


def _caller_name(value: object) -> str | None:
    try:
        name = value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        return None
    return name if is_caller_name(name) else None


class AuthenticationInterceptor(grpc.aio.ServerInterceptor):
    """Requires a caller on every method but the open ones (health and reflection, unless
    configured closed): closed by default, so a method added later is never open by mistake.

    It runs before the request is even decoded, so a stranger learns nothing from our answers
    to malformed requests. VaultService methods then ask the authenticator for the caller
    (who owns what), which it has kept from this check.
    """

    def __init__(
        self, authenticator: Authenticator, *, open_health: bool, open_reflection: bool
    ) -> None:
        self._authenticator = authenticator
        self._open_prefixes = ((HEALTH_PREFIX,) if open_health else ()) + (
            REFLECTION_PREFIXES if open_reflection else ()
        )
        self._guarded: dict[str, Handler] = {}  # built once per method, not per call

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(self._open_prefixes):
            return handler
        guarded = self._guarded.get(method)
        if guarded is None:
            guarded = self._guarded[method] = _guarded(handler, self._authenticator, method)
        return guarded


def _guarded(handler: Handler, authenticator: Authenticator, method: str) -> Handler:
    """``handler`` with an authentication check before its behaviour runs."""

    async def check(request: Any, context: Context) -> Any:
        try:
            authenticator.caller(context)
        except UnauthenticatedError as exc:
            await abort(context, exc, method)
        return request

    return preceded(handler, check)
