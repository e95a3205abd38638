"""Where the service's CPU goes while it serves notifications: a py-spy profile of a window.

py-spy samples the ``vault-service serve`` process from outside (``--nonblocking``: the process
is never paused) while a closed-loop window runs; the samples are summed by thread and by
function (each sample counted once for every function on its stack, and once for the innermost
one). py-spy is not a dependency of the project: ``.venv/bin/pip install py-spy`` to get this
table; without it the page says so.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES_PER_SECOND = 250
_FRAME = re.compile(r"^(?P<function>.+) \((?P<file>[^:]+):\d+\)$")


@dataclass
class Profile:
    """Sample counts: per thread, per function on the stack, per innermost function."""

    samples: int = 0
    threads: collections.Counter[str] = field(default_factory=collections.Counter)
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)
    innermost: collections.Counter[str] = field(default_factory=collections.Counter)

    def share(self, count: int) -> str:
        return f"{count / self.samples * 100:.1f} %" if self.samples else "-"


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _name(frame: str) -> str:
    """``function (path:line)`` as ``module-ish path: function``, lines merged."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for root in ("vault_service/", "site-packages/", "python3.11/"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{path}: {match['function']}"


def read(raw: Path) -> Profile:
    profile = Profile()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        profile.samples += n
        thread = frames[0]
        profile.threads["event loop" if "MainThread" in thread else thread.split(": ")[-1]] += n
        names = [_name(frame) for frame in frames[1:]]
        for name in set(names):
            profile.inclusive[name] += n
        if names:
            profile.innermost[names[-1]] += n
    return profile


@contextlib.asynccontextmanager
async def profiling(pid: int, output: Path) -> AsyncIterator[list[Profile]]:
    """Sample ``pid`` during the block; the list holds the profile afterwards (empty when
    py-spy is not installed)."""
    found: list[Profile] = []
    spy = py_spy()
    if spy is None:
        yield found
        return
    args = ["record", "-p", str(pid), "-r", str(SAMPLES_PER_SECOND), "-f", "raw"]
    args += ["-o", str(output), "--nonblocking", "--threads"]
    process = await asyncio.create_subprocess_exec(
        spy, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await asyncio.sleep(0.5)  # attached
    try:
        yield found
    finally:
        process.send_signal(signal.SIGINT)
        await process.wait()
    if await asyncio.to_thread(output.exists):
        found.append(await asyncio.to_thread(read, output))
