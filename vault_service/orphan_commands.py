"""``vault-service orphans``: list the orphan notifications, for audit.

An orphan is a verified notifyVaulting for an id this service had no record of when it
arrived; it is applied once the record appears and pruned after the event retention
(docs/data-lifecycle.md). Listing them is an operator's audit, not a calling service's concern,
so it is a command run where the database and its data key are (an admin), not an RPC: the
contract stays about vaulting, and bodies that carry card tokens are never one bearer token
away from the network. It prints one JSON object per orphan, oldest first, with what audit
needs and no card data: the id, when it arrived, the body's SHA-256 and Antom's result.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os

from vault_service.antom import VaultingNotification
from vault_service.config import data_key_file_from_env, database_url_from_env
from vault_service.data_key_commands import Fail
from vault_service.data_key_files import load_data_keys
from vault_service.errors import ConfigurationError
from vault_service.store import StoredOrphan, StoreError, UnreadableOrphan, open_store

DESCRIPTION = (
    "List the orphan notifications of VAULT_DATABASE_URL (decrypted with VAULT_DATA_KEY_FILE): "
    "verified notifyVaulting bodies for ids that had no record when they arrived, not yet "
    "applied. One JSON object per line, oldest first: vaulting_request_id, received_time, "
    "body_sha256, and Antom's result_code, result_status and vaulting_status (for one whose "
    "body does not decode: unreadable, the error, and key_id if a data key is missing); never "
    "card data."
)
DEFAULT_LIMIT = 1000


def configure_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "orphans",
        help="list orphan notifications for audit (VAULT_DATABASE_URL, VAULT_DATA_KEY_FILE)",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"list at most this many (default {DEFAULT_LIMIT})",
    )


def run(args: argparse.Namespace, fail: Fail) -> int:
    if args.limit < 1:
        return fail("--limit must be at least 1")
    try:
        orphans = asyncio.run(_list(args.limit))
    except (ConfigurationError, StoreError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"VAULT_DATABASE_URL: {exc}")
    for orphan in orphans:
        print(json.dumps(audit_line(orphan), sort_keys=True))
    return 0


def audit_line(orphan: StoredOrphan) -> dict[str, str]:
    """What an auditor sees of one orphan: never a value of the body but Antom's result; of
    one whose body does not open, why (``unreadable``: the error's class, and the missing
    ``key_id`` if that is the cause)."""
    line = {
        "vaulting_request_id": orphan.vaulting_request_id,
        "received_time": orphan.received_at.isoformat(),
    }
    if isinstance(orphan, UnreadableOrphan):
        line["unreadable"] = orphan.error
        if orphan.key_id is not None:
            line["key_id"] = orphan.key_id
        return line
    line["body_sha256"] = hashlib.sha256(orphan.body).hexdigest()
    try:
        notification = VaultingNotification.from_antom_json(orphan.body)
    except ValueError:
        return line  # verified when it arrived, so it parses; said plainly if not
    line["result_code"] = notification.result.result_code
    line["result_status"] = notification.result.result_status
    line["vaulting_status"] = notification.vaulting_status or ""
    return line


async def _list(limit: int) -> list[StoredOrphan]:
    database = database_url_from_env(os.environ)
    keys = await load_data_keys(data_key_file_from_env(os.environ))
    store = await open_store(database, auto_migrate=False, data_keys=keys)
    try:
        return await store.list_orphans(limit=limit)
    finally:
        await store.close()
