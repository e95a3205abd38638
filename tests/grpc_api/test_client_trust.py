"""The re-check of a client's chain against the client CA bundle in force (issue 9 #11): it
accepts what the TLS handshake accepts from the test PKI and refuses what it refuses."""

from __future__ import annotations

from tests.fixtures.tls import Authority
from vault_service.grpc_api.client_trust import ClientTrust


def test_a_chain_is_trusted_only_up_to_a_certificate_of_the_bundle(
    client_ca: Authority, stranger_ca: Authority
) -> None:
    """Guards the verifier's profile: private CAs without the Web PKI's extensions (no
    authority key identifier, no key usage) are trusted, as the handshake trusts them, and
    the leaf itself is what is verified, with what the client sent after it."""
    trust = ClientTrust(client_ca.issued.cert)
    intermediate = client_ca.intermediate("issuing CA")
    under_intermediate = intermediate.issue("checkout")
    assert trust.trusts(client_ca.issue("checkout").cert)
    assert trust.trusts(client_ca.issue("x", dns=("billing.shop.svc",)).cert)
    assert trust.trusts(under_intermediate.cert + intermediate.issued.cert)
    assert trust.trusts(
        under_intermediate.cert + under_intermediate.cert + intermediate.issued.cert
    )
    assert not trust.trusts(under_intermediate.cert)
    assert not trust.trusts(stranger_ca.issue("checkout").cert)
    assert not trust.trusts(stranger_ca.issue("checkout").cert + client_ca.issued.cert)
    assert not trust.trusts(b"")
    assert not trust.trusts(b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    assert not ClientTrust(stranger_ca.issued.cert).trusts(client_ca.issue("checkout").cert)
