"""``vault-service emulator``: run a local Antom until SIGINT or SIGTERM.

Missing development keys are generated into the dev folder (never keys given explicitly), and
every key path is printed so the service can be pointed at the same files.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vault_service.antom import (
    KeyFormatError,
    PrivateKey,
    PublicKey,
    ensure_key_pair,
    read_private_key_file,
    read_public_key_file,
)
from vault_service.emulator.cards import TEST_CARDS
from vault_service.emulator.config import (
    DEFAULT_CLIENT_ID,
    DEFAULT_NOTIFICATION_TIMEOUT,
    DEFAULT_SESSION_TTL,
    EmulatorConfig,
)
from vault_service.emulator.faults import ALWAYS, MAX_LATENCY_MS, FaultPlan
from vault_service.emulator.server import EmulatorServer

log = logging.getLogger(__name__)

PROG: Final = "vault-service emulator"
DEFAULT_LISTEN: Final = "127.0.0.1:8090"
DEFAULT_DEV_DIR: Final = ".vault-dev"
EXIT_USAGE: Final = 2
EXIT_RUNTIME: Final = 1

DESCRIPTION: Final = """\
A local Antom for development and tests. It serves createVaultingSession and inquireVaulting
(production /ams/api and sandbox /ams/sandbox/api paths), verifies the merchant's request
signatures, signs its answers with its own Antom key pair, takes buyers' cards through a
stand-in for Antom's front-end component, delivers signed notifyVaulting requests on Antom's
retry schedule (0 s, 2 min, 10 min, 10 min, 1 h, 2 h, 6 h, 15 h, times --time-scale, until
acknowledged), and injects faults on demand."""

_CARD_LINES: Final = "\n".join(
    f"  {card.number}  {card.brand:<10}  {card.description}" for card in TEST_CARDS.values()
)
EPILOG: Final = f"""\
test cards (any future expiry MM + YY or YYYY, any 3-4 digit CVV, any cardholder name):
{_CARD_LINES}
  Numbers failing the Luhn check, other numbers and expired cards are refused with HTTP 4xx.

emulator endpoints:
  POST /emulator/buyer/submit   {{"sessionData", "cardNo", "expiryMonth", "expiryYear", "cvv",
                                "cardholderName"[, "billingAddress"]}}  the buyer saves a card
  GET  /emulator/buyer?vaultingSessionId=ID   a card form for a session (its normalUrl)
  GET  /emulator/stats                        API calls per operation and vaultingRequestId
  GET  /emulator/notifications[?vaultingRequestId=ID]   every notifyVaulting attempt

runtime faults:
  GET /emulator/faults shows the fault plan; PUT /emulator/faults with a JSON object changes
  the faults it names and leaves the others; DELETE /emulator/faults clears them all.
  Keys: latency_ms (delay before every API answer), http_5xx (HTTP 503, non-JSON),
  unknown_result (signed U/UNKNOWN_EXCEPTION, nothing done), bad_signature (answer signature
  does not verify), drop_notifications (attempt not sent, schedule goes on),
  duplicate_notifications (attempt sent twice). Counters take N >= 0, or -1 for always, and
  count down as the faults fire. Example:
    curl -X PUT http://127.0.0.1:8090/emulator/faults -d '{{"http_5xx": 2, "latency_ms": 300}}'
"""


@dataclass(frozen=True, slots=True)
class _Keys:
    antom_private: PrivateKey
    merchant_public: PublicKey
    report: tuple[str, ...]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's flags to ``parser`` (help text and epilog come from this module).

    The usage synopsis is suppressed so that a bad value costs one error line on stderr rather
    than a screenful of usage; ``--help`` still lists every flag.
    """
    parser.usage = argparse.SUPPRESS
    parser.add_argument(
        "--listen",
        type=_listen_address,
        default=_listen_address(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to listen on; port 0 picks a free one (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--client-id",
        default=DEFAULT_CLIENT_ID,
        help="the merchant client id to accept; a SANDBOX_ prefix turns on the sandbox "
        "notification rule (default %(default)s)",
    )
    parser.add_argument(
        "--dev-dir",
        type=Path,
        default=Path(DEFAULT_DEV_DIR),
        help="folder of the generated development keys (default %(default)s)",
    )
    parser.add_argument(
        "--antom-private-key-file",
        type=Path,
        metavar="PATH",
        help="the emulator's Antom private key, PEM or bare base64 (default: "
        "DEV_DIR/antom-private-key.pem, generated with antom-public-key.pem when absent)",
    )
    parser.add_argument(
        "--merchant-public-key-file",
        type=Path,
        metavar="PATH",
        help="the merchant public key that verifies requests (default: "
        "DEV_DIR/merchant-public-key.pem; when absent a merchant key pair "
        "merchant-private-key.pem/merchant-public-key.pem is generated there)",
    )
    parser.add_argument(
        "--tls-cert-file",
        type=Path,
        metavar="PATH",
        help="PEM certificate chain: serve HTTPS with it (and --tls-key-file), as Antom does "
        "(default: plain http)",
    )
    parser.add_argument(
        "--tls-key-file",
        type=Path,
        metavar="PATH",
        help="PEM private key of --tls-cert-file",
    )
    parser.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        help="multiplier of emulated delays: notification retries, the 3-D Secure wait "
        "(default %(default)s; 0.001 runs the 24 h retry schedule in under 90 s)",
    )
    parser.add_argument(
        "--session-ttl",
        type=_positive_float,
        default=DEFAULT_SESSION_TTL,
        metavar="SECONDS",
        help="vaulting session lifetime in real seconds, not scaled (default %(default)s)",
    )
    parser.add_argument(
        "--expiry-spelling",
        choices=("expiry", "expired"),
        default="expiry",
        help="card expiry keys in notifications: expiryMonth/expiryYear (SDKs) or "
        "expiredMonth/expiredYear (the seed document's sample) (default %(default)s)",
    )
    parser.add_argument(
        "--notification-timeout",
        type=_positive_float,
        default=DEFAULT_NOTIFICATION_TIMEOUT,
        metavar="SECONDS",
        help="time limit of one notification attempt (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="logging threshold (default %(default)s)",
    )
    faults = parser.add_argument_group("faults (N >= 0, or -1 for always)")
    faults.add_argument(
        "--latency-ms",
        type=_latency,
        default=0,
        metavar="MS",
        help="delay added before every API answer",
    )
    for flag, key, text in (
        ("--fail-5xx", "http_5xx", "answer the next N API calls with HTTP 503"),
        ("--unknown-results", "unknown_result", "answer the next N API calls with a signed U"),
        ("--bad-signatures", "bad_signature", "sign the next N API answers wrongly"),
        ("--drop-notifications", "drop_notifications", "skip the next N notification attempts"),
        (
            "--duplicate-notifications",
            "duplicate_notifications",
            "send the next N notification attempts twice",
        ),
    ):
        faults.add_argument(flag, dest=key, type=_count, default=0, metavar="N", help=text)


def run(args: argparse.Namespace) -> int:
    """Run the emulator in the foreground; 2 for unusable settings or keys, 1 if it cannot bind."""
    try:
        keys = _load_keys(args)
        host, port = args.listen
        config = EmulatorConfig(
            antom_private_key=keys.antom_private,
            merchant_public_key=keys.merchant_public,
            client_id=args.client_id,
            host=host,
            port=port,
            time_scale=args.time_scale,
            session_ttl=args.session_ttl,
            expiry_spelling=args.expiry_spelling,
            notification_timeout=args.notification_timeout,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file,
            faults=FaultPlan(
                latency_ms=args.latency_ms,
                http_5xx=args.http_5xx,
                unknown_result=args.unknown_result,
                bad_signature=args.bad_signature,
                drop_notifications=args.drop_notifications,
                duplicate_notifications=args.duplicate_notifications,
            ),
        )
    except (KeyFormatError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(_os_error(exc), EXIT_USAGE)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(f"client id: {config.client_id}", flush=True)
    for line in keys.report:
        print(line, flush=True)
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        return _fail(f"cannot listen on {host}:{port}: {_os_error(exc)}", EXIT_RUNTIME)
    return 0


async def _serve(config: EmulatorConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with EmulatorServer(config) as emulator:
            print(f"listening on {emulator.base_url}", flush=True)
            await stop.wait()
            log.info("stopping")
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _load_keys(args: argparse.Namespace) -> _Keys:
    dev_dir: Path = args.dev_dir
    report: list[str] = []
    if args.antom_private_key_file is not None:
        antom_private = read_private_key_file(args.antom_private_key_file)
        report.append(f"antom private key: {args.antom_private_key_file}")
    else:
        antom_private, _ = _ensure_pair(
            dev_dir / "antom-private-key.pem",
            dev_dir / "antom-public-key.pem",
            ("antom private key", "antom public key (the service verifies Antom with it)"),
            report,
        )
    if args.merchant_public_key_file is not None:
        merchant_public = read_public_key_file(args.merchant_public_key_file)
        report.append(f"merchant public key: {args.merchant_public_key_file}")
    elif (dev_dir / "merchant-public-key.pem").exists():
        merchant_public = read_public_key_file(dev_dir / "merchant-public-key.pem")
        if (dev_dir / "merchant-private-key.pem").exists():
            report.append(
                "merchant private key (the service signs with it): "
                f"{dev_dir / 'merchant-private-key.pem'}"
            )
        report.append(f"merchant public key: {dev_dir / 'merchant-public-key.pem'}")
    else:
        _, merchant_public = _ensure_pair(
            dev_dir / "merchant-private-key.pem",
            dev_dir / "merchant-public-key.pem",
            ("merchant private key (the service signs with it)", "merchant public key"),
            report,
        )
    return _Keys(antom_private, merchant_public, tuple(report))


def _ensure_pair(
    private_path: Path, public_path: Path, labels: tuple[str, str], report: list[str]
) -> tuple[PrivateKey, PublicKey]:
    existed = (private_path.exists(), public_path.exists())
    pair = ensure_key_pair(private_path, public_path)
    for label, path, was_there in zip(labels, (private_path, public_path), existed, strict=True):
        report.append(f"{label}: {path}{'' if was_there else ' (generated)'}")
    return pair


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port 0-65535, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = ALWAYS - 1
    if value < ALWAYS:
        raise argparse.ArgumentTypeError(f"expected N >= 0 or -1 for always, got {text!r}")
    return value


def _latency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_LATENCY_MS:
        raise argparse.ArgumentTypeError(f"expected 0 to {MAX_LATENCY_MS} ms, got {text!r}")
    return value
