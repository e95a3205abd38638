"""The callers file: what it accepts, what it refuses, and how tokens are looked up."""

from __future__ import annotations

import hashlib
import json

import pytest

from vault_service.grpc_api.callers import (
    NO_FILE,
    Caller,
    CallersFileError,
    parse_callers,
)
from vault_service.secret import Secret


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def callers_file(*entries: dict[str, object]) -> bytes:
    return json.dumps({"callers": list(entries)}).encode()


def test_tokens_map_to_their_callers_and_scopes() -> None:
    directory = parse_callers(
        callers_file(
            {"name": "checkout", "token_sha256": digest("t-old"), "scopes": ["vault"]},
            {"name": "checkout", "token_sha256": digest("t-new"), "scopes": ["vault"]},
            {"name": "ops", "token_sha256": digest("t-ops"), "scopes": ["admin", "vault"]},
        )
    )
    checkout = Caller("checkout", frozenset({"vault"}))
    assert directory.by_token(Secret("t-old")) == checkout
    assert directory.by_token(Secret("t-new")) == checkout
    ops = directory.by_token(Secret("t-ops"))
    assert ops is not None
    assert ops.is_admin
    assert ops.may("vault")
    assert not checkout.is_admin
    assert directory.by_token(Secret("t-unknown")) is None
    assert directory.by_token(Secret("")) is None


def test_certificate_callers_get_listed_scopes_or_vault() -> None:
    directory = parse_callers(callers_file({"name": "ops-console", "scopes": ["admin"]}))
    assert directory.by_certificate("ops-console").is_admin
    # Regression: an unlisted name got the vault scope, so any certificate of a broad CA
    # naming itself like a token caller ("checkout") read that caller's sessions.
    assert directory.by_certificate("checkout") is None
    assert NO_FILE.by_certificate("x").scopes == frozenset({"vault"})
    # A certificate entry has no token: no bearer token can ever match it.
    assert directory.by_token(Secret("")) is None


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        pytest.param(b"{", "not JSON", id="not-json"),
        pytest.param(b"\xff", "not JSON", id="not-utf8"),
        pytest.param(b"[]", '{"callers"', id="not-an-object"),
        pytest.param(b'{"callers": {}}', '{"callers"', id="callers-not-a-list"),
        pytest.param(b'{"callers": [], "extra": 1}', "unknown top-level", id="extra-key"),
        pytest.param(callers_file("x"), "expected an object", id="entry-not-object"),
        pytest.param(
            callers_file({"name": "a b", "scopes": ["vault"]}), ".name", id="space-in-name"
        ),
        pytest.param(callers_file({"name": "", "scopes": ["vault"]}), ".name", id="empty-name"),
        pytest.param(callers_file({"scopes": ["vault"]}), ".name", id="no-name"),
        pytest.param(
            callers_file({"name": "anonymous", "scopes": ["vault"]}),
            ".name",
            id="reserved-anonymous",
        ),
        pytest.param(
            callers_file({"name": "a", "token_sha256": "ABC", "scopes": ["vault"]}),
            ".token_sha256",
            id="short-digest",
        ),
        pytest.param(
            callers_file({"name": "a", "token_sha256": digest("x").upper(), "scopes": ["vault"]}),
            ".token_sha256",
            id="uppercase-digest",
        ),
        pytest.param(
            callers_file({"name": "a", "token": "plain", "scopes": ["vault"]}),
            "unknown keys",
            id="plain-token-field",
        ),
        pytest.param(callers_file({"name": "a", "scopes": []}), ".scopes", id="no-scopes"),
        pytest.param(callers_file({"name": "a", "scopes": ["root"]}), ".scopes", id="bad-scope"),
        pytest.param(callers_file({"name": "a", "scopes": "vault"}), ".scopes", id="scope-str"),
        pytest.param(
            callers_file(
                {"name": "a", "token_sha256": digest("x"), "scopes": ["vault"]},
                {"name": "b", "token_sha256": digest("x"), "scopes": ["admin"]},
            ),
            "already listed",
            id="same-token-twice",
        ),
        pytest.param(
            callers_file({"name": "a", "scopes": ["vault"]}, {"name": "a", "scopes": ["admin"]}),
            "second certificate entry",
            id="two-certificate-entries",
        ),
    ],
)
def test_malformed_files_are_refused_with_the_place(raw: bytes, complaint: str) -> None:
    with pytest.raises(CallersFileError) as refused:
        parse_callers(raw)
    assert complaint in str(refused.value)


def test_a_refusal_never_quotes_a_digest() -> None:
    """A digest is not a token, but it is still secret material: errors must not echo it."""
    secret_digest = digest("x")
    with pytest.raises(CallersFileError) as refused:
        parse_callers(
            callers_file(
                {"name": "a", "token_sha256": secret_digest, "scopes": ["vault"]},
                {"name": "b", "token_sha256": secret_digest, "scopes": ["vault"]},
            )
        )
    assert secret_digest not in str(refused.value)


def test_secrets_hide_their_value() -> None:
    token = Secret("s3cr3t-token")
    assert "s3cr3t" not in repr(token)
    assert "s3cr3t" not in str(token)
    assert "s3cr3t" not in f"{token} {[token]} { ({'t': token}) }"
    assert token == Secret("s3cr3t-token")
    assert token != Secret("other")
    with pytest.raises(TypeError):
        hash(token)
