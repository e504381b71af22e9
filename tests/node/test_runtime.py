"""Node hooks with real hosts, stores and signatures, several nodes in one process."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from node.commands.init import init_data_dir
from node.config import load_config
from node.runtime import open_node

pytestmark = pytest.mark.slow


def _config(data_dir, bootstrap=()):
    overrides = {"p2p.bootstrap": list(bootstrap) or None, "metrics.listen": "off"}
    return load_config(data_dir, env={}, overrides=overrides)


@asynccontextmanager
async def _mesh(tmp_path, count, *, names=None):
    names = names or [f"node{i}" for i in range(count)]
    for name in names:
        if not (tmp_path / name / "vertex.key").exists():
            init_data_dir(tmp_path / name, network="test", force=False)
    async with AsyncExitStack() as stack:
        nodes = []
        for name in names:
            bootstrap = [nodes[0].p2p.listen_addrs[0]] if nodes else []
            node = await stack.enter_async_context(
                open_node(_config(tmp_path / name, bootstrap))
            )
            nodes.append(node)
        await _connected(nodes)
        yield nodes


async def _connected(nodes, timeout=20.0):
    """Wait until the first node votes with every other node, and they with it.

    Every node bootstraps from the first; whether the others also connect to
    each other is up to peer discovery, and consensus does not need it.
    """
    first, rest = nodes[0], nodes[1:]
    with trio.fail_after(timeout):
        while True:
            ready = {node.peer_id for node in rest} <= first.dag.voters() and all(
                first.peer_id in node.dag.voters() for node in rest
            )
            if ready:
                return
            await trio.sleep(0.02)


async def test_issued_vertex_accepted_everywhere_with_callbacks(tmp_path):
    seen = {}
    async with _mesh(tmp_path, 3) as nodes:
        for node in nodes:
            events = seen.setdefault(node.peer_id, [])
            node.on_vertex(
                "note",
                lambda vertex, status, events=events: events.append(
                    (vertex.id, status)
                ),
            )

        vertex_id = await nodes[0].issue_vertex("note", {"n": 1})
        for node in nodes:
            assert await node.wait_decided(vertex_id, 30) == "accepted"
            assert node.vertex_status(vertex_id) == "accepted"
            assert node.store.get(vertex_id).payload_type == "note"

    for node_events in seen.values():
        assert node_events == [(vertex_id, "admitted"), (vertex_id, "accepted")]


async def test_conflicting_vertices_one_wins_on_all_nodes(tmp_path):
    async with _mesh(tmp_path, 3) as nodes:
        key = b"model-name:digits"
        ids = []
        follow_ups = []
        async with trio.open_nursery() as nursery:

            async def issue(node, text):
                ids.append(await node.issue_vertex("claim", {"by": text}, [key]))
                # Issued while the claims are undecided, so a loser's next
                # vertex must not inherit the rejection through its parents.
                follow_ups.append(await node.issue_vertex("note", {"after": text}))

            for index, node in enumerate(nodes):
                nursery.start_soon(issue, node, f"node{index}")

        outcomes = []
        for node in nodes:
            statuses = []
            for vertex_id in ids:
                statuses.append(await node.wait_decided(vertex_id, 30))
            outcomes.append(statuses)
        for node in nodes:
            for vertex_id in follow_ups:
                assert await node.wait_decided(vertex_id, 30) == "accepted"

    assert len(ids) == 3
    assert outcomes[0].count("accepted") == 1
    assert outcomes[0].count("rejected") == 2
    assert outcomes[1] == outcomes[0]
    assert outcomes[2] == outcomes[0]


async def test_async_callback_runs_and_failing_callback_is_contained(tmp_path, caplog):
    async with _mesh(tmp_path, 2) as nodes:
        done = trio.Event()

        def broken(vertex, status):
            raise RuntimeError("callback bug")

        async def record(vertex, status):
            if status == "accepted":
                done.set()

        nodes[1].on_vertex("note", broken)
        nodes[1].on_vertex("note", record)
        await nodes[0].issue_vertex("note", {"n": 2})
        with trio.fail_after(30):
            await done.wait()
    assert "vertex callback failed payload_type=note" in caplog.text


async def test_undecided_vertex_reloaded_after_restart(tmp_path):
    # Alone, a node cannot reach alpha_preference=2 votes, so its vertex
    # stays processing; after a restart with a peer it must be decided.
    init_data_dir(tmp_path / "a", network="test", force=False)
    async with open_node(_config(tmp_path / "a")) as alone:
        vertex_id = await alone.issue_vertex("note", {"n": 3})
        assert await alone.wait_decided(vertex_id, 0.5) == "processing"
        assert alone.dag._waiters == {}

    async with _mesh(tmp_path, 2, names=["a", "b"]) as (first, second):
        assert first.vertex_status(vertex_id) == "processing"
        assert await first.wait_decided(vertex_id, 30) == "accepted"
        assert await second.wait_decided(vertex_id, 30) == "accepted"


async def test_first_vertex_after_restart_admitted_at_once(tmp_path):
    # After a restart admission has no stored id in memory, but new vertices
    # name stored accepted vertices as parents.
    async with _mesh(tmp_path, 2, names=["a", "b"]) as (first, _second):
        before = await first.issue_vertex("note", {"n": 1})
        assert await first.wait_decided(before, 30) == "accepted"

    async with _mesh(tmp_path, 2, names=["a", "b"]) as (first, _second):
        after = await first.issue_vertex("note", {"n": 2})
        assert before in first.store.get(after).parents
        assert await first.wait_decided(after, 30) == "accepted"


async def test_status_reports_peers_topics_counts_and_services(tmp_path):
    async with _mesh(tmp_path, 2) as (first, second):
        vertex_id = await first.issue_vertex("note", {"n": 4})
        await first.wait_decided(vertex_id, 30)
        status = first.status()
    assert status["peers"] == [second.peer_id]
    assert "/synaptic-mesh/test/vertices/1" in status["topics"]
    assert status["dag"]["accepted"] == 2  # the genesis and the note
    assert status["dag"]["vertices"] == 2
    assert {"dag.driver", "dag.gossip", "dag.peers"} <= {
        s["name"] for s in status["services"]
    }
    assert all(
        s["state"] == "running"
        for s in status["services"]
        if s["name"].startswith("dag.")
    )


async def test_oversized_payload_is_a_node_error(tmp_path):
    from node import NodeError

    async with _mesh(tmp_path, 1) as (node,):
        with pytest.raises(NodeError, match="note"):
            await node.issue_vertex("note", {"blob": "x" * (1 << 20)})


async def test_invalid_vertices_logged_and_contained(tmp_path, caplog):
    import dataclasses
    import logging

    from dag import codec
    from dag.vertex import create_vertex
    from p2p.reqresp import RemoteError

    caplog.set_level(logging.WARNING, logger="node.dagsync")
    async with _mesh(tmp_path, 2) as (honest, sender):
        genesis = honest.dag.genesis.id
        now_ms = int(time.time() * 1000)
        good = create_vertex(
            sender.signing_key, [genesis], "note", {"n": 5}, (), now_ms
        )
        forged = dataclasses.replace(good, signature=bytes(len(good.signature)))
        # Valid encoding, so gossip forwards it; admission must reject it.
        await sender.p2p.gossip.publish("vertices/1", codec.encode_vertex(forged))
        epoch = create_vertex(sender.signing_key, [genesis], "note", {"n": 7}, (), 0)
        await sender.p2p.gossip.publish("vertices/1", codec.encode_vertex(epoch))

        with pytest.raises(RemoteError):
            await sender.p2p.reqresp.request(
                honest.peer_id, "dag.vertices", {"ids": ["not bytes"]}, 5
            )
        with pytest.raises(RemoteError):
            await sender.p2p.reqresp.request(
                honest.peer_id, "dag.poll", {"request_id": "x", "ids": []}, 5
            )

        with trio.fail_after(20):
            while not all(
                f"reason={reason}" in caplog.text
                for reason in ("bad_signature", "stale_timestamp")
            ):
                await trio.sleep(0.05)
        assert f"vertex rejected peer_id={sender.peer_id}" in caplog.text
        name = "synaptic_mesh_invalid_messages_total"
        assert honest.metrics.value(name, reason="bad_signature") == 1
        assert honest.vertex_status(forged.id) == "unknown"
        counts = honest.dag.admission.rejection_counts(sender.peer_id)
        assert counts == {"bad_signature": 1, "stale_timestamp": 1}
        assert honest.vertex_status(epoch.id) == "unknown"

        # Both nodes still agree on new vertices afterwards.
        vertex_id = await sender.issue_vertex("note", {"n": 6})
        assert await honest.wait_decided(vertex_id, 30) == "accepted"


async def test_full_engine_defers_vertices_until_room(tmp_path):
    from node import NodeError

    for name in ("big", "small"):
        init_data_dir(tmp_path / name, network="test", force=False)
    async with AsyncExitStack() as stack:
        big = await stack.enter_async_context(open_node(_config(tmp_path / "big")))
        overrides = {
            "p2p.bootstrap": [big.p2p.listen_addrs[0]],
            "metrics.listen": "off",
            "consensus.max_processing": 2,
        }
        config = load_config(tmp_path / "small", env={}, overrides=overrides)
        small = await stack.enter_async_context(open_node(config))
        await _connected([big, small])

        ids = [await big.issue_vertex("note", {"n": n}) for n in range(6)]
        for vertex_id in ids:
            assert await small.wait_decided(vertex_id, 30) == "accepted"
            assert await big.wait_decided(vertex_id, 30) == "accepted"

        # Locally issued vertices get back-pressure instead of waiting.
        await small.issue_vertex("note", {"n": 10})
        await small.issue_vertex("note", {"n": 11})
        with pytest.raises(NodeError, match="consensus.max_processing"):
            await small.issue_vertex("note", {"n": 12})


async def test_status_sections_added_and_errors_contained(tmp_path):
    from node.commands.status import format_status

    async with _mesh(tmp_path, 1) as (node,):
        node.add_status_section("widgets", lambda: {"spinning": 3})
        node.add_status_section("broken", lambda: 1 / 0)
        with pytest.raises(ValueError, match="already exists"):
            node.add_status_section("dag", dict)
        status = node.status()
    assert status["widgets"] == {"spinning": 3}
    assert status["broken"] == {"error": "ZeroDivisionError: division by zero"}
    text = format_status(status)
    assert "widgets\n  spinning             3" in text


async def test_nodes_of_different_networks_never_vote(tmp_path):
    init_data_dir(tmp_path / "a", network="alpha", force=False)
    init_data_dir(tmp_path / "b", network="beta", force=False)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_node(_config(tmp_path / "a")))
        config = _config(tmp_path / "b", [first.p2p.listen_addrs[0]])
        second = await stack.enter_async_context(open_node(config))
        with trio.fail_after(20):
            while first.peer_id not in second.p2p.connected_peers():
                await trio.sleep(0.05)

        vertex_id = await first.issue_vertex("note", {"n": 7})
        assert await first.wait_decided(vertex_id, 2) == "processing"
        assert second.vertex_status(vertex_id) == "unknown"
        assert first.dag.voters() == frozenset()
        assert second.dag.voters() == frozenset()
        assert "/synaptic-mesh/beta/vertices/1" in second.status()["topics"]


async def test_peer_exchange_connects_leaves_of_a_star(tmp_path):
    # Every node bootstraps from the first one; the exchange must give each
    # leaf the other leaves as voters, so that no poll population is just a
    # leaf and the hub.
    async with _mesh(tmp_path, 4) as nodes:
        with trio.fail_after(30):
            while not all(len(node.dag.voters()) == 3 for node in nodes):
                await trio.sleep(0.05)
        leaf = nodes[3]
        assert {nodes[1].peer_id, nodes[2].peer_id} <= leaf.dag.voters()
