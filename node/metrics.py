"""Prometheus metrics of one node, in a registry of its own.

Each :class:`NodeMetrics` owns a separate ``CollectorRegistry`` so that several
nodes in one process (tests, the simulator) never share counters.

Public API::

    metrics = NodeMetrics()
    metrics.registry                      # CollectorRegistry served on /metrics
    metrics.peers.set(n)
    metrics.watch_gossip(gossip.stats)    # gossip messages in/out, rejections
    metrics.count_invalid("bad_signature")
    metrics.vertices.labels(event="admitted" | "accepted" | "rejected").inc()
    metrics.finality_seconds.observe(seconds)
    metrics.tasks_served.labels(outcome="ok" | "failed").inc()
    metrics.inference_seconds.observe(seconds)
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

# Finality on a loopback testnet is tens to hundreds of milliseconds; the
# upper buckets catch stalls while polls cannot reach a quorum.
FINALITY_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
INFERENCE_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class NodeMetrics:
    """The metrics a node exports, named ``synaptic_mesh_*``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.peers = Gauge("synaptic_mesh_peers", "Connected libp2p peers", registry=r)
        self.vertices = Counter(
            "synaptic_mesh_vertices",
            "Vertices admitted into the DAG, and accepted or rejected by consensus",
            ["event"],
            registry=r,
        )
        self.finality_seconds = Histogram(
            "synaptic_mesh_finality_seconds",
            "Seconds from admitting a vertex to accepting it",
            buckets=FINALITY_BUCKETS,
            registry=r,
        )
        self.tasks_served = Counter(
            "synaptic_mesh_tasks_served",
            "Inference tasks this node ran for the mesh, by outcome",
            ["outcome"],
            registry=r,
        )
        self.inference_seconds = Histogram(
            "synaptic_mesh_inference_seconds",
            "Seconds one inference task spent in the neural engine",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self._invalid: Tally[str] = Tally()
        self._gossip_stats: Callable[[], Any] | None = None
        r.register(_GossipCollector(self))
        # Label values that always exist make scrapes show zeros instead of
        # missing series before the first event.
        for event in ("admitted", "accepted", "rejected"):
            self.vertices.labels(event=event)

    def count_invalid(self, reason: str) -> None:
        """Count one invalid message from a peer that the node itself rejected."""
        self._invalid[reason] += 1

    def watch_gossip(self, stats: Callable[[], Any]) -> None:
        """Export the gossip layer's counters, read from `stats()` at each scrape.

        `stats` returns a ``p2p.gossip.GossipStats``; its rejections by reason
        join the node's own in ``synaptic_mesh_invalid_messages``.
        """
        self._gossip_stats = stats

    def value(self, name: str, **labels: str) -> float:
        """Return the current value of sample `name`, or 0.0 when absent."""
        found = self.registry.get_sample_value(name, labels or None)
        return 0.0 if found is None else found


class _GossipCollector:
    """Reads counters kept elsewhere at scrape time, so they are never copied."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self._metrics._gossip_stats() if self._metrics._gossip_stats else None
        messages = CounterMetricFamily(
            "synaptic_mesh_gossip_messages",
            "Gossip messages delivered to this node (in) and published by it (out)",
            labels=["direction"],
        )
        messages.add_metric(["in"], stats.delivered if stats else 0)
        messages.add_metric(["out"], stats.published if stats else 0)
        yield messages

        invalid = CounterMetricFamily(
            "synaptic_mesh_invalid_messages",
            "Messages from peers rejected as invalid, by reason",
            labels=["reason"],
        )
        reasons = Tally(self._metrics._invalid)
        if stats is not None:
            for reason, count in stats.rejected_by_reason.items():
                reasons[f"gossip: {reason}"] += count
        for reason, count in sorted(reasons.items()):
            invalid.add_metric([reason], count)
        yield invalid
