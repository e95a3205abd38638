"""How a call's metadata and verified peer certificate become its caller."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from vault_service.auth.callers import EMPTY_DIRECTORY, CallerDirectory, parse_callers
from vault_service.errors import UnauthenticatedError
from vault_service.grpc_api.auth import ANONYMOUS, Authenticator, certificate_name

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


def certificate(*sans: bytes, cn: bytes | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"transport_security_type": [b"ssl"]}
    if sans:
        context["x509_subject_alternative_name"] = list(sans)
    if cn is not None:
        context["x509_common_name"] = [cn]
    return context


BOTH = Authenticator(tokens=directory, certificates=directory)
TOKENS_ONLY = Authenticator(tokens=directory, certificates=None)
CERTIFICATES_ONLY = Authenticator(tokens=None, certificates=lambda: EMPTY_DIRECTORY)
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
    with pytest.raises(UnauthenticatedError, match="not accepted"):
        CERTIFICATES_ONLY.caller_of([("authorization", f"Bearer {TOKEN}")], certificate(cn=b"a"))


def test_certificate_callers_take_scopes_from_the_file() -> None:
    admin = BOTH.caller_of([], certificate(b"spiffe://c/ns/ops/sa/console"))
    assert admin.is_admin
    assert BOTH.caller_of([], certificate(cn=b"billing")).scopes == frozenset({"vault"})


@pytest.mark.parametrize(
    ("context", "name"),
    [
        pytest.param(certificate(b"svc.example", b"spiffe://c/sa/x", cn=b"cn"), "spiffe://c/sa/x"),
        pytest.param(certificate(b"svc.example", cn=b"cn"), "svc.example", id="dns"),
        pytest.param(certificate(cn=b"cn"), "cn", id="common-name"),
        pytest.param(certificate(), None, id="nothing"),
        pytest.param({}, None, id="plaintext"),
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
