"""How the bench identifies itself to the service, the way a calling service would.

The callers file and the PKI come from the test suite's fixtures (``tests.fixtures.callers``,
``tests.fixtures.tls``), so the bench exercises exactly the credentials the tests prove correct.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.fixtures.callers import Metadata, TokenFileEditor, bearer
from tests.fixtures.tls import Authority, write_server_files

AUTH_MODES = ("none", "tokens", "mtls")
CLIENT_NAME = "bench-client"
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    # Every channel gets its own connection (by default equal channels share one).
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True)
class Access:
    """What the service is told about its callers (``env``) and what the bench's gRPC calls
    carry: channel credentials (TLS, mTLS) and call metadata (a bearer token)."""

    mode: str
    env: dict[str, str] = field(default_factory=dict)
    credentials: grpc.ChannelCredentials | None = None
    metadata: Metadata = ()
    callers: int = 0

    def channel(self, port: int) -> grpc.aio.Channel:
        target = f"127.0.0.1:{port}"
        if self.credentials is None:
            return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(target, self.credentials, options=CHANNEL_OPTIONS)

    def describe(self) -> str:
        if self.mode == "tokens":
            return f"bearer tokens, callers file of {self.callers:,} entries"
        if self.mode == "mtls":
            return "mTLS (TLS with a client CA, the bench presents a client certificate)"
        return "none (no identity source: every call is the anonymous caller)"


def tokens_access(workdir: Path, callers: int) -> Access:
    """A callers file of ``callers`` entries (distinct names, one token each); the bench
    uses the last entry's token (every entry is compared anyway)."""
    callers_file = TokenFileEditor(workdir / "callers.json", [])
    tokens = callers_file.add_all(f"bench-caller-{n}" for n in range(callers))
    return Access(
        "tokens",
        {
            "VAULT_AUTH_TOKENS_FILE": str(callers_file.path),
            "VAULT_PUBLIC_HEALTH": "0",
        },
        metadata=bearer(tokens[-1]),
        callers=callers,
    )


def mtls_access(workdir: Path) -> Access:
    """The tests' PKI (P-256): a server CA and a client CA, the service's certificate for
    127.0.0.1 and the bench's client certificate."""
    server_ca = Authority.create("bench server CA")
    client_ca = Authority.create("bench client CA")
    files = write_server_files(workdir, server_ca, client_ca)
    client = client_ca.issue(CLIENT_NAME)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server_ca.issued.cert,
        private_key=client.key,
        certificate_chain=client.cert,
    )
    env = {
        "VAULT_GRPC_TLS_CERT_FILE": str(files.cert_file),
        "VAULT_GRPC_TLS_KEY_FILE": str(files.key_file),
        "VAULT_GRPC_TLS_CLIENT_CA_FILE": str(files.client_ca_file),
        "VAULT_PUBLIC_HEALTH": "0",
    }
    return Access("mtls", env, credentials)


def access_for(args: argparse.Namespace, workdir: Path) -> Access:
    if args.auth == "tokens":
        return tokens_access(workdir, args.callers)
    if args.auth == "mtls":
        return mtls_access(workdir)
    return Access("none")
