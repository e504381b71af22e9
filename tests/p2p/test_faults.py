"""Fault tests: hostile input against a live node in a separate process.

The node under attack is `tests.p2p.testpeer` on 127.0.0.1. After each fault
the test checks that the node still runs, still serves an honest peer, and
logged the rejection with the offender's peer id (or its address when the
connection died before a peer id existed). At the end its RSS and open file
count must be back near the baseline taken after a warm-up. Every loop is
bounded in count and time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed

from p2p.guard import Guard
from p2p.host import HostConfig
from p2p.reqresp import RemoteError
from p2p.service import P2PService, open_service
from tests.p2p.testpeer import PeerProcess

pytestmark = pytest.mark.slow

NETWORK = "faultnet"
TOPIC = f"/synaptic-mesh/{NETWORK}/blocks"
MAX_FRAME = 64 * 1024
# Python rarely returns freed arenas to the OS, so RSS may stay a little
# above the baseline. A leak of one 64 KiB read buffer per connection over
# 200 connections would exceed this. Smaller leaks of a task per connection
# show up in the open-file check and in the honest peer being locked out by
# the node's cap of 32 connections.
RSS_SLACK_KIB = 12 * 1024
FD_SLACK = 2


def _malformed_key_rpc(topic: str) -> bytes:
    """Build the publish RPC that stopped py-libp2p 0.8.1's Pubsub.

    `from` is a sha256 peer id, so the signature check cannot take the key
    from the id and parses `key`, which is not a protobuf public key.
    """
    fake_id = b"\x12\x20" + hashlib.sha256(b"no such key").digest()
    message = rpc_pb2.Message(
        from_id=fake_id,
        data=b"payload",
        seqno=b"\x00" * 8,
        topicIDs=[topic],
        signature=b"\x01" * 64,
        key=b"\xff\xfe not a protobuf key",
    )
    return encode_varint_prefixed(rpc_pb2.RPC(publish=[message]).SerializeToString())


def _multistream(*protocols: str) -> bytes:
    return b"".join(
        encode_uvarint(len(p) + 1) + p.encode() + b"\n"
        for p in ("/multistream/1.0.0", *protocols)
    )


async def _read_until_closed(stream: trio.SocketStream, timeout: float) -> bool:
    """Drain `stream`; return True if the node closed it within `timeout`."""
    with trio.move_on_after(timeout):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def _wait_log(node: PeerProcess, text: str, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while text not in node.log_text():
            await trio.sleep(0.05)


async def _check_honest(node: PeerProcess, honest: P2PService, n: int) -> None:
    assert node.alive(), node.log_text()[-3000:]
    await honest.connect(node.addr)
    response = await honest.reqresp.request(node.peer_id, "echo", {"n": n}, timeout=10)
    assert response == {"n": n}
    data = f"honest {n}".encode()
    await honest.gossip.publish(TOPIC, data)
    await node.wait_for(
        lambda e: e["event"] == "message" and e["data"] == data.hex(), timeout=10
    )


def _config(tmp_path: Path, name: str) -> HostConfig:
    return HostConfig(identity_path=tmp_path / f"{name}.key", network=NETWORK)


async def _churn(node: PeerProcess, tmp_path: Path, raw: int, full: int) -> None:
    """Open and drop `raw` bare TCP and `full` Noise+Yamux connections.

    Bare connections go in batches of 20, each batch held open together and
    then dropped. The next batch starts once the node logged every rejection,
    so the burst stays under the node's cap of 32 connections.
    """
    for start in range(0, raw, 20):
        batch = [
            await trio.open_tcp_stream("127.0.0.1", node.port)
            for _ in range(min(20, raw - start))
        ]
        ports = [stream.socket.getsockname()[1] for stream in batch]
        for stream in batch:
            await stream.aclose()
        for port in ports:
            await _wait_log(
                node, f"inbound connection rejected remote=127.0.0.1:{port}"
            )
    async with open_service(_config(tmp_path, "churn")) as churner:
        for _ in range(full):
            await churner.connect(node.addr)
            await churner.disconnect(node.peer_id)


async def _settle(node: PeerProcess, baseline_fds: int) -> int:
    # Closing connections finish in the background; give them up to 10 s to
    # reach the baseline before the slack is applied.
    with trio.move_on_after(10):
        while node.open_fds() > baseline_fds:
            await trio.sleep(0.1)
    return node.open_fds()


async def _fault_garbage(node: PeerProcess) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", node.port)
    local_port = stream.socket.getsockname()[1]
    await stream.send_all(os.urandom(4096))
    assert await _read_until_closed(stream, 5), "node kept a garbage connection"
    await stream.aclose()
    await _wait_log(node, f"inbound connection rejected remote=127.0.0.1:{local_port}")


async def _fault_stalled_noise(node: PeerProcess) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", node.port)
    local_port = stream.socket.getsockname()[1]
    await stream.send_all(_multistream("/noise"))
    started = trio.current_time()
    # The node runs with --upgrade-timeout 1, so it must hang up within it.
    assert await _read_until_closed(stream, 5), "node kept a stalled handshake"
    assert trio.current_time() - started >= 0.9
    await stream.aclose()
    await _wait_log(node, f"inbound connection rejected remote=127.0.0.1:{local_port}")


async def _raw_reqresp_stream(attacker: P2PService, node: PeerProcess):
    await attacker.connect(node.addr)
    protocol = TProtocol(f"/synaptic-mesh/{NETWORK}/reqresp/1.0.0")
    return await attacker.host.new_stream(ID.from_base58(node.peer_id), [protocol])


async def _fault_oversized_frame(node: PeerProcess, attacker: P2PService) -> None:
    stream = await _raw_reqresp_stream(attacker, node)
    size = MAX_FRAME + 1
    await stream.write(struct.pack(">I", size))
    await stream.write(b"\x00" * size)
    await _wait_log(
        node,
        f"peer rejected peer_id={attacker.peer_id} reason=invalid reqresp request: "
        f"frame of {size} bytes exceeds",
    )


async def _fault_gigabyte_prefix(node: PeerProcess, attacker: P2PService) -> None:
    stream = await _raw_reqresp_stream(attacker, node)
    await stream.write(struct.pack(">I", 3 << 30))
    await _wait_log(
        node,
        f"peer rejected peer_id={attacker.peer_id} reason=invalid reqresp request: "
        f"frame of {3 << 30} bytes exceeds",
    )


async def _fault_malformed_key(node: PeerProcess, attacker: P2PService) -> None:
    await attacker.connect(node.addr)
    stream = await attacker.host.new_stream(
        ID.from_base58(node.peer_id), [PROTOCOL_ID_V11]
    )
    await stream.write(_malformed_key_rpc(TOPIC))
    await _wait_log(node, f"peer_id={attacker.peer_id}")
    await stream.close()


async def _fault_raising_handlers(node: PeerProcess, attacker: P2PService) -> None:
    await attacker.connect(node.addr)
    with pytest.raises(RemoteError) as info:
        await attacker.reqresp.request(node.peer_id, "fail", {}, timeout=10)
    assert info.value.code == "internal"
    await _wait_log(node, f"reqresp handler failed peer_id={attacker.peer_id}")
    protocol = f"/synaptic-mesh/{NETWORK}/raise/1.0.0"
    # The handler raises as soon as the protocol is agreed, and the reset it
    # causes can overtake the agreement, so opening the stream may fail.
    with contextlib.suppress(StreamFailure):
        await attacker.host.new_stream(
            ID.from_base58(node.peer_id), [TProtocol(protocol)]
        )
    await _wait_log(
        node,
        f"stream handler failed peer_id={attacker.peer_id} protocol={protocol}",
    )


async def test_node_survives_faults(tmp_path):
    node_args = [
        "--identity", str(tmp_path / "node.key"),
        "--network", NETWORK,
        "--subscribe", "blocks",
        "--upgrade-timeout", "1",
        "--max-connections", "32",
        "--max-frame-bytes", str(MAX_FRAME),
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        node = await PeerProcess.start(nursery, tmp_path / "node.log", *node_args)
        try:
            async with open_service(_config(tmp_path, "honest")) as honest:
                await _run_faults(node, honest, tmp_path)
        finally:
            await node.stop()
        nursery.cancel_scope.cancel()


async def _run_faults(node: PeerProcess, honest: P2PService, tmp_path: Path) -> None:
    await honest.gossip.subscribe(TOPIC)
    await _check_honest(node, honest, 0)
    # Warm-up: one of each code path, so first-use allocations and imports
    # are part of the baseline.
    await _churn(node, tmp_path, raw=10, full=10)
    await _fault_garbage(node)
    await trio.sleep(1)
    baseline_rss = node.rss_kib()
    baseline_fds = node.open_fds()

    await _fault_garbage(node)
    await _check_honest(node, honest, 1)
    await _fault_stalled_noise(node)
    await _check_honest(node, honest, 2)

    faults = (
        _fault_oversized_frame,
        _fault_gigabyte_prefix,
        _fault_malformed_key,
        _fault_raising_handlers,
    )
    for index, fault in enumerate(faults):
        # A fresh attacker identity per fault, so a ban from one fault
        # cannot hide the handling of the next.
        async with open_service(_config(tmp_path, f"attacker{index}")) as attacker:
            await fault(node, attacker)
        await _check_honest(node, honest, 10 + index)

    # 200 connections opened and dropped; the node caps connections at 32,
    # so leaked inbound slots would lock the honest peer out.
    await honest.disconnect(node.peer_id)
    await _churn(node, tmp_path, raw=100, full=100)
    await _check_honest(node, honest, 20)

    fds = await _settle(node, baseline_fds)
    rss = node.rss_kib()
    print(f"node rss {baseline_rss} -> {rss} KiB, open fds {baseline_fds} -> {fds}")
    assert fds <= baseline_fds + FD_SLACK, _fd_report(node, baseline_fds)
    assert rss <= baseline_rss + RSS_SLACK_KIB, (baseline_rss, rss)
    assert "Traceback" not in _lines_of(node, "p2p.service")


def _fd_report(node: PeerProcess, baseline_fds: int) -> str:
    sockets = subprocess.run(
        ["ss", "-tanp"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    port = f"127.0.0.1:{node.port}"
    mine = [line for line in sockets if port in line]
    return (
        f"baseline {baseline_fds} fds; now {node.fd_targets()}; "
        f"test pid {os.getpid()}, node pid {node.process.pid}; sockets {mine}"
    )


def _lines_of(node: PeerProcess, logger_name: str) -> str:
    return "\n".join(
        line for line in node.log_text().splitlines() if f" {logger_name} " in line
    )


async def test_malformed_key_stops_stock_pubsub():
    # Shows the test message is the one that stops py-libp2p 0.8.1's Pubsub,
    # so the survival checks above are meaningful.
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    victim = new_host(listen_addrs=listen)
    attacker = new_host(listen_addrs=listen)
    with pytest.raises(BaseExceptionGroup) as info:
        async with victim.run(listen), attacker.run(listen):
            router = GossipSub([PROTOCOL_ID_V11], degree=3, degree_low=2, degree_high=4)
            pubsub = Pubsub(victim, router)
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                await pubsub.subscribe("t")
                await attacker.connect(info_from_p2p_addr(victim.get_addrs()[0]))
                stream = await attacker.new_stream(victim.get_id(), [PROTOCOL_ID_V11])
                await stream.write(_malformed_key_rpc("t"))
                with trio.fail_after(10):
                    await trio.sleep_forever()
    assert info.value.subgroup(lambda e: "DecodeError" in type(e).__name__)


async def test_guard_contains_malformed_key_in_stock_pubsub(caplog):
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    victim = new_host(listen_addrs=listen)
    attacker = new_host(listen_addrs=listen)
    guard = Guard()
    async with victim.run(listen), attacker.run(listen):
        router = GossipSub([PROTOCOL_ID_V11], degree=3, degree_low=2, degree_high=4)
        pubsub = Pubsub(victim, router)
        guard.guard_pubsub(pubsub)
        async with background_trio_service(pubsub), background_trio_service(router):
            await pubsub.wait_until_ready()
            await pubsub.subscribe("t")
            await attacker.connect(info_from_p2p_addr(victim.get_addrs()[0]))
            stream = await attacker.new_stream(victim.get_id(), [PROTOCOL_ID_V11])
            await stream.write(_malformed_key_rpc("t"))
            with trio.fail_after(10):
                while not guard.rejections:
                    await trio.sleep(0.02)
            assert pubsub.manager.is_running
    attacker_id = attacker.get_id().to_base58()
    assert guard.rejections[(attacker_id, "malformed pubsub message")] == 1
    assert f"pubsub message failed peer_id={attacker_id}" in caplog.text
