"""The duplicate-header shim: request heads rewritten, bodies and odd framing untouched."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given
from hypothesis import strategies as st

from vault_service.emulator.tolerance import DuplicateHeaderTolerance


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool | None:
        self.eof = True
        return None


def _request(body: bytes, *content_types: str) -> bytes:
    head = ["POST /ams/api/v1/vaults/inquireVaulting HTTP/1.1", "Host: x"]
    head += [f"Content-Type: {value}" for value in content_types]
    head += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode() + body


BODY = b'{"a": "Content-Type: text/plain\r\n\r\nContent-Type: x"}'
DUPLICATED = _request(BODY, "application/json", "application/json; charset=UTF-8")
CLEAN = _request(BODY, "application/json")
STREAM = DUPLICATED + _request(b"", "a", "b") + CLEAN
EXPECTED = CLEAN + _request(b"", "a") + CLEAN


def _feed(chunks: list[bytes]) -> Recorder:
    recorder = Recorder()
    shim = DuplicateHeaderTolerance(recorder)
    for chunk in chunks:
        shim.data_received(chunk)
    shim.eof_received()
    return recorder


def test_repeated_content_type_is_dropped_and_bodies_pass_verbatim():
    assert _feed([STREAM]).data == EXPECTED


@given(st.sets(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12))
def test_any_chunking_gives_the_same_bytes(cuts: set[int]):
    bounds = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[start:end] for start, end in itertools.pairwise(bounds)]
    assert _feed(chunks).data == EXPECTED


def test_chunked_requests_pass_through_untouched():
    chunked = (
        b"POST / HTTP/1.1\r\nContent-Type: a\r\nContent-Type: b\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    assert _feed([chunked, DUPLICATED]).data == chunked + DUPLICATED


def test_bare_line_feeds_and_incomplete_heads_reach_aiohttp_as_sent():
    bare = b"POST / HTTP/1.1\nContent-Type: a\n\n"
    assert _feed([bare]).data == bare
    partial = b"POST / HTTP/1.1\r\nContent-Ty"
    recorder = _feed([partial])
    assert recorder.data == partial
    assert recorder.eof
