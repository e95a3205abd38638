"""Where the service's fan-out CPU goes: py-spy samples of the service process while events
reach its streams, summed per function (inclusive: a function counts for every sample it is on
the stack of). Optional: used when ``py-spy`` is installed beside this Python (``pip install
py-spy``; not a requirement of the project)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")
RATE = 200
"""Samples per second."""


OUTER = (
    "<module> ",
    "main ",
    "serve ",
    "run ",
    "Runner.run ",
    "BaseEventLoop.run_",
    "BaseEventLoop._run_once ",
    "Handle._run ",
)
"""The frames under everything the loop runs: on nearly every sample, they say nothing."""


def available() -> bool:
    return PY_SPY.exists()


@contextlib.asynccontextmanager
async def sampled(pid: int, out: Path) -> AsyncIterator[None]:
    """py-spy records ``pid`` into ``out`` (folded stacks) while the block runs."""
    process = await asyncio.create_subprocess_exec(
        str(PY_SPY),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # attached and sampling
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        await process.wait()


def inclusive(out: Path, top: int) -> list[tuple[float, str]]:
    """The ``top`` functions of ours, of asyncio and of grpc by share of all samples (the
    process's other threads included), the loop's own outer frames left out."""
    counts: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        total += int(samples)
        functions = {_function(frame) for frame in stack.split(";")}
        for function in functions:
            ours = any(part in function for part in ("vault_service/", "asyncio/", "grpc/"))
            if ours and not function.startswith(OUTER):
                counts[function] += int(samples)
    return [(count / total, function) for function, count in counts.most_common(top)]


def _function(frame: str) -> str:
    """``name (path/file.py:line)`` as ``name (file)``, the line dropped."""
    name, _, where = frame.partition(" (")
    path = where.rpartition(":")[0]
    for root in ("vault_service/", "asyncio/", "grpc/"):
        if root in path:
            path = root + path.rpartition(root)[2]
    return f"{name} ({path})"
