"""The ``vault-service`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vault_service.emulator import cli as emulator_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vault-service",
        description="Antom card vaulting behind one gRPC contract.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    emulator_cli.configure_parser(
        commands.add_parser(
            "emulator",
            help="run a local Antom emulator (createVaultingSession, inquireVaulting, "
            "buyer submissions, signed notifyVaulting delivery, fault injection)",
            description=emulator_cli.DESCRIPTION,
            epilog=emulator_cli.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "emulator":
        return emulator_cli.run(args)
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
