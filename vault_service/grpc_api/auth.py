"""Who is calling: bearer tokens and client certificates, mapped to a :class:`Caller`.

Both sources may be configured at once. A call that carries an ``authorization`` header is
judged by it alone (a bad token is refused even on a connection with a good certificate, so a
caller never silently runs as someone else); otherwise the verified client certificate names the
caller. With neither source configured the service runs in its loopback-only (or explicitly
insecure) mode and every call is the one anonymous caller.

A certificate names its caller by, in order: the first URI subject alternative name (a SPIFFE id
such as ``spiffe://cluster.local/ns/shop/sa/checkout``), the first DNS subject alternative name,
then the subject's common name. The TLS layer has already verified the chain against
``VAULT_GRPC_TLS_CLIENT_CA_FILE`` before any of this runs.

Refusals say what kind of credential is wrong, never which part of it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import grpc

from vault_service.auth.callers import VAULT_SCOPE, Caller, CallerDirectory
from vault_service.domain import ANONYMOUS_OWNER
from vault_service.errors import UnauthenticatedError
from vault_service.grpc_api.errors import Context
from vault_service.secret import Secret

AUTHORIZATION: Final = "authorization"
ANONYMOUS: Final = Caller(ANONYMOUS_OWNER, frozenset({VAULT_SCOPE}))
HEALTH_PREFIX: Final = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES: Final = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([\x21-\x7e]{1,4096})")
_URI_SAN = re.compile(rb"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)

Directory = Callable[[], CallerDirectory]
"""The callers in force now (the token file may be reloaded between two calls)."""


class Authenticator:
    """Maps a call to its caller, or raises :class:`UnauthenticatedError`."""

    def __init__(self, *, tokens: Directory | None, certificates: Directory | None) -> None:
        self._tokens = tokens
        self._certificates = certificates

    @property
    def anonymous(self) -> bool:
        """Whether no identity source is configured (every call is the anonymous caller)."""
        return self._tokens is None and self._certificates is None

    def caller(self, context: Context) -> Caller:
        return self.caller_of(context.invocation_metadata() or (), context.auth_context())

    def caller_of(
        self, metadata: Iterable[tuple[str, str | bytes]], auth_context: Mapping[str, Any]
    ) -> Caller:
        headers = [value for key, value in metadata if key == AUTHORIZATION]
        if len(headers) > 1:
            raise UnauthenticatedError("more than one authorization header")
        if headers:
            return self._by_token(headers[0])
        if self._certificates is not None:
            name = certificate_name(auth_context)
            if name is not None:
                return self._certificates().by_certificate(name)
        if self.anonymous:
            return ANONYMOUS
        raise UnauthenticatedError("credentials required: a bearer token or a client certificate")

    def _by_token(self, header: str | bytes) -> Caller:
        if self._tokens is None:
            raise UnauthenticatedError("bearer tokens are not accepted by this server")
        match = _BEARER.fullmatch(header) if isinstance(header, str) else None
        if match is None:
            raise UnauthenticatedError('the authorization header must be "Bearer <token>"')
        caller = self._tokens().by_token(Secret(match.group(1)))
        if caller is None:
            raise UnauthenticatedError("the bearer token is not valid")
        return caller


def certificate_name(auth_context: Mapping[str, Any]) -> str | None:
    """The caller name a verified peer certificate gives (see the module docstring)."""
    sans = [_text(value) for value in auth_context.get("x509_subject_alternative_name", ())]
    for san in sans:
        if _URI_SAN.match(san.encode()):
            return san
    for san in sans:
        if san and "://" not in san:
            return san
    for common_name in auth_context.get("x509_common_name", ()):
        text = _text(common_name)
        if text:
            return text
    return None


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class OpenServicesInterceptor(grpc.aio.ServerInterceptor):
    """Requires a caller on health and reflection when they are configured as not open.

    VaultService methods authenticate inside the servicer (they need the caller, not just a
    yes); this interceptor only guards the standard services, which know nothing of callers.
    """

    def __init__(
        self, authenticator: Authenticator, *, open_health: bool, open_reflection: bool
    ) -> None:
        self._authenticator = authenticator
        self._closed_prefixes = (() if open_health else (HEALTH_PREFIX,)) + (
            () if open_reflection else REFLECTION_PREFIXES
        )

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(self._closed_prefixes):
            return handler
        return _guarded(handler, self._authenticator)


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], authenticator: Authenticator
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with an authentication check before its behaviour runs."""

    async def check(context: Context) -> None:
        try:
            authenticator.caller(context)
        except UnauthenticatedError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

    serializers: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _checked(handler.unary_unary, check), **serializers
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _checked(handler.unary_stream, check), **serializers
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _checked(handler.stream_stream, check), **serializers
        )
    return grpc.stream_unary_rpc_method_handler(
        _checked(handler.stream_unary, check), **serializers
    )


def _checked(
    behavior: Callable[..., Any] | None, check: Callable[[Context], Awaitable[None]]
) -> Callable[[Any, Context], Any]:
    """``behavior`` behind ``check``, keeping its kind: grpc.aio serves an async generator by
    sending what it yields and a coroutine by what it writes or returns, so a wrapper of the
    wrong kind would break the standard services (health's Watch writes, reflection yields)."""
    if behavior is None:
        raise TypeError("a method handler without a behaviour")
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            await check(context)
            async for response in behavior(request, context):
                yield response

        return generator

    async def coroutine(request: Any, context: Context) -> Any:
        await check(context)
        return await behavior(request, context)

    return coroutine
