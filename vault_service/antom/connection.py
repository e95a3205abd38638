"""How the Antom client reaches Antom: which certificates it trusts and which proxy it uses.

Trust: the public CA list httpx ships (certifi) **plus** ``ca_file`` when set. Adding rather
than replacing is deliberate: the usual reason for the setting is a company CA re-signing
traffic at a TLS-inspecting egress gateway, and replacing the list would make the day that
egress path is bypassed (or Antom is reached directly again) fail for no visible reason. Pinning
a gateway is not what this setting is for. Hostname verification is always on and the oldest
protocol accepted is TLS 1.2.

Proxy: an explicit ``http(s)://[user:password@]host:port`` URL; HTTPS to Antom goes through it
as a ``CONNECT`` tunnel, so the proxy sees host names, never the requests. The URL travels as a
:class:`~vault_service.secret.Secret` and only :func:`proxy_address` (host and port) is ever
shown. The standard ``HTTPS_PROXY``/``NO_PROXY``/``SSL_CERT_FILE`` variables are **not**
honoured (``trust_env=False``): the service reaches one host, and a variable set for other
tools in the same pod would silently change where card data goes and which CAs vouch for it;
every setting that does is listed in ``serve --help`` instead.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from httpx_aiohttp import AiohttpTransport

from vault_service.secret import Secret


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Public roots, plus the PEM bundle ``ca_file``; hostnames checked; TLS 1.2 or newer."""
    context = httpx.create_ssl_context(verify=True, trust_env=False)
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def proxy_address(proxy: Secret) -> str:
    """``host:port`` of the proxy (a URL the settings checked): what logs may show of it."""
    parts = urlsplit(proxy.reveal())
    host = parts.hostname or ""
    return f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"


def proxy_parts(proxy: Secret) -> tuple[httpx.URL, Secret | None]:
    """The proxy's URL without credentials, and the ``Proxy-Authorization`` value they make
    (``None`` without credentials)."""
    url = httpx.URL(proxy.reveal())
    if not url.username and not url.password:
        return url, None
    userpass = base64.b64encode(f"{url.username}:{url.password}".encode()).decode()
    return url.copy_with(username=None, password=None), Secret(f"Basic {userpass}")


def _proxy(proxy: Secret) -> httpx.Proxy:
    """Credentials go in a header (aiohttp's ``proxy_auth``, which the transport would use
    for credentials in the URL, is deprecated)."""
    url, authorization = proxy_parts(proxy)
    if authorization is None:
        return httpx.Proxy(url)
    return httpx.Proxy(url, headers={"Proxy-Authorization": authorization.reveal()})


def new_http_client(
    max_connections: int, *, ca_file: Path | None = None, proxy: Secret | None = None
) -> httpx.AsyncClient:
    """The shared HTTP client: aiohttp transport, bounded pool, no redirects, no environment.

    No httpx timeouts: the Antom client bounds each attempt as a whole (connect, TLS, request
    and answer) with its own ``attempt_timeout``, the one number its log reports.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        transport=AiohttpTransport(
            verify=tls_context(ca_file),
            limits=limits,
            trust_env=False,
            proxy=None if proxy is None else _proxy(proxy),
        ),
        follow_redirects=False,
        trust_env=False,
        timeout=None,  # noqa: S113 (asyncio.timeout bounds each attempt: see the docstring)
    )
