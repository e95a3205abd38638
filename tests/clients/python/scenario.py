"""A calling team's program: uses nothing but ``vault_client``'s public API and the standard
library. The acceptance test runs it with the interpreter of a fresh virtualenv that has only
``pip install ./clients/python`` in it.

    scenario.py TARGET create PREFIX COUNT          one JSON line per session created
    scenario.py TARGET consume CURSOR OUT [STOP]    append one JSON line per event to OUT;
                                                    after STOP events, leave cleanly
    scenario.py TARGET consume-async CURSOR OUT     the same with the asyncio client
    scenario.py TARGET error invalid|antom RID|unavailable RID
                                                    one JSON line describing the error raised
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TextIO

from vault_client import (
    AsyncVaultClient,
    FileCursorStore,
    RetryPolicy,
    VaultClient,
    VaultError,
    pb,
)


def create(client: VaultClient, prefix: str, count: int) -> None:
    for n in range(count):
        session = client.create_session(f"{prefix}-{n}", labels={"scenario": prefix})
        print(
            json.dumps({"rid": session.vaulting_request_id, "session_data": session.session_data})
        )


def record(sink: TextIO, event: pb.ResultEvent) -> None:
    line = {
        "token": event.resume_token,
        "rid": event.result.vaulting_request_id,
        "status": pb.VaultingStatus.Name(event.result.status),
    }
    sink.write(json.dumps(line) + "\n")
    sink.flush()


def consume(client: VaultClient, cursor: str, out: str, stop_after: int | None) -> None:
    received = 0
    with (
        open(out, "a", encoding="utf-8") as sink,
        client.results(FileCursorStore(cursor)) as events,
    ):
        for event in events:
            record(sink, event)
            received += 1
            if received == stop_after:
                break


async def consume_async(target: str, cursor: str, sink: TextIO) -> None:
    async with (
        AsyncVaultClient(target) as client,
        client.results(FileCursorStore(cursor)) as events,
    ):
        async for event in events:
            record(sink, event)


def describe(error: VaultError) -> dict[str, object]:
    return {
        "type": type(error).__name__,
        "code": error.code.name,
        "field_violations": [[v.field, v.description] for v in error.field_violations],
        "antom": None if error.antom is None else vars(error.antom),
        "retry_delay": error.retry_delay,
    }


def error(client: VaultClient, kind: str, rid: str) -> None:
    try:
        if kind == "invalid":
            client.create_session("x" * 65, merchant_region="usa")
        else:
            client.create_session(rid, timeout=1.0)
    except VaultError as failure:
        print(json.dumps(describe(failure)))
    else:
        raise SystemExit(f"{kind}: no error")


def main() -> None:
    target, command, *args = sys.argv[1:]
    if command == "consume-async":
        with open(args[1], "a", encoding="utf-8") as sink:
            asyncio.run(consume_async(target, args[0], sink))
        return
    # One attempt, so that an UNAVAILABLE reaches the caller instead of being retried.
    retry = RetryPolicy(max_attempts=1) if command == "error" else RetryPolicy()
    with VaultClient(target, retry=retry) as client:
        if command == "create":
            create(client, args[0], int(args[1]))
        elif command == "consume":
            consume(client, args[0], args[1], int(args[2]) if len(args) > 2 else None)
        elif command == "error":
            error(client, args[0], args[1] if len(args) > 1 else "")
        else:
            raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
