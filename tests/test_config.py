"""Settings from the environment: each variable parsed, checked and named in its error, and
``serve --help`` built from the same table."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import ip_network
from typing import Any

import pytest

from tests.e2e.conftest import ServiceEnv
from tests.e2e.conftest import service_env as service_env  # noqa: PLC0414 - fixture re-export
from vault_service.__main__ import main
from vault_service.config import SETTINGS, ConfigError, Setting, Settings

HELP_TEXT_COLUMN = 35
"""Where a setting's text starts in ``serve --help`` (two spaces, then the name's column)."""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"VAULT_ANTOM_NEXT_PUBLIC_KEY_VERSION": "2"}, "go together"),
        ({"VAULT_ANTOM_NEXT_PUBLIC_KEY_FILE": "{next}"}, "go together"),
        (
            {
                "VAULT_ANTOM_NEXT_PUBLIC_KEY_FILE": "{next}",
                "VAULT_ANTOM_NEXT_PUBLIC_KEY_VERSION": "1",
            },
            "must differ",
        ),
        ({"VAULT_ANTOM_PUBLIC_KEY_VERSION": "v1"}, "VAULT_ANTOM_PUBLIC_KEY_VERSION must be"),
        ({"VAULT_WEBHOOK_FAILURE_LIMIT": "0"}, "VAULT_WEBHOOK_FAILURE_LIMIT must be"),
        ({"VAULT_WEBHOOK_FAILURE_WINDOW": "-1"}, "VAULT_WEBHOOK_FAILURE_WINDOW must be"),
        ({"VAULT_ANTOM_KEY_VERSION": "v2"}, "VAULT_ANTOM_KEY_VERSION must be"),
        ({"VAULT_EVENT_RETENTION": "30"}, "VAULT_EVENT_RETENTION must be a number with a unit"),
        ({"VAULT_EVENT_RETENTION": "0d"}, "VAULT_EVENT_RETENTION must be positive"),
        ({"VAULT_RECORD_RETENTION": "1w"}, "VAULT_RECORD_RETENTION must be a number with a unit"),
        ({"VAULT_RECORD_RETENTION": "7d"}, "VAULT_RECORD_RETENTION must be at least"),
        *(
            ({"VAULT_WEBHOOK_TRUSTED_PROXIES": value}, f"VAULT_WEBHOOK_TRUSTED_PROXIES {message}")
            for value, message in [
                ("10.0.0.1/8", "must be comma-separated CIDRs .* got '10.0.0.1/8'"),
                ("10.0.0.0/8, proxy.internal", "must be .* got 'proxy.internal'"),
                ("10.0.0.0/33", "must be .* got '10.0.0.0/33'"),
                ("fd00::/8;10.0.0.0/8", "must be .* got 'fd00::/8;10.0.0.0/8'"),
                ("10.0.0.0/8,0.0.0.0/0", "must not trust every address, got '0.0.0.0/0'"),
                ("::/0", "must not trust every address"),
            ]
        ),
    ],
)
def test_inconsistent_key_settings_name_the_variable(
    service_env: ServiceEnv, next_key_file: str, change: dict[str, str], message: str
) -> None:
    """Guards rotation settings that could never verify anything (a second key without a
    version of its own) and nonsense limits: refused at start, naming the variable."""
    env = {**service_env, **{k: v.format(next=next_key_file) for k, v in change.items()}}
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_retention_is_30_days_of_events_and_records_for_ever_by_default(
    service_env: ServiceEnv,
) -> None:
    """The issue's defaults; units s, m, h and d."""
    settings = Settings.from_env(service_env)
    assert (settings.event_retention, settings.record_retention) == (timedelta(days=30), None)
    env = {**service_env, "VAULT_EVENT_RETENTION": "90m", "VAULT_RECORD_RETENTION": "400d"}
    settings = Settings.from_env(env)
    assert (settings.event_retention, settings.record_retention) == (
        timedelta(minutes=90),
        timedelta(days=400),
    )


def test_trusted_proxies_are_parsed_as_networks(service_env: ServiceEnv) -> None:
    """Guards the accepted forms: none by default; CIDRs of both families with spaces and
    stray commas, a bare address as its /32."""
    assert Settings.from_env(service_env).webhook_trusted_proxies == ()
    env = {**service_env, "VAULT_WEBHOOK_TRUSTED_PROXIES": " 10.0.0.0/8, fd00::/8,,192.0.2.7 ,"}
    assert Settings.from_env(env).webhook_trusted_proxies == (
        ip_network("10.0.0.0/8"),
        ip_network("fd00::/8"),
        ip_network("192.0.2.7/32"),
    )


def serve_help_blocks(capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    """Each variable in the real ``serve --help``, in order, with the lines of its text."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    blocks: dict[str, list[str]] = {}
    for line in out[out.index("environment:\n") :].splitlines()[1:]:
        if line.startswith("  VAULT_"):
            name, _, text = line.strip().partition(" ")
            blocks[name] = [text.strip()] if text else []
        else:
            assert not line[:HELP_TEXT_COLUMN].strip(), line
            blocks[name].append(line[HELP_TEXT_COLUMN:])
    return blocks


def test_serve_help_shows_every_setting_of_the_table_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Regression: each default was written twice, in the help text and in the code that
    reads it, and nothing compared them. The help now comes from the table: every setting, in
    its order, with the table's text and its default."""
    blocks = serve_help_blocks(capsys)
    assert list(blocks) == [row.name for row in SETTINGS]
    assert len(SETTINGS) == len(Settings.__dataclass_fields__)
    for row in SETTINGS:
        assert blocks[row.name] == row.help_lines, row.name
        if row.default is not None:
            assert row.default in " ".join(blocks[row.name]), row.name


def test_an_unset_variable_takes_the_default_the_help_shows(service_env: ServiceEnv) -> None:
    """Guards the defaults themselves: each parses, and is what leaving its variable unset
    gives the setting named after it."""
    unset = {row.name for row in SETTINGS if row.default is not None}
    settings = Settings.from_env({k: v for k, v in service_env.items() if k not in unset})
    for row in SETTINGS:
        if row.default is None:
            continue
        value = getattr(settings, row.name.removeprefix("VAULT_").lower())
        assert value == row.parse(row.name, row.default), row.name


@pytest.mark.parametrize(
    ("default", "help_text"),
    [("5", "seconds to wait"), (None, "seconds to wait (default {default})")],
)
def test_a_default_the_help_does_not_show_is_refused(default: str | None, help_text: str) -> None:
    """Guards the table against a default that ``--help`` would not show, or a help text that
    promises one there is not."""
    parse: Any = float
    with pytest.raises(ValueError, match="VAULT_WAIT: the help must show"):
        Setting("VAULT_WAIT", parse, default, help_text)


@pytest.mark.parametrize(
    "proxy",
    [
        "proxy-user:S3cr3t-pr0xy@proxy.internal:3128",
        "socks5://proxy-user:S3cr3t-pr0xy@proxy.internal:1080",
        "http://proxy-user:S3cr3t-pr0xy@proxy.internal",
        "http://proxy-user:S3cr3t-pr0xy@proxy.internal:3128/path",
        "http://proxy-user:S3cr3t-pr0xy@proxy.internal:port",
    ],
)
def test_a_malformed_proxy_is_refused_without_repeating_its_password(
    service_env: ServiceEnv, proxy: str
) -> None:
    """The proxy URL may carry credentials: the one-line error names the variable only."""
    with pytest.raises(ConfigError, match="VAULT_ANTOM_PROXY") as caught:
        Settings.from_env({**service_env, "VAULT_ANTOM_PROXY": proxy})
    assert "S3cr3t" not in str(caught.value)
    assert "proxy-user" not in str(caught.value)


def test_the_proxy_is_a_secret_and_the_ca_file_must_hold_a_certificate(
    service_env: ServiceEnv, tmp_path: Any
) -> None:
    settings = Settings.from_env(
        {**service_env, "VAULT_ANTOM_PROXY": "http://u:S3cr3t-pr0xy@127.0.0.1:3128"}
    )
    assert settings.antom_proxy is not None
    assert "S3cr3t" not in repr(settings)
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("hello")
    with pytest.raises(ConfigError, match=r"VAULT_ANTOM_CA_FILE: .* holds no PEM CA"):
        Settings.from_env({**service_env, "VAULT_ANTOM_CA_FILE": str(not_a_ca)})


def test_the_gateway_url_must_not_carry_credentials(service_env: ServiceEnv) -> None:
    url = service_env["VAULT_ANTOM_BASE_URL"].replace("://", "://user:pw@")
    with pytest.raises(ConfigError, match="VAULT_ANTOM_BASE_URL carries no credentials"):
        Settings.from_env({**service_env, "VAULT_ANTOM_BASE_URL": url})
