import dataclasses

from node.metrics import NodeMetrics
from p2p.gossip import GossipStats


def _stats(delivered=0, published=0, rejected_by_reason=None):
    # Every counter the gossip layer adds later defaults to zero here.
    values = {f.name: 0 for f in dataclasses.fields(GossipStats)}
    values.update(
        delivered=delivered,
        published=published,
        rejected_by_reason=rejected_by_reason or {},
    )
    return GossipStats(**values)


def test_gossip_counters_read_at_scrape_time():
    metrics = NodeMetrics()
    assert metrics.value("synaptic_mesh_gossip_messages_total", direction="in") == 0
    current = {"stats": _stats(delivered=3, published=2)}
    metrics.watch_gossip(lambda: current["stats"])
    assert metrics.value("synaptic_mesh_gossip_messages_total", direction="in") == 3
    assert metrics.value("synaptic_mesh_gossip_messages_total", direction="out") == 2
    current["stats"] = _stats(delivered=10, published=2)
    assert metrics.value("synaptic_mesh_gossip_messages_total", direction="in") == 10


def test_invalid_messages_merge_node_and_gossip_reasons():
    metrics = NodeMetrics()
    metrics.count_invalid("bad_signature")
    metrics.count_invalid("bad_signature")
    metrics.watch_gossip(lambda: _stats(rejected_by_reason={"malformed vertex": 4}))
    name = "synaptic_mesh_invalid_messages_total"
    assert metrics.value(name, reason="bad_signature") == 2
    assert metrics.value(name, reason="gossip: malformed vertex") == 4


def test_registries_are_separate_per_node():
    first, second = NodeMetrics(), NodeMetrics()
    first.vertices.labels(event="accepted").inc()
    first.finality_seconds.observe(0.05)
    name = "synaptic_mesh_vertices_total"
    assert first.value(name, event="accepted") == 1
    assert second.value(name, event="accepted") == 0
    assert first.value("synaptic_mesh_finality_seconds_count") == 1
    assert second.value("synaptic_mesh_finality_seconds_count") == 0
