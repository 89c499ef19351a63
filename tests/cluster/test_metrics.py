"""The cluster's counters as /metrics series: a node's sources, each by name."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from framebroker.cluster.metrics import ClusterCollector, ClusterCounters


def state(**sources: dict[str, Any]) -> dict[str, Any]:
    return {
        "counters": ClusterCounters(),
        "refusals": {"cluster": {}},
        "unavailable": 0,
        "nodes": 2,
        "held": 0,
        "lease_valid": True,
        "sources": sources,
    }


def render(snapshot: dict[str, Any]) -> str:
    registry = CollectorRegistry()
    registry.register(ClusterCollector(lambda: snapshot))
    return generate_latest(registry).decode()


def test_each_source_of_the_node_has_its_lease_series_and_lease_refusals_are_counted() -> None:
    door = {"held": True, "takeovers": 2, "losses": 1, "refusals": 0, "start_failures": 3,
            "failures": 0}  # fmt: skip
    street = {"held": False, "takeovers": 0, "losses": 0, "refusals": 4, "start_failures": 0,
              "failures": 1}  # fmt: skip
    text = render(state(door=door, street=street))
    for line in (
        'framebroker_cluster_source_held{source="door"} 1.0',
        'framebroker_cluster_source_held{source="street"} 0.0',
        'framebroker_cluster_source_takeovers_total{source="door"} 2.0',
        'framebroker_cluster_source_losses_total{source="door"} 1.0',
        'framebroker_cluster_source_start_failures_total{source="door"} 3.0',
        'framebroker_cluster_source_errors_total{source="street"} 1.0',
        'framebroker_cluster_refusals_total{part="sources",reason="lease"} 4.0',
    ):
        assert line in text, line


def test_a_node_without_sources_has_no_source_series() -> None:
    text = render(state())
    assert 'source="' not in text
    assert 'part="sources"' not in text
