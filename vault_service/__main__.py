"""The ``vault-service`` command line: ``serve``, ``migrate``, ``check-antom``,
``add-data-key``, ``rotate-data-key``, ``emulator``.

Operator mistakes (a missing setting, an unreadable key, an unmigrated database, a port in
use) end with one line on stderr and exit code 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from vault_service import app, check_antom, data_key_commands, emulator, logs, orphan_commands
from vault_service.config import SETTINGS_HELP, Settings, database_url_from_env
from vault_service.errors import ConfigurationError
from vault_service.store import StoreError, migrate

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vault-service",
        description="Antom card vaulting behind one gRPC contract.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run the gRPC service and the notifyVaulting webhook (settings from the environment)",
        description="Run the gRPC service (VaultService, health, reflection) and Antom's "
        "notifyVaulting webhook in one process. All settings come from the environment.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser(
        "migrate",
        help="create or upgrade the database schema (VAULT_DATABASE_URL)",
        description="Apply the database migrations this build knows to VAULT_DATABASE_URL. "
        "Safe to run again: applied versions are skipped.",
    )
    commands.add_parser(
        "check-antom",
        help="check, stage by stage, that Antom can be reached and answers as it should",
        description="Check what a first call to Antom needs, with the settings of serve: "
        "DNS, TCP, the proxy (VAULT_ANTOM_PROXY), TLS and the certificate's issuer, a signed "
        "inquireVaulting of an id that does not exist, the signature on the answer, and our "
        "clock against Antom's. One line per stage, with what to fix; exit code 1 at the "
        "first failing stage, 2 for unusable settings. Run it from the pod before going live.",
    )
    data_key_commands.configure_parsers(commands)
    orphan_commands.configure_parser(commands)
    emulator.configure_parser(
        commands.add_parser(
            "emulator",
            help="run a local Antom emulator (createVaultingSession, inquireVaulting, "
            "buyer submissions, signed notifyVaulting delivery, fault injection)",
            description=emulator.DESCRIPTION,
            epilog=emulator.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def _fail(message: str) -> int:
    print(f"vault-service: error: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _serve(settings: Settings) -> None:
    # Handlers first: a SIGTERM that lands while starting still ends in a clean stop, and a
    # SIGHUP then (whose default action would kill us) reloads once the service runs.
    stop = asyncio.Event()
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    running = await app.start(settings)
    reloads = asyncio.create_task(_reload_when_asked(running, reload))
    try:
        await stop.wait()
    finally:
        reloads.cancel()
        await asyncio.gather(reloads, return_exceptions=True)
        await running.stop()


async def _reload_when_asked(running: app.RunningService, asked: asyncio.Event) -> None:
    """Run :meth:`RunningService.reload` for each SIGHUP; signals that arrive during a reload
    coalesce into one more. Each reload step logs its own failure and keeps what it had, so a
    broken reload never takes the serving process down."""
    while True:
        await asked.wait()
        asked.clear()
        await running.reload()


def serve() -> int:
    try:
        settings = Settings.from_env(os.environ)
        logs.configure(settings.log_level)
        asyncio.run(_serve(settings))
    except (ConfigurationError, StoreError) as exc:
        return _fail(str(exc))
    return 0


def run_check_antom() -> int:
    try:
        settings = Settings.from_env(os.environ)
        passed = asyncio.run(check_antom.check(settings))
    except ConfigurationError as exc:
        return _fail(str(exc))
    return 0 if passed else 1


def run_migrations() -> int:
    try:
        database = database_url_from_env(os.environ)
        applied = asyncio.run(migrate(database))
    except (ConfigurationError, StoreError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"VAULT_DATABASE_URL: {exc}")
    if applied:
        print(f"{database}: applied migrations {', '.join(map(str, applied))}")
    else:
        print(f"{database}: up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve()
    if args.command == "migrate":
        return run_migrations()
    if args.command == "check-antom":
        return run_check_antom()
    if args.command == "add-data-key":
        return data_key_commands.run_add(args, _fail)
    if args.command == "rotate-data-key":
        return data_key_commands.run_rotate(_fail)
    if args.command == "orphans":
        return orphan_commands.run(args, _fail)
    return emulator.run(args)


if __name__ == "__main__":
    sys.exit(main())
