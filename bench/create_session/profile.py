"""Where the service's CPU goes during CreateSession: py-spy's samples, grouped by layer.

``py-spy record --nonblocking --format raw`` samples every thread of the running
``vault-service serve`` (no restart, no instrumentation in the service) and writes collapsed
stacks; threads that are not running (waiting for work, for the GIL, in ``epoll_wait``) are
left out, so the samples follow CPU time. Each sample is charged to the innermost frame that
belongs to a known layer (below), so a library's own frames count for it and what it calls
counts for the callee: aiohttp's request building is aiohttp, the socket write beneath it is
asyncio, a signature is cryptography. C code counts for the Python frame that called it (the
loop's ``Handle._run`` runs grpc's Cython callbacks). Shares of the samples times the service's
measured CPU per call give µs per call. On a shared machine a thread that is ready but waiting
for a core also counts as running, which inflates the hand-offs between the loop and the store
thread (``_Worker.submit``/``_serve``) when other work keeps the cores busy. ``--gil`` (only
the GIL holder) was tried and over-charged the queue hand-off to the store thread (a holder
waiting for a forced GIL switch still counts as holding it); ``--native`` cannot leave out the
waiting threads.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# Innermost match wins; checked in this order for each frame.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("RSA sign/verify (cryptography, antom/signing.py)", ("cryptography/", "antom/signing.py")),
    ("SQLite and the store (store/, sqlite3)", ("sqlite3/", "vault_service/store/")),
    ("store thread start-up and waits (threading)", ("threading.py",)),
    ("TLS (ssl)", ("ssl.py",)),
    ("aiohttp (+ yarl, multidict)", ("aiohttp/", "yarl/", "multidict/")),
    ("pydantic (Antom models)", ("pydantic/", "pydantic_core/", "antom/models.py")),
    ("Antom client (antom/: client, errors, failure log)", ("vault_service/antom/",)),
    ("metrics (interceptor, prometheus_client)", ("grpc_api/metrics.py", "prometheus_client/")),
    ("logging (logging, structlog, logs.py)", ("logging/", "structlog/", "vault_service/logs.py")),
    ("gRPC layer (grpc_api/: auth, servicer, mapping)", ("vault_service/grpc_api/",)),
    (
        "use case (service/, domain, events/)",
        ("vault_service/service/", "vault_service/domain.py", "vault_service/events/"),
    ),
    ("grpc.aio + protobuf", ("grpc/", "cygrpc", ".pyx", "google/protobuf/", "_proto/")),
    ("asyncio (the loop, and C callbacks it runs)", ("asyncio/", "selectors.py")),
)
OTHER = "other"


@dataclass(frozen=True)
class Profile:
    samples: int
    layers: list[tuple[str, int]]
    leaves: list[tuple[str, int]]


def py_spy() -> str:
    """The py-spy executable (``.venv/bin/pip install py-spy``: a bench tool, not a dependency)."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


async def record(pid: int, seconds: float, out: Path) -> Profile:
    """Sample ``pid`` for ``seconds`` (the caller drives load meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        py_spy(),
        "record",
        "--nonblocking",
        "--rate",
        "250",
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--output",
        str(out),
        "--pid",
        str(pid),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    return summarise(await asyncio.to_thread(out.read_text))


def summarise(collapsed: str) -> Profile:
    layers: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        layers[_layer(frames)] += n
        leaves[frames[-1]] += n
    return Profile(total, layers.most_common(), leaves.most_common(15))


def _layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, patterns in LAYERS:
            if any(pattern in frame for pattern in patterns):
                return name
    return OTHER
