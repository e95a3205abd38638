"""What a timed window cost: CPU of each process and of the machine, memory, latencies.

CPU comes from ``/proc/<pid>/stat`` (utime + stime of every thread, clock ticks), memory from
``VmRSS`` in ``/proc/<pid>/status``, the machine's busy time from ``/proc/stat``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (dead threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """Busy time of all cores together (everything but idle and iowait), in seconds."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Meter:
    """CPU seconds of the three processes, and of the whole machine, read together."""

    pids: dict[str, int]

    def take(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return used | {"machine": machine_cpu_seconds()}

    @staticmethod
    def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Run:
    latencies: list[float]
    wall: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall

    def cpu_us(self, name: str) -> str:
        return f"{self.cpu[name] / len(self.latencies) * 1e6:,.0f}"

    def busy(self) -> str:
        """Cores kept busy by the three processes together."""
        return f"{self.ours() / self.wall:.2f}"

    def others(self) -> str:
        """Cores kept busy by anything else on the machine: should be ~0 for a clean run."""
        return f"{max(0.0, self.cpu['machine'] - self.ours()) / self.wall:.2f}"

    def ours(self) -> float:
        return sum(used for name, used in self.cpu.items() if name != "machine")


async def drive(
    meter: Meter, calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]
) -> Run:
    """``calls`` calls of ``call(n)`` by ``concurrency`` workers, timed as one window."""
    counter = iter(range(calls))
    latencies: list[float] = []

    async def worker() -> None:
        for n in counter:
            start = time.perf_counter()
            await call(n)
            latencies.append(time.perf_counter() - start)

    before, wall = meter.take(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall
    return Run(latencies, wall, Meter.since(before, meter.take()))


async def settle(seconds: float = 1.0) -> None:
    await asyncio.sleep(seconds)


async def quiet(pid: int, limit: float = 10.0) -> None:
    """Until the process used no CPU for 0.2 s (two 10 ms clock ticks cannot hide in it)."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now
