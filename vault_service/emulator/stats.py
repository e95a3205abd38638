"""Counts of API calls, so tests can assert how often a client really called Antom.

Every call that reaches a known operation is counted, whatever its outcome (faults included),
per operation and per ``vaultingRequestId`` when the body names one.
"""

from __future__ import annotations

from collections import Counter, defaultdict


class CallStats:
    __slots__ = ("_by_request_id", "_calls", "_results")

    def __init__(self) -> None:
        self._calls: Counter[str] = Counter()
        self._by_request_id: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._results: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def record_call(self, operation: str, vaulting_request_id: str | None) -> None:
        self._calls[operation] += 1
        if vaulting_request_id is not None:
            self._by_request_id[vaulting_request_id][operation] += 1

    def record_result(self, operation: str, result_code: str) -> None:
        self._results[operation][result_code] += 1

    def calls(self, operation: str, vaulting_request_id: str | None = None) -> int:
        """How many calls of ``operation`` arrived (for one ``vaultingRequestId`` if given)."""
        if vaulting_request_id is None:
            return self._calls[operation]
        counts = self._by_request_id.get(vaulting_request_id)
        return 0 if counts is None else counts[operation]

    def to_json(self) -> dict[str, object]:
        return {
            "calls": dict(self._calls),
            "callsByVaultingRequestId": {
                request_id: dict(counts) for request_id, counts in self._by_request_id.items()
            },
            "resultCodes": {operation: dict(counts) for operation, counts in self._results.items()},
        }
