"""The error root's categories: every error vault-service raises on purpose belongs to exactly
one, so that the transport edges can map categories and never another package's classes."""

from __future__ import annotations

import importlib
import pkgutil

import vault_service
from vault_service.antom import AntomError, AntomResultError
from vault_service.errors import (
    ConfigurationError,
    ConflictError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RejectedError,
    UnauthenticatedError,
    UnavailableError,
    VaultError,
)
from vault_service.store import StoreError

CATEGORIES = (
    ConfigurationError,
    UnavailableError,
    RejectedError,
    InvalidArgumentError,
    NotFoundError,
    ConflictError,
    UnauthenticatedError,
    PermissionDeniedError,
    DeadlineExceededError,
    InternalError,
)
FAMILIES = {VaultError, AntomError, AntomResultError, StoreError}
"""Bases that group a package's errors; each of their members has its own category."""


def project_errors() -> set[type[VaultError]]:
    for module in pkgutil.walk_packages(vault_service.__path__, "vault_service."):
        importlib.import_module(module.name)
    found: set[type[VaultError]] = set()
    pending = [VaultError]
    while pending:
        kind = pending.pop()
        found.add(kind)
        pending.extend(kind.__subclasses__())
    return {kind for kind in found if kind.__module__.startswith("vault_service.")}


def test_every_project_error_belongs_to_exactly_one_category() -> None:
    """Guards the one error hierarchy: an error class without a category (or with two) would
    reach the gRPC edge as INTERNAL, or with a status that depends on base order. (Issue 10:
    the four file errors were plain ValueErrors, so the wiring re-wrapped each one.)"""
    errors = project_errors() - FAMILIES - set(CATEGORIES)
    assert len(errors) > 20
    wrong = {
        kind.__qualname__: [
            category.__name__ for category in CATEGORIES if issubclass(kind, category)
        ]
        for kind in errors
    }
    assert {name: found for name, found in wrong.items() if len(found) != 1} == {}
