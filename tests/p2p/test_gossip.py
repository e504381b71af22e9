"""Tests of p2p.gossip: the rate-limit core, parameters, and real hosts."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2

from bench.gossip_node import (
    close_nodes,
    connect_edges,
    start_nodes,
    topology_edges,
)
from p2p import P2PError
from p2p.gossip import (
    ACCEPT,
    Gossip,
    GossipParams,
    MessageRejected,
    MessageTooLarge,
    PeerRateLimiter,
    TopicError,
    Verdict,
    open_gossip,
    reject,
    topic_name,
)

# ---------------------------------------------------------------- sans-IO core


def test_rate_limiter_burst_then_refill() -> None:
    limiter = PeerRateLimiter(rate=10.0, burst=3.0)
    assert [limiter.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("a", now=0.05) is False
    assert limiter.allow("a", now=0.1) is True
    assert limiter.allow("a", now=0.1) is False


def test_rate_limiter_peers_independent() -> None:
    limiter = PeerRateLimiter(rate=1.0, burst=1.0)
    assert limiter.allow("a", now=0.0)
    assert not limiter.allow("a", now=0.0)
    assert limiter.allow("b", now=0.0)


def test_rate_limiter_evicts_least_recent() -> None:
    limiter = PeerRateLimiter(rate=1.0, burst=1.0, max_peers=2)
    limiter.allow("a", now=0.0)
    limiter.allow("b", now=0.0)
    limiter.allow("c", now=0.0)
    assert len(limiter) == 2
    # "a" was evicted, so it starts again with a full bucket.
    assert limiter.allow("a", now=0.0)
    assert not limiter.allow("c", now=0.0)


def test_rate_limiter_clock_going_back() -> None:
    limiter = PeerRateLimiter(rate=1.0, burst=1.0)
    assert limiter.allow("a", now=10.0)
    assert not limiter.allow("a", now=5.0)


def test_rate_limiter_invalid_settings() -> None:
    with pytest.raises(ValueError, match="rate=0"):
        PeerRateLimiter(rate=0.0, burst=1.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d_lo": 9}, "d_lo=9"),
        ({"d_hi": 5}, "d_hi=5"),
        ({"network": "a/b"}, "network"),
        ({"max_message_size": 2 * 1024 * 1024}, "max_message_size"),
        ({"backpressure_high_water": 512}, "backpressure_high_water"),
        ({"heartbeat_interval": 0.0}, "heartbeat_interval"),
    ],
)
def test_params_validate_rejects(changes: dict, message: str) -> None:
    params = dataclasses.replace(GossipParams(), **changes)
    with pytest.raises(ValueError, match=message):
        params.validate()


def test_default_params_valid() -> None:
    GossipParams().validate()


def test_topic_name_has_network() -> None:
    assert topic_name("testnet", "vertices") == "/synaptic-mesh/testnet/vertices"


def test_errors_share_root() -> None:
    assert issubclass(MessageTooLarge, P2PError)
    assert issubclass(TopicError, P2PError)


# ---------------------------------------------------------- in-process hosts


@asynccontextmanager
async def _gossip_pair(
    params_a: GossipParams, params_b: GossipParams
) -> AsyncIterator[tuple[Gossip, Gossip]]:
    async with AsyncExitStack() as stack:
        gossips = []
        hosts = []
        for params in (params_a, params_b):
            host = new_host(key_pair=create_new_key_pair())
            listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
            await stack.enter_async_context(host.run([listen]))
            gossips.append(await stack.enter_async_context(open_gossip(host, params)))
            hosts.append(host)
        await hosts[0].connect(info_from_p2p_addr(hosts[1].get_addrs()[0]))
        yield gossips[0], gossips[1]


async def _wait_topic_peer(gossip: Gossip, topic: str) -> None:
    with trio.fail_after(30):
        while not gossip.topic_peers(topic):
            await trio.sleep(0.02)


def _validator(data: bytes) -> Verdict:
    if data.startswith(b"bad"):
        return reject("bad prefix")
    if data.startswith(b"raise"):
        raise RuntimeError("validator bug")
    return ACCEPT


async def test_topic_outside_namespace_rejected() -> None:
    params = GossipParams(network="net1")
    async with _gossip_pair(params, params) as (a, _):
        assert a.topic("vertices") == "/synaptic-mesh/net1/vertices"
        with pytest.raises(TopicError, match="outside namespace"):
            await a.subscribe("/synaptic-mesh/net2/vertices")
        with pytest.raises(TopicError):
            await a.publish("/other/topic", b"x")


async def test_publish_too_large_raises() -> None:
    params = GossipParams(network="net1", max_message_size=100)
    async with _gossip_pair(params, params) as (a, _):
        with pytest.raises(MessageTooLarge, match="101 bytes"):
            await a.publish("t", b"x" * 101)


async def test_publish_own_validator_rejects() -> None:
    params = GossipParams(network="net1")
    async with _gossip_pair(params, params) as (a, _):
        await a.subscribe("t", _validator)
        with pytest.raises(MessageRejected, match="bad prefix"):
            await a.publish("t", b"bad data")
        assert a.stats().published == 0


async def test_raising_validator_contained() -> None:
    params = GossipParams(network="net1")
    async with _gossip_pair(params, params) as (a, b):
        await a.subscribe("t")
        received = await b.subscribe("t", _validator)
        await _wait_topic_peer(a, "t")
        await a.publish("t", b"raise please")
        await a.publish("t", b"bad one")
        await a.publish("t", b"good one")
        with trio.fail_after(30):
            message = await received.receive()
        assert message.data == b"good one"
        assert message.origin == a.peer_id
        assert message.forwarder == a.peer_id
        stats = b.stats()
        assert stats.rejected == 2
        assert stats.rejected_by_reason == {
            "validator raised RuntimeError": 1,
            "bad prefix": 1,
        }
        assert stats.delivered == 1


async def test_oversized_incoming_rejected() -> None:
    async with _gossip_pair(
        GossipParams(network="net1", max_message_size=4096),
        GossipParams(network="net1", max_message_size=1024),
    ) as (a, b):
        await a.subscribe("t")
        received = await b.subscribe("t")
        await _wait_topic_peer(a, "t")
        await a.publish("t", b"y" * 2000)
        await a.publish("t", b"small")
        with trio.fail_after(30):
            message = await received.receive()
        assert message.data == b"small"
        assert b.stats().rejected_by_reason == {"size 2000 > max 1024": 1}


async def test_malformed_key_message_contained() -> None:
    params = GossipParams(network="net1")
    async with _gossip_pair(params, params) as (a, b):
        received = await b.subscribe("t")
        await a.subscribe("t")
        await _wait_topic_peer(a, "t")
        # A from_id that is no identity multihash makes py-libp2p fall back to
        # the key field, whose deserialization raises on garbage.
        bogus = rpc_pb2.Message(
            from_id=b"\x01\x02garbage",
            data=b"evil",
            seqno=b"\x00" * 8,
            topicIDs=[b.topic("t")],
            signature=b"\x00" * 64,
            key=b"\xff\xfe not a key",
        )
        forwarder = next(iter(b.pubsub.peers))
        await b.pubsub.push_msg(forwarder, bogus)
        assert b.stats().contained_errors == 1
        await a.publish("t", b"after")
        with trio.fail_after(30):
            message = await received.receive()
        assert message.data == b"after"


async def test_tampered_message_rejected_and_reported() -> None:
    params = GossipParams(network="net1")
    async with _gossip_pair(params, params) as (a, b):
        received = await b.subscribe("t")
        await a.subscribe("t")
        await _wait_topic_peer(a, "t")
        reports: list[tuple[str, str]] = []
        b.pubsub.report_rejection = lambda peer, reason: reports.append((peer, reason))
        forwarder = next(iter(b.pubsub.peers))
        # Sign a message as `a` would, then change its data.
        signed = rpc_pb2.Message(
            from_id=a.pubsub.my_id.to_bytes(),
            data=b"original",
            seqno=b"\x00" * 7 + b"\x01",
            topicIDs=[b.topic("t")],
        )
        key = a.pubsub.host.get_private_key()
        signed.signature = key.sign(b"libp2p-pubsub:" + signed.SerializeToString())
        signed.data = b"tampered"
        await b.pubsub.push_msg(forwarder, signed)
        assert b.stats().rejected_by_reason == {"invalid signature": 1}
        assert reports == [(str(forwarder), "gossip: invalid signature")]
        # The untampered message is still accepted.
        signed.data = b"original"
        await b.pubsub.push_msg(forwarder, signed)
        with trio.fail_after(30):
            assert (await received.receive()).data == b"original"


async def test_same_data_delivered_once() -> None:
    params = GossipParams(network="net1")
    async with _gossip_pair(params, params) as (a, b):
        await a.subscribe("t")
        received = await b.subscribe("t")
        await _wait_topic_peer(a, "t")
        first = await a.publish("t", b"same bytes")
        second = await a.publish("t", b"same bytes")
        await a.publish("t", b"end")
        assert first == second
        with trio.fail_after(30):
            assert (await received.receive()).data == b"same bytes"
            assert (await received.receive()).data == b"end"


# ------------------------------------------------- separate node processes


def _assert_each_received_all(nodes, per_publisher: int) -> None:
    expected = {(other.index, seq) for other in nodes for seq in range(per_publisher)}
    for node in nodes:
        stats = node.request("stats")
        counts = {(o, s): n for o, s, n in stats["received"]}
        want = {key for key in expected if key[0] != node.index}
        missing = want - counts.keys()
        assert not missing, f"node {node.index} missed {sorted(missing)[:5]}"
        assert set(counts) == want, f"node {node.index} got unexpected messages"
        duplicates = {k: n for k, n in counts.items() if n != 1}
        assert not duplicates, f"node {node.index} got duplicates {duplicates}"
        assert stats["publish_errors"] == {}


def _wait_delivered(nodes, total_each: int, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = [len(n.request("stats")["received"]) for n in nodes]
        if all(c >= total_each for c in counts):
            return
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["line", "star"])
def test_five_processes_exactly_once(shape: str, tmp_path: Path) -> None:
    nodes = start_nodes(5, "ours", f"it-{shape}", tmp_path)
    try:
        for node in nodes:
            node.request("subscribe", topic="blocks")
        edges = topology_edges(shape, len(nodes))
        connect_edges(nodes, edges)
        for node in nodes:
            degree = sum(1 for edge in edges if node.index in edge)
            node.request(
                "wait_topic_peers",
                topic="blocks",
                n=degree,
                mesh=degree,
                wait_s=15,
                timeout=20,
            )
        per_publisher = 30
        # Every node publishes at 25 messages/s, 125 messages/s in all, which
        # is above py-libp2p's default limit of 10/s per forwarder.
        for node in nodes:
            node.request("publish", topic="blocks", count=per_publisher, rate=25.0)
        _wait_delivered(nodes, per_publisher * (len(nodes) - 1))
        _assert_each_received_all(nodes, per_publisher)
    finally:
        close_nodes(nodes)


@pytest.mark.slow
def test_stalled_subscriber_backpressure(tmp_path: Path) -> None:
    nodes = start_nodes(
        2, "ours", "it-bp", tmp_path, extra_args=["--publish-timeout", "0.5"]
    )
    stopped = False
    try:
        for node in nodes:
            node.request("subscribe", topic="bulk")
        connect_edges(nodes, [(0, 1)])
        nodes[0].request("wait_topic_peers", topic="bulk", n=1, wait_s=15, timeout=20)
        os.kill(nodes[1].proc.pid, signal.SIGSTOP)
        stopped = True
        reply = nodes[0].request(
            "publish",
            topic="bulk",
            count=2000,
            rate=2000.0,
            size=16 * 1024,
            stop_on_error=True,
            timeout=60,
        )
        stats = nodes[0].request("stats")
        assert stats["publish_errors"] == {"PublishBackpressure": 1}
        assert reply["sent"] < 2000
        # Nothing was dropped silently on the way to the stalled peer.
        assert stats["gossip"]["own_send_drops"] == 0
    finally:
        if stopped:
            os.kill(nodes[1].proc.pid, signal.SIGCONT)
        close_nodes(nodes)
