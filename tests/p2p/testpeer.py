"""A p2p node in its own process, for integration and fault tests.

Run from the repository root:

    python -m tests.p2p.testpeer --identity DIR/node.key \\
        [--listen /ip4/127.0.0.1/tcp/0] [--network NAME] [--connect ADDR]... \\
        [--subscribe NAME]... [--upgrade-timeout S] [--max-connections N] \\
        [--max-frame-bytes N]

It prints one JSON object per line on stdout:
    {"event": "ready", "peer_id": ..., "addrs": [...], "pid": ...}
    {"event": "message", "topic": ..., "data": <hex>, "origin": ..., "forwarder": ...}
    {"event": "peers", "connected": [...]}   (whenever the set changes)
and logs to stderr. It reads commands from stdin, one per line:
    connect <multiaddr> | publish <topic name> <hex data> | quit

Request/response methods it serves: "echo" (returns the request), "fail"
(raises RuntimeError), "stats" (connected peers, handler errors, rejection
count). A raw stream protocol `/synaptic-mesh/<network>/raise/1.0.0` has a
handler that raises at once. Every loop here ends with the process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import trio
from libp2p.custom_types import TProtocol

from p2p.host import HostConfig
from p2p.reqresp import ReqRespParams
from p2p.service import DialError, P2PService, open_service

logger = logging.getLogger("testpeer")


def _emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.p2p.testpeer")
    parser.add_argument("--identity", required=True, type=Path)
    parser.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument("--network", default="testnet")
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--subscribe", action="append", default=[])
    parser.add_argument("--upgrade-timeout", type=float, default=5.0)
    parser.add_argument("--max-connections", type=int, default=128)
    parser.add_argument("--max-frame-bytes", type=int, default=4 * 1024 * 1024)
    return parser.parse_args(argv)


async def _echo(peer_id: str, request: dict) -> dict:
    return request


async def _fail(peer_id: str, request: dict) -> dict:
    raise RuntimeError("handler failure requested by the test")


async def _raise_on_stream(stream: object) -> None:
    raise RuntimeError("raw stream handler failure requested by the test")


async def _forward_messages(channel: trio.MemoryReceiveChannel) -> None:
    async for message in channel:
        _emit(
            event="message",
            topic=message.topic,
            data=message.data.hex(),
            origin=message.origin,
            forwarder=message.forwarder,
        )


async def _watch_peers(svc: P2PService) -> None:
    last: list[str] | None = None
    while True:
        peers = svc.connected_peers()
        if peers != last:
            _emit(event="peers", connected=peers)
            last = peers
        await trio.sleep(0.05)


async def _read_commands(svc: P2PService, cancel: trio.CancelScope) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""
    async for chunk in stdin:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            await _run_command(svc, line.decode().split(), cancel)
    cancel.cancel()


async def _run_command(
    svc: P2PService, words: list[str], cancel: trio.CancelScope
) -> None:
    if not words:
        return
    if words[0] == "quit":
        cancel.cancel()
    elif words[0] == "connect" and len(words) == 2:
        try:
            await svc.connect(words[1])
        except DialError as error:
            logger.warning("connect command failed error=%s", error)
    elif words[0] == "publish" and len(words) == 3 and svc.gossip is not None:
        await svc.gossip.publish(svc.gossip.topic(words[1]), bytes.fromhex(words[2]))
    else:
        logger.warning("unknown command words=%s", words)


async def _main(args: argparse.Namespace) -> None:
    config = HostConfig(
        identity_path=args.identity,
        listen_addrs=(args.listen,),
        network=args.network,
        max_connections=args.max_connections,
        upgrade_timeout=args.upgrade_timeout,
    )
    reqresp = ReqRespParams(max_frame_bytes=args.max_frame_bytes)
    async with (
        open_service(config, reqresp_params=reqresp) as svc,
        trio.open_nursery() as nursery,
    ):
        svc.reqresp.set_handler("echo", _echo)
        svc.reqresp.set_handler("fail", _fail)

        async def stats(peer_id: str, request: dict) -> dict:
            return {
                "connected": svc.connected_peers(),
                "handler_errors": svc.guard.handler_errors,
                "rejections": sum(svc.guard.rejections.values()),
            }

        svc.reqresp.set_handler("stats", stats)
        svc.host.set_stream_handler(
            TProtocol(svc.protocol_id("raise")), _raise_on_stream
        )
        for name in args.subscribe:
            channel = await svc.gossip.subscribe(svc.gossip.topic(name))
            nursery.start_soon(_forward_messages, channel)
        for address in args.connect:
            await svc.connect(address)
        _emit(
            event="ready", peer_id=svc.peer_id, addrs=svc.listen_addrs, pid=os.getpid()
        )
        nursery.start_soon(_watch_peers, svc)
        nursery.start_soon(_read_commands, svc, nursery.cancel_scope)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("libp2p").setLevel(logging.WARNING)
    trio.run(_main, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _open_append(path: Path):
    return open(path, "ab")


class PeerProcess:
    """Test-side handle on a testpeer child process (trio only).

    Start with `await PeerProcess.start(log_path, *args)`; it returns once the
    child printed "ready". Events are read into `events` by a task started in
    the given nursery.
    """

    def __init__(self, process: trio.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.events: list[dict] = []
        self.ready: dict = {}
        self._changed = trio.Event()

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, log_path: Path, *args: str, timeout: float = 30
    ) -> PeerProcess:
        repo = Path(__file__).resolve().parents[2]
        log = _open_append(log_path)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.p2p.testpeer", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=repo,
        )
        log.close()
        peer = cls(process, log_path)
        nursery.start_soon(peer._read_events)
        await peer.wait_for(lambda e: e["event"] == "ready", timeout)
        peer.ready = next(e for e in peer.events if e["event"] == "ready")
        return peer

    @property
    def peer_id(self) -> str:
        return self.ready["peer_id"]

    @property
    def addr(self) -> str:
        return self.ready["addrs"][0]

    @property
    def port(self) -> int:
        return int(self.addr.split("/")[4])

    async def _read_events(self) -> None:
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self.events.append(json.loads(line))
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for(self, predicate, timeout: float) -> dict:
        """Return the first event matching `predicate`, waiting `timeout` s."""
        with trio.fail_after(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"testpeer exited with {self.process.returncode}; "
                        f"log: {self.log_text()[-2000:]}"
                    )
                await self._changed.wait()

    async def command(self, line: str) -> None:
        await self.process.stdin.send_all(line.encode() + b"\n")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("VmRSS missing from /proc status")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def fd_targets(self) -> list[str]:
        """Return what each open file descriptor of the child points at."""
        folder = f"/proc/{self.process.pid}/fd"
        targets = []
        for name in sorted(os.listdir(folder), key=int):
            try:
                targets.append(f"{name}:{os.readlink(f'{folder}/{name}')}")
            except OSError:
                continue
        return targets

    def kill(self) -> None:
        """Send SIGKILL to the child (by its pid) if it still runs."""
        if self.process.poll() is None:
            self.process.kill()

    async def stop(self) -> None:
        """Ask the child to quit; kill it if it has not exited within 10 s."""
        if self.process.poll() is None:
            try:
                await self.command("quit")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            with trio.move_on_after(10):
                await self.process.wait()
        self.kill()
        await self.process.wait()
