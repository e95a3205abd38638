"""The metrics module's own rules: bounded labels and isolated registries."""

from __future__ import annotations

from vault_service.metrics import OTHER, BoundedLabel, Metrics


def test_a_bounded_label_keeps_its_first_values_and_folds_the_rest() -> None:
    """Antom's result codes are not ours to bound: a peer sending ever new codes must not
    grow the series without end."""
    label = BoundedLabel(limit=2)
    assert [label(code) for code in ("A", "B", "C", "A", "D", "B")] == [
        "A",
        "B",
        OTHER,
        "A",
        OTHER,
        "B",
    ]


def test_each_metrics_has_its_own_registry() -> None:
    """Two services in one process (the replica tests) count apart."""
    first, second = Metrics(), Metrics()
    first.events_appended.labels("NOTIFICATION").inc()
    assert (
        first.registry.get_sample_value("vault_events_appended_total", {"source": "NOTIFICATION"})
        == 1
    )
    assert (
        second.registry.get_sample_value("vault_events_appended_total", {"source": "NOTIFICATION"})
        is None
    )
