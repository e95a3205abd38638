"""The Grafana dashboard in deploy/ and the metrics list in docs/kubernetes.md, against the
metrics the service really exposes.

A renamed metric used to leave panels empty without anyone noticing; now every name a panel
queries must be one the service's registry exposes, and every metric must be documented."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vault_service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "vault-service.json"
DOCS = ROOT / "docs" / "kubernetes.md"
METRIC_NAME = re.compile(r"\bvault_[a-z0-9_]+\b")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
    "info": ("_info",),
}


def families() -> dict[str, str]:
    """Every metric family of the service by name, with its type (pools watched, as the
    service watches them)."""
    metrics = Metrics()
    metrics.watch_pools(list)
    return {family.name: family.type for family in metrics.registry.collect()}


def exposed_names() -> set[str]:
    """Every sample name the exposition can carry (``x_total``, ``x_bucket``, ...)."""
    return {name + suffix for name, kind in families().items() for suffix in SUFFIXES[kind]}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_the_dashboard_parses_and_queries_only_metrics_the_service_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "vault-service"
    expressions = [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]
    assert expressions
    queried = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert queried <= exposed_names(), sorted(queried - exposed_names())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_the_dashboard_shows_every_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    text = " ".join(target["expr"] for panel in panels(dashboard) for target in panel["targets"])
    shown = {
        name
        for name, kind in families().items()
        if any(name + suffix in text for suffix in SUFFIXES[kind])
    }
    assert shown == set(families()), sorted(set(families()) - shown)


def test_every_metric_is_documented() -> None:
    documented = set(METRIC_NAME.findall(DOCS.read_text()))
    names = {
        name + SUFFIXES[kind][0] if kind in {"counter", "info"} else name
        for name, kind in families().items()
    }
    assert names <= documented, sorted(names - documented)
