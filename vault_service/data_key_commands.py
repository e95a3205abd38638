"""The data-key commands of the CLI: ``add-data-key`` and ``rotate-data-key``.

Rotating the key that encrypts card data at rest is an operator procedure
(docs/data-keys.md): add a key and make it active, restart the service so new writes use it, run
``rotate-data-key`` to re-encrypt what is stored under older keys (and legacy plaintext), then
remove the old key. Both commands fail with one line and exit code 2, like ``migrate``.

A rotation that meets values it cannot decrypt still re-encrypts every other value, then lists
those rows (column, row key, vaulting request id, why; never a value) and exits 1: it must not
claim success, since the old key cannot be removed while they need it. A rotation that leaves
no such value records in the database that it holds no plaintext card data
(:mod:`vault_service.store.sealing`): from then on a plaintext value reads as corrupt data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vault_service.config import data_key_file_from_env, database_url_from_env
from vault_service.data_key_files import load_data_keys
from vault_service.database_url import DatabaseURL
from vault_service.errors import ConfigurationError
from vault_service.store import (
    DataKeyFileError,
    Rotation,
    StoreError,
    add_data_key,
    rotate_data_key,
)

ADD_DESCRIPTION = (
    "Add a new random AES-256 key to the data key file FILE (created with mode 0600 if it does "
    "not exist) and make it the active key; existing keys stay, so data encrypted under them "
    "still decrypts."
)
ROTATE_DESCRIPTION = (
    "Re-encrypt every stored card token and orphan notification body that is not under the "
    "active key of VAULT_DATA_KEY_FILE (including plaintext written before encryption), in "
    "VAULT_DATABASE_URL. Safe to interrupt, to run again and to run while the service serves. "
    "Values that cannot be decrypted are left as they are and listed, and the command exits 1; "
    "a run that leaves none records that the database holds no plaintext card data, after "
    "which a plaintext value reads as corrupt data."
)
MAX_LISTED = 50
"""How many undecryptable values a rotation lists one by one before it only counts the rest."""

Fail = Callable[[str], int]


def configure_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register both commands on the CLI's subcommand set."""
    add = commands.add_parser(
        "add-data-key",
        help="add a new active key to a card-data key file (creating it)",
        description=ADD_DESCRIPTION,
    )
    add.add_argument("file", type=Path, metavar="FILE", help="the data key file")
    add.add_argument("--key-id", help="the new key's id (default: today's date and random hex)")
    add.add_argument(
        "--inactive",
        action="store_true",
        help="add the key without making it active (stage it on every replica first)",
    )
    commands.add_parser(
        "rotate-data-key",
        help="re-encrypt stored card data under the active data key "
        "(VAULT_DATABASE_URL, VAULT_DATA_KEY_FILE)",
        description=ROTATE_DESCRIPTION,
    )


def run_add(args: argparse.Namespace, fail: Fail) -> int:
    try:
        key_id = add_data_key(args.file, key_id=args.key_id, activate=not args.inactive)
    except DataKeyFileError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{args.file}: {exc.strerror}")
    state = "inactive" if args.inactive else "active"
    print(f"{args.file}: added data key {key_id!r} ({state})")
    return 0


def run_rotate(fail: Fail) -> int:
    try:
        database = database_url_from_env(os.environ)
        key_file = data_key_file_from_env(os.environ)
        rotation, active = asyncio.run(_rotate(database, key_file))
    except (ConfigurationError, StoreError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"VAULT_DATABASE_URL: {exc}")
    counts = rotation.counts
    rewritten = sum(count.rewritten for count in counts)
    detail = ", ".join(f"{count.column.name} {count.rewritten}" for count in counts)
    print(f"{database}: re-encrypted {rewritten} values under data key {active!r} ({detail})")
    changed = sum(count.changed for count in counts)
    if changed:
        print(
            f"{database}: {changed} values changed while rotating (the service rewrote them): "
            "run rotate-data-key again to check them",
            file=sys.stderr,
        )
    if rotation.plaintext_free:
        print(f"{database}: no card data is stored in plaintext; plaintext now reads as corrupt")
    unreadable = rotation.unreadable
    if not unreadable:
        return 0
    for value in unreadable[:MAX_LISTED]:
        print(f"{database}: cannot decrypt {value}", file=sys.stderr)
    if len(unreadable) > MAX_LISTED:
        print(f"{database}: ... and {len(unreadable) - MAX_LISTED} more", file=sys.stderr)
    print(
        f"{database}: {len(unreadable)} values cannot be decrypted and were left as they are: "
        "add their data key back to VAULT_DATA_KEY_FILE (or repair the rows) and run "
        "rotate-data-key again",
        file=sys.stderr,
    )
    return 1


async def _rotate(database: DatabaseURL, key_file: Path) -> tuple[Rotation, str]:
    keys = await load_data_keys(key_file)
    return await rotate_data_key(database, keys), keys.active_key_id
