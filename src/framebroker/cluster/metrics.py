"""The cluster's counters as Prometheus series, read when ``/metrics`` is scraped.

The parts count in plain dataclasses (no Prometheus inside the directory, the bus or the
relay); this collector turns them into series on the process's registry, so nothing is
counted twice and nothing drifts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ClusterCollector", "ClusterCounters"]


@dataclass(slots=True)
class ClusterCounters:
    """``relays``: relayed calls this node made, by (op, outcome: ok, error, unreachable);
    ``served``: calls other nodes relayed to this one, by op; ``takeovers``: sessions of a
    dead node this node took over (``resumed`` of them from a snapshot); ``released``:
    leases given back for sessions this node no longer runs (ended, idle)."""

    relays: dict[tuple[str, str], int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    takeovers: int = 0
    resumed: int = 0
    released: int = 0
    lost: int = 0

    def relayed(self, op: str, outcome: str) -> None:
        key = (op, outcome)
        self.relays[key] = self.relays.get(key, 0) + 1


class ClusterCollector(Collector):
    """``snapshot`` returns the cluster's state (see :meth:`Cluster.snapshot`)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        state = self._snapshot()
        counters: ClusterCounters = state["counters"]
        relays = CounterMetricFamily(
            "framebroker_cluster_relays",
            "Calls relayed to a session's owner on another node, by operation and outcome "
            "(ok, error: the owner refused it, unreachable: the owner did not answer)",
            labels=["op", "outcome"],
        )
        for (op, outcome), n in sorted(counters.relays.items()):
            relays.add_metric([op, outcome], n)
        yield relays
        served = CounterMetricFamily(
            "framebroker_cluster_relays_served",
            "Calls other nodes relayed to this one, by operation",
            labels=["op"],
        )
        for op, n in sorted(counters.served.items()):
            served.add_metric([op], n)
        yield served
        yield CounterMetricFamily(
            "framebroker_cluster_takeovers",
            "Sessions of a dead node this node took over",
            value=counters.takeovers,
        )
        yield CounterMetricFamily(
            "framebroker_cluster_resumed",
            "Sessions taken over that resumed from their last snapshot",
            value=counters.resumed,
        )
        yield CounterMetricFamily(
            "framebroker_cluster_sessions_lost",
            "Sessions of this node taken over by another (this node had lost its lease)",
            value=counters.lost,
        )
        refusals = CounterMetricFamily(
            "framebroker_cluster_refusals",
            "Input from inside the cluster refused (logged, never a crash), by part and "
            "reason: a relay call with a wrong token or of another version, a malformed or "
            "unreadable directory entry, bus message or relay answer, an unknown node, a "
            "stale directory entry",
            labels=["part", "reason"],
        )
        for part, counts in sorted(state["refusals"].items()):
            for reason, n in sorted(counts.items()):
                refusals.add_metric([part, reason], n)
        sources: dict[str, dict[str, Any]] = state.get("sources", {})
        lease_refusals = sum(int(s["refusals"]) for s in sources.values())
        if lease_refusals:
            refusals.add_metric(["sources", "lease"], lease_refusals)
        yield refusals
        yield from _source_series(sources)
        yield CounterMetricFamily(
            "framebroker_cluster_unavailable",
            "Calls to the cluster's Redis that failed (it did not answer in time)",
            value=state["unavailable"],
        )
        yield GaugeMetricFamily(
            "framebroker_cluster_nodes",
            "Live nodes of the cluster, as last read",
            value=state["nodes"],
        )
        yield GaugeMetricFamily(
            "framebroker_cluster_leases",
            "Sessions this node holds in the cluster's directory",
            value=state["held"],
        )
        yield GaugeMetricFamily(
            "framebroker_cluster_lease_valid",
            "1 while this node's own lease in the cluster is current",
            value=1 if state["lease_valid"] else 0,
        )


def _source_series(sources: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """Per ``--source`` of this node (a handful, from its configuration: bounded)."""
    held = GaugeMetricFamily(
        "framebroker_cluster_source_held",
        "1 while this node holds the source's lease (it runs the source), 0 while it stands by",
        labels=["source"],
    )
    takeovers = CounterMetricFamily(
        "framebroker_cluster_source_takeovers",
        "Times this node came to hold the source's lease and started it (the first time included)",
        labels=["source"],
    )
    losses = CounterMetricFamily(
        "framebroker_cluster_source_losses",
        "Times this node stopped the source because it no longer held its lease (it could "
        "not renew it in time, or another node holds it now)",
        labels=["source"],
    )
    failures = CounterMetricFamily(
        "framebroker_cluster_source_start_failures",
        "Starts of the source that failed while this node held its lease (tried again; a "
        "few are expected in a takeover, while the dead holder's session is still its own)",
        labels=["source"],
    )
    errors = CounterMetricFamily(
        "framebroker_cluster_source_errors",
        "Stops of the source that raised, and failures of the loop that follows its lease "
        "(logged; the loop carries on)",
        labels=["source"],
    )
    for name, s in sorted(sources.items()):
        held.add_metric([name], 1 if s["held"] else 0)
        takeovers.add_metric([name], s["takeovers"])
        losses.add_metric([name], s["losses"])
        failures.add_metric([name], s["start_failures"])
        errors.add_metric([name], s["failures"])
    yield from (held, takeovers, losses, failures, errors)
