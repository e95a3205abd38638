"""Settings from the environment (12-factor), checked once at start.

Every setting is read here, with its default and its meaning in :data:`SETTINGS_HELP` (shown by
``vault-service serve --help`` and docs/operations.md). A missing or malformed setting raises
:class:`ConfigError` naming the variable, which the CLI prints as one line before exiting.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from vault_service.errors import VaultError

DEFAULT_GRPC_LISTEN: Final = "127.0.0.1:50051"
DEFAULT_HTTP_LISTEN: Final = "127.0.0.1:8080"
DEFAULT_DATABASE_URL: Final = "sqlite:///vault-service.db"
DEFAULT_NOTIFY_PATH: Final = "/antom/vaulting/notify"

SETTINGS_HELP: Final = f"""\
environment:
  VAULT_GRPC_LISTEN                gRPC address (default {DEFAULT_GRPC_LISTEN})
  VAULT_HTTP_LISTEN                webhook address for Antom's notifyVaulting
                                   (default {DEFAULT_HTTP_LISTEN})
  VAULT_DATABASE_URL               sqlite:///relative/path.db or sqlite:////absolute/path.db for
                                   one replica (default {DEFAULT_DATABASE_URL}, in the working
                                   directory); postgresql://user:password@host:5432/db for any
                                   number of replicas sharing one database (reached directly or
                                   through a session-mode pool: LISTEN needs a session)
  VAULT_AUTO_MIGRATE               1 to apply database migrations at start (default 0: run
                                   `vault-service migrate` first)
  VAULT_SQLITE_SYNCHRONOUS         NORMAL (default: survives a crash or SIGKILL, not power loss)
                                   or FULL (also survives power loss, slower)
  VAULT_DATA_KEY_FILE              JSON key ring that encrypts card tokens at rest (AES-256-GCM):
                                   {{"active": ID, "keys": {{ID: base64 of 32 bytes, ...}}}}
                                   (required; `vault-service add-data-key FILE` makes one)
  VAULT_ANTOM_BASE_URL             Antom gateway, e.g. https://open-sea-global.alipay.com, or
                                   the emulator's http://127.0.0.1:8090 (required)
  VAULT_ANTOM_CLIENT_ID            merchant client id; SANDBOX_... selects Antom's sandbox
                                   paths (required)
  VAULT_MERCHANT_PRIVATE_KEY_FILE  merchant RSA private key, PEM or bare base64 (required)
  VAULT_ANTOM_PUBLIC_KEY_FILE      Antom's RSA public key, PEM or bare base64 (required); checks
                                   signatures whose keyVersion is the next setting's
  VAULT_ANTOM_PUBLIC_KEY_VERSION   Antom's keyVersion of that key (default 1)
  VAULT_ANTOM_NEXT_PUBLIC_KEY_FILE Antom's second public key during a key rotation (optional);
                                   signatures naming any other keyVersion are refused
  VAULT_ANTOM_NEXT_PUBLIC_KEY_VERSION
                                   keyVersion of that second key (required with it, and
                                   different from VAULT_ANTOM_PUBLIC_KEY_VERSION)
  VAULT_ANTOM_KEY_VERSION          keyVersion sent in request signatures: the version under
                                   which the merchant public key is registered (default 1)
                                   (SIGHUP re-reads the merchant key and Antom key files)
  VAULT_ANTOM_ALLOW_HTTP           1 to allow a plain-http gateway that is not on loopback
                                   (an emulator in a test cluster); loopback is always allowed
  VAULT_ANTOM_TIMEOUT              seconds one Antom call may take, retries included, when the
                                   caller set no deadline (default 15)
  VAULT_NOTIFY_URL                 public https URL Antom posts notifications to; the webhook
                                   serves its path (required unless the gateway is on loopback,
                                   where it defaults to http://<VAULT_HTTP_LISTEN>{DEFAULT_NOTIFY_PATH})
  VAULT_AUTH_TOKENS_FILE           JSON file of callers and SHA-256 digests of their bearer
                                   tokens, reloaded when it changes (see docs/security.md)
  VAULT_GRPC_TLS_CERT_FILE         PEM certificate chain of the gRPC port (with the key: TLS);
                                   both are re-read on SIGHUP
  VAULT_GRPC_TLS_KEY_FILE          PEM private key of that certificate
  VAULT_GRPC_TLS_CLIENT_CA_FILE    PEM CA bundle for client certificates: mTLS, every client
                                   must present a certificate it signed, whose URI SAN, else
                                   DNS SAN, else common name is the caller name (which the
                                   token file, if any, must list)
  VAULT_HEALTH_LISTEN              optional plaintext address serving the gRPC health service
                                   alone, for probes that cannot present a client certificate
                                   (Kubernetes' gRPC probes, with mTLS on VAULT_GRPC_LISTEN)
  VAULT_PUBLIC_HEALTH              0 to require credentials for the gRPC health service
                                   (default 1: probes need none)
  VAULT_PUBLIC_REFLECTION          0 to require credentials for server reflection (default 1)
  VAULT_INSECURE                   1 to let gRPC listen beyond loopback with no caller identity
                                   configured (every caller then sees every session), or with
                                   tokens but no TLS (a service mesh encrypts); both are warned
  VAULT_GRPC_MAX_CONNECTION_AGE    seconds after which a client connection is closed (calls in
                                   flight get up to 30 s more; streams end UNAVAILABLE and
                                   resume), so streams spread over new replicas and a
                                   connection's certificate is checked again (default 1800)
  VAULT_CHECKPOINT_INTERVAL        seconds between StreamResults checkpoints (default 30)
  VAULT_RECONCILE_INTERVAL         seconds between reconciler passes (default 5)
  VAULT_RECONCILE_AFTER            seconds before a session without result is first inquired
                                   (default 60); later inquiries back off up to 15 minutes
  VAULT_EXPIRY_GRACE               seconds after a session's expiry before it is marked EXPIRED
                                   (default 300)
  VAULT_SHUTDOWN_GRACE             seconds to finish calls on SIGTERM (default 20)
  VAULT_WEBHOOK_FAILURE_LIMIT      failed signature checks one source address may make before
                                   the webhook answers it 429 (default 20); IPv6 sources count
                                   per /64
  VAULT_WEBHOOK_FAILURE_WINDOW     seconds over which that budget refills (default 60)
  VAULT_WEBHOOK_TRUSTED_PROXIES    comma-separated CIDRs of the proxies in front of the webhook,
                                   e.g. 10.0.0.0/8,fd00::/8 (default none); from a peer inside
                                   them the source is the rightmost X-Forwarded-For address
                                   that is not itself inside them. Without it every sender
                                   behind a proxy shares the proxy's failure budget
  VAULT_LOG_LEVEL                  DEBUG, INFO, WARNING or ERROR (default INFO)
"""


class ConfigError(VaultError):
    """A setting is missing or malformed; the message names it."""


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


@dataclass(frozen=True, slots=True)
class Settings:
    grpc_listen: Listen
    http_listen: Listen
    health_listen: Listen | None
    database_url: str = field(repr=False)  # may carry a password
    auto_migrate: bool
    sqlite_synchronous: Literal["NORMAL", "FULL"]
    data_key_file: Path
    antom_base_url: str
    antom_client_id: str
    antom_allow_http: bool
    antom_key_version: str
    antom_timeout: float
    merchant_private_key_file: Path
    antom_public_key_file: Path
    antom_public_key_version: str
    antom_next_public_key_file: Path | None
    antom_next_public_key_version: str | None
    notify_url: str | None
    grpc_max_connection_age: float
    checkpoint_interval: float
    reconcile_interval: float
    reconcile_after: float
    expiry_grace: float
    shutdown_grace: float
    webhook_failure_limit: int
    webhook_failure_window: float
    webhook_trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    log_level: str
    auth_tokens_file: Path | None
    grpc_tls_cert_file: Path | None
    grpc_tls_key_file: Path | None
    grpc_tls_client_ca_file: Path | None
    public_health: bool
    public_reflection: bool
    insecure: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        reader = _Reader(env)
        settings = cls(
            grpc_listen=Listen.parse(
                "VAULT_GRPC_LISTEN", reader.text("VAULT_GRPC_LISTEN", DEFAULT_GRPC_LISTEN)
            ),
            http_listen=Listen.parse(
                "VAULT_HTTP_LISTEN", reader.text("VAULT_HTTP_LISTEN", DEFAULT_HTTP_LISTEN)
            ),
            health_listen=reader.optional_listen("VAULT_HEALTH_LISTEN"),
            database_url=database_url_from_env(env),
            auto_migrate=reader.flag("VAULT_AUTO_MIGRATE"),
            sqlite_synchronous="FULL"
            if reader.choice("VAULT_SQLITE_SYNCHRONOUS", "NORMAL", {"NORMAL", "FULL"}) == "FULL"
            else "NORMAL",
            data_key_file=data_key_file_from_env(env),
            antom_base_url=reader.required("VAULT_ANTOM_BASE_URL"),
            antom_client_id=reader.required("VAULT_ANTOM_CLIENT_ID"),
            antom_allow_http=reader.flag("VAULT_ANTOM_ALLOW_HTTP"),
            antom_key_version=reader.key_version("VAULT_ANTOM_KEY_VERSION", "1"),
            antom_timeout=reader.seconds("VAULT_ANTOM_TIMEOUT", 15.0),
            merchant_private_key_file=reader.readable_file("VAULT_MERCHANT_PRIVATE_KEY_FILE"),
            antom_public_key_file=reader.readable_file("VAULT_ANTOM_PUBLIC_KEY_FILE"),
            antom_public_key_version=reader.key_version("VAULT_ANTOM_PUBLIC_KEY_VERSION", "1"),
            antom_next_public_key_file=reader.optional_file("VAULT_ANTOM_NEXT_PUBLIC_KEY_FILE"),
            antom_next_public_key_version=reader.optional_key_version(
                "VAULT_ANTOM_NEXT_PUBLIC_KEY_VERSION"
            ),
            notify_url=reader.optional_url("VAULT_NOTIFY_URL"),
            grpc_max_connection_age=reader.seconds("VAULT_GRPC_MAX_CONNECTION_AGE", 1800.0),
            checkpoint_interval=reader.seconds("VAULT_CHECKPOINT_INTERVAL", 30.0),
            reconcile_interval=reader.seconds("VAULT_RECONCILE_INTERVAL", 5.0),
            reconcile_after=reader.seconds("VAULT_RECONCILE_AFTER", 60.0),
            expiry_grace=reader.seconds("VAULT_EXPIRY_GRACE", 300.0),
            shutdown_grace=reader.seconds("VAULT_SHUTDOWN_GRACE", 20.0),
            webhook_failure_limit=reader.count("VAULT_WEBHOOK_FAILURE_LIMIT", 20),
            webhook_failure_window=reader.seconds("VAULT_WEBHOOK_FAILURE_WINDOW", 60.0),
            webhook_trusted_proxies=reader.networks("VAULT_WEBHOOK_TRUSTED_PROXIES"),
            log_level=reader.choice(
                "VAULT_LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"}
            ),
            auth_tokens_file=reader.optional_file("VAULT_AUTH_TOKENS_FILE"),
            grpc_tls_cert_file=reader.optional_file("VAULT_GRPC_TLS_CERT_FILE"),
            grpc_tls_key_file=reader.optional_file("VAULT_GRPC_TLS_KEY_FILE"),
            grpc_tls_client_ca_file=reader.optional_file("VAULT_GRPC_TLS_CLIENT_CA_FILE"),
            public_health=reader.flag("VAULT_PUBLIC_HEALTH", default=True),
            public_reflection=reader.flag("VAULT_PUBLIC_REFLECTION", default=True),
            insecure=reader.flag("VAULT_INSECURE"),
        )
        settings.check_exposure()
        settings.check_antom_public_keys()
        return settings

    def check_exposure(self) -> None:
        """Refuse settings that would expose card data or lose notifications."""
        gateway = urlsplit(self.antom_base_url)
        if gateway.scheme not in {"http", "https"} or not gateway.hostname:
            raise ConfigError(
                f"VAULT_ANTOM_BASE_URL must be an http(s) URL, got {self.antom_base_url!r}"
            )
        if gateway.path.strip("/") or gateway.query:
            raise ConfigError("VAULT_ANTOM_BASE_URL is a gateway base URL without path or query")
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


def database_url_from_env(env: Mapping[str, str]) -> str:
    """The database URL alone, for commands that need nothing else (``vault-service migrate``).

    The store factory parses it (and says what is wrong with it): the backends know their URLs.
    """
    return _Reader(env).text("VAULT_DATABASE_URL", DEFAULT_DATABASE_URL)


def data_key_file_from_env(env: Mapping[str, str]) -> Path:
    """The data key file alone, for ``vault-service rotate-data-key``; its contents are checked
    when the key ring is loaded (:mod:`vault_service.store.data_keys`)."""
    return _Reader(env).readable_file("VAULT_DATA_KEY_FILE")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    """Reads typed values from the environment, naming the variable in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, "").strip() or default

    def required(self, name: str) -> str:
        value = self._env.get(name, "").strip()
        if not value:
            raise ConfigError(f"{name} is not set")
        return value

    def flag(self, name: str, *, default: bool = False) -> bool:
        value = self._env.get(name, "").strip().lower()
        if not value:
            return default
        if value in {"0", "false", "no"}:
            return False
        if value in {"1", "true", "yes"}:
            return True
        raise ConfigError(f"{name} must be 1 or 0, got {value!r}")

    def choice(self, name: str, default: str, allowed: set[str]) -> str:
        value = self.text(name, default).upper()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(sorted(allowed))}, got {value!r}")
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {raw!r}")
        return value

    def readable_file(self, name: str) -> Path:
        path = Path(self.required(name))
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
        return path

    def count(self, name: str, default: int) -> int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise ConfigError(f"{name} must be a whole number of at least 1, got {raw!r}")
        return int(raw)

    def key_version(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not (value.isascii() and value.isdigit()):
            raise ConfigError(f"{name} must be a number (Antom's keyVersion), got {value!r}")
        return value

    def networks(self, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """Comma-separated CIDRs (a bare address is its /32 or /128). Host bits are refused
        rather than masked, since ``10.1.2.3/8`` is more likely a typo than a wish to trust
        all of 10/8; so is a /0, which would let any sender pick its own source."""
        networks = []
        for item in self._env.get(name, "").split(","):
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

    def optional_key_version(self, name: str) -> str | None:
        return self.key_version(name, "") if self._env.get(name, "").strip() else None

    def optional_listen(self, name: str) -> Listen | None:
        value = self._env.get(name, "").strip()
        return None if not value else Listen.parse(name, value)

    def optional_file(self, name: str) -> Path | None:
        if not self._env.get(name, "").strip():
            return None
        return self.readable_file(name)

    def optional_url(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc or not parts.path:
            raise ConfigError(f"{name} must be an absolute http(s) URL with a path, got {value!r}")
        if parts.query or parts.fragment:
            raise ConfigError(
                f"{name} must not have a query or fragment: Antom's signature covers the path only"
            )
        return value
