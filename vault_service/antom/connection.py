"""How the Antom client reaches Antom: which certificates it trusts, which proxy it uses, and
the one HTTP session every call goes through.

Trust: the public CA list of ``certifi`` **plus** ``ca_file`` when set. Adding rather than
replacing is deliberate: the usual reason for the setting is a company CA re-signing traffic at
a TLS-inspecting egress gateway, and replacing the list would make the day that egress path is
bypassed (or Antom is reached directly again) fail for no visible reason. Pinning a gateway is
not what this setting is for. Hostname verification is always on and the oldest protocol
accepted is TLS 1.2.

Proxy: an explicit ``http(s)://[user:password@]host:port`` URL; HTTPS to Antom goes through it
as a ``CONNECT`` tunnel, so the proxy sees host names, never the requests. The URL travels as a
:class:`~vault_service.secret.Secret` and only :func:`proxy_address` (host and port) is ever
shown. The standard ``HTTPS_PROXY``/``NO_PROXY``/``SSL_CERT_FILE`` variables are **not**
honoured (``trust_env=False``): the service reaches one host, and a variable set for other
tools in the same pod would silently change where card data goes and which CAs vouch for it;
every setting that does is listed in ``serve --help`` instead.

HTTP: aiohttp directly. The client used to speak httpx over aiohttp's transport
(``httpx-aiohttp``); httpx's request and response objects on top of aiohttp's own were a
measured share of CreateSession's CPU (``bench/results/create_session/``) and bought nothing
this one POST needs.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import certifi
from multidict import CIMultiDictProxy
from yarl import URL

from vault_service.antom import causes
from vault_service.antom.errors import AntomUnavailableError
from vault_service.secret import Secret


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Public roots, plus the PEM bundle ``ca_file``; hostnames checked; TLS 1.2 or newer."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def proxy_address(proxy: Secret) -> str:
    """``host:port`` of the proxy (a URL the settings checked): what logs may show of it."""
    url = URL(proxy.reveal())
    host = url.host or ""
    return f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"


def proxy_parts(proxy: Secret) -> tuple[URL, Secret | None]:
    """The proxy's URL without credentials, and the ``Proxy-Authorization`` value they make
    (``None`` without credentials). Credentials go in that header: aiohttp's ``proxy_auth``,
    which it would use for credentials in the URL, is deprecated."""
    url = URL(proxy.reveal())
    if not url.user and not url.password:
        return url, None
    userpass = base64.b64encode(f"{url.user or ''}:{url.password or ''}".encode()).decode()
    return url.with_user(None), Secret(f"Basic {userpass}")


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """One HTTP answer, read whole; ``headers`` looks names up without regard to case."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class AntomHttp:
    """The shared HTTP session: bounded pool of kept-alive connections, no redirects, no
    environment, no library timeouts.

    The Antom client bounds each attempt as a whole (connect, TLS, request and answer) with
    its own ``attempt_timeout``, the one number its log reports. The aiohttp session is made
    on the first POST, inside the running loop it belongs to; :meth:`aclose` closes it.
    """

    def __init__(
        self, max_connections: int, *, ca_file: Path | None = None, proxy: Secret | None = None
    ) -> None:
        self._max_connections = max_connections
        self._tls = tls_context(ca_file)
        self._proxy: URL | None = None
        self._proxy_headers: dict[str, str] | None = None
        if proxy is not None:
            self._proxy, authorization = proxy_parts(proxy)
            if authorization is not None:
                self._proxy_headers = {"Proxy-Authorization": authorization.reveal()}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        """POST ``body`` and read the whole answer; aiohttp's errors (``aiohttp.ClientError``)
        and ``OSError`` pass through for the caller to name their cause."""
        async with self._open().post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
        ) as response:
            return HttpAnswer(response.status, response.headers, await _read_capped(response))

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the Antom HTTP session is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._tls),
                timeout=aiohttp.ClientTimeout(),  # none: see the class docstring
                trust_env=False,
            )
        return self._session


MAX_ANSWER_BYTES: Final = 1 << 20
"""Antom's answers are a few kilobytes; a megabyte is something else talking (a
misconfigured egress gateway, a page of HTML), and reading it whole, decompressed, would hold
that much memory per call."""


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, decompressed, unless it exceeds :data:`MAX_ANSWER_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise AntomUnavailableError(
                f"the answer is larger than {MAX_ANSWER_BYTES} bytes",
                cause=causes.MALFORMED_ANSWER,
            )
    return b"".join(chunks)
