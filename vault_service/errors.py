"""The root of vault-service's error hierarchy.

Every error the service raises on purpose derives from :class:`VaultError`, so the transport
edges (gRPC status, webhook HTTP status) translate exactly one family of exceptions and let
anything else surface as a bug.
"""


class VaultError(Exception):
    """Base class of every error vault-service raises deliberately."""


class InvalidArgumentError(VaultError):
    """The caller's request is invalid; ``violations`` maps field paths to what is wrong."""

    def __init__(self, violations: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {why}" for field, why in violations.items()))
        self.violations = violations


class NotFoundError(VaultError):
    """The thing asked for does not exist, or belongs to another caller (same answer)."""


class ConflictError(VaultError):
    """The request contradicts what is already stored (same key, different parameters)."""


class UnauthenticatedError(VaultError):
    """The call carries no credentials, or credentials that identify no known caller."""


class PermissionDeniedError(VaultError):
    """The caller is known but its scopes do not allow this call."""
