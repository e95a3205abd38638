"""``vault-service check-antom``: what a first call to Antom needs, checked stage by stage.

Run from the pod, with the settings of ``serve``, before going live (docs/kubernetes.md). The
stages are those a call goes through, in order — ``dns``, ``tcp``, ``proxy`` (when
``VAULT_ANTOM_PROXY`` is set), ``tls`` (and who issued the gateway's certificate), ``request``
(a signed ``inquireVaulting`` of an id that does not exist: Antom must accept our signature and
client id), ``signature`` (Antom's answer verifies with our copy of its key), ``clock`` (our
clock against Antom's ``response-time``) — one line each, saying what to fix when it fails.
The first failure ends the run: later stages depend on it. Causes are those of the service's
log (:mod:`vault_service.antom.causes`); nothing secret is printed (the proxy's credentials,
keys and signatures never are).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509

from vault_service.antom import (
    GATEWAY_REFUSAL_CODES,
    INQUIRE_VAULTING_PATH,
    AntomConfigurationError,
    AntomHttp,
    AntomProtocolError,
    InquireVaultingRequest,
    SignatureError,
    SignatureHeader,
    Signer,
    Verifier,
    answer_result,
    causes,
    check_response_signature,
    proxy_address,
    proxy_parts,
    request_epoch,
    request_path,
    signed_headers,
    tls_context,
)
from vault_service.antom_key_files import AntomKeyFiles
from vault_service.config import Settings
from vault_service.secret import Secret

MAX_CLOCK_SKEW: Final = 60.0
"""Seconds of skew that fail the ``clock`` stage. Antom does not document how far off a
``Request-Time`` it accepts; a minute is already a broken time service, not jitter, so the
check fails long before any plausible limit."""
CONNECT_TIMEOUT: Final = 10.0
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

Clock = Callable[[], float]
Stage = Callable[[], Awaitable[str]]


class StageFailedError(Exception):
    """A stage failed: ``detail`` says what happened, ``fix`` what to do."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


def _failed(cause: str, detail: str = "") -> StageFailedError:
    return StageFailedError(f"{cause}: {detail}" if detail else cause, causes.remedy(cause))


@dataclass(frozen=True, slots=True)
class _Target:
    """Where the stages connect: the gateway, and the first hop (the proxy, if any)."""

    scheme: str
    host: str
    port: int
    hop_host: str
    hop_port: int
    proxy_authorization: Secret | None

    @classmethod
    def of(cls, settings: Settings) -> _Target:
        gateway = urlsplit(settings.antom_base_url)
        host, port = gateway.hostname or "", gateway.port or _DEFAULT_PORTS[gateway.scheme]
        if settings.antom_proxy is None:
            return cls(gateway.scheme, host, port, host, port, None)
        proxy, authorization = proxy_parts(settings.antom_proxy)
        return cls(gateway.scheme, host, port, proxy.host or "", proxy.port or 80, authorization)


class Checks:
    """The stages against one configuration; :meth:`run` prints a line per stage."""

    def __init__(
        self,
        settings: Settings,
        signer: Signer,
        verifier: Verifier,
        *,
        clock: Clock = time.time,
        report: Callable[[str], None] = print,
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._verifier = verifier
        self._clock = clock
        self._report = report
        self._target = _Target.of(settings)
        self._addresses: list[str] = []

    async def run(self) -> bool:
        """Every stage in order until one fails; whether all passed."""
        stages: list[tuple[str, Stage]] = [
            ("dns", self._dns),
            ("tcp", self._tcp),
        ]
        if self._settings.antom_proxy is not None:
            stages.append(("proxy", self._proxy))
        stages.append(("tls", self._tls))
        for name, stage in stages:
            if not await self._stage(name, stage):
                return False
        return await self._exchange()

    async def _stage(self, name: str, stage: Stage) -> bool:
        try:
            detail = await stage()
        except StageFailedError as failed:
            self._report(f"FAIL {name:<9} {failed.detail} -- fix: {failed.fix}")
            return False
        self._report(f"ok   {name:<9} {detail}")
        return True

    async def _dns(self) -> str:
        target = self._target
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.hop_host, target.hop_port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise _failed(causes.DNS, f"{target.hop_host} does not resolve") from exc
        self._addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        role = "the proxy " if self._settings.antom_proxy is not None else ""
        return f"{role}{target.hop_host} resolves to {', '.join(self._addresses)}"

    async def _tcp(self) -> str:
        async with self._hop() as (_, writer):
            peer = writer.get_extra_info("peername")
        return f"connected to {peer[0]}:{peer[1]}"

    async def _proxy(self) -> str:
        async with self._tunnel():
            pass
        assert self._settings.antom_proxy is not None
        address = proxy_address(self._settings.antom_proxy)
        return f"{address} opened a tunnel to {self._target.host}:{self._target.port}"

    async def _tls(self) -> str:
        target = self._target
        if target.scheme == "http":
            return "skipped: the gateway is plain http (loopback or VAULT_ANTOM_ALLOW_HTTP)"
        context = tls_context(self._settings.antom_ca_file)
        async with self._tunnel() as (_, writer):
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await writer.start_tls(context, server_hostname=target.host)
            except TimeoutError:
                raise _failed(causes.timeout(CONNECT_TIMEOUT)) from None
            except (ssl.SSLError, ssl.CertificateError) as exc:
                raise await self._tls_failure(exc) from exc
            tls = writer.get_extra_info("ssl_object")
            certificate = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            version = tls.version()
        return (
            f"{version}, certificate for {certificate.subject.rfc4514_string()}"
            f" issued by {certificate.issuer.rfc4514_string()}"
        )

    async def _tls_failure(self, error: ssl.SSLError | ssl.CertificateError) -> StageFailedError:
        cause = causes.of_connection_error(error)
        if cause != causes.TLS_CERTIFICATE:
            return _failed(cause, getattr(error, "reason", None) or "")
        reason = getattr(error, "verify_message", None) or "not trusted"
        issuer = await self._issuer_unverified()
        return _failed(cause, f"{reason} (the certificate was issued by {issuer})")

    async def _issuer_unverified(self) -> str:
        """Who issued the gateway's certificate, read without trusting it: what the operator
        needs to find the right CA bundle."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            async with self._tunnel() as (_, writer), asyncio.timeout(CONNECT_TIMEOUT):
                await writer.start_tls(context, server_hostname=self._target.host)
                der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        except (OSError, StageFailedError, TimeoutError):
            return "an issuer that could not be read"
        return str(x509.load_der_x509_certificate(der).issuer.rfc4514_string())

    @contextlib.asynccontextmanager
    async def _hop(self) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A TCP connection to the first hop, closed on the way out."""
        target = self._target
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(self._addresses[0], target.hop_port)
        except TimeoutError:
            raise _failed(causes.timeout(CONNECT_TIMEOUT)) from None
        except OSError as exc:
            cause = causes.of_connection_error(exc)
            raise _failed(cause, f"{self._addresses[0]}:{target.hop_port}") from exc
        try:
            yield reader, writer
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def _tunnel(self) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A connection on which the gateway is next: the hop itself, or a CONNECT tunnel
        through the proxy."""
        async with self._hop() as (reader, writer):
            if self._settings.antom_proxy is not None:
                await self._connect(reader, writer)
            yield reader, writer

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self._target
        authority = f"{target.host}:{target.port}"
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if target.proxy_authorization is not None:
            head += f"Proxy-Authorization: {target.proxy_authorization.reveal()}\r\n"
        writer.write(f"{head}\r\n".encode())
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                answer = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise _failed(causes.timeout(CONNECT_TIMEOUT)) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise _failed(causes.CONNECTION_FAILED, "the proxy closed the connection") from exc
        status_line = answer.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if status != 200:
            raise _failed(causes.proxy_refused(status))

    async def _exchange(self) -> bool:
        """The ``request``, ``signature`` and ``clock`` stages, on one signed inquiry."""
        settings = self._settings
        vaulting_request_id = f"check-antom-{secrets.token_hex(8)}"
        path = request_path(INQUIRE_VAULTING_PATH, settings.antom_client_id)
        body = InquireVaultingRequest(vaulting_request_id=vaulting_request_id).to_json_bytes()
        http = AntomHttp(1, ca_file=settings.antom_ca_file, proxy=settings.antom_proxy)
        try:
            sent = self._clock()
            async with asyncio.timeout(settings.antom_timeout):
                response = await http.post(
                    settings.antom_base_url.rstrip("/") + path,
                    body,
                    signed_headers(self._signer, path, settings.antom_client_id, body),
                )
            received = self._clock()
            raw = response.body
        except TimeoutError:
            return await self._stage(
                "request", _raise(_failed(causes.timeout(settings.antom_timeout)))
            )
        except (aiohttp.ClientError, OSError) as exc:
            return await self._stage("request", _raise(_failed(causes.of_connection_error(exc))))
        finally:
            await http.aclose()
        verdict: dict[str, bool] = {}

        async def request() -> str:
            if response.status != 200:
                raise _failed(causes.http_status(response.status))
            try:
                result = answer_result(raw)
            except AntomProtocolError as exc:
                raise _failed(causes.MALFORMED_ANSWER) from exc
            if result.result_code in GATEWAY_REFUSAL_CODES:
                refusal = AntomConfigurationError(result.result_code, "F", "")
                raise StageFailedError(
                    f"Antom refused our request: {result.result_code}", refusal.hint
                )
            try:
                verdict["signed"] = check_response_signature(
                    self._verifier,
                    path=path,
                    headers=response.headers,
                    raw=raw,
                    result=result,
                    client_id=settings.antom_client_id,
                )
            except SignatureError:
                verdict["signed"] = False
                verdict["invalid"] = True
            return (
                f"Antom answered {result.result_status}/{result.result_code} about the unknown"
                f" id {vaulting_request_id}, as it should"
            )

        async def signature() -> str:
            if verdict.get("invalid"):
                raise _failed(causes.BAD_SIGNATURE, "Antom's answer does not verify")
            if not verdict["signed"]:
                raise StageFailedError(
                    "Antom's answer is not signed (its gateway could not tell who we are)",
                    "check VAULT_ANTOM_CLIENT_ID and VAULT_ANTOM_BASE_URL",
                )
            key_version = SignatureHeader.parse(response.headers["signature"]).key_version
            return f"Antom's answer verifies with our key for keyVersion {key_version}"

        async def clock() -> str:
            antom_time = request_epoch(response.headers.get("response-time", ""))
            if antom_time is None:
                raise _failed(causes.MALFORMED_ANSWER, "response-time not understood")
            skew = antom_time - (sent + received) / 2
            if abs(skew) > MAX_CLOCK_SKEW:
                side = "behind" if skew > 0 else "ahead of"
                raise StageFailedError(
                    f"our clock is {abs(skew):.0f} s {side} Antom's",
                    "synchronise this node's clock (NTP): Antom checks every Request-Time",
                )
            return f"our clock is {skew:+.1f} s from Antom's (limit {MAX_CLOCK_SKEW:.0f} s)"

        for name, stage in (("request", request), ("signature", signature), ("clock", clock)):
            if not await self._stage(name, stage):
                return False
        return True


def _raise(error: StageFailedError) -> Stage:
    async def failing() -> str:
        raise error

    return failing


async def check(
    settings: Settings, *, clock: Clock = time.time, report: Callable[[str], None] = print
) -> bool:
    """Load the Antom keys as ``serve`` does, then run every stage; whether all passed."""
    keys = await AntomKeyFiles.load(settings)
    return await Checks(settings, keys.signer, keys.verifier, clock=clock, report=report).run()
