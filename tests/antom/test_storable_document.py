"""``antom_document`` skips its walk over every string only for bodies that cannot hold text
PostgreSQL refuses: these guard that shortcut against letting any such text through."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from vault_service.antom.models import antom_document

FFFD = "\ufffd"
UNSTORABLE = ("\x00", "\ud800", "\udfff")
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def test_an_escaped_nul_or_lone_surrogate_is_replaced() -> None:
    for text in UNSTORABLE:
        raw = json.dumps({"name": f"a{text}b"}).encode()  # ensure_ascii: the \\uXXXX escape
        assert antom_document(raw) == {"name": f"a{FFFD}b"}


def test_a_surrogate_encoded_as_utf8_bytes_is_replaced() -> None:
    raw = '{"name": "a\ud800b"}'.encode("utf-8", "surrogatepass")
    assert antom_document(raw) == {"name": f"a{FFFD}b"}


def test_a_utf16_body_carrying_a_surrogate_is_replaced() -> None:
    raw = '{"name": "a\udfffb"}'.encode("utf-16-le", "surrogatepass")
    assert antom_document(raw) == {"name": f"a{FFFD}b"}


def test_a_plain_body_comes_back_as_parsed() -> None:
    raw = json.dumps({"name": "Ada Lovelace", "n": [1, "é", {"k": "漢"}]}, ensure_ascii=False)
    assert antom_document(raw.encode()) == json.loads(raw)


documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def strings(value: object) -> list[str]:
    """Every string in a parsed document, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings(item)]]
    return []


@given(documents, st.booleans())
def test_no_unstorable_character_survives_in_any_string(document: object, ascii_: bool) -> None:
    raw = json.dumps(document, ensure_ascii=ascii_).encode("utf-8", "surrogatepass")
    assert not UNSTORABLE_TEXT.search("".join(strings(antom_document(raw))))
