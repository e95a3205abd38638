"""Which sender a webhook request counts against: the key of the failure limiter's buckets.

Behind a load balancer or an ingress the TCP peer is the proxy, for every sender, so keying by
the peer alone would let anyone lock Antom out with ~20 unsigned POSTs. When the peer is one
of the configured trusted proxies, the sender is read from ``X-Forwarded-For`` instead.

Only ``X-Forwarded-For`` is read (every common ingress, cloud load balancer and Envoy sets it);
the standard ``Forwarded`` header is ignored, so that a proxy which appends to one header but
passes the other through untouched cannot be fooled by the untouched one. Every proxy appends
the address it saw on the right, and a sender controls only what it sent, i.e. the left part.
So the list is walked from the right, skipping addresses that are themselves trusted proxies;
the first untrusted address is the sender as the outermost trusted proxy saw it. If every
address is trusted, the leftmost one is the sender (an internal client).

An entry is a bare IP address or one with a port as some proxies write it (Azure Application
Gateway writes ``a.b.c.d:port``): ``a.b.c.d:port``, ``[v6]:port`` or ``[v6]``, the port a
decimal 0-65535 without sign or leading zeros. A bare IPv6 address is read as a whole, so its
last group is never taken for a port. Reading these matters: treated as junk they would put
every sender back into the proxy's one bucket, the lock-out this module exists to prevent.

The header is believed only from a trusted peer; from anyone else it is ignored. An entry that
cannot be read (empty, ``unknown``, a bad port, any junk) met before the sender is found means
the chain cannot be read, and the peer itself is the source: a trusted proxy writes addresses,
so that only happens when the proxies are set up differently from what the configuration
says. Because that silently costs what the setting is for, it is logged as a warning naming
the proxy, at most once a minute (the header itself is never logged: a sender wrote part of
it).

Sources are keyed by network, not address: IPv4 by the full address, IPv6 by its /64 (what
one subscriber usually gets, so an attacker with a /64 cannot walk around the limit), and
IPv4-mapped IPv6 (``::ffff:192.0.2.1``, a dual-stack socket's view of IPv4) as the IPv4 address.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final

from vault_service.throttle import Throttle

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

FORWARDED_FOR: Final = "X-Forwarded-For"
UNKNOWN_SOURCE: Final = "unknown"
IPV6_SOURCE_PREFIX: Final = 64
UNREADABLE_WARNING_INTERVAL: Final = 60.0
UNREADABLE_REASON: Final = "unreadable X-Forwarded-For entry"

_PORT: Final = re.compile(r"0|[1-9][0-9]{0,4}")
_MAX_PORT: Final = 65535
_PEERS_CACHED: Final = 1024

log = logging.getLogger(__name__)


def source_key(address: Address) -> str:
    """The limiter's key for ``address``: IPv4 as is, IPv6 by its /64."""
    address = _unmapped(address)
    if isinstance(address, IPv4Address):
        return str(address)
    host_bits = 128 - IPV6_SOURCE_PREFIX
    return str(IPv6Network((int(address) >> host_bits << host_bits, IPV6_SOURCE_PREFIX)))


def _read_entry(text: str) -> Address | None:
    """The address of one ``X-Forwarded-For`` entry (surrounding spaces allowed, an optional
    port dropped), or ``None`` when it is not one of the forms the module docstring lists."""
    entry = text.strip(" \t")
    address = _parse(entry)
    if address is not None:
        return address
    try:
        if entry.startswith("["):
            host, bracket, rest = entry[1:].partition("]")
            if not bracket or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
                return None
            return IPv6Address(host)
        host, colon, port = entry.partition(":")
        if not colon or not _is_port(port):
            return None
        return IPv4Address(host)
    except ValueError:
        return None


class SourceResolver:
    """Derives a request's source key from its TCP peer and ``X-Forwarded-For`` values."""

    __slots__ = ("_trusted", "_warnings")

    def __init__(
        self, trusted_proxies: Iterable[Network] = (), *, warnings: Throttle | None = None
    ) -> None:
        """``warnings`` paces the unreadable-header warning; by default one a minute for this
        resolver, i.e. for the process, which runs one webhook."""
        self._trusted = tuple(trusted_proxies)
        self._warnings = Throttle(UNREADABLE_WARNING_INTERVAL) if warnings is None else warnings

    def source(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The source key of a request from ``peer`` (``None`` when not a TCP socket) that
        carried the ``X-Forwarded-For`` header values ``forwarded_for`` (each may be a list;
        repeated headers read as one list, in order)."""
        known = None if peer is None else _peer(peer)
        if known is None:
            return peer or UNKNOWN_SOURCE
        peer_address, peer_key = known
        if not forwarded_for or not self._is_trusted(peer_address):
            return peer_key
        sender = peer_address
        for entry in reversed(",".join(forwarded_for).split(",")):
            hop = _read_entry(entry)
            if hop is None:
                self._warn_unreadable(peer_address)
                return source_key(peer_address)
            sender = hop
            if not self._is_trusted(hop):
                break
        return source_key(sender)

    def _is_trusted(self, address: Address) -> bool:
        address = _unmapped(address)
        return any(address in network for network in self._trusted)

    def _warn_unreadable(self, proxy: Address) -> None:
        suppressed = self._warnings.admit()
        if suppressed is None:
            return
        log.warning(
            "trusted proxy %s sent an X-Forwarded-For entry that is not an IP address "
            "(with an optional port); such requests count against the proxy itself "
            "(%d more since the last warning)",
            proxy,
            suppressed,
            extra={"reason": UNREADABLE_REASON, "proxy": str(proxy), "suppressed": suppressed},
        )


def _is_port(text: str) -> bool:
    """A port as a proxy writes it: plain decimal 0-65535, so junk never passes as one."""
    return _PORT.fullmatch(text) is not None and int(text) <= _MAX_PORT


@functools.lru_cache(maxsize=_PEERS_CACHED)
def _peer(peer: str) -> tuple[Address, str] | None:
    """A TCP peer's address and source key (``None``: not an IP address), remembered for the
    last peers: parsing and keying the same few senders' addresses cost every request ~5 us."""
    address = _parse(peer)
    return None if address is None else (address, source_key(address))


def _parse(text: str | None) -> Address | None:
    """A bare IP address (surrounding spaces allowed), or ``None`` for anything else."""
    if text is None:
        return None
    try:
        return ip_address(text.strip(" \t"))
    except ValueError:
        return None


def _unmapped(address: Address) -> Address:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
