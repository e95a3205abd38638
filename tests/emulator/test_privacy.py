"""No card number or CVV survives a submission: not in the emulator's objects, not in logs."""

from __future__ import annotations

import gc
import logging
import types
from collections.abc import Iterator

import pytest

from tests.emulator.conftest import DECLINED, MASTERCARD, THREE_DS, VISA, Api, Receiver

CVV = "9731"
PANS = (VISA, MASTERCARD, DECLINED, THREE_DS)
_SKIPPED = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def _strings(root: object) -> Iterator[str | bytes]:
    """Every str/bytes reachable from ``root`` through attributes and containers."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, _SKIPPED):
            continue
        seen.add(id(item))
        if isinstance(item, str | bytes | bytearray):
            yield bytes(item) if isinstance(item, bytearray) else item
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            continue
        if isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
            continue
        stack.extend(getattr(item, "__dict__", {}).values())
        for cls in type(item).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(item, slot):
                    stack.append(getattr(item, slot))


def _leaks(text: str | bytes) -> bool:
    data = text.encode() if isinstance(text, str) else text
    return any(pan.encode() in data for pan in PANS) or data == CVV.encode()


async def test_no_card_data_in_state_or_logs(
    api: Api, receiver: Receiver, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    for number, card_no in enumerate(PANS):
        created = await api.create(f"vr-private-{number}", receiver.url())
        reply = await api.submit(
            created["vaultingSessionData"], card_no, cvv=CVV, billingAddress={"city": "Paris"}
        )
        assert reply.status == 200
        await api.inquire(f"vr-private-{number}")
    refused = await api.create("vr-private-refused", receiver.url())
    await api.submit(refused["vaultingSessionData"], "4242424242424242", cvv=CVV)
    await receiver.wait_for(3)
    await api.emulator.state.notifier.wait_idle()
    gc.collect()

    strings = list(_strings(api.emulator))
    assert "vr-private-0" in strings
    assert "************1111" in strings
    assert not [s for s in strings if _leaks(s)]
    assert not [s for s in strings if isinstance(s, str) and "cvv" in s.lower()]

    logged = [record.getMessage() for record in caplog.records]
    assert any("vr-private-0" in line for line in logged)
    assert not [line for line in logged if _leaks(line) or CVV in line]
