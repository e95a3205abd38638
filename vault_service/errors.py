"""The root of vault-service's error hierarchy, and its categories.

Every error the service raises on purpose derives from :class:`VaultError` and belongs to
exactly one category below: a category says what the error means to whoever must act on it
(the caller, the operator, nobody but a developer). The transport edges translate categories,
never the classes of other packages: the gRPC status in ``grpc_api.errors``, the webhook's HTTP
answer in ``webhook.notify``, the CLI's one line and exit code in ``__main__``. A package's own
error class joins a category by deriving from it (beside its package's family, e.g.
``AntomError``), and says there what a caller may be told (:attr:`VaultError.public_message`)
and, when a machine should act on it, why (:attr:`VaultError.error_info`).

Anything that is not a :class:`VaultError` of a category surfaces as a bug (INTERNAL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar, Final

VAULT_DOMAIN: Final = "vault"
"""The :attr:`ErrorInfo.domain` of reasons in vault-service's own vocabulary."""

RETRY_DELAY: Final = timedelta(seconds=1)
"""How long a caller is asked to wait before it tries a call that may succeed later."""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a call failed, for a program to act on (``google.rpc.ErrorInfo`` at the gRPC edge):
    ``reason`` is a constant in the vocabulary of ``domain`` (Antom's result codes, or ours),
    ``metadata`` what the caller needs to act on it (never a secret)."""

    domain: str
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)


class VaultError(Exception):
    """Base class of every error vault-service raises deliberately."""

    @property
    def public_message(self) -> str:
        """What a caller may be told: the error's own words, for the categories whose message
        is written for callers; the others replace it with a fixed text."""
        return str(self)

    @property
    def error_info(self) -> ErrorInfo | None:
        """The machine-readable reason, for the errors a caller's program can act on."""
        return None


class ConfigurationError(VaultError):
    """A setting or a file it names is wrong, so the operator must fix the configuration.

    The message names the setting (or the file) and what is wrong with it, never a secret: it
    is the one line the CLI exits with, or the reason a reload logs. A call that meets one is
    told to retry later (fixing the settings fixes the call), in a fixed text unless the error
    has one written for callers.
    """

    retry_delay: ClassVar[timedelta] = RETRY_DELAY

    @property
    def public_message(self) -> str:
        return "the service is not configured to answer this call; retry later"


class UnavailableError(VaultError):
    """Something we depend on is down, busy or gave no usable answer; repeating the same call
    later is safe (writes are idempotent) and may succeed, after ``retry_delay``.

    The message may carry a driver's or a transport's words (it may name hosts), so a caller
    is told a fixed text unless the error has one written for callers.
    """

    retry_delay: ClassVar[timedelta] = RETRY_DELAY

    @property
    def public_message(self) -> str:
        return "the service is unavailable; retry later"


class RejectedError(VaultError):
    """An authority other than the caller (Antom) refused the request for good: repeating it
    will not help. :attr:`error_info` carries the authority's reason; ``about_arguments``
    says whether the refusal is about the request's arguments rather than the state of
    things (INVALID_ARGUMENT rather than FAILED_PRECONDITION)."""

    @property
    def about_arguments(self) -> bool:
        return False


class InvalidArgumentError(VaultError):
    """The caller's request is invalid; ``violations`` maps field paths to what is wrong.

    ``message`` is the error's text, by default every violation in one line.
    """

    def __init__(self, violations: Mapping[str, str], message: str | None = None) -> None:
        super().__init__(
            "; ".join(f"{field}: {why}" for field, why in violations.items())
            if message is None
            else message
        )
        self.violations = dict(violations)

    @property
    def public_message(self) -> str:
        return f"invalid request: {self}"


class NotFoundError(VaultError):
    """The thing asked for does not exist, or belongs to another caller (same answer)."""


class ConflictError(VaultError):
    """The request contradicts what is already stored (same key, different parameters)."""


class UnauthenticatedError(VaultError):
    """The call carries no credentials, or credentials that identify no known caller."""


class PermissionDeniedError(VaultError):
    """The caller is known but its scopes do not allow this call."""


class DeadlineExceededError(VaultError):
    """The caller's deadline leaves no time to do the work and still answer."""


class InternalError(VaultError):
    """A fault on our side that the caller cannot act on: stored data this process cannot read
    (corrupt, or sealed under a data key it lacks), a store used after it was closed. Callers
    get a generic answer; the text and the traceback go to the log, for an operator."""
