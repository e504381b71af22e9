"""Peer management: the redial planner, the known-peers file, reconnects."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import trio

from p2p.host import HostConfig
from p2p.peers import (
    KNOWN_PEERS_FILE,
    Dial,
    PeerParams,
    ReconnectPlanner,
    load_known_peers,
)
from p2p.service import open_service
from tests.p2p.testpeer import PeerProcess

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
OTHER = "12D3KooWRzj9wpjcjLAdyaZeRKKJYpNiLzpSH8QnpPsZNvvsfE4A"
ADDR = "/ip4/127.0.0.1/tcp/4001"


def _planner(**overrides) -> ReconnectPlanner:
    params = PeerParams(**{"initial_backoff": 1.0, "max_backoff": 8.0, **overrides})
    return ReconnectPlanner(params, random.Random(7))


def test_planner_dials_new_peer_at_once():
    planner = _planner()
    planner.on_added(PEER, now=0.0)
    assert planner.on_tick(now=0.0) == [Dial(PEER)]
    # Already in flight: no second dial.
    assert planner.on_tick(now=100.0) == []


def test_planner_backoff_doubles_to_cap():
    planner = _planner()
    planner.on_added(PEER, now=0.0)
    now = 0.0
    delays = []
    for _ in range(6):
        assert planner.on_tick(now) == [Dial(PEER)]
        planner.on_dial_failed(PEER, now)
        deadline = planner.next_deadline()
        delays.append(deadline - now)
        assert planner.on_tick(deadline - 0.001) == []
        now = deadline
    # 1, 2, 4, 8, 8, 8 s, each with +/-20 % jitter.
    for delay, base in zip(delays, [2, 4, 8, 8, 8, 8], strict=True):
        assert 0.8 * base <= delay <= 1.2 * base


def test_planner_first_failure_uses_initial_backoff():
    planner = _planner()
    planner.on_added(PEER, now=0.0)
    planner.on_tick(0.0)
    planner.on_connected(PEER, now=0.0)
    planner.on_disconnected(PEER, now=10.0)
    assert 10.8 <= planner.next_deadline() <= 11.2


def test_planner_success_resets_backoff():
    planner = _planner()
    planner.on_added(PEER, now=0.0)
    for now in (0.0, 10.0, 20.0):
        planner.on_tick(now)
        planner.on_dial_failed(PEER, now)
    planner.on_tick(100.0)
    planner.on_connected(PEER, now=100.0)
    assert planner.next_deadline() == float("inf")
    planner.on_disconnected(PEER, now=200.0)
    assert 200.8 <= planner.next_deadline() <= 201.2


def test_planner_waits_out_ban():
    planner = _planner()
    planner.on_added(PEER, now=0.0)
    planner.on_banned(PEER, until=50.0)
    assert planner.on_tick(now=10.0) == []
    assert planner.next_deadline() == 50.0
    assert planner.on_tick(now=50.0) == [Dial(PEER)]


def test_planner_removed_peer_not_dialed():
    planner = _planner()
    planner.on_added(PEER, now=0.0)
    planner.on_added(OTHER, now=0.0)
    planner.on_removed(PEER)
    assert planner.on_tick(now=0.0) == [Dial(OTHER)]
    assert planner.known() == [OTHER]


def test_planner_caps_known_peers():
    planner = _planner(max_known_peers=1)
    assert planner.on_added(PEER, now=0.0)
    assert not planner.on_added(OTHER, now=0.0)
    assert planner.known() == [PEER]


def test_params_invalid_field_named():
    with pytest.raises(ValueError, match="initial_backoff"):
        PeerParams(initial_backoff=10, max_backoff=1).validate()


def test_known_peers_file_roundtrip(tmp_path):
    path = tmp_path / KNOWN_PEERS_FILE
    path.write_text(json.dumps({"version": 1, "peers": {PEER: [ADDR]}}))
    assert load_known_peers(path) == {PEER: [ADDR]}


def test_known_peers_missing_file_empty(tmp_path):
    assert load_known_peers(tmp_path / KNOWN_PEERS_FILE) == {}


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"version": 99, "peers": {}}),
        json.dumps({"version": 1, "peers": {"not-a-peer-id": [ADDR]}}),
        json.dumps({"version": 1, "peers": {PEER: ["/not/a/multiaddr"]}}),
    ],
)
def test_known_peers_invalid_file_moved_aside(tmp_path, content):
    path = tmp_path / KNOWN_PEERS_FILE
    path.write_text(content)
    assert load_known_peers(path) == {}
    assert not path.exists()
    assert (tmp_path / (KNOWN_PEERS_FILE + ".invalid")).read_text() == content


def _config(tmp_path: Path, name: str) -> HostConfig:
    return HostConfig(identity_path=tmp_path / name / "node.key")


async def test_dialed_peer_saved_and_redialed_after_restart(tmp_path):
    params = PeerParams(save_interval=0)
    async with open_service(_config(tmp_path, "a")) as a:
        b_config = _config(tmp_path, "b")
        async with open_service(b_config, peer_params=params) as b:
            await b.connect(a.listen_addrs[0])
            with trio.fail_after(5):
                while not (tmp_path / "b" / KNOWN_PEERS_FILE).exists():
                    await trio.sleep(0.02)
        saved = load_known_peers(tmp_path / "b" / KNOWN_PEERS_FILE)
        assert list(saved) == [a.peer_id]
        # A restarted b dials a on its own, from the saved file.
        async with open_service(b_config, peer_params=params) as b:
            with trio.fail_after(5):
                while b.connected_peers() != [a.peer_id]:
                    await trio.sleep(0.02)


async def test_disconnect_stops_redial(tmp_path):
    params = PeerParams(initial_backoff=0.05, max_backoff=0.1)
    async with (
        open_service(_config(tmp_path, "a")) as a,
        open_service(_config(tmp_path, "b"), peer_params=params) as b,
    ):
        await b.connect(a.listen_addrs[0])
        await b.disconnect(a.peer_id)
        await trio.sleep(0.5)
        assert b.connected_peers() == []
        assert b.peers.known_peers() == {}


@pytest.mark.slow
async def test_killed_peer_reconnected_after_restart(tmp_path):
    # The peer runs in its own process, is killed with SIGKILL and restarted
    # on the same port with the same identity. It does not dial us, so the
    # reconnect must come from our peer manager.
    params = PeerParams(initial_backoff=0.2, max_backoff=1.0)
    peer_args = [
        "--identity",
        str(tmp_path / "peer" / "node.key"),
        "--network",
        "devnet",
    ]
    async with trio.open_nursery() as nursery:
        peer = await PeerProcess.start(nursery, tmp_path / "peer1.log", *peer_args)
        try:
            async with open_service(_config(tmp_path, "me"), peer_params=params) as me:
                await me.connect(peer.addr)
                assert me.connected_peers() == [peer.peer_id]

                peer.kill()
                await peer.process.wait()
                with trio.fail_after(10):
                    while me.connected_peers():
                        await trio.sleep(0.05)

                restart_args = [
                    *peer_args,
                    "--listen",
                    f"/ip4/127.0.0.1/tcp/{peer.port}",
                ]
                restarted = await PeerProcess.start(
                    nursery, tmp_path / "peer2.log", *restart_args
                )
                try:
                    assert restarted.peer_id == peer.peer_id
                    with trio.fail_after(15):
                        while me.connected_peers() != [peer.peer_id]:
                            await trio.sleep(0.05)
                    response = await me.reqresp.request(
                        peer.peer_id, "echo", {"after": "restart"}, timeout=10
                    )
                    assert response == {"after": "restart"}
                finally:
                    await restarted.stop()
        finally:
            await peer.stop()
        nursery.cancel_scope.cancel()
