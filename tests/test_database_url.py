"""The database URL: the scheme selects the backend, and its password never shows."""

from __future__ import annotations

import pytest

from vault_service.database_url import DatabaseURL, parse_database_url, redact_dsn


@pytest.mark.parametrize(
    ("url", "expected", "shown"),
    [
        ("sqlite:///vault.db", DatabaseURL("sqlite", "vault.db"), "sqlite:///vault.db"),
        (
            "sqlite:////var/lib/v.db",
            DatabaseURL("sqlite", "/var/lib/v.db"),
            "sqlite:////var/lib/v.db",
        ),
        (
            "postgresql://vault:pw@db:5432/vault",
            DatabaseURL("postgresql", "postgresql://vault:pw@db:5432/vault"),
            "postgresql://vault@db:5432/vault",
        ),
        (
            "postgres://db/vault",
            DatabaseURL("postgresql", "postgres://db/vault"),
            "postgres://db/vault",
        ),
    ],
)
def test_the_scheme_selects_the_backend(url: str, expected: DatabaseURL, shown: str) -> None:
    """Guards the URL forms the operator documentation promises, and that printing a parsed
    URL (``migrate``'s output, logs) never shows its password."""
    parsed = parse_database_url(url)
    assert parsed == expected
    assert str(parsed) == shown


@pytest.mark.parametrize(
    "url",
    ["sqlite:///", "sqlite://relative.db", "mysql://u:pw@db/vault", "postgresql://", "vault.db"],
)
def test_other_urls_are_refused_without_showing_a_password(url: str) -> None:
    """Guards against a typo silently selecting a backend, and the error leaking secrets."""
    with pytest.raises(ValueError, match=r"expected sqlite:///PATH or postgresql://") as refused:
        parse_database_url(url)
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgres://u@h/db?sslmode=require", "postgres://u@h/db?sslmode=require"),
        (
            "postgresql://h/db?password=pw&sslmode=require",
            "postgresql://h/db?password=redacted&sslmode=require",
        ),
        ("postgresql://u:p%40ss@h1:5432,h2:5433/db", "postgresql://u@h1:5432,h2:5433/db"),
    ],
)
def test_redact_dsn_drops_passwords(dsn: str, shown: str) -> None:
    """Guards every message and log line naming a database against leaking its password."""
    assert redact_dsn(dsn) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://vault:s3cret@db:5432/vault",
        "postgresql://vault@db/vault?password=s3cret&sslmode=require",
    ],
)
def test_repr_and_str_never_show_the_password(url: str) -> None:
    """Regression: ``DatabaseURL`` overrode only ``__str__``, so ``repr()`` of one (of the
    settings holding it, of a log or error argument) printed the database password."""
    parsed = parse_database_url(url)
    assert "s3cret" not in repr(parsed)
    assert "s3cret" not in str(parsed)
    assert str(parsed) in repr(parsed)
    assert parsed.reveal() == url
