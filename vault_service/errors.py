"""The root of vault-service's error hierarchy.

Every error the service raises on purpose derives from :class:`VaultError`, so the transport
edges (gRPC status, webhook HTTP status) translate exactly one family of exceptions and let
anything else surface as a bug.
"""


class VaultError(Exception):
    """Base class of every error vault-service raises deliberately."""
