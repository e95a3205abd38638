"""Issue 11's acceptance of the Python client, run from a fresh virtualenv that has nothing but
``pip install ./clients/python`` (fixture ``client_python``), through its public API only
(``scenario.py``), against ``vault-service serve`` processes and the emulator as Antom."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tests.clients.python.conftest import Scenario, ServeProcess
from tests.e2e.conftest import ServiceEnv
from tests.fixtures.antom import buyer_submits
from tests.replicas.cards import DECLINED, THREE_DS, VISA
from vault_service import app
from vault_service.antom import AntomClient, CreateVaultingSessionRequest
from vault_service.domain import decode_resume_token
from vault_service.emulator import EmulatorServer

SESSIONS: Final = 200
KILL_AT: Final = 60
TERM_AT: Final = 140
CONSUMER_STOPS_AFTER: Final = 110
"""Events the first consumer process takes before it leaves (about half of them)."""
CARDS: Final = (VISA, DECLINED, VISA, THREE_DS)
FINAL: Final = {"VAULTING_STATUS_SUCCEEDED", "VAULTING_STATUS_FAILED"}


def read_log(database: Path) -> tuple[str, list[tuple[int, str]]]:
    """The log id and (event id, vaulting request id) of every event, read with SQL."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        (log_id,) = db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        events = db.execute("SELECT id, vaulting_request_id FROM events ORDER BY id").fetchall()
    return log_id, events


def received(out: Path) -> list[dict[str, str]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines()]


async def wait_for(condition: Callable[[], bool], *, within: float, what: str) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling files another process writes
            await asyncio.sleep(0.05)
    assert condition(), what


async def test_results_are_delivered_exactly_once_through_server_and_consumer_restarts(
    serve_process: tuple[ServeProcess, str],
    scenarios: Callable[[str], Scenario],
    emulator: EmulatorServer,
    service_env: ServiceEnv,
    tmp_path: Path,
) -> None:
    """A consumer follows ``results()`` with a file cursor store while 200 sessions complete;
    meanwhile the server is SIGKILLed and restarted, then SIGTERMed and restarted, and the
    consumer process itself leaves halfway and a new one (on the asyncio API) resumes from the
    saved cursor. Guards: across the two consumer processes every event of the log arrives
    exactly once, in log order (tokens decode to the log's ids), and every session reaches its
    final status."""
    server, target = serve_process
    scenario = scenarios(target)
    cursor, out = tmp_path / "consumer" / "cursor", tmp_path / "events.jsonl"

    first = await scenario.spawn("consume", str(cursor), str(out), str(CONSUMER_STOPS_AFTER))
    await wait_for(cursor.exists, within=20, what="the first checkpoint saved")
    sessions = [json.loads(line) for line in await scenario.run("create", "acc", str(SESSIONS))]
    assert [s["rid"] for s in sessions] == [f"acc-{n}" for n in range(SESSIONS)]

    second: list[asyncio.subprocess.Process] = []

    async def restart_consumer() -> None:
        async with asyncio.timeout(60):
            assert await first.wait() == 0, "the first consumer process failed"
        assert len(received(out)) == CONSUMER_STOPS_AFTER
        second.append(await scenario.spawn("consume-async", str(cursor), str(out)))

    consumer_restart = asyncio.create_task(restart_consumer())
    for n, (session, card) in enumerate(zip(sessions, itertools.cycle(CARDS), strict=False)):
        if n == KILL_AT:
            assert await server.restart(signal.SIGKILL) == -signal.SIGKILL
        if n == TERM_AT:
            assert await server.restart(signal.SIGTERM) == 0
        await buyer_submits(emulator, session["session_data"], card)
    await consumer_restart
    rids = {s["rid"] for s in sessions}

    def all_final() -> bool:
        return {e["rid"] for e in received(out) if e["status"] in FINAL} == rids

    await wait_for(all_final, within=30, what="every session's final event")
    await asyncio.sleep(0.3)  # room for a doubled event to show up
    events = received(out)
    database = Path(service_env["VAULT_DATABASE_URL"].removeprefix("sqlite:///"))
    log_id, log = read_log(database)

    assert [decode_resume_token(e["token"], log_id) for e in events] == [id_ for id_, _ in log]
    assert [e["rid"] for e in events] == [rid for _, rid in log]
    last = {e["rid"]: e["status"] for e in events}
    assert set(last) == rids
    assert set(last.values()) <= FINAL
    assert second[0].returncode is None, "the second consumer follows the stream until stopped"


def describe(lines: list[str]) -> dict[str, Any]:
    (line,) = lines
    described: dict[str, Any] = json.loads(line)
    return described


async def test_errors_expose_field_violations_antom_reason_and_retry_delay(
    service: app.RunningService,
    scenarios: Callable[[str], Scenario],
    emulator: EmulatorServer,
    antom_client: AntomClient,
) -> None:
    """The three kinds of rich error, raised by the installed client as typed exceptions:
    an invalid request (every field violation), Antom's definitive refusal (its reason and
    result message), and Antom down (UNAVAILABLE with the server's retry delay)."""
    scenario = scenarios(f"127.0.0.1:{service.grpc_port}")

    invalid = describe(await scenario.run("error", "invalid"))
    assert (invalid["type"], invalid["code"]) == ("InvalidArgumentError", "INVALID_ARGUMENT")
    assert {field for field, _ in invalid["field_violations"]} == {
        "vaulting_request_id",
        "merchant_region",
    }

    # Antom already holds this id with other parameters: it refuses for good (status F).
    await antom_client.create_vaulting_session(
        CreateVaultingSessionRequest(
            vaulting_request_id="taken-1",
            vaulting_notification_url="https://elsewhere.example/notify",
        )
    )
    refused = describe(await scenario.run("error", "antom", "taken-1"))
    assert (refused["type"], refused["code"]) == ("FailedPreconditionError", "FAILED_PRECONDITION")
    assert refused["antom"]["reason"] == "REPEAT_REQ_INCONSISTENT"
    assert refused["antom"]["result_status"] == "F"
    assert refused["antom"]["result_message"]

    emulator.state.faults.update({"http_5xx": -1})
    try:
        down = describe(await scenario.run("error", "unavailable", "down-1"))
    finally:
        emulator.state.faults.update({"http_5xx": 0})
    assert (down["type"], down["code"]) == ("UnavailableError", "UNAVAILABLE")
    assert down["retry_delay"] == 1.0


def test_the_fresh_virtualenv_holds_only_the_client_and_its_runtime_dependencies(
    client_python: Path,
) -> None:
    """What a calling team installs: the client, grpcio, protobuf and the google.rpc protos;
    nothing of the service or its development tools."""
    listed = subprocess.run(
        [str(client_python), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}
    assert installed - {"pip", "setuptools"} == {
        "vault-client",
        "grpcio",
        "protobuf",
        "googleapis-common-protos",
        "typing-extensions",  # grpcio's
    }
