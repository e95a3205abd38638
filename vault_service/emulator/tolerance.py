"""Accept requests that carry the ``Content-Type`` header twice, as Antom's gateway does.

Antom's Go SDK sends two ``Content-Type`` headers; aiohttp's request parser rejects any repeated
singleton header with a 400 and has no switch for it. This protocol sits between the socket and
aiohttp's request handler and keeps only the first ``Content-Type`` of each request head; body
bytes pass through untouched. A connection whose framing it cannot follow (chunked bodies,
upgrades, malformed heads) is passed through verbatim from then on, for aiohttp to judge.
"""

from __future__ import annotations

import asyncio
from typing import Final

_HEAD_END: Final = b"\r\n\r\n"
_MAX_HEAD: Final = 64 * 1024
_DEDUPLICATED: Final = frozenset({b"content-type"})


class DuplicateHeaderTolerance(asyncio.Protocol):
    """Wraps one connection's protocol, rewriting request heads on their way in."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self._body_left = 0
        self._passthrough = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def eof_received(self) -> bool | None:
        if self._buffer:
            self._forward(bytes(self._buffer))
            self._buffer.clear()
        return self._inner.eof_received()

    def data_received(self, data: bytes) -> None:
        if self._passthrough:
            self._forward(data)
            return
        self._buffer += data
        out = bytearray()
        while self._buffer and not self._passthrough:
            if self._body_left:
                taken = bytes(self._buffer[: self._body_left])
                del self._buffer[: len(taken)]
                self._body_left -= len(taken)
                out += taken
                continue
            end = self._buffer.find(_HEAD_END)
            if end < 0:
                if len(self._buffer) > _MAX_HEAD or b"\n\n" in self._buffer:
                    self._give_up(out)
                break
            head = bytes(self._buffer[: end + len(_HEAD_END)])
            del self._buffer[: len(head)]
            rewritten = self._rewrite(head)
            if rewritten is None:
                self._buffer[:0] = head
                self._give_up(out)
                break
            out += rewritten
        if out:
            self._forward(bytes(out))

    def _give_up(self, out: bytearray) -> None:
        """Stop interpreting this connection: hand over everything buffered as it came."""
        out += self._buffer
        self._buffer.clear()
        self._passthrough = True

    def _rewrite(self, head: bytes) -> bytes | None:
        """The head without repeated headers, with the body length noted; None if unusual."""
        lines = head[: -len(_HEAD_END)].split(b"\r\n")
        kept = [lines[0]]
        seen: set[bytes] = set()
        body_length = 0
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            key = name.strip().lower()
            if not colon or key in {b"transfer-encoding", b"upgrade"}:
                return None
            if key == b"content-length":
                if not value.strip().isdigit():
                    return None
                body_length = int(value)
            if key in _DEDUPLICATED:
                if key in seen:
                    continue
                seen.add(key)
            kept.append(line)
        self._body_left = body_length
        return b"\r\n".join(kept) + _HEAD_END

    def _forward(self, data: bytes) -> None:
        self._inner.data_received(data)
