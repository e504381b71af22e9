"""Prometheus metrics of one node, in a registry of its own.

Each :class:`NodeMetrics` owns a separate ``CollectorRegistry`` so that several
nodes in one process (tests, the simulator) never share counters.

Public API::

    metrics = NodeMetrics()
    metrics.registry                      # CollectorRegistry served on /metrics
    metrics.peers.set(n)
    metrics.gossip_messages.labels(direction="in").inc()
    metrics.invalid_messages.labels(reason="bad-signature").inc()
    metrics.vertices.labels(event="admitted" | "accepted" | "rejected").inc()
    metrics.finality_seconds.observe(seconds)
    metrics.tasks_served.labels(outcome="ok" | "failed").inc()
    metrics.inference_seconds.observe(seconds)
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.gossip_messages = Counter(
            "synaptic_mesh_gossip_messages",
            "Gossip messages received (in) and published (out)",
            ["direction"],
            registry=r,
        )
        self.invalid_messages = Counter(
            "synaptic_mesh_invalid_messages",
            "Messages from peers rejected as invalid, by reason",
            ["reason"],
            registry=r,
        )
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
        # Label values that always exist make scrapes show zeros instead of
        # missing series before the first event.
        for direction in ("in", "out"):
            self.gossip_messages.labels(direction=direction)
        for event in ("admitted", "accepted", "rejected"):
            self.vertices.labels(event=event)

    def value(self, name: str, **labels: str) -> float:
        """Return the current value of sample `name`, or 0.0 when absent."""
        found = self.registry.get_sample_value(name, labels or None)
        return 0.0 if found is None else found
