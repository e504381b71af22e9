"""Host factory: identity, security list, listening and dialing."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID

from p2p.guard import Guard
from p2p.host import HostConfig, ListenError, build_host, mesh_protocol_id
from p2p.identity import (
    IdentityError,
    load_identity,
    load_or_create_identity,
    peer_id_of,
    save_identity,
)
from p2p.service import DialError, open_service


def _config(tmp_path: Path, name: str, **overrides) -> HostConfig:
    return HostConfig(identity_path=tmp_path / f"{name}.key", **overrides)


def test_identity_created_with_mode_0600(tmp_path):
    path = tmp_path / "sub" / "node.key"
    key_pair = load_or_create_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_identity(path)
    assert peer_id_of(again) == peer_id_of(key_pair)


def test_identity_group_readable_rejected(tmp_path):
    path = tmp_path / "node.key"
    save_identity(create_new_key_pair(), path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(path)


def test_identity_garbage_file_rejected(tmp_path):
    path = tmp_path / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(IdentityError, match="not a libp2p private key"):
        load_identity(path)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"network": "Bad/Name"}, "network"),
        ({"listen_addrs": ("/ip4/127.0.0.1/udp/1",)}, "listen address"),
        ({"max_connections": 0}, "max_connections"),
        ({"muxers": ("spdy",)}, "muxers"),
        ({"upgrade_timeout": 0}, "upgrade_timeout"),
    ],
)
def test_config_invalid_field_named(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        _config(tmp_path, "a", **overrides).validate()


def test_protocol_id_contains_network():
    assert mesh_protocol_id("testnet", "rpc") == "/synaptic-mesh/testnet/rpc/1.0.0"


def test_host_offers_noise_only(tmp_path):
    host = build_host(_config(tmp_path, "a"), Guard())
    secure = host.get_network().upgrader.security_multistream.transports
    assert list(secure) == [NOISE_PROTOCOL_ID]


async def test_service_addrs_end_with_peer_id(tmp_path):
    async with open_service(_config(tmp_path, "a")) as svc:
        assert svc.listen_addrs
        for addr in svc.listen_addrs:
            assert addr.startswith("/ip4/127.0.0.1/tcp/")
            assert addr.endswith(f"/p2p/{svc.peer_id}")


async def test_identity_persists_across_restart(tmp_path):
    config = _config(tmp_path, "a")
    async with open_service(config) as svc:
        first = svc.peer_id
    async with open_service(config) as svc:
        assert svc.peer_id == first


async def test_port_taken_raises_listen_error(tmp_path):
    async with open_service(_config(tmp_path, "a")) as first:
        port = first.listen_addrs[0].split("/")[4]
        taken = _config(tmp_path, "b", listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",))
        with pytest.raises(ListenError, match="Address already in use") as info:
            async with open_service(taken):
                pass
        assert "another process holds the port" in str(info.value)
        assert "--listen or the p2p.listen setting" in str(info.value)


async def test_port_held_by_reuseport_socket_rejected(tmp_path):
    # A stock py-libp2p listener sets SO_REUSEPORT; our bind must still fail.
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        config = _config(tmp_path, "a", listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",))
        with pytest.raises(ListenError, match=str(port)):
            async with open_service(config):
                pass
    finally:
        holder.close()


async def test_connect_both_sides_see_peer(tmp_path):
    async with (
        open_service(_config(tmp_path, "a")) as a,
        open_service(_config(tmp_path, "b")) as b,
    ):
        assert await b.connect(a.listen_addrs[0]) == a.peer_id
        assert b.connected_peers() == [a.peer_id]
        with trio.fail_after(5):
            while a.connected_peers() != [b.peer_id]:
                await trio.sleep(0.01)


async def test_connect_twice_keeps_one_connection(tmp_path):
    # Dial latency is measured in bench/connect_bench.py, not asserted here,
    # because a wall-clock limit fails on a loaded machine.
    async with (
        open_service(_config(tmp_path, "a")) as a,
        open_service(_config(tmp_path, "b")) as b,
    ):
        assert await b.connect(a.listen_addrs[0]) == a.peer_id
        assert await b.connect(a.listen_addrs[0]) == a.peer_id
        assert b.connected_peers() == [a.peer_id]
        network = b.host.get_network()
        assert len(network.get_connections(ID.from_base58(a.peer_id))) == 1


async def test_connect_refused_raises_dial_error(tmp_path):
    async with open_service(_config(tmp_path, "a")) as a:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        other = load_or_create_identity(tmp_path / "ghost.key")
        address = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(other)}"
        with pytest.raises(DialError, match="failed"):
            await a.connect(address)
        # No negative cache: a second attempt dials again instead of failing
        # fast with "recently failed".
        with pytest.raises(DialError) as info:
            await a.connect(address)
        assert "negative cache" not in str(info.value)


async def test_connect_wrong_peer_id_rejected(tmp_path):
    async with (
        open_service(_config(tmp_path, "a")) as a,
        open_service(_config(tmp_path, "b")) as b,
    ):
        ghost = peer_id_of(load_or_create_identity(tmp_path / "ghost.key"))
        address = a.listen_addrs[0].rsplit("/", 1)[0] + "/" + ghost
        with pytest.raises(DialError):
            await b.connect(address)
        assert b.connected_peers() == []


async def test_connect_invalid_address_rejected(tmp_path):
    async with open_service(_config(tmp_path, "a")) as a:
        with pytest.raises(DialError, match="invalid peer address"):
            await a.connect("/ip4/127.0.0.1/tcp/1")
        with pytest.raises(DialError, match="own address"):
            await a.connect(a.listen_addrs[0])


async def test_plaintext_dialer_rejected(tmp_path):
    # The stock host offers /plaintext/2.0.0 among its security protocols;
    # ours must refuse a dialer that speaks only plaintext.
    key_pair = create_new_key_pair()
    dialer = new_host(
        key_pair=key_pair,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
        listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")],
    )
    async with (
        open_service(_config(tmp_path, "a")) as a,
        dialer.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]),
    ):
        info = info_from_p2p_addr(multiaddr.Multiaddr(a.listen_addrs[0]))
        with pytest.raises(SwarmException), trio.fail_after(10):
            await dialer.connect(info)
        assert a.connected_peers() == []


async def test_mplex_only_peer_rejected_by_default(tmp_path):
    async with (
        open_service(_config(tmp_path, "a")) as a,
        open_service(_config(tmp_path, "b", muxers=("mplex",))) as b,
    ):
        with pytest.raises(DialError, match="multiplexer"):
            await b.connect(a.listen_addrs[0])
        assert a.connected_peers() == []


async def test_mplex_negotiated_when_enabled(tmp_path):
    async with (
        open_service(_config(tmp_path, "a", muxers=("yamux", "mplex"))) as a,
        open_service(_config(tmp_path, "b", muxers=("mplex",))) as b,
    ):
        await b.connect(a.listen_addrs[0])
        conn = b.host.get_network().get_connections()[0]
        assert type(conn.muxed_conn).__name__ == "Mplex"


async def test_connection_cap_rejects_extra_peer(tmp_path):
    async with (
        open_service(_config(tmp_path, "hub", max_connections=1)) as hub,
        open_service(_config(tmp_path, "first")) as first,
        open_service(_config(tmp_path, "second")) as second,
    ):
        await first.connect(hub.listen_addrs[0])
        with pytest.raises(DialError):
            await second.connect(hub.listen_addrs[0])
        assert hub.connected_peers() == [first.peer_id]


async def test_inbound_slots_freed_after_disconnect(tmp_path):
    # The stock inbound handler kept its slot until the swarm stopped, so a
    # node with max_connections=2 rejected everyone after two visitors.
    async with open_service(_config(tmp_path, "hub", max_connections=2)) as hub:
        swarm = hub.host.get_network()
        for index in range(5):
            async with open_service(_config(tmp_path, f"visitor{index}")) as visitor:
                await visitor.connect(hub.listen_addrs[0])
                await visitor.disconnect(hub.peer_id)
            with trio.fail_after(5):
                while hub.connected_peers() or swarm._inbound_limiter.borrowed_tokens:
                    await trio.sleep(0.01)


async def test_stock_listener_cannot_share_our_port(tmp_path):
    # The stock TCP listener sets SO_REUSEPORT; without it on our socket the
    # kernel refuses its bind instead of splitting our inbound connections.
    async with open_service(_config(tmp_path, "a")) as a:
        port = a.listen_addrs[0].split("/")[4]
        listen = [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")]
        stock = new_host(key_pair=create_new_key_pair(), listen_addrs=listen)
        async with stock.run(listen):
            assert stock.get_addrs() == []


@pytest.mark.slow
async def test_churn_leaves_no_open_connection(tmp_path):
    # Dials cancelled mid-upgrade (Pubsub's peer retry when the dialer shuts
    # down) used to leave the socket open, so the hub kept the connection.
    async with open_service(_config(tmp_path, "hub")) as hub:
        async with open_service(_config(tmp_path, "churner")) as churner:
            for _ in range(30):
                await churner.connect(hub.listen_addrs[0])
                await churner.disconnect(hub.peer_id)
        with trio.fail_after(10):
            while hub.host.get_network().get_connections():
                await trio.sleep(0.05)
