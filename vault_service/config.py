"""Settings from the environment (12-factor), checked once at start.

Every setting is one row of :class:`Settings`: its variable, the parser that reads it, its
default and its ``--help`` text (:func:`setting`). :meth:`Settings.from_env` and
:data:`SETTINGS_HELP` (shown by ``vault-service serve --help`` and docs/operations.md) are
both built from those rows, so a default is written once and the help cannot disagree with the
code. A missing or malformed setting raises :class:`ConfigError` naming the variable, which the CLI
prints as one line before exiting with code 2.

Why a table of our own rather than ``pydantic-settings`` (2.16, checked): it reads only
``os.environ`` (``from_env`` reads any mapping, as tests and replicas need), decodes collection
settings as JSON, and reports a missing or malformed value as a multi-line ``ValidationError``
in its own words. Keeping our one-line messages would take a validator per field that replaces
pydantic's parsing, a translation of its errors and a subclassed environment source: the
library would contribute only the ``os.environ`` look-up, at the cost of two dependencies and a
table whose types are stated twice (annotation and validator).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar, cast
from urllib.parse import urlsplit

from vault_service.database_url import DatabaseURL, parse_database_url
from vault_service.errors import ConfigurationError
from vault_service.secret import Secret

DEFAULT_NOTIFY_PATH: Final = "/antom/vaulting/notify"

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

Parse = Callable[[str, str], T]
"""Reads a setting: ``(variable name, stripped value)`` to a value, or :class:`ConfigError`
naming the variable. The value is ``""`` only for a variable that is unset (or blank) and has no
default."""

_HELP_NAME_WIDTH: Final = 33
"""Columns for the variable name in ``--help``; a longer name gets a line of its own."""

_DEFAULT: Final = "{default}"


class ConfigError(ConfigurationError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Setting(Generic[T]):
    """One environment variable: its name, how it is read, its default and its help.

    ``default`` is written as an operator would set the variable and is parsed like any value,
    so the help shows exactly what leaving it unset means. ``None`` means there is no default
    value: the variable is required, or its absence means something of its own (the parser is
    given ``""``). ``help`` is the text beside the name in ``serve --help``, its lines as they
    are shown, with ``{default}`` where the default goes: exactly when there is one.
    """

    name: str
    parse: Parse[T]
    default: str | None
    help: str

    def __post_init__(self) -> None:
        if (self.default is not None) != (self.help.count(_DEFAULT) == 1):
            raise ValueError(
                f"{self.name}: the help must show {_DEFAULT} once if there is a default, else not"
            )

    def read(self, env: Mapping[str, str]) -> T:
        return self.parse(self.name, env.get(self.name, "").strip() or self.default or "")

    @property
    def help_lines(self) -> list[str]:
        return self.help.replace(_DEFAULT, self.default or "").splitlines()


def setting(name: str, parse: Parse[T], help: str, *, default: str | None = None) -> T:
    """A :class:`Settings` field read from the variable ``name`` (see :class:`Setting`).

    Typed as the value it parses to, like :func:`dataclasses.field`, so mypy checks the
    parser against the field's annotation.
    """
    return cast(T, field(metadata={Setting: Setting(name, parse, default, help)}))


def _setting_of(settings_field: Field[Any]) -> Setting[Any]:
    row: Setting[Any] = settings_field.metadata[Setting]
    return row


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, name: str, value: str) -> Listen:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _optional(parse: Parse[T]) -> Parse[T | None]:
    """``parse`` for a variable that may be unset (``None``)."""

    def parse_optional(name: str, value: str) -> T | None:
        return parse(name, value) if value else None

    return parse_optional


def _required(name: str, value: str) -> str:
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _flag(name: str, value: str) -> bool:
    value = value.lower()
    if value in {"0", "false", "no"}:
        return False
    if value in {"1", "true", "yes"}:
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {value!r}")


def _one_of(*allowed: str) -> Parse[str]:
    def parse_choice(name: str, value: str) -> str:
        value = value.upper()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(sorted(allowed))}, got {value!r}")
        return value

    return parse_choice


def _sqlite_synchronous(name: str, value: str) -> Literal["NORMAL", "FULL"]:
    return "FULL" if _one_of("NORMAL", "FULL")(name, value) == "FULL" else "NORMAL"


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return seconds


_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(name: str, value: str) -> timedelta:
    """A positive duration: a number with a unit, s, m, h or d (``30d``, ``12h``)."""
    number, unit = value[:-1], value[-1:].lower()
    try:
        amount = float(number) * _DURATION_UNITS[unit]
    except (KeyError, ValueError):
        raise ConfigError(
            f"{name} must be a number with a unit s, m, h or d (e.g. 30d), got {value!r}"
        ) from None
    if not 0 < amount < 100 * 365 * 86400:
        raise ConfigError(f"{name} must be positive and under 100 years, got {value!r}")
    return timedelta(seconds=amount)


def _count(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
    return int(value)


def _key_version(name: str, value: str) -> str:
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(f"{name} must be a number (Antom's keyVersion), got {value!r}")
    return value


def _readable_file(name: str, value: str) -> Path:
    path = Path(_required(name, value))
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    return path


def _ca_bundle(name: str, value: str) -> Path:
    """A readable PEM file holding at least one CA certificate."""
    path = _readable_file(name, value)
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigError(f"{name}: {path} holds no PEM CA certificate") from None
    return path


def _proxy_url(name: str, value: str) -> Secret:
    """``http(s)://[user:password@]host:port``; kept as a :class:`Secret` and never repeated
    in a message, since it may carry the proxy's password."""
    example = f"{name} must be an http(s) URL with a host and port, e.g. http://proxy:3128"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(example) from None
    if parts.scheme not in {"http", "https"} or not parts.hostname or port is None:
        raise ConfigError(example)
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigError(f"{name} is a proxy URL without path, query or fragment")
    return Secret(value)


def _database_url(name: str, value: str) -> DatabaseURL:
    try:
        return parse_database_url(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _notify_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc or not parts.path:
        raise ConfigError(f"{name} must be an absolute http(s) URL with a path, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{name} must not have a query or fragment: Antom's signature covers the path only"
        )
    return value


def _networks(name: str, value: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (a bare address is its /32 or /128). Host bits are refused rather
    than masked, since ``10.1.2.3/8`` is more likely a typo than a wish to trust all of 10/8;
    so is a /0, which would let any sender pick its own source."""
    networks = []
    for item in value.split(","):
        text = item.strip()
        if not text:
            continue
        try:
            network = ipaddress.ip_network(text)
        except ValueError:
            raise ConfigError(
                f"{name} must be comma-separated CIDRs such as 10.0.0.0/8 (no host bits"
                f" set), got {text!r}"
            ) from None
        if network.prefixlen == 0:
            raise ConfigError(f"{name} must not trust every address, got {text!r}")
        networks.append(network)
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, in ``--help`` order. A new setting is one more row here."""

    grpc_listen: Listen = setting(
        "VAULT_GRPC_LISTEN",
        Listen.parse,
        "gRPC address (default {default})",
        default="127.0.0.1:50051",
    )
    http_listen: Listen = setting(
        "VAULT_HTTP_LISTEN",
        Listen.parse,
        "webhook address for Antom's notifyVaulting\n(default {default})",
        default="127.0.0.1:8080",
    )
    database_url: DatabaseURL = setting(
        "VAULT_DATABASE_URL",
        _database_url,
        "sqlite:///relative/path.db or sqlite:////absolute/path.db for\n"
        "one replica (default {default}, in the working\n"
        "directory); postgresql://user:password@host:5432/db for any\n"
        "number of replicas sharing one database (reached directly or\n"
        "through a session-mode pool: LISTEN needs a session)",
        default="sqlite:///vault-service.db",
    )
    auto_migrate: bool = setting(
        "VAULT_AUTO_MIGRATE",
        _flag,
        "1 to apply database migrations at start (default {default}: run\n"
        "`vault-service migrate` first)",
        default="0",
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = setting(
        "VAULT_SQLITE_SYNCHRONOUS",
        _sqlite_synchronous,
        "{default} (default: survives a crash or SIGKILL, not power loss)\n"
        "or FULL (also survives power loss, slower)",
        default="NORMAL",
    )
    pg_pool_size: int = setting(
        "VAULT_PG_POOL_SIZE",
        _count,
        "PostgreSQL connections of one replica for its short units of\nwork (default {default})",
        default="10",
    )
    pg_lock_pool_size: int = setting(
        "VAULT_PG_LOCK_POOL_SIZE",
        _count,
        "further PostgreSQL connections, one per CreateSession in\n"
        "flight (held while it calls Antom): the most sessions one\n"
        "replica creates at once (default {default})",
        default="20",
    )
    pg_acquire_timeout: float = setting(
        "VAULT_PG_ACQUIRE_TIMEOUT",
        _seconds,
        "seconds a call waits for a free PostgreSQL connection before\n"
        "it fails UNAVAILABLE, to be retried (default {default})",
        default="5",
    )
    data_key_file: Path = setting(
        "VAULT_DATA_KEY_FILE",
        _readable_file,
        "JSON key ring that encrypts card data at rest (AES-256-GCM):\n"
        '{"active": ID, "keys": {ID: base64 of 32 bytes, ...}}\n'
        "(required; `vault-service add-data-key FILE` makes one;\n"
        "SIGHUP re-reads it, keeping the old ring if it is broken)",
    )
    antom_base_url: str = setting(
        "VAULT_ANTOM_BASE_URL",
        _required,
        "Antom gateway, e.g. https://open-sea-global.alipay.com, or\n"
        "the emulator's http://127.0.0.1:8090 (required)",
    )
    antom_client_id: str = setting(
        "VAULT_ANTOM_CLIENT_ID",
        _required,
        "merchant client id; SANDBOX_... selects Antom's sandbox\npaths (required)",
    )
    merchant_private_key_file: Path = setting(
        "VAULT_MERCHANT_PRIVATE_KEY_FILE",
        _readable_file,
        "merchant RSA private key, PEM or bare base64 (required)",
    )
    antom_public_key_file: Path = setting(
        "VAULT_ANTOM_PUBLIC_KEY_FILE",
        _readable_file,
        "Antom's RSA public key, PEM or bare base64 (required); checks\n"
        "signatures whose keyVersion is the next setting's",
    )
    antom_public_key_version: str = setting(
        "VAULT_ANTOM_PUBLIC_KEY_VERSION",
        _key_version,
        "Antom's keyVersion of that key (default {default})",
        default="1",
    )
    antom_next_public_key_file: Path | None = setting(
        "VAULT_ANTOM_NEXT_PUBLIC_KEY_FILE",
        _optional(_readable_file),
        "Antom's second public key during a key rotation (optional);\n"
        "signatures naming any other keyVersion are refused",
    )
    antom_next_public_key_version: str | None = setting(
        "VAULT_ANTOM_NEXT_PUBLIC_KEY_VERSION",
        _optional(_key_version),
        "keyVersion of that second key (required with it, and\n"
        "different from VAULT_ANTOM_PUBLIC_KEY_VERSION)",
    )
    antom_key_version: str = setting(
        "VAULT_ANTOM_KEY_VERSION",
        _key_version,
        "keyVersion sent in request signatures: the version under\n"
        "which the merchant public key is registered (default {default})\n"
        "(SIGHUP re-reads the merchant key and Antom key files)",
        default="1",
    )
    antom_allow_http: bool = setting(
        "VAULT_ANTOM_ALLOW_HTTP",
        _flag,
        "1 to allow a plain-http gateway that is not on loopback\n"
        "(an emulator in a test cluster); loopback is always allowed\n"
        "(default {default})",
        default="0",
    )
    antom_ca_file: Path | None = setting(
        "VAULT_ANTOM_CA_FILE",
        _optional(_ca_bundle),
        "PEM CA bundle trusted for the Antom gateway in addition to\n"
        "the public CAs (a TLS-inspecting egress gateway's CA);\n"
        "hostnames are always verified, TLS 1.2 or newer",
    )
    antom_proxy: Secret | None = setting(
        "VAULT_ANTOM_PROXY",
        _optional(_proxy_url),
        "http://[user:password@]host:port of an egress proxy for\n"
        "Antom calls (CONNECT tunnel; the credentials are never\n"
        "logged). HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE are not\n"
        "read: only these settings decide how Antom is reached",
    )
    antom_timeout: float = setting(
        "VAULT_ANTOM_TIMEOUT",
        _seconds,
        "seconds one Antom call may take, retries included, when the\n"
        "caller set no deadline (default {default})",
        default="15",
    )
    notify_url: str | None = setting(
        "VAULT_NOTIFY_URL",
        _optional(_notify_url),
        "public https URL Antom posts notifications to; the webhook\n"
        "serves its path (required unless the gateway is on loopback,\n"
        f"where it defaults to http://<VAULT_HTTP_LISTEN>{DEFAULT_NOTIFY_PATH})",
    )
    auth_tokens_file: Path | None = setting(
        "VAULT_AUTH_TOKENS_FILE",
        _optional(_readable_file),
        "JSON file of callers and SHA-256 digests of their bearer\n"
        "tokens, reloaded when it changes (see docs/security.md)",
    )
    grpc_tls_cert_file: Path | None = setting(
        "VAULT_GRPC_TLS_CERT_FILE",
        _optional(_readable_file),
        "PEM certificate chain of the gRPC port (with the key: TLS);\nboth are re-read on SIGHUP",
    )
    grpc_tls_key_file: Path | None = setting(
        "VAULT_GRPC_TLS_KEY_FILE",
        _optional(_readable_file),
        "PEM private key of that certificate",
    )
    grpc_tls_client_ca_file: Path | None = setting(
        "VAULT_GRPC_TLS_CLIENT_CA_FILE",
        _optional(_readable_file),
        "PEM CA bundle for client certificates: mTLS, every client\n"
        "must present a certificate it signed, whose URI SAN, else\n"
        "DNS SAN, else common name is the caller name (which the\n"
        "token file, if any, must list)",
    )
    health_listen: Listen | None = setting(
        "VAULT_HEALTH_LISTEN",
        _optional(Listen.parse),
        "optional plaintext address serving the gRPC health service\n"
        "alone, for probes that cannot present a client certificate\n"
        "(Kubernetes' gRPC probes, with mTLS on VAULT_GRPC_LISTEN)",
    )
    admin_listen: Listen = setting(
        "VAULT_ADMIN_LISTEN",
        Listen.parse,
        "admin HTTP address serving Prometheus GET /metrics (keep it\n"
        "off the public network; default {default})",
        default="127.0.0.1:9090",
    )
    public_health: bool = setting(
        "VAULT_PUBLIC_HEALTH",
        _flag,
        "0 to require credentials for the gRPC health service\n"
        "(default {default}: probes need none)",
        default="1",
    )
    public_reflection: bool = setting(
        "VAULT_PUBLIC_REFLECTION",
        _flag,
        "0 to require credentials for server reflection (default {default})",
        default="1",
    )
    insecure: bool = setting(
        "VAULT_INSECURE",
        _flag,
        "1 to let gRPC listen beyond loopback with no caller identity\n"
        "configured (every caller then sees every session), or with\n"
        "tokens but no TLS (a service mesh encrypts); both are warned\n"
        "(default {default})",
        default="0",
    )
    grpc_max_connection_age: float = setting(
        "VAULT_GRPC_MAX_CONNECTION_AGE",
        _seconds,
        "seconds after which a client connection is closed (calls in\n"
        "flight get up to 30 s more; streams end UNAVAILABLE and\n"
        "resume), so streams spread over new replicas and a\n"
        "connection's certificate is checked again (default {default})",
        default="1800",
    )
    checkpoint_interval: float = setting(
        "VAULT_CHECKPOINT_INTERVAL",
        _seconds,
        "seconds between StreamResults checkpoints (default {default})",
        default="30",
    )
    reconcile_interval: float = setting(
        "VAULT_RECONCILE_INTERVAL",
        _seconds,
        "seconds between reconciler passes (default {default})",
        default="5",
    )
    reconcile_after: float = setting(
        "VAULT_RECONCILE_AFTER",
        _seconds,
        "seconds before a session without result is first inquired\n"
        "(default {default}); later inquiries back off up to 15 minutes",
        default="60",
    )
    expiry_grace: float = setting(
        "VAULT_EXPIRY_GRACE",
        _seconds,
        "seconds after a session's expiry before it is marked EXPIRED\n(default {default})",
        default="300",
    )
    event_retention: timedelta = setting(
        "VAULT_EVENT_RETENTION",
        _duration,
        "how long StreamResults events (and orphan notifications) are\n"
        "kept, e.g. 30d or 12h (default {default}); older ones are\n"
        "pruned, and a resume token older than the oldest kept event\n"
        "is refused (catch up with ListResults)",
        default="30d",
    )
    record_retention: timedelta | None = setting(
        "VAULT_RECORD_RETENTION",
        _optional(_duration),
        "how long a final vaulting request (SUCCEEDED, FAILED, EXPIRED)\n"
        "is kept after its last change, card token included, e.g.\n"
        "400d (default: for ever); older ones are deleted with their\n"
        "events. At least VAULT_EVENT_RETENTION",
    )
    shutdown_grace: float = setting(
        "VAULT_SHUTDOWN_GRACE",
        _seconds,
        "seconds to finish calls on SIGTERM (default {default})",
        default="20",
    )
    webhook_failure_limit: int = setting(
        "VAULT_WEBHOOK_FAILURE_LIMIT",
        _count,
        "failed signature checks one source address may make before\n"
        "the webhook answers it 429 (default {default}); IPv6 sources count\n"
        "per /64",
        default="20",
    )
    webhook_failure_window: float = setting(
        "VAULT_WEBHOOK_FAILURE_WINDOW",
        _seconds,
        "seconds over which that budget refills (default {default})",
        default="60",
    )
    webhook_header_timeout: float = setting(
        "VAULT_WEBHOOK_HEADER_TIMEOUT",
        _seconds,
        "seconds a webhook connection may take to send a complete\n"
        "request head, after it opens or after its last answer,\n"
        "before it is closed (default {default})",
        default="15",
    )
    webhook_max_connections: int = setting(
        "VAULT_WEBHOOK_MAX_CONNECTIONS",
        _count,
        "webhook connections open at once; a connection beyond them\n"
        "is answered 503 and closed unread (default {default})",
        default="256",
    )
    webhook_trusted_proxies: tuple[Network, ...] = setting(
        "VAULT_WEBHOOK_TRUSTED_PROXIES",
        _networks,
        "comma-separated CIDRs of the proxies in front of the webhook,\n"
        "e.g. 10.0.0.0/8,fd00::/8 (default none); from a peer inside\n"
        "them the source is the rightmost X-Forwarded-For address\n"
        "that is not itself inside them. Without it every sender\n"
        "behind a proxy shares the proxy's failure budget",
    )
    log_level: str = setting(
        "VAULT_LOG_LEVEL",
        _one_of("DEBUG", "INFO", "WARNING", "ERROR"),
        "DEBUG, INFO, WARNING or ERROR (default {default})",
        default="INFO",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Each field read by its row; :func:`setting` has already checked, where the row is
        written, that the row's parser gives the field's type."""
        values: dict[str, Any] = {
            settings_field.name: _setting_of(settings_field).read(env)
            for settings_field in fields(cls)
        }
        settings = cls(**values)
        settings.check_exposure()
        settings.check_antom_public_keys()
        settings.check_retention()
        return settings

    def check_retention(self) -> None:
        """Records outlive their events: deleting a record deletes its events, which must
        already be older than the event retention, or a resuming stream would miss them."""
        if self.record_retention is not None and self.record_retention < self.event_retention:
            raise ConfigError(
                "VAULT_RECORD_RETENTION must be at least VAULT_EVENT_RETENTION"
                f" ({self.event_retention}), got {self.record_retention}"
            )

    def check_exposure(self) -> None:
        """Refuse settings that would expose card data or lose notifications."""
        gateway = urlsplit(self.antom_base_url)
        if gateway.scheme not in {"http", "https"} or not gateway.hostname:
            raise ConfigError(
                f"VAULT_ANTOM_BASE_URL must be an http(s) URL, got {self.antom_base_url!r}"
            )
        if gateway.path.strip("/") or gateway.query:
            raise ConfigError("VAULT_ANTOM_BASE_URL is a gateway base URL without path or query")
        if gateway.username is not None or gateway.password is not None:
            raise ConfigError("VAULT_ANTOM_BASE_URL carries no credentials (Antom signs calls)")
        local_gateway = _is_loopback(gateway.hostname)
        if gateway.scheme == "http" and not (self.antom_allow_http or local_gateway):
            raise ConfigError(
                "VAULT_ANTOM_BASE_URL uses plain http on a non-loopback host;"
                " set VAULT_ANTOM_ALLOW_HTTP=1 if that is an emulator"
            )
        notify = self.notify_url
        if not local_gateway and (notify is None or not notify.startswith("https://")):
            raise ConfigError(
                "VAULT_NOTIFY_URL must be the public https URL Antom can reach"
                " (the default only works with a local emulator)"
            )
        if (self.grpc_tls_cert_file is None) != (self.grpc_tls_key_file is None):
            raise ConfigError(
                "VAULT_GRPC_TLS_CERT_FILE and VAULT_GRPC_TLS_KEY_FILE go together: set both"
            )
        if self.grpc_tls_client_ca_file is not None and self.grpc_tls_cert_file is None:
            raise ConfigError(
                "VAULT_GRPC_TLS_CLIENT_CA_FILE needs VAULT_GRPC_TLS_CERT_FILE and"
                " VAULT_GRPC_TLS_KEY_FILE: client certificates are only checked over TLS"
            )
        if self.grpc_exposed_without_identity and not self.insecure:
            raise ConfigError(
                f"VAULT_GRPC_LISTEN={self.grpc_listen} is not loopback and no caller identity"
                " is configured, so every caller would see every session: set"
                " VAULT_AUTH_TOKENS_FILE and/or VAULT_GRPC_TLS_CLIENT_CA_FILE, listen on"
                " loopback, or set VAULT_INSECURE=1"
            )

        if self.tokens_in_cleartext and not self.insecure:
            raise ConfigError(
                f"VAULT_GRPC_LISTEN={self.grpc_listen} is not loopback and has no TLS, so bearer"
                " tokens would cross the network in cleartext: set VAULT_GRPC_TLS_CERT_FILE and"
                " VAULT_GRPC_TLS_KEY_FILE, or VAULT_INSECURE=1 behind a mesh that encrypts"
            )

    @property
    def has_identity_source(self) -> bool:
        """Whether callers are authenticated (tokens, client certificates or both)."""
        return self.auth_tokens_file is not None or self.grpc_tls_client_ca_file is not None

    @property
    def grpc_exposed_without_identity(self) -> bool:
        """Whether gRPC listens beyond loopback with every caller anonymous."""
        return not _is_loopback(self.grpc_listen.host) and not self.has_identity_source

    @property
    def tokens_in_cleartext(self) -> bool:
        """Whether bearer tokens would cross a network unencrypted (no TLS, not loopback)."""
        return (
            self.auth_tokens_file is not None
            and self.grpc_tls_cert_file is None
            and not _is_loopback(self.grpc_listen.host)
        )

    def check_antom_public_keys(self) -> None:
        """A second Antom key needs a version of its own, or no signature could choose it."""
        next_file, next_version = (
            self.antom_next_public_key_file,
            self.antom_next_public_key_version,
        )
        if (next_file is None) != (next_version is None):
            raise ConfigError(
                "VAULT_ANTOM_NEXT_PUBLIC_KEY_FILE and VAULT_ANTOM_NEXT_PUBLIC_KEY_VERSION go"
                " together: set both"
            )
        if next_version == self.antom_public_key_version:
            raise ConfigError(
                "VAULT_ANTOM_NEXT_PUBLIC_KEY_VERSION must differ from"
                f" VAULT_ANTOM_PUBLIC_KEY_VERSION ({next_version})"
            )

    @property
    def antom_public_key_files(self) -> dict[str, Path]:
        """Antom's public key files by keyVersion (one, or two during a rotation)."""
        files = {self.antom_public_key_version: self.antom_public_key_file}
        if self.antom_next_public_key_file is not None and self.antom_next_public_key_version:
            files[self.antom_next_public_key_version] = self.antom_next_public_key_file
        return files

    @property
    def antom_uses_http(self) -> bool:
        """Whether the (already vetted) gateway is plain http: an emulator."""
        return urlsplit(self.antom_base_url).scheme == "http"

    def notify_url_for(self, bound_http_port: int) -> str:
        """The URL Antom posts to: the configured one, or this process's webhook address."""
        if self.notify_url is not None:
            return self.notify_url
        return f"http://{Listen(self.http_listen.host, bound_http_port)}{DEFAULT_NOTIFY_PATH}"


SETTINGS: Final[tuple[Setting[Any], ...]] = tuple(
    _setting_of(settings_field) for settings_field in fields(Settings)
)
"""Every setting, in ``--help`` order."""


def _help(settings: tuple[Setting[Any], ...]) -> str:
    lines = ["environment:"]
    for row in settings:
        text = row.help_lines
        if len(row.name) < _HELP_NAME_WIDTH:
            lines.append(f"  {row.name.ljust(_HELP_NAME_WIDTH)}{text.pop(0)}")
        else:
            lines.append(f"  {row.name}")
        lines.extend(" " * (2 + _HELP_NAME_WIDTH) + line for line in text)
    return "\n".join(lines) + "\n"


SETTINGS_HELP: Final = _help(SETTINGS)
"""The ``environment:`` section of ``vault-service serve --help``."""


def _read_alone(env: Mapping[str, str], name: str) -> Any:
    (row,) = (row for row in SETTINGS if row.name == name)
    return row.read(env)


def database_url_from_env(env: Mapping[str, str]) -> DatabaseURL:
    """The database URL alone, for commands that need nothing else (``vault-service migrate``)."""
    url: DatabaseURL = _read_alone(env, "VAULT_DATABASE_URL")
    return url


def data_key_file_from_env(env: Mapping[str, str]) -> Path:
    """The data key file alone, for ``vault-service rotate-data-key``; its contents are checked
    when the key ring is loaded (:mod:`vault_service.store.data_keys`)."""
    path: Path = _read_alone(env, "VAULT_DATA_KEY_FILE")
    return path


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
