"""One results page per bench run: the machine, the commit, every figure beside its anchor as a
ratio, the tables and PNG plots, written to ``bench/results/<bench>/<UTC time>-<commit>/``.

The machines are shared and noisy, so a figure counts only as a ratio against an anchor
measured in the same run (the issue's rule); :meth:`ResultsPage.figure` records both and
whether the target holds. ``cores busy (others)`` (from ``/proc/stat``) says how much of the
machine something else was using while the run measured: a run that shares its machine is
marked as such on its page rather than dropped.

Plots use matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("grpcio", "protobuf", "aiohttp", "cryptography", "asyncpg")


@dataclass(frozen=True)
class Figure:
    """A measured value beside the anchor it is judged against.

    ``ratio`` is ``value / anchor``; ``target`` is the bound on that ratio (``"<= 1.3"``,
    ``">= 30"``) or ``None`` for a figure shown for context only.
    """

    name: str
    value: float
    anchor_name: str
    anchor: float
    unit: str
    target: str | None = None

    @property
    def ratio(self) -> float:
        return self.value / self.anchor if self.anchor else float("inf")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, _, bound = self.target.partition(" ")
        limit = float(bound)
        checks = {"<=": self.ratio <= limit, ">=": self.ratio >= limit}
        checks |= {"<": self.ratio < limit, ">": self.ratio > limit}
        return checks[op]


@dataclass
class ResultsPage:
    """Collects a run's figures, tables, notes and plots; :meth:`write` puts them on disk."""

    bench: str
    title: str
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    figures: list[Figure] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    plots: dict[str, bytes] = field(default_factory=dict)

    def figure(
        self,
        name: str,
        value: float,
        anchor_name: str,
        anchor: float,
        unit: str,
        target: str | None = None,
    ) -> Figure:
        measured = Figure(name, value, anchor_name, anchor, unit, target)
        self.figures.append(measured)
        verdict = {True: "met", False: "MISSED", None: ""}[measured.met]
        print(
            f"{name}: {value:,.4g} {unit} vs {anchor_name} {anchor:,.4g} {unit}"
            f" = {measured.ratio:,.3g}x {target or ''} {verdict}",
            flush=True,
        )
        return measured

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        lines = [f"### {title}", "", f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
        lines += [f"| {' | '.join(_cell(cell) for cell in row)} |" for row in rows]
        self.blocks.append("\n".join(lines))
        print("\n".join(lines), flush=True)

    def note(self, text: str) -> None:
        self.blocks.append(text.strip())
        print(text.strip(), flush=True)

    def plot(
        self,
        name: str,
        title: str,
        xlabel: str,
        ylabel: str,
        series: dict[str, Sequence[tuple[float, float]]],
        *,
        logx: bool = False,
        logy: bool = False,
    ) -> None:
        """A line plot (one line per series, points marked) saved as ``<name>.png``."""
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for label, points in series.items():
            xs, ys = zip(*points, strict=True) if points else ((), ())
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        self.plots[f"{name}.png"] = buffer.getvalue()
        self.blocks.append(f"![{title}]({name}.png)")

    def render(self) -> str:
        head = [
            f"# {self.title}",
            "",
            f"- run: `{' '.join([invocation(), *sys.argv[1:]])}`,"
            f" started {self.started:%Y-%m-%d %H:%M} UTC",
            f"- code: {source()}",
            f"- machine: {machine()}",
            f"- software: {software()}",
        ]
        if self.figures:
            head += [
                "",
                "## Figures against their anchors (same run)",
                "",
                "| figure | value | anchor | anchor value | ratio | target | |",
                "|---|---|---|---|---|---|---|",
            ]
            for f in self.figures:
                verdict = {True: "met", False: "**missed**", None: ""}[f.met]
                head.append(
                    f"| {f.name} | {_number(f.value)} {f.unit} | {f.anchor_name} |"
                    f" {_number(f.anchor)} {f.unit} | {f.ratio:,.3g}x |"
                    f" {f.target or ''} | {verdict} |"
                )
        return "\n".join(head) + "\n\n" + "\n\n".join(self.blocks) + "\n"

    def write(self, into: Path = RESULTS) -> Path:
        """Write ``README.md`` and the plots into a new directory for this run; its path."""
        directory = into / self.bench / f"{self.started:%Y%m%d-%H%M%S}-{commit()}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "README.md").write_text(self.render())
        for name, png in self.plots.items():
            (directory / name).write_bytes(png)
        print(f"results page: {directory / 'README.md'}", flush=True)
        return directory


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def _cell(cell: object) -> str:
    return _number(cell) if isinstance(cell, float) else str(cell)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def invocation() -> str:
    """The command that started the bench: for ``-m`` runs, the module, not ``__main__.py``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        module = spec.name.removesuffix(".__main__")
        return f"python -m {module}"
    return Path(sys.argv[0]).name


def commit() -> str:
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def source() -> str:
    """The commit measured, and whether the service's code had uncommitted changes."""
    dirty = _git("status", "--porcelain", "--", "vault_service")
    return f"`vault_service` at commit `{commit()}`" + (
        " with uncommitted changes" if dirty else ""
    )


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("\n", 1)[0].split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    return (
        f"{os.cpu_count()} cores ({model or platform.processor()}){memory},"
        f" {platform.system()} {platform.release()} {platform.machine()}"
    )


def software() -> str:
    installed = []
    for name in PACKAGES:
        try:
            installed.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}, " + ", ".join(installed)
