"""Tests of p2p.discovery: the provider table, record checks and real DHTs."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.envelope import seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from bench.gossip_node import (
    NodeProcess,
    close_nodes,
    connect_edges,
    start_nodes,
    topology_edges,
)
from p2p.discovery import (
    DiscoveryError,
    DiscoveryParams,
    ProviderInfo,
    ProviderRecords,
    _verified_provider,
    open_discovery,
    service_key,
)

# ---------------------------------------------------------------- sans-IO core


def test_records_expire_after_ttl() -> None:
    records = ProviderRecords(ttl=10.0)
    records.add(b"k", "peer-a", ["/ip4/127.0.0.1/tcp/1"], now=0.0)
    assert records.get(b"k", now=9.9) == [
        ProviderInfo("peer-a", ("/ip4/127.0.0.1/tcp/1",))
    ]
    assert records.get(b"k", now=10.0) == []
    assert len(records) == 0


def test_records_refresh_extends_life() -> None:
    records = ProviderRecords(ttl=10.0)
    records.add(b"k", "peer-a", [], now=0.0)
    records.add(b"k", "peer-a", [], now=8.0)
    assert [p.peer_id for p in records.get(b"k", now=15.0)] == ["peer-a"]
    assert len(records) == 1


def test_records_newest_first_and_unique() -> None:
    records = ProviderRecords(ttl=10.0)
    records.add(b"k", "peer-a", [], now=1.0)
    records.add(b"k", "peer-b", [], now=2.0)
    records.add(b"k", "peer-a", [], now=3.0)
    assert [p.peer_id for p in records.get(b"k", now=3.0)] == ["peer-a", "peer-b"]


def test_records_full_key_rejects_new() -> None:
    records = ProviderRecords(ttl=10.0, max_per_key=2)
    assert records.add(b"k", "a", [], now=0.0)
    assert records.add(b"k", "b", [], now=0.0)
    assert not records.add(b"k", "c", [], now=1.0)
    # Refreshing a present provider still works, and expiry frees a slot.
    assert records.add(b"k", "a", [], now=1.0)
    assert records.add(b"k", "c", [], now=10.5)


def test_records_evict_oldest_key() -> None:
    records = ProviderRecords(ttl=10.0, max_keys=2)
    records.add(b"k1", "a", [], now=0.0)
    records.add(b"k2", "a", [], now=0.0)
    records.add(b"k3", "a", [], now=0.0)
    assert records.get(b"k1", now=0.0) == []
    assert len(records.get(b"k3", now=0.0)) == 1


def test_records_expire_counts_removed() -> None:
    records = ProviderRecords(ttl=5.0)
    records.add(b"k1", "a", [], now=0.0)
    records.add(b"k2", "b", [], now=3.0)
    assert records.expire(now=6.0) == 1
    assert len(records) == 1


def test_service_key_namespaced() -> None:
    key = service_key("net1", "model-a")
    assert key[:2] == b"\x12\x20"
    assert len(key) == 34
    assert key != service_key("net2", "model-a")
    assert key != service_key("net1", "model-b")
    with pytest.raises(DiscoveryError):
        service_key("net1", "a/b")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"provider_ttl": 0.5}, "provider_ttl"),
        ({"republish_interval": 90.0}, "republish_interval"),
        ({"max_providers": 0}, "max_providers"),
        ({"bootstrap_attempts": 0}, "bootstrap_attempts"),
    ],
)
def test_params_validate_rejects(changes: dict, message: str) -> None:
    params = dataclasses.replace(DiscoveryParams(), **changes)
    with pytest.raises(ValueError, match=message):
        params.validate()


def test_default_republish_is_third_of_ttl() -> None:
    assert DiscoveryParams(provider_ttl=90).effective_republish_interval == 30


def _signed_entry(signer_key, claimed_key) -> Message.Peer:
    signer = ID.from_pubkey(signer_key.public_key)
    record = PeerRecord(signer, [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001")])
    envelope = seal_record(record, signer_key.private_key)
    entry = Message.Peer()
    entry.id = ID.from_pubkey(claimed_key.public_key).to_bytes()
    entry.signedRecord = envelope.marshal_envelope()
    return entry


def test_provider_with_own_record_accepted() -> None:
    key = create_new_key_pair()
    info = _verified_provider(_signed_entry(key, key))
    assert info is not None
    assert info.peer_id == str(ID.from_pubkey(key.public_key))
    assert info.addrs == ("/ip4/127.0.0.1/tcp/4001",)


def test_provider_with_foreign_record_rejected() -> None:
    entry = _signed_entry(create_new_key_pair(), create_new_key_pair())
    assert _verified_provider(entry) is None


def test_provider_without_record_rejected() -> None:
    entry = Message.Peer()
    entry.id = ID.from_pubkey(create_new_key_pair().public_key).to_bytes()
    entry.addrs.append(multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1").to_bytes())
    assert _verified_provider(entry) is None


def test_provider_with_corrupt_record_rejected() -> None:
    key = create_new_key_pair()
    entry = _signed_entry(key, key)
    entry.signedRecord = entry.signedRecord[:-3] + b"xyz"
    assert _verified_provider(entry) is None


# ---------------------------------------------------------- in-process hosts


async def test_client_mode_peer_not_in_table() -> None:
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    server_host = new_host(key_pair=create_new_key_pair())
    client_host = new_host(key_pair=create_new_key_pair())
    params = DiscoveryParams(network="net1")
    async with (
        server_host.run(listen),
        client_host.run(listen),
        open_discovery(server_host, params) as discovery,
    ):
        client = KadDHT(client_host, DHTMode.CLIENT)
        async with background_trio_service(client):
            await client_host.connect(info_from_p2p_addr(server_host.get_addrs()[0]))
            # The client's lookup opens a DHT stream to the server, which is
            # how py-libp2p let client-mode peers into servers' tables.
            with trio.fail_after(30):
                await client.peer_routing.find_closest_peers_network(
                    b"\x12\x20" + b"a" * 32
                )
                while not server_host.get_peerstore().get_protocols(
                    client_host.get_id()
                ):
                    await trio.sleep(0.02)
            await trio.sleep(0.2)
            assert discovery.routing_table_peers() == []
            assert client_host.get_id() in server_host.get_connected_peers()


async def test_server_peer_enters_table_on_connect() -> None:
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    hosts = [new_host(key_pair=create_new_key_pair()) for _ in range(2)]
    params = DiscoveryParams(network="net1")
    async with (
        hosts[0].run(listen),
        hosts[1].run(listen),
        open_discovery(hosts[0], params) as first,
        open_discovery(hosts[1], params) as second,
    ):
        await hosts[0].connect(info_from_p2p_addr(hosts[1].get_addrs()[0]))
        with trio.fail_after(30):
            while not (first.routing_table_peers() and second.routing_table_peers()):
                await trio.sleep(0.02)
        assert first.routing_table_peers() == [second.peer_id]
        assert second.routing_table_peers() == [first.peer_id]
        await second.provide("svc")
        found = await first.find_providers("svc", timeout=10)
        assert [p.peer_id for p in found] == [second.peer_id]
        assert found[0].addrs


async def test_bootstrap_skips_dead_address() -> None:
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    hosts = [new_host(key_pair=create_new_key_pair()) for _ in range(2)]
    params = DiscoveryParams(
        network="net1", bootstrap_attempts=2, bootstrap_backoff=0.05
    )
    async with (
        hosts[0].run(listen),
        hosts[1].run(listen),
        open_discovery(hosts[0], params) as first,
        open_discovery(hosts[1], params) as second,
    ):
        # A port that nothing listens on: bound once, then closed.
        probe = trio.socket.socket()
        await probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
        probe.close()
        dead_id = ID.from_pubkey(create_new_key_pair().public_key)
        dead = f"/ip4/127.0.0.1/tcp/{dead_port}/p2p/{dead_id}"
        live = str(hosts[1].get_addrs()[0])
        with trio.fail_after(30):
            assert await first.bootstrap([dead, live]) == 1
        assert first.routing_table_peers() == [second.peer_id]
        with pytest.raises(DiscoveryError, match="no bootstrap peer reachable"):
            await first.bootstrap([dead])
        with pytest.raises(DiscoveryError, match="invalid bootstrap address"):
            await first.bootstrap(["/ip4/127.0.0.1/tcp/1"])


# ------------------------------------------------- separate node processes


def _find_all(nodes: list[NodeProcess], name: str) -> list[list[str]]:
    return [
        sorted(
            p[0]
            for p in node.request("find", name=name, lookup_timeout_s=10, timeout=30)[
                "providers"
            ]
        )
        for node in nodes
    ]


@pytest.mark.slow
def test_ten_processes_find_service(tmp_path: Path) -> None:
    nodes = start_nodes(10, "ours", "it-find", tmp_path)
    try:
        connect_edges(nodes, topology_edges("star", len(nodes)))
        provider = nodes[7]
        reply = provider.request("provide", name="model-a")
        assert reply["ok"]
        results = _find_all(nodes, "model-a")
        for node, found in zip(nodes, results, strict=True):
            assert found == [provider.peer_id], f"node {node.index} found {found}"
        # The returned address dials the provider.
        found = nodes[2].request("find", name="model-a")["providers"]
        addr = found[0][1][0]
        assert addr.endswith("/p2p/" + provider.peer_id)
        nodes[5].request("connect", addr=addr)
        assert _find_all(nodes[:1], "absent-service") == [[]]
    finally:
        close_nodes(nodes)


@pytest.mark.slow
def test_killed_provider_expires_then_returns(tmp_path: Path) -> None:
    ttl = 6.0
    args = ["--provider-ttl", str(ttl)]
    state = tmp_path / "provider-state"
    provider_args = [*args, "--state-dir", str(state)]
    nodes = start_nodes(4, "ours", "it-kill", tmp_path, extra_args=args)
    restarted = None
    try:
        provider = NodeProcess(
            4, "ours", "it-kill", tmp_path / "provider.log", provider_args
        )
        nodes.append(provider)
        provider.wait_ready()
        connect_edges(nodes, topology_edges("star", len(nodes)))
        provider.request("provide", name="model-b")
        watchers = nodes[:4]
        assert _find_all(watchers, "model-b") == [[provider.peer_id]] * 4

        killed_at = time.monotonic()
        provider.kill()
        # Every copy expires at most one TTL after the last announcement,
        # which came before the kill; 0.5 s covers the kill itself.
        time.sleep(max(0.0, killed_at + ttl + 0.5 - time.monotonic()))
        assert _find_all(watchers, "model-b") == [[]] * 4

        # Restarted from its state folder, the provider keeps its peer id.
        restarted = NodeProcess(
            4, "ours", "it-kill", tmp_path / "restarted.log", provider_args
        )
        restarted.wait_ready()
        assert restarted.peer_id == provider.peer_id
        connect_edges([nodes[0], restarted], [(1, 0)])
        restarted.request("provide", name="model-b")
        assert _find_all(watchers, "model-b") == [[restarted.peer_id]] * 4
    finally:
        close_nodes(nodes + ([restarted] if restarted else []))
