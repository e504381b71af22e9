"""One libp2p node in its own process, driven over stdin/stdout with JSON lines.

The gossip bench and the p2p integration tests start several of these on
127.0.0.1 and steer them with :class:`NodeProcess`. Each node runs one of two
stacks:

- ``ours``: the p2p package's gossip layer and DHT discovery;
- ``default``: py-libp2p 0.8.1 as a new user sets it up (``new_host``, ``Pubsub``
  and ``GossipSub`` with D=6/4/12 and a 1 s heartbeat, ``KadDHT`` in server
  mode), everything else at its defaults.

A command is one JSON object per line with an ``id`` and a ``cmd``. The node
replies with one line that carries the same ``id`` and ``ok``, plus ``error``
when ``ok`` is false. Published payloads start with a JSON header naming the publisher, a
sequence number and the send time, so every receiver can count deliveries and
measure latency against the shared wall clock of the one machine.

Run ``python -m bench.gossip_node --help`` for the options.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Payload header: {"o": publisher index, "s": sequence, "t": send time}.
_HEADER_END = b"\n"


class NodeError(RuntimeError):
    """A node process exited, replied with an error or timed out."""


class NodeProcess:
    """Parent-side handle of one node process.

    Args:
        index: the node's number in its cluster, put into its payloads.
        stack: ``"ours"`` or ``"default"``.
        network: network name for topics and DHT keys.
        log_path: file that receives the child's stderr.
        extra_args: further command-line options for the child.
    """

    def __init__(
        self,
        index: int,
        stack: str,
        network: str,
        log_path: Path,
        extra_args: list[str] | None = None,
        port: int = 0,
    ) -> None:
        self.index = index
        self.stack = stack
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        command = [
            sys.executable,
            "-m",
            "bench.gossip_node",
            "--index",
            str(index),
            "--stack",
            stack,
            "--network",
            network,
            "--port",
            str(port),
            *(extra_args or []),
        ]
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ids = itertools.count(1)
        self._early: dict[Any, dict[str, Any]] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.peer_id = ""
        self.addrs: list[str] = []

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the node's first line, which names its peer id and addresses."""
        ready = self._wait_reply(0, timeout=timeout)
        self.peer_id = ready["peer_id"]
        self.addrs = ready["addrs"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._replies.put(json.loads(line))
            except ValueError:
                continue
        self._replies.put({"id": -1, "eof": True})

    def _wait_reply(self, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self._early:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NodeError(f"node {self.index}: no reply to request {request_id}")
            try:
                reply = self._replies.get(timeout=remaining)
            except queue.Empty:
                continue
            if reply.get("eof"):
                self._replies.put(reply)
                raise NodeError(
                    f"node {self.index} exited with {self.proc.poll()} "
                    f"before answering request {request_id}"
                )
            self._early[reply.get("id")] = reply
        reply = self._early.pop(request_id)
        if not reply.get("ok", False):
            raise NodeError(f"node {self.index}: {reply.get('error')}")
        return reply

    def send(self, cmd: str, **fields: Any) -> int:
        """Send one command without waiting; return its id for `wait`."""
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "cmd": cmd, **fields}) + "\n"
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise NodeError(f"node {self.index} is gone: {exc}") from exc
        return request_id

    def wait(self, request_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """Return the reply to request `request_id`; raise NodeError on failure."""
        return self._wait_reply(request_id, timeout)

    def request(self, cmd: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send one command and return its reply; raise NodeError on failure.

        `timeout` bounds the wait for the reply; it is not sent to the node.
        """
        return self._wait_reply(self.send(cmd, **fields), timeout)

    def kill(self) -> None:
        """Kill the process with SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def send_quit(self) -> None:
        """Ask the node to quit without waiting for it."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(b'{"id": -2, "cmd": "quit"}\n')
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def close(self, timeout: float = 5.0) -> None:
        """Ask the node to quit, then kill it by PID if it has not after `timeout`."""
        self.send_quit()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()


def start_nodes(
    count: int,
    stack: str,
    network: str,
    log_dir: Path,
    extra_args: list[str] | None = None,
) -> list[NodeProcess]:
    """Start `count` node processes; on failure, close the ones started."""
    nodes: list[NodeProcess] = []
    try:
        for index in range(count):
            log_path = log_dir / f"{stack}-node{index}.log"
            nodes.append(NodeProcess(index, stack, network, log_path, extra_args))
        for node in nodes:
            node.wait_ready()
    except BaseException:
        close_nodes(nodes)
        raise
    return nodes


def close_nodes(nodes: list[NodeProcess]) -> None:
    """Close every node, killing by PID the ones that do not quit in 5 s."""
    for node in nodes:
        node.send_quit()
    for node in nodes:
        try:
            node.close()
        except Exception:
            node.kill()


def topology_edges(shape: str, count: int) -> list[tuple[int, int]]:
    """Return the (dialer, listener) pairs of a ``line``, ``star`` or ``full`` mesh."""
    if shape == "line":
        return [(i, i + 1) for i in range(count - 1)]
    if shape == "star":
        return [(i, 0) for i in range(1, count)]
    if shape == "full":
        return [(i, j) for i in range(count) for j in range(i)]
    raise ValueError(f"unknown topology {shape!r}; expected line, star or full")


def connect_edges(
    nodes: list[NodeProcess], edges: list[tuple[int, int]]
) -> list[float]:
    """Dial every edge in order and return the connect times in milliseconds."""
    times = []
    for dialer, listener in edges:
        reply = nodes[dialer].request("connect", addr=nodes[listener].addrs[0])
        times.append(reply["ms"])
    return times


# --------------------------------------------------------------------------
# Child side: everything below runs inside the node process.


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=int, default=0, help="node number")
    parser.add_argument("--stack", choices=("ours", "default"), default="ours")
    parser.add_argument("--network", default="bench", help="network name")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any)")
    parser.add_argument(
        "--provider-ttl",
        type=float,
        default=60.0,
        help="provider record TTL in seconds (ours only)",
    )
    parser.add_argument(
        "--peer-rate",
        type=float,
        default=None,
        help="per-peer gossip rate limit in messages/s (ours only)",
    )
    parser.add_argument(
        "--publish-timeout",
        type=float,
        default=None,
        help="seconds publish waits for full send queues (ours only)",
    )
    parser.add_argument(
        "--plain-host",
        action="store_true",
        help="run our gossip and discovery on py-libp2p's new_host (ours only)",
    )
    parser.add_argument(
        "--degrees",
        default=None,
        help="gossip mesh degrees D,D_lo,D_hi, e.g. 6,4,8 (ours only)",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        help="folder for the node identity, kept across restarts (ours only)",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


class _Node:
    """The node's state and command handlers inside the child process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host: Any = None
        self.gossip: Any = None
        self.pubsub: Any = None
        self.discovery: Any = None
        self.dht: Any = None
        self.received: Counter[tuple[int, int]] = Counter()
        self.latencies_ms: list[float] = []
        self.publish_errors: Counter[str] = Counter()
        self.published = 0
        self.nursery: Any = None

    def emit(self, reply: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    def on_payload(self, data: bytes) -> None:
        now = time.time()
        header, _, _ = data.partition(_HEADER_END)
        try:
            fields = json.loads(header)
            key = (int(fields["o"]), int(fields["s"]))
            sent = float(fields["t"])
        except (ValueError, KeyError, TypeError):
            return
        self.received[key] += 1
        if self.received[key] == 1:
            self.latencies_ms.append((now - sent) * 1000.0)


async def _run_child(args: argparse.Namespace) -> None:
    import multiaddr
    import trio

    node = _Node(args)
    listen = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{args.port}")
    async with AsyncExitStack() as stack:
        if args.stack == "ours":
            await _start_ours(node, stack, listen)
        else:
            await _start_default(node, stack, listen)
        async with trio.open_nursery() as nursery:
            node.nursery = nursery
            addrs = [str(a) for a in node.host.get_addrs()]
            node.emit(
                {
                    "id": 0,
                    "ok": True,
                    "peer_id": str(node.host.get_id()),
                    "addrs": addrs,
                }
            )
            await _command_loop(node)
            nursery.cancel_scope.cancel()


async def _start_ours(node: _Node, stack: AsyncExitStack, listen: Any) -> None:
    import tempfile

    from p2p.discovery import DiscoveryParams
    from p2p.gossip import GossipParams
    from p2p.host import HostConfig
    from p2p.service import open_service

    args = node.args
    if args.state_dir:
        state = Path(args.state_dir)
    else:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    config = HostConfig(
        identity_path=state / "identity.key",
        listen_addrs=(str(listen),),
        network=args.network,
    )
    params = GossipParams(network=args.network)
    if args.peer_rate is not None:
        params = _replace(
            params, peer_rate=args.peer_rate, peer_burst=2 * args.peer_rate
        )
    if args.publish_timeout is not None:
        params = _replace(params, publish_timeout=args.publish_timeout)
    if args.degrees is not None:
        d, d_lo, d_hi = (int(x) for x in args.degrees.split(","))
        params = _replace(params, d=d, d_lo=d_lo, d_hi=d_hi)
    dparams = DiscoveryParams(network=args.network, provider_ttl=args.provider_ttl)
    if args.plain_host:
        from libp2p import new_host
        from libp2p.crypto.ed25519 import create_new_key_pair

        from p2p.discovery import open_discovery
        from p2p.gossip import open_gossip

        host = new_host(key_pair=create_new_key_pair())
        await stack.enter_async_context(host.run([listen]))
        node.host = host
        node.gossip = await stack.enter_async_context(open_gossip(host, params))
        node.discovery = await stack.enter_async_context(open_discovery(host, dparams))
        return
    service = await stack.enter_async_context(
        open_service(config, gossip_params=params, discovery_params=dparams)
    )
    node.host = service.host
    node.gossip = service.gossip
    node.discovery = service.discovery


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


async def _start_default(node: _Node, stack: AsyncExitStack, listen: Any) -> None:
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.tools.anyio_service import background_trio_service

    host = new_host(key_pair=create_new_key_pair())
    await stack.enter_async_context(host.run([listen]))
    node.host = host
    router = GossipSub(
        [PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
    )
    node.pubsub = Pubsub(host, router)
    await stack.enter_async_context(background_trio_service(node.pubsub))
    await stack.enter_async_context(background_trio_service(router))
    await node.pubsub.wait_until_ready()
    node.dht = KadDHT(host, DHTMode.SERVER)
    await stack.enter_async_context(background_trio_service(node.dht))


def _full_topic(node: _Node, name: str) -> str:
    if node.gossip is not None:
        return node.gossip.topic(name)
    return f"/synaptic-mesh/{node.args.network}/{name}"


async def _command_loop(node: _Node) -> None:
    import trio

    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    while True:
        chunk = await stdin.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                request = json.loads(line)
            except ValueError:
                continue
            if request.get("cmd") == "quit":
                node.emit({"id": request.get("id"), "ok": True})
                return
            node.nursery.start_soon(_dispatch, node, request)


async def _dispatch(node: _Node, request: dict[str, Any]) -> None:
    handler = _HANDLERS.get(request.get("cmd", ""))
    reply: dict[str, Any] = {"id": request.get("id")}
    if handler is None:
        reply.update(ok=False, error=f"unknown command {request.get('cmd')!r}")
    else:
        try:
            reply.update(await handler(node, request))
            reply["ok"] = True
        except Exception as exc:  # reported to the parent, which decides
            reply.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    node.emit(reply)


async def _cmd_connect(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    info = info_from_p2p_addr(multiaddr.Multiaddr(request["addr"]))
    start = time.perf_counter()
    await node.host.connect(info)
    return {"ms": (time.perf_counter() - start) * 1000.0}


async def _cmd_subscribe(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    topic = _full_topic(node, request["topic"])
    if node.gossip is not None:
        channel = await node.gossip.subscribe(topic)

        async def pump_ours() -> None:
            async for message in channel:
                node.on_payload(message.data)

        node.nursery.start_soon(pump_ours)
    else:
        subscription = await node.pubsub.subscribe(topic)
        own = node.host.get_id().to_bytes()

        async def pump_default() -> None:
            while True:
                message = await subscription.get()
                if message.from_id != own:
                    node.on_payload(message.data)

        node.nursery.start_soon(pump_default)
    return {"topic": topic}


async def _cmd_wait_topic_peers(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    import trio

    topic = _full_topic(node, request["topic"])
    pubsub = node.gossip.pubsub if node.gossip is not None else node.pubsub
    router = pubsub.router
    want = int(request["n"])
    mesh_want = int(request.get("mesh", 0))
    with trio.fail_after(float(request.get("wait_s", 10.0))):
        while True:
            peers = len(pubsub.peer_topics.get(topic, ()))
            mesh = len(router.mesh.get(topic, ()))
            if peers >= want and mesh >= mesh_want:
                return {"peers": peers, "mesh": mesh}
            await trio.sleep(0.05)


async def _cmd_publish(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    import trio

    topic = _full_topic(node, request["topic"])
    count = int(request["count"])
    rate = float(request["rate"])
    size = int(request.get("size", 256))
    first_seq = int(request.get("first_seq", 0))
    interval = 1.0 / rate
    start = trio.current_time() + float(request.get("delay", 0.0))
    sent = 0
    for i in range(count):
        await trio.sleep_until(start + i * interval)
        header = json.dumps(
            {"o": node.args.index, "s": first_seq + i, "t": time.time()}
        ).encode()
        data = header + _HEADER_END + b"x" * max(0, size - len(header) - 1)
        try:
            if node.gossip is not None:
                await node.gossip.publish(topic, data)
            else:
                await node.pubsub.publish(topic, data)
            sent += 1
        except Exception as exc:
            node.publish_errors[type(exc).__name__] += 1
            if request.get("stop_on_error"):
                break
    node.published += sent
    late = trio.current_time() - (start + (count - 1) * interval)
    return {"sent": sent, "late_s": late}


async def _cmd_stats(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    received = sorted([o, s, n] for (o, s), n in node.received.items())
    usage = os.times()
    reply: dict[str, Any] = {
        "received": received,
        "latencies_ms": node.latencies_ms,
        "cpu_s": usage.user + usage.system,
        "published": node.published,
        "publish_errors": dict(node.publish_errors),
        "connected": len(node.host.get_connected_peers()),
    }
    pubsub = node.gossip.pubsub if node.gossip is not None else node.pubsub
    reply["pubsub_peers"] = len(pubsub.peers)
    if node.gossip is not None:
        stats = node.gossip.stats()
        reply["gossip"] = {k: getattr(stats, k) for k in stats.__dataclass_fields__}
    return reply


async def _cmd_count(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    usage = os.times()
    return {"received": len(node.received), "cpu_s": usage.user + usage.system}


async def _cmd_reset_stats(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    node.received.clear()
    node.latencies_ms.clear()
    node.publish_errors.clear()
    node.published = 0
    return {}


async def _cmd_provide(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    if node.discovery is not None:
        await node.discovery.provide(request["name"])
    else:
        await node.dht.provide(_default_dht_key(node, request["name"]))
    return {"ms": (time.perf_counter() - start) * 1000.0}


async def _cmd_find(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    import trio

    timeout = float(request.get("lookup_timeout_s", 10.0))
    start = time.perf_counter()
    if node.discovery is not None:
        found = await node.discovery.find_providers(request["name"], timeout)
        providers = [[p.peer_id, list(p.addrs)] for p in found]
    else:
        providers = []
        with trio.move_on_after(timeout):
            infos = await node.dht.find_providers(
                _default_dht_key(node, request["name"])
            )
            providers = [[str(i.peer_id), [str(a) for a in i.addrs]] for i in infos]
    return {"providers": providers, "ms": (time.perf_counter() - start) * 1000.0}


async def _cmd_bootstrap(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    if node.discovery is not None:
        connected = await node.discovery.bootstrap(request["addrs"])
    else:
        import multiaddr
        from libp2p.peer.peerinfo import info_from_p2p_addr

        connected = 0
        for addr in request["addrs"]:
            await node.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))
            connected += 1
        await node.dht.refresh_routing_table()
    return {"connected": connected, "ms": (time.perf_counter() - start) * 1000.0}


async def _cmd_routing_table(node: _Node, request: dict[str, Any]) -> dict[str, Any]:
    if node.discovery is not None:
        return {"peers": node.discovery.routing_table_peers()}
    return {"peers": [str(p) for p in node.dht.routing_table.get_peer_ids()]}


def _default_dht_key(node: _Node, name: str) -> str:
    import hashlib

    return hashlib.sha256(
        f"/synaptic-mesh/{node.args.network}/service/{name}".encode()
    ).hexdigest()


_HANDLERS = {
    "connect": _cmd_connect,
    "subscribe": _cmd_subscribe,
    "wait_topic_peers": _cmd_wait_topic_peers,
    "publish": _cmd_publish,
    "stats": _cmd_stats,
    "count": _cmd_count,
    "reset_stats": _cmd_reset_stats,
    "provide": _cmd_provide,
    "find": _cmd_find,
    "routing_table": _cmd_routing_table,
    "bootstrap": _cmd_bootstrap,
}


def main(argv: list[str] | None = None) -> int:
    """Run one node until stdin closes or a ``quit`` command arrives."""
    import trio

    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format=f"node{args.index} %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    profile_path = os.environ.get("GOSSIP_NODE_PROFILE")
    if profile_path:
        import cProfile

        cProfile.runctx(
            "trio.run(_run_child, args)",
            globals(),
            {"trio": trio, "_run_child": _run_child, "args": args},
            f"{profile_path}.{args.index}",
        )
        return 0
    trio.run(_run_child, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
