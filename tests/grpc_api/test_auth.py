"""How a call's metadata and verified peer certificate become its caller."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import grpc
import pytest

from vault_service.errors import UnauthenticatedError
from vault_service.grpc_api.auth import (
    ANONYMOUS,
    AuthenticationInterceptor,
    Authenticator,
    certificate_name,
)
from vault_service.grpc_api.callers import NO_FILE, CallerDirectory, parse_callers

TOKEN = "tok-checkout-0123456789"
DIRECTORY = parse_callers(
    json.dumps(
        {
            "callers": [
                {
                    "name": "checkout",
                    "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                    "scopes": ["vault"],
                },
                {"name": "spiffe://c/ns/ops/sa/console", "scopes": ["admin"]},
            ]
        }
    ).encode()
)


def directory() -> CallerDirectory:
    return DIRECTORY


def certificate(
    *, uris: tuple[bytes, ...] = (), dns: tuple[bytes, ...] = (), cn: bytes | None = None
) -> dict[str, Any]:
    """An auth context as gRPC builds it for a verified peer: every SAN in one list, and the
    typed lists the mapping reads."""
    context: dict[str, Any] = {"transport_security_type": [b"ssl"]}
    if uris or dns:
        context["x509_subject_alternative_name"] = [b"10.1.2.3", b"ops@example.com", *uris, *dns]
        context["peer_ip"] = [b"10.1.2.3"]
        context["peer_email"] = [b"ops@example.com"]
    if uris:
        context["peer_uri"] = list(uris)
    if dns:
        context["peer_dns"] = list(dns)
    if cn is not None:
        context["x509_common_name"] = [cn]
    return context


BOTH = Authenticator(tokens=directory, certificates=directory)
TOKENS_ONLY = Authenticator(tokens=directory, certificates=None)
CERTIFICATES_ONLY = Authenticator(tokens=None, certificates=lambda: NO_FILE)
NEITHER = Authenticator(tokens=None, certificates=None)


def test_a_token_names_its_caller_over_any_certificate() -> None:
    caller = BOTH.caller_of([("authorization", f"Bearer {TOKEN}")], certificate(cn=b"billing"))
    assert caller.name == "checkout"
    assert TOKENS_ONLY.caller_of([("authorization", f"bearer  {TOKEN}")], {}).name == "checkout"


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([], id="none"),
        pytest.param([("authorization", TOKEN)], id="no-scheme"),
        pytest.param([("authorization", f"Bearer {TOKEN} extra")], id="trailing"),
        pytest.param([("authorization", "Bearer ")], id="empty"),
        pytest.param([("authorization", "Bearer tok,en")], id="not-b64token"),
        pytest.param([("authorization", "Bearer wrong")], id="unknown"),
        pytest.param([("authorization", f"Bearer {TOKEN}")] * 2, id="twice"),
    ],
)
def test_bad_or_missing_tokens_are_unauthenticated(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(UnauthenticatedError) as refused:
        TOKENS_ONLY.caller_of(metadata, {})
    assert TOKEN not in str(refused.value)


def test_a_bad_token_is_refused_even_with_a_good_certificate() -> None:
    """A caller must never silently run as its certificate's identity when its token is bad."""
    with pytest.raises(UnauthenticatedError):
        BOTH.caller_of([("authorization", "Bearer wrong")], certificate(cn=b"billing"))


def test_tokens_are_refused_where_only_certificates_are_configured() -> None:
    with pytest.raises(UnauthenticatedError, match="does not accept tokens"):
        CERTIFICATES_ONLY.caller_of([("authorization", f"Bearer {TOKEN}")], certificate(cn=b"a"))


def test_certificate_callers_take_scopes_from_the_file() -> None:
    admin = BOTH.caller_of([], certificate(uris=(b"spiffe://c/ns/ops/sa/console",)))
    assert admin.is_admin
    with pytest.raises(UnauthenticatedError, match="names no caller"):
        BOTH.caller_of([], certificate(cn=b"billing"))
    assert CERTIFICATES_ONLY.caller_of([], certificate(cn=b"billing")).scopes == {"vault"}


@pytest.mark.parametrize(
    ("context", "name"),
    [
        pytest.param(
            certificate(uris=(b"spiffe://c/sa/x",), dns=(b"svc.example",), cn=b"cn"),
            "spiffe://c/sa/x",
            id="uri",
        ),
        pytest.param(certificate(dns=(b"svc.example",), cn=b"cn"), "svc.example", id="dns"),
        pytest.param(certificate(cn=b"cn"), "cn", id="common-name"),
        pytest.param(certificate(), None, id="nothing"),
        pytest.param({}, None, id="plaintext"),
        # Regression: the first SAN of any type was taken, so an IP or e-mail SAN named the
        # caller; those are never names here.
        pytest.param(
            {"x509_subject_alternative_name": [b"10.1.2.3"], "peer_ip": [b"10.1.2.3"]},
            None,
            id="ip-only",
        ),
        # An invalid name refuses the call rather than falling back to a weaker one.
        pytest.param(certificate(dns=(b"has space",), cn=b"cn"), None, id="invalid-dns"),
        pytest.param(certificate(cn=b"\xff\xfe"), None, id="not-utf8"),
        pytest.param(certificate(cn=b"anonymous"), None, id="reserved"),
    ],
)
def test_certificate_name_precedence(context: dict[str, Any], name: str | None) -> None:
    assert certificate_name(context) == name


def test_without_identity_sources_every_call_is_anonymous() -> None:
    assert NEITHER.anonymous
    assert NEITHER.caller_of([], {}) == ANONYMOUS
    with pytest.raises(UnauthenticatedError):
        NEITHER.caller_of([("authorization", "Bearer x")], {})
    with pytest.raises(UnauthenticatedError, match="credentials required"):
        CERTIFICATES_ONLY.caller_of([], {})


async def test_every_method_is_closed_unless_listed_open() -> None:
    """A method nobody thought of (here a generic echo) still needs a caller: authentication
    is closed by default, not a step each method must remember."""

    async def echo(request: bytes, context: object) -> bytes:
        return request

    server = grpc.aio.server(
        interceptors=[
            AuthenticationInterceptor(TOKENS_ONLY, open_health=True, open_reflection=True)
        ]
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(echo)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ping = channel.unary_unary("/test.Echo/Ping")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ping(b"hi")
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert await ping(b"hi", metadata=[("authorization", f"Bearer {TOKEN}")]) == b"hi"
    finally:
        await server.stop(None)
