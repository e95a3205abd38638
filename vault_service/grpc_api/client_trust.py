"""Whether a client certificate chain is trusted by the client CA bundle in force now.

The TLS handshake verifies a client's chain once, against the CA bundle of that moment, and a
connection then lives for up to ``VAULT_GRPC_MAX_CONNECTION_AGE`` (a stream on it for as long
as it stays open). When the bundle changes (SIGHUP after a CA rotation, or the removal of a
compromised CA), the callers it no longer trusts must lose their calls and streams at once, as
a removed token does. So every call on a mutual-TLS port also checks the peer's chain against
the bundle in force, here, in Python.

The check is cryptography's client verifier with the extension rules of the handshake (gRPC's
TLS stack): a chain of valid signatures and validity periods up to a certificate of the bundle,
every issuer a CA (``basicConstraints`` present and ``cA`` asserted), and a leaf whose extended
key usage, if it has one, allows client authentication. cryptography's own defaults are the Web
PKI profile (authority key identifiers, key usage on CAs, ...), which would refuse private CAs
that the handshake rightly accepts.

Results are kept per chain for the life of one bundle (a new bundle is a new
:class:`ClientTrust`), so a caller costs one verification per bundle, not one per call; they are
bounded, the least recently added forgotten first.
"""

from __future__ import annotations

import datetime
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

CACHE_CAPACITY: Final = 1024
"""How many distinct peer chains one bundle remembers the verdict of."""

_CLIENT_USAGES: Final = frozenset(
    {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)


def _allows_client_auth(
    policy: Policy, certificate: x509.Certificate, usage: x509.ExtendedKeyUsage | None
) -> None:
    if usage is not None and not _CLIENT_USAGES & set(usage):
        raise ValueError("the extended key usage does not allow client authentication")


_CA_POLICY: Final = ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, None
)
_LEAF_POLICY: Final = ExtensionPolicy.permit_all().may_be_present(
    x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _allows_client_auth
)


class ClientTrust:
    """The client CA bundle of one version of ``VAULT_GRPC_TLS_CLIENT_CA_FILE``."""

    def __init__(self, bundle: bytes) -> None:
        """``bundle``: PEM certificates (raises ``ValueError`` when it holds none)."""
        self._store = Store(x509.load_pem_x509_certificates(bundle))
        self._verdicts: dict[bytes, bool] = {}

    def trusts(self, chain: bytes) -> bool:
        """Whether ``chain`` (PEM, the peer's certificate first, then what it sent with it)
        leads to a certificate of this bundle."""
        verdict = self._verdicts.get(chain)
        if verdict is None:
            verdict = self._verify(chain)
            self._verdicts[chain] = verdict
            if len(self._verdicts) > CACHE_CAPACITY:
                del self._verdicts[next(iter(self._verdicts))]
        return verdict

    def _verify(self, chain: bytes) -> bool:
        try:
            leaf, *sent = x509.load_pem_x509_certificates(chain)
        except ValueError:
            return False
        try:
            self._verifier().verify(leaf, [cert for cert in sent if cert != leaf])
        except VerificationError:
            return False
        return True

    def _verifier(self) -> ClientVerifier:
        return (
            PolicyBuilder()
            .store(self._store)
            .time(datetime.datetime.now(datetime.UTC))
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_LEAF_POLICY)
            .build_client_verifier()
        )
