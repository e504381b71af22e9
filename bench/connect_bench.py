"""Connect-time bench: `svc.connect()` against py-libp2p's `host.connect()`.

Both stacks run side by side in one process on 127.0.0.1. For each stack a
listener host stays up while a dialer connects, disconnects and reconnects
`--dials` times, so every dial does the full TCP + Noise + Yamux setup. The
stock stack is py-libp2p 0.8.1 as `new_host()` builds it; ours is
`p2p.service.open_service` without gossip or discovery traffic on the wire
during the dials.

Usage: ``python -m bench.connect_bench [--dials 40] [--no-write]``; the result
goes to the ``p2p-connect`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr

from bench.report import write_section
from p2p.host import HostConfig
from p2p.service import open_service

SECTION = "p2p-connect"


async def _stock_dials(count: int) -> list[float]:
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    server = new_host(key_pair=create_new_key_pair(), listen_addrs=listen)
    client = new_host(key_pair=create_new_key_pair(), listen_addrs=listen)
    times = []
    async with server.run(listen), client.run(listen):
        info = info_from_p2p_addr(server.get_addrs()[0])
        for index in range(count):
            started = time.perf_counter()
            await client.connect(info)
            times.append(time.perf_counter() - started)
            await client.disconnect(info.peer_id)
            await _wait_disconnected(lambda: client.get_connected_peers())
            print(f"stock dial {index + 1}/{count}", file=sys.stderr, end="\r")
    return times


async def _our_dials(count: int, folder: Path) -> list[float]:
    times = []
    server_config = HostConfig(identity_path=folder / "server.key")
    client_config = HostConfig(identity_path=folder / "client.key")
    async with (
        open_service(server_config) as server,
        open_service(client_config) as client,
    ):
        for index in range(count):
            started = time.perf_counter()
            await client.connect(server.listen_addrs[0])
            times.append(time.perf_counter() - started)
            await client.disconnect(server.peer_id)
            await _wait_disconnected(client.connected_peers)
            print(f"ours dial {index + 1}/{count}", file=sys.stderr, end="\r")
    return times


async def _wait_disconnected(connected) -> None:
    with trio.fail_after(10):
        while connected():
            await trio.sleep(0.01)
    # Let both sides finish their close handshakes before the next dial.
    await trio.sleep(0.2)


def _row(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p50 = statistics.median(ms)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return (
        f"| {name} | {len(ms)} | {p50:.1f} | {p90:.1f} | {ms[0]:.1f} | {ms[-1]:.1f} |"
    )


async def _run(count: int) -> tuple[list[float], list[float]]:
    stock = await _stock_dials(count)
    with tempfile.TemporaryDirectory() as folder:
        ours = await _our_dials(count, Path(folder))
    return stock, ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.connect_bench")
    parser.add_argument("--dials", type=int, default=40, help="dials per stack")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    logging.disable(logging.ERROR)
    stock, ours = trio.run(_run, args.dials)
    ratio = statistics.median(stock) / statistics.median(ours)
    markdown = "\n".join(
        [
            "## p2p connect time",
            "",
            "`python -m bench.connect_bench`: one dialer connects to one listener",
            "on 127.0.0.1, disconnects, and dials again; each dial is a full TCP,",
            "Noise and Yamux setup. Times in milliseconds.",
            "",
            "| stack | dials | p50 | p90 | min | max |",
            "|---|---|---|---|---|---|",
            _row("py-libp2p 0.8.1 `new_host`", stock),
            _row("ours (`open_service`)", ours),
            "",
            f"Median connect time: ours is {ratio:.0f}x faster. The stock dialer",
            "waits a fixed 250 ms after starting each address before it looks at",
            "the result, even when the peer has a single address.",
        ]
    )
    print(markdown)
    if not args.no_write:
        write_section(SECTION, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
