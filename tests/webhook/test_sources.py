"""Which source a failed authentication counts against: trusted proxies and X-Forwarded-For,
over loopback with the real app, and the source derivation itself (IPv6 /64 grouping, entries
with ports, junk headers and the warning about them, a Hypothesis property) on
:class:`SourceResolver` directly, since loopback is only IPv4 and ``::1``.

Over loopback the webhook trusts 127.0.0.1 (``http``'s address) and 10.0.0.0/8 as proxies;
127.0.0.2 (``other_source``) is a peer it does not trust.
"""

from __future__ import annotations

import logging
from ipaddress import ip_address, ip_network

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault_service.antom import PrivateKey
from vault_service.domain import VaultingStatus
from vault_service.throttle import Throttle
from vault_service.webhook.limiter import FailureLimiter
from vault_service.webhook.source import (
    UNREADABLE_REASON,
    UNREADABLE_WARNING_INTERVAL,
    Network,
    SourceResolver,
    source_key,
)

from .conftest import (
    JSON_UTF8,
    PATH,
    ServeFactory,
    Webhook,
    WebhookCaller,
    forge,
    notification,
    raw_exchange,
)

LIMIT = 3
ACK = b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
TOO_MANY = b'{"error":"too many requests"}'
WEBHOOK_LOGGER = "vault_service.webhook"
TRUSTED: tuple[Network, ...] = (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"))
ANTOM = "203.0.113.9"
ATTACKER = "198.51.100.7"


def _unreadable_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The warnings that a trusted proxy sent an X-Forwarded-For entry that cannot be read."""
    return [
        record
        for record in caplog.records
        if record.name.startswith(WEBHOOK_LOGGER)
        and getattr(record, "reason", None) == UNREADABLE_REASON
    ]


def _sources(caplog: pytest.LogCaptureFixture) -> list[object]:
    """The ``source`` of every webhook log line that has one (the 401s and 429s)."""
    return [
        record.source
        for record in caplog.records
        if record.name.startswith(WEBHOOK_LOGGER) and hasattr(record, "source")
    ]


async def _signed(caller: WebhookCaller, vaulting_request_id: str, forwarded_for: str) -> int:
    """Antom's correctly signed notification, arriving with ``forwarded_for``; the status."""
    body = notification(vaulting_request_id)
    headers = {**caller.headers(body), "X-Forwarded-For": forwarded_for}
    reply = await caller.post(body, headers)
    assert reply.body == (ACK if reply.status == 200 else TOO_MANY)
    return reply.status


@pytest.fixture
async def proxied(webhook: Webhook, serve: ServeFactory, antom_key: PrivateKey) -> WebhookCaller:
    """A caller from 127.0.0.1 (a trusted proxy) of an app with LIMIT failures per source."""
    url = await serve(webhook.service, failure_limit=LIMIT, trusted_proxies=TRUSTED)
    return WebhookCaller(webhook.caller.http, url, antom_key)


# -- over loopback -------------------------------------------------------------------------------


async def test_an_untrusted_peers_forwarded_for_is_ignored(
    webhook: Webhook,
    proxied: WebhookCaller,
    other_source: aiohttp.ClientSession,
    antom_key: PrivateKey,
    foreign_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards "never trust a header from an untrusted peer": a sender at 127.0.0.2 naming a
    new client in every X-Forwarded-For still spends its own one budget and is limited (and
    logged) as 127.0.0.2."""
    stranger = WebhookCaller(other_source, proxied.base_url, antom_key)
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        statuses = [
            await forge(stranger, "vr-x", foreign_key, {"X-Forwarded-For": f"192.0.2.{n}"})
            for n in range(LIMIT + 1)
        ]
    assert statuses == [401] * LIMIT + [429]
    assert set(_sources(caplog)) == {"127.0.0.2"}


async def test_forwarded_clients_behind_a_trusted_proxy_have_separate_buckets(
    webhook: Webhook,
    proxied: WebhookCaller,
    foreign_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards finding 7 (Antom locked out through a shared proxy): through the trusted proxy,
    an attacker's failures limit the attacker's forwarded address only; Antom's correctly
    signed notification through the same proxy is acknowledged and stored, and the proxy's
    own address keeps its budget."""
    await webhook.open_session("vr-proxied")
    before = await webhook.snapshot("vr-proxied")
    attacker = {"X-Forwarded-For": ATTACKER}
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        for _ in range(LIMIT):
            assert await forge(proxied, "vr-proxied", foreign_key, attacker) == 401
        assert await _signed(proxied, "vr-proxied", ATTACKER) == 429
    assert _sources(caplog) == [ATTACKER] * (LIMIT + 1)
    assert await webhook.snapshot("vr-proxied") == before

    assert await _signed(proxied, "vr-proxied", ANTOM) == 200
    record = await webhook.store.get("vr-proxied")
    assert record is not None
    assert record.status is VaultingStatus.SUCCEEDED
    assert await forge(proxied, "vr-proxied", foreign_key) == 401  # the proxy itself: not limited


@pytest.mark.parametrize(
    "attacker_chain",
    [
        # The attacker names Antom; the edge proxy appends the attacker's real address.
        f"{ANTOM}, {ATTACKER}",
        # ... and the internal proxies (10/8, trusted) append theirs on the right.
        f"{ANTOM}, {ATTACKER}, 10.1.2.3, 10.4.5.6",
        # The attacker also forges trusted-looking hops of its own, left of its real address.
        f"{ANTOM}, 10.9.9.9, 127.0.0.1, {ATTACKER}, 10.1.2.3",
    ],
)
async def test_a_spoofed_chain_limits_the_spoofer_not_the_address_it_names(
    webhook: Webhook,
    proxied: WebhookCaller,
    foreign_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    attacker_chain: str,
) -> None:
    """Guards the right-to-left walk: a sender controls only the left of X-Forwarded-For, so
    trusted entries on the right are skipped and the first untrusted one (the attacker as the
    edge proxy saw it) is charged; Antom, whose address the attacker wrote, is still
    acknowledged."""
    await webhook.open_session("vr-spoof")
    spoofed = {"X-Forwarded-For": attacker_chain}
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        for _ in range(LIMIT):
            assert await forge(proxied, "vr-spoof", foreign_key, spoofed) == 401
        assert await _signed(proxied, "vr-spoof", attacker_chain) == 429
    assert set(_sources(caplog)) == {ATTACKER}
    assert await _signed(proxied, "vr-spoof", f"{ANTOM}, 10.1.2.3") == 200


async def test_forwarded_entries_with_ports_are_their_senders(
    webhook: Webhook,
    proxied: WebhookCaller,
    foreign_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards the 2nd review's port finding: behind a proxy that writes ``ip:port`` (Azure
    Application Gateway) each sender is its own source, whatever port it came from, instead of
    every request landing silently in the proxy's one bucket; Antom, also written with a port,
    is still acknowledged, and readable entries log no warning."""
    await webhook.open_session("vr-ports")
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        for port in range(50_000, 50_000 + LIMIT):
            forwarded = {"X-Forwarded-For": f"{ATTACKER}:{port}, 10.1.2.3:443"}
            assert await forge(proxied, "vr-ports", foreign_key, forwarded) == 401
        assert await _signed(proxied, "vr-ports", f"{ATTACKER}:60000") == 429
        assert await _signed(proxied, "vr-ports", f"{ANTOM}:61000, 10.1.2.3:443") == 200
    assert _sources(caplog) == [ATTACKER] * (LIMIT + 1)
    assert _unreadable_warnings(caplog) == []


async def test_junk_forwarded_for_from_a_trusted_proxy_counts_against_the_proxy(
    webhook: Webhook,
    proxied: WebhookCaller,
    foreign_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards "malformed header → the peer itself": junk (an empty list item, a port out of
    range, raw non-UTF-8 bytes) is never a source of its own, never a crash; each failure is
    charged to the proxy, which is then limited even without the header. The misconfiguration
    is logged as a warning naming the proxy, without echoing the header."""
    port = int(proxied.base_url.rpartition(":")[2])
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {JSON_UTF8}\r\n"
        "client-id: nobody\r\nContent-Length: 2\r\n"
    ).encode() + b"X-Forwarded-For: \xff\xfe1.2.3.4\r\n\r\n"
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        for junk in (f"{ATTACKER},,", "1.2.3.4:99999"):
            assert await forge(proxied, "vr-junk", foreign_key, {"X-Forwarded-For": junk}) == 401
        status_line, _, _ = await raw_exchange(port, head, (b"{}",))
        assert status_line.startswith("HTTP/1.1 401")
        assert await forge(proxied, "vr-junk", foreign_key) == 429
    assert set(_sources(caplog)) == {"127.0.0.1"}
    warning = _unreadable_warnings(caplog)[0]
    assert warning.levelno == logging.WARNING
    assert getattr(warning, "proxy", None) == "127.0.0.1"
    assert "99999" not in warning.getMessage()


# -- the source derivation -----------------------------------------------------------------------

RESOLVER = SourceResolver((*TRUSTED, ip_network("2001:db8:ffff::/48")))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # Untrusted peers: the header is never read.
        ("192.0.2.1", [ATTACKER], "192.0.2.1"),
        ("2001:db8:1:2::5", [ATTACKER], "2001:db8:1:2::/64"),
        # Trusted peers: the first untrusted address from the right.
        ("10.0.0.1", [f"{ANTOM}, {ATTACKER}"], ATTACKER),
        ("10.0.0.1", [ANTOM, f"{ATTACKER}, 10.2.2.2"], ATTACKER),  # repeated headers: one list
        ("::ffff:10.0.0.1", [ATTACKER], ATTACKER),  # a mapped peer is trusted as IPv4
        ("2001:db8:ffff::1", ["2001:db8:1:2:aaaa::1, 2001:db8:ffff::2"], "2001:db8:1:2::/64"),
        ("10.0.0.1", ["::ffff:198.51.100.7"], ATTACKER),
        ("10.0.0.1", [" 10.3.3.3 ,\t10.2.2.2"], "10.3.3.3"),  # all trusted: the leftmost
        # Entries with ports, as some proxies write them.
        ("10.0.0.1", ["198.51.100.7:4711"], ATTACKER),
        ("10.0.0.1", ["198.51.100.7:0"], ATTACKER),
        ("10.0.0.1", [" 198.51.100.7:65535\t"], ATTACKER),
        ("10.0.0.1", [f"{ANTOM}:1, 10.2.2.2:8080"], ANTOM),  # a trusted hop with a port
        ("10.0.0.1", ["[2001:db8:1:2::7]:443"], "2001:db8:1:2::/64"),
        ("10.0.0.1", ["[2001:db8:1:2::7]"], "2001:db8:1:2::/64"),
        ("10.0.0.1", ["[::ffff:198.51.100.7]:80"], ATTACKER),
        ("10.0.0.1", ["2001:db8:1:2::80"], "2001:db8:1:2::/64"),  # bare: 80 is not a port
        # Missing or junk: the peer.
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", [""], "10.0.0.1"),
        ("10.0.0.1", [f"{ATTACKER},"], "10.0.0.1"),
        ("10.0.0.1", ["unknown"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7:65536"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7:"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7:080"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7:+80"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7: 80"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7:\uff18\uff10"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7:80:80"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7:http"], "10.0.0.1"),
        ("10.0.0.1", ["[198.51.100.7]:80"], "10.0.0.1"),
        ("10.0.0.1", ["[2001:db8::1]:"], "10.0.0.1"),
        ("10.0.0.1", ["[2001:db8::1]80"], "10.0.0.1"),
        ("10.0.0.1", ["[2001:db8::1]:65536"], "10.0.0.1"),
        ("10.0.0.1", ["[2001:db8::1"], "10.0.0.1"),
        ("10.0.0.1", ["2001:db8::1]:80"], "10.0.0.1"),
        ("10.0.0.1", ["2001:db8::1:80:"], "10.0.0.1"),
        ("10.0.0.1", ["[]:80"], "10.0.0.1"),
        ("10.0.0.1", ["for=198.51.100.7"], "10.0.0.1"),
        ("10.0.0.1", ["1.2.3.4.5"], "10.0.0.1"),
        ("10.0.0.1", ["\uff11.2.3.4"], "10.0.0.1"),
        ("10.0.0.1", [f"junk, {ATTACKER}"], ATTACKER),  # junk left of the sender is not read
        ("10.0.0.1", [f"{ATTACKER}, junk, 10.2.2.2"], "10.0.0.1"),
        # Not a TCP peer at all.
        (None, [ATTACKER], "unknown"),
        ("not-an-ip", [ATTACKER], "not-an-ip"),
    ],
)
def test_the_source_of_a_request(peer: str | None, forwarded_for: list[str], expected: str) -> None:
    """Guards each rule of ``vault_service.webhook.source``: trust only trusted peers, walk
    from the right, fall back to the peer on anything unreadable, group IPv6 by /64."""
    assert RESOLVER.source(peer, forwarded_for) == expected


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unreadable_entries_from_a_trusted_proxy_are_warned_about_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards the warning that makes the silent fallback visible: junk from a trusted proxy
    logs one WARNING naming the proxy (never the header) per interval, then one with the count
    of the suppressed ones; junk from an untrusted peer, or left of the sender (never read),
    and entries with ports log nothing."""
    clock = _Clock()
    resolver = SourceResolver(TRUSTED, warnings=Throttle(UNREADABLE_WARNING_INTERVAL, clock))
    junk = "evil\x1b[2J=unknown"
    with caplog.at_level(logging.INFO, logger=WEBHOOK_LOGGER):
        assert resolver.source("192.0.2.1", [junk]) == "192.0.2.1"
        assert resolver.source("10.0.0.1", [f"{junk}, {ATTACKER}:1"]) == ATTACKER
        assert resolver.source("10.0.0.1", ["[2001:db8::1]:2"]) == "2001:db8::/64"
        assert _unreadable_warnings(caplog) == []

        assert resolver.source("10.0.0.1", [junk]) == "10.0.0.1"
        clock.now += UNREADABLE_WARNING_INTERVAL - 0.5
        assert resolver.source("10.9.9.9", [junk]) == "10.9.9.9"
        assert resolver.source("127.0.0.1", [junk]) == "127.0.0.1"
        clock.now += 0.5
        assert resolver.source("10.0.0.2", [f"{ATTACKER}, {junk}"]) == "10.0.0.2"
    warnings = _unreadable_warnings(caplog)
    assert [(w.levelno, getattr(w, "proxy", None)) for w in warnings] == [
        (logging.WARNING, "10.0.0.1"),
        (logging.WARNING, "10.0.0.2"),
    ]
    assert [getattr(w, "suppressed", None) for w in warnings] == [0, 2]
    for warning in warnings:
        assert "evil" not in warning.getMessage()
        assert ATTACKER not in warning.getMessage()


def test_ipv6_sources_are_grouped_by_64_and_mapped_ipv4_is_ipv4() -> None:
    """Guards the /64 key (an attacker holding a /64 is one source) while different /64s and
    every IPv4 address stay apart, and a dual-stack socket's ``::ffff:a.b.c.d`` is a.b.c.d."""
    same = [source_key(ip_address(a)) for a in ("2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3")]
    assert same == ["2001:db8:1:2::/64"] * 2
    assert source_key(ip_address("2001:db8:1:3::1")) == "2001:db8:1:3::/64"
    assert source_key(ip_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert source_key(ip_address("192.0.2.2")) == "192.0.2.2"


def test_a_64_walking_attacker_is_limited_as_one_source() -> None:
    """Guards the point of /64 grouping end to end with the limiter: failures from LIMIT
    different addresses of one /64 limit the whole /64, and only it."""
    limiter = FailureLimiter(limit=LIMIT)
    resolver = SourceResolver()
    for n in range(LIMIT):
        limiter.record_failure(resolver.source(f"2001:db8:1:2::{n + 1:x}", []))
    assert limiter.is_limited(resolver.source("2001:db8:1:2:dead:beef::1", []))
    assert not limiter.is_limited(resolver.source("2001:db8:1:3::1", []))


_ADDRESSES = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
_PORTS = st.one_of(st.integers(0, 65535).map(str), st.text("0123456789:+ ", max_size=6))
_WITH_PORTS = st.one_of(
    st.builds("{}:{}".format, st.ip_addresses(v=4), _PORTS),
    st.builds("[{}]:{}".format, st.ip_addresses(v=6), _PORTS),
    st.builds("[{}]".format, st.ip_addresses(v=6)),
)
_ENTRIES = st.one_of(
    _ADDRESSES,
    _WITH_PORTS,
    st.text(max_size=20),
    st.sampled_from(["", " ", "10.1.1.1", "10.1.1.1:80", "[::ffff:10.1.1.1]"]),
)
_HEADERS = st.lists(st.lists(_ENTRIES, max_size=6).map(",".join), max_size=3)


@given(peer=st.one_of(_ADDRESSES, st.text(max_size=20)), forwarded_for=_HEADERS)
def test_any_header_yields_the_peer_or_an_address_it_names(
    peer: str, forwarded_for: list[str]
) -> None:
    """Guards "never crash on junk" and "never invent a source": whatever the header holds,
    the source is the peer's key or the key of an address written in the header, and the
    header only matters from a trusted peer."""
    source = RESOLVER.source(peer, forwarded_for)
    untrusted = SourceResolver().source(peer, forwarded_for)
    assert untrusted == RESOLVER.source(peer, [])
    named = set()
    for entry in ",".join(forwarded_for).split(","):
        text = entry.strip(" \t")
        # The entry itself, and what is left of a port or inside brackets, read generously.
        for host in (text, text.partition(":")[0], text[1:].partition("]")[0]):
            try:
                named.add(source_key(ip_address(host)))
            except ValueError:
                continue
    assert source == untrusted or source in named
