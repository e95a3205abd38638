"""A string that must never be printed: bearer tokens, passwords, card tokens, key material.

Logging an object, formatting an exception or dumping a dataclass calls ``repr``/``str``; both
say only that something is hidden, so a secret that strays into one of them leaks nothing.
Code that really needs the value asks for it by name with :meth:`Secret.reveal`.
"""

from __future__ import annotations

import hmac
from typing import Final

HIDDEN: Final = "Secret(<hidden>)"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return HIDDEN

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        """Constant time, so comparing secrets tells nothing through timing."""
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        raise TypeError("secrets are not hashable: a dict key would keep them in memory longer")

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets are not picklable")

    def __bool__(self) -> bool:
        return bool(self._value)
