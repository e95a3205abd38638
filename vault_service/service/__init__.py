"""The use cases; importers outside the package use this face."""

from vault_service.service.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_PAGE_TOKEN_CHARS,
    InvalidPageTokenError,
    Page,
    page_size,
)
from vault_service.service.retention import Pruner

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_PAGE_TOKEN_CHARS",
    "InvalidPageTokenError",
    "Page",
    "Pruner",
    "page_size",
]
