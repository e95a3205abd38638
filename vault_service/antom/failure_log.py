"""The log of failed Antom attempts: each one at INFO, a summary at ERROR.

Every failed attempt gets a line with its cause (:mod:`vault_service.antom.causes`), the
gateway it tried and the proxy it went through, and never a header, a body or an exception
text. When Antom cannot be reached every call fails the same way, six attempts each, so the
ERROR an operator is paged on is one line per cause per interval (a
:class:`~vault_service.throttle.Throttle` per cause), with how many failures it stands for.
A signed ``F`` about a request is Antom's answer, not a failure of the way to it: it gets
the INFO line only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vault_service.antom import causes
from vault_service.antom.errors import AntomConfigurationError, AntomError
from vault_service.throttle import Throttle

log = logging.getLogger(__name__)


class FailureLog:
    """Logs the failed attempts of one Antom client (``peer``: the gateway's ``host:port``;
    ``proxy``: the proxy's, if any)."""

    def __init__(
        self, interval: float, clock: Callable[[], float], *, peer: str, proxy: str | None
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._peer = peer
        self._proxy = proxy
        self._throttles: dict[str, Throttle] = {}

    def attempt_failed(
        self,
        error: AntomError,
        *,
        path: str,
        vaulting_request_id: str,
        attempt: int,
        will_retry: bool,
    ) -> None:
        """One attempt failed with ``error``; report it, and summarise it unless it is a
        business answer."""
        log.info(
            "antom attempt failed: %s",
            error.cause,
            extra={
                "antom_path": path,
                "vaulting_request_id": vaulting_request_id,
                "attempt": attempt,
                "cause": error.cause,
                "error": type(error).__name__,
                "result_code": getattr(error, "result_code", None),
                "peer": self._peer,
                "proxy": self._proxy,
                "will_retry": will_retry,
            },
        )
        if error.cause != causes.REJECTED:
            self._summarise(error, path)

    def _summarise(self, error: AntomError, path: str) -> None:
        kind = causes.family(error.cause)
        throttle = self._throttles.get(kind)
        if throttle is None:
            throttle = self._throttles[kind] = Throttle(self._interval, self._clock)
        suppressed = throttle.admit()
        if suppressed is None:
            return
        hint = (
            error.hint if isinstance(error, AntomConfigurationError) else causes.remedy(error.cause)
        )
        log.error(
            "Antom attempts fail (%s): %s (%d more since the last report)",
            error.cause,
            hint,
            suppressed,
            extra={
                "antom_path": path,
                "cause": error.cause,
                "result_code": getattr(error, "result_code", None),
                "peer": self._peer,
                "proxy": self._proxy,
                "suppressed": suppressed,
            },
        )
