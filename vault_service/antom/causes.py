"""Why an attempt to reach Antom failed, in a fixed vocabulary that is safe to log.

An operator reading "antom call failed" needs the cause (a missing CA, a proxy that refuses us,
a firewall) without the log ever carrying what Antom or a proxy said: exception texts can hold
a proxy URL with its password, a header or a body. So a failure is reduced to one of the
phrases below, chosen by exception type, never by message; a number (seconds, an HTTP status)
is the only variable part. The Antom client logs and summarises by these phrases and
``vault-service check-antom`` prints them.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Final

import aiohttp

DNS: Final = "dns"
CONNECTION_REFUSED: Final = "connection refused"
CONNECTION_FAILED: Final = "connection failed"
"""Any other failure to connect or to keep the connection (reset, unreachable network)."""
TLS_CERTIFICATE: Final = "tls certificate"
TLS_HANDSHAKE: Final = "tls handshake"
BAD_SIGNATURE: Final = "bad signature"
MALFORMED_ANSWER: Final = "malformed answer"
UNKNOWN_RESULT: Final = "unknown result"
"""Antom answered ``U``: it could not tell, and says to ask again."""
GATEWAY_REFUSAL: Final = "gateway refusal"
"""Antom's gateway refused our credentials (signature, key version, client id)."""
REJECTED: Final = "rejected"
"""Antom's signed ``F`` about the request itself: an answer, not a broken connection."""


def timeout(seconds: float) -> str:
    """No answer within ``seconds``."""
    return f"timeout after {seconds:.3g} s"


def family(cause: str) -> str:
    """``cause`` without its measurement: timeouts of any length count as one kind."""
    return "timeout" if cause.startswith("timeout") else cause


def http_status(status: int) -> str:
    """Antom (or something in front of it) answered with a status other than 200."""
    return f"http status {status}"


def proxy_refused(status: int) -> str:
    """The egress proxy answered our ``CONNECT`` with ``status`` (407: credentials)."""
    return f"proxy refused with http status {status}"


def of_connection_error(error: BaseException) -> str:
    """The cause of a failure to connect, from the exception or what it was raised from.

    Both the stdlib's exceptions (``vault-service check-antom`` connects by itself) and
    aiohttp's (the client's) are understood.
    """
    for link in _chain(error):
        if isinstance(link, aiohttp.ClientHttpProxyError):
            return proxy_refused(link.status)
        if isinstance(link, ssl.SSLCertVerificationError | ssl.CertificateError):
            return TLS_CERTIFICATE
        if isinstance(link, ssl.SSLError):
            return TLS_HANDSHAKE
        if isinstance(link, aiohttp.ClientConnectorDNSError | socket.gaierror):
            return DNS
        if isinstance(link, ConnectionRefusedError):
            return CONNECTION_REFUSED
    return CONNECTION_FAILED


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, what it was raised from, and so on; aiohttp's connector errors keep the
    underlying ``OSError`` aside, as ``os_error``."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        if isinstance(link, aiohttp.ClientConnectorError):
            yield link.os_error
        link = link.__cause__ or link.__context__


def remedy(cause: str) -> str:
    """What an operator should check for ``cause``, in the words of our settings."""
    if cause.startswith("timeout"):
        return (
            "Antom (or the proxy) did not answer in time: check egress firewall rules,"
            " VAULT_ANTOM_PROXY, and VAULT_ANTOM_TIMEOUT"
        )
    if cause.startswith("proxy refused"):
        return "the proxy refused the tunnel: check VAULT_ANTOM_PROXY (its credentials, its ACL)"
    if cause.startswith("http status"):
        return "something answered other than Antom's API: check VAULT_ANTOM_BASE_URL"
    return _REMEDIES.get(cause, "check VAULT_ANTOM_BASE_URL and the network path to it")


_REMEDIES: Final = {
    DNS: "the gateway's name does not resolve: check VAULT_ANTOM_BASE_URL and the pod's DNS",
    CONNECTION_REFUSED: (
        "nothing listens there: check VAULT_ANTOM_BASE_URL's port, or VAULT_ANTOM_PROXY"
    ),
    CONNECTION_FAILED: (
        "the connection failed or was cut: check egress network policy and VAULT_ANTOM_PROXY"
    ),
    TLS_CERTIFICATE: (
        "the gateway's certificate is not trusted or does not name its host: set"
        " VAULT_ANTOM_CA_FILE to the CA that issued it (e.g. the egress gateway's)"
    ),
    TLS_HANDSHAKE: (
        "TLS could not be agreed (TLS 1.2 or newer is required): check VAULT_ANTOM_BASE_URL"
        " is an https endpoint"
    ),
    BAD_SIGNATURE: (
        "Antom's answers do not verify: check VAULT_ANTOM_PUBLIC_KEY_FILE and"
        " VAULT_ANTOM_PUBLIC_KEY_VERSION (Antom's key for this client id)"
    ),
    MALFORMED_ANSWER: "the answer is not Antom's: check VAULT_ANTOM_BASE_URL",
    UNKNOWN_RESULT: "Antom could not decide (U); it usually clears, retries continue",
}
