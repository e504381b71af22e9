"""Gossip and DHT bench: our p2p stack against py-libp2p at its defaults.

Both stacks run in the same invocation, one node per process on 127.0.0.1
(see ``bench/gossip_node.py``). For 5 and 10 nodes, connected as a ring with
chords (every node dials the next two), the bench measures:

- connect time per dial;
- for each aggregate publish rate, spread evenly over all nodes, the delivery
  ratio: unique deliveries over published messages times receivers;
- duplicates handed to the application;
- latency p50/p99 from the publisher's send to each receiver's delivery;
- CPU per message: all processes' user+system time over the messages
  published, minus their idle use;
- DHT lookup latency: one node provides a service, every node looks it up.

Saturation is the highest rate at which delivery is >= 99.9 % with p99
under 1 s and the publishers keep up (achieved rate >= 90 % of nominal).
The result goes to the ``p2p`` section of docs/benchmarks.md.

Usage: ``python -m bench.gossip_bench [--quick] [--sizes 5 10]
[--rates 10 20 40 ...] [--duration S] [--no-write] [--plot docs/gossip.png]``.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gossip_node import (
    NodeError,
    NodeProcess,
    close_nodes,
    connect_edges,
    start_nodes,
)
from bench.report import write_section

TOPIC = "bench"
STACKS = ("default", "ours")
# Saturation criteria, see the module docstring.
_MIN_DELIVERY = 0.999
_MAX_P99_MS = 1000.0
_MIN_ACHIEVED = 0.9


@dataclass
class RatePoint:
    """Figures of one publish rate on one cluster."""

    rate: float
    published: int
    achieved_rate: float
    delivery: float
    duplicates: int
    p50_ms: float
    p99_ms: float
    cpu_ms_per_msg: float
    publish_errors: dict[str, int]

    @property
    def healthy(self) -> bool:
        return (
            self.delivery >= _MIN_DELIVERY
            and self.p99_ms < _MAX_P99_MS
            and self.achieved_rate >= _MIN_ACHIEVED * self.rate
        )


@dataclass
class ClusterResult:
    """Everything measured on one stack with one cluster size."""

    stack: str
    size: int
    connect_ms: list[float] = field(default_factory=list)
    points: list[RatePoint] = field(default_factory=list)
    lookup_ms: list[float] = field(default_factory=list)
    lookup_found: int = 0
    provide_ms: float = 0.0
    idle_cpu: float = 0.0

    @property
    def saturation(self) -> float:
        """The highest rate that met the saturation criteria (0 if none).

        The highest, not the last before the first failure, because on a
        shared machine one load spike can fail a low rate that a later,
        higher rate meets.
        """
        return max((p.rate for p in self.points if p.healthy), default=0.0)

    @property
    def delivery_saturation(self) -> float:
        """The highest rate before delivery first falls below 99.9 %."""
        best = 0.0
        for point in self.points:
            if point.delivery < _MIN_DELIVERY:
                break
            best = point.rate
        return best


def ring_with_chords(count: int) -> list[tuple[int, int]]:
    """Return edges where node i dials i+1 and i+2 (mod count), each once."""
    edges: set[tuple[int, int]] = set()
    for i in range(count):
        for step in (1, 2):
            j = (i + step) % count
            if i != j and (j, i) not in edges:
                edges.add((i, j))
    return sorted(edges)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_rate(
    nodes: list[NodeProcess],
    rate: float,
    duration: float,
    settle: float,
    size_bytes: int,
    idle_cpu: float,
) -> RatePoint:
    for node in nodes:
        node.request("reset_stats")
    cpu_before = _total_cpu(nodes)
    wall_before = time.monotonic()
    per_node = max(1, round(rate * duration / len(nodes)))
    node_rate = rate / len(nodes)
    # Publishers start staggered by a fraction of their interval so the
    # aggregate stream is even rather than bursts of len(nodes) messages.
    requests = []
    start = time.monotonic()
    for node in nodes:
        delay = 0.5 + node.index / rate
        request_id = node.send(
            "publish",
            topic=TOPIC,
            count=per_node,
            rate=node_rate,
            delay=delay,
            size=size_bytes,
        )
        requests.append((node, request_id))
    replies = [node.wait(rid, timeout=duration * 4 + 60) for node, rid in requests]
    elapsed = time.monotonic() - start - 0.5
    sent = sum(reply["sent"] for reply in replies)
    expected_each = {node.index: 0 for node in nodes}
    for node, reply in zip(nodes, replies, strict=True):
        expected_each[node.index] = reply["sent"]
    _wait_settled(nodes, expected_each, settle)
    cpu_after = _total_cpu(nodes)
    busy_s = cpu_after - cpu_before - idle_cpu * (time.monotonic() - wall_before)
    stats = [node.request("stats") for node in nodes]

    unique = 0
    duplicates = 0
    latencies: list[float] = []
    errors: dict[str, int] = {}
    for s in stats:
        unique += len(s["received"])
        duplicates += sum(n - 1 for _, _, n in s["received"])
        latencies.extend(s["latencies_ms"])
        for name, count in s["publish_errors"].items():
            errors[name] = errors.get(name, 0) + count
    wanted = sent * (len(nodes) - 1)
    return RatePoint(
        rate=rate,
        published=sent,
        achieved_rate=sent / max(elapsed, 1e-9),
        delivery=unique / wanted if wanted else 0.0,
        duplicates=duplicates,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        cpu_ms_per_msg=max(0.0, busy_s) * 1000.0 / max(sent, 1),
        publish_errors=errors,
    )


def _total_cpu(nodes: list[NodeProcess]) -> float:
    return sum(node.request("count")["cpu_s"] for node in nodes)


def _idle_cpu(nodes: list[NodeProcess], seconds: float = 3.0) -> float:
    """Return the nodes' CPU seconds per wall second while nothing is published."""
    before = _total_cpu(nodes)
    start = time.monotonic()
    time.sleep(seconds)
    return (_total_cpu(nodes) - before) / (time.monotonic() - start)


def _wait_settled(
    nodes: list[NodeProcess], sent_by: dict[int, int], settle: float
) -> None:
    """Wait until every node has every message, or `settle` s without progress."""
    total = sum(sent_by.values())
    last_total = -1
    idle_since = time.monotonic()
    while True:
        received = sum(n.request("count")["received"] for n in nodes)
        wanted = sum(total - sent_by[n.index] for n in nodes)
        if received >= wanted:
            return
        now = time.monotonic()
        if received != last_total:
            last_total = received
            idle_since = now
        elif now - idle_since > settle:
            return
        time.sleep(0.25)


def _run_lookups(nodes: list[NodeProcess], result: ClusterResult) -> None:
    provider = nodes[len(nodes) // 2]
    reply = provider.request("provide", name="bench-service", timeout=60)
    result.provide_ms = reply["ms"]
    for node in nodes:
        try:
            found = node.request(
                "find", name="bench-service", lookup_timeout_s=10, timeout=30
            )
        except NodeError as exc:
            _progress(f"  lookup from node {node.index} failed: {exc}")
            continue
        result.lookup_ms.append(found["ms"])
        if any(p[0] == provider.peer_id for p in found["providers"]):
            result.lookup_found += 1


def _start_cluster(
    stack: str, size: int, log_dir: Path
) -> tuple[list[NodeProcess], ClusterResult]:
    result = ClusterResult(stack, size)
    nodes = start_nodes(size, stack, "bench", log_dir / stack)
    try:
        for node in nodes:
            node.request("subscribe", topic=TOPIC)
        edges = ring_with_chords(size)
        result.connect_ms = connect_edges(nodes, edges)
        for node in nodes:
            degree = sum(1 for edge in edges if node.index in edge)
            node.request(
                "wait_topic_peers", topic=TOPIC, n=degree, wait_s=20, timeout=30
            )
        # The idle measurement also gives the meshes a few heartbeats to settle.
        result.idle_cpu = _idle_cpu(nodes)
    except BaseException:
        close_nodes(nodes)
        raise
    return nodes, result


def run_size(size: int, args: argparse.Namespace, log_dir: Path) -> list[ClusterResult]:
    """Measure both stacks on `size` nodes, alternating them rate by rate.

    Both clusters stay up for the whole run, and each rate is measured on one
    stack right after the other (the order alternates between rates), so a
    change in the machine's background load hits both alike.
    """
    clusters: dict[str, tuple[list[NodeProcess], ClusterResult]] = {}
    try:
        for stack in STACKS:
            _progress(f"starting {size} nodes of the {stack} stack")
            clusters[stack] = _start_cluster(stack, size, log_dir)
        active = list(STACKS)
        for step, rate in enumerate(args.rates):
            order = list(active) if step % 2 == 0 else list(reversed(active))
            for stack in order:
                nodes, result = clusters[stack]
                point = _run_rate(
                    nodes, rate, args.duration, 3.0, args.size_bytes, result.idle_cpu
                )
                result.points.append(point)
                _progress(
                    f"  {stack:7s} n={size:2d} rate={rate:6.0f}/s "
                    f"achieved={point.achieved_rate:6.1f}/s "
                    f"delivery={point.delivery * 100:6.2f}% "
                    f"p50={point.p50_ms:7.1f} ms p99={point.p99_ms:7.1f} ms "
                    f"cpu={point.cpu_ms_per_msg:5.2f} ms/msg "
                    f"errors={point.publish_errors}"
                )
                far_past = (
                    point.delivery < 0.5
                    or point.achieved_rate < 0.5 * rate
                    or point.p99_ms > 5 * _MAX_P99_MS
                )
                if far_past:
                    _progress(f"  {stack}: far past saturation, no higher rates")
                    active.remove(stack)
            if not active:
                break
        # Lookups run last because their dials connect the nodes completely,
        # which would change the gossip topology. The pause lets the backlog
        # of the highest rates drain first.
        time.sleep(5.0)
        for stack in STACKS:
            nodes, result = clusters[stack]
            _run_lookups(nodes, result)
    finally:
        for nodes, _ in clusters.values():
            close_nodes(nodes)
    return [clusters[stack][1] for stack in STACKS]


def render(results: list[ClusterResult], args: argparse.Namespace) -> str:
    """Return the markdown section for docs/benchmarks.md."""
    lines = [
        "## p2p: gossip and DHT (`bench/gossip_bench.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"`python -m bench.gossip_bench {' '.join(args.argv)}`. One node per "
        "process on 127.0.0.1, ring with chords (each node dials the next two), "
        f"{args.size_bytes}-byte messages, {args.duration:g} s per rate, the "
        "rate spread evenly over all nodes. Both stacks' clusters run at the "
        "same time and each rate is measured on one right after the other, so "
        "background load on the shared machine hits both alike. `default` is py-libp2p 0.8.1 as a "
        "new user sets it up (`new_host`, `GossipSub` D=6/4/12 with a 1 s "
        "heartbeat, `KadDHT` server); `ours` is `p2p.service` with "
        "`p2p.gossip` and `p2p.discovery`. CPU per message is the user+system "
        "time of all processes divided by the messages published, so it covers "
        "every hop, minus the CPU the same processes use when idle (measured "
        "for 3 s before the first rate). Saturation is the highest rate with >= 99.9 % "
        "delivery, p99 < 1 s and the publishers keeping up; lossless is the "
        "highest rate with >= 99.9 % delivery whatever the latency. The rates "
        "stop for a stack once delivery < 50 % or p99 > 5 s. DHT lookups run "
        "after the gossip load and a 5 s pause.",
        "",
        "| stack | nodes | rate/s | achieved/s | delivery | dup | p50 ms | p99 ms "
        "| CPU ms/msg | publish errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for p in r.points:
            errors = ", ".join(f"{k} {v}" for k, v in p.publish_errors.items())
            lines.append(
                f"| {r.stack} | {r.size} | {p.rate:g} | {p.achieved_rate:.1f} | "
                f"{p.delivery * 100:.2f} % | {p.duplicates} | {p.p50_ms:.1f} | "
                f"{p.p99_ms:.1f} | {p.cpu_ms_per_msg:.2f} | {errors or '-'} |"
            )
    lines += [
        "",
        "| stack | nodes | connect ms (median) | saturation msg/s "
        "| lossless up to msg/s | "
        "provide ms | lookup ms p50 / max | lookups that found the provider |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lookups = (
            f"{_percentile(r.lookup_ms, 0.5):.1f} / {max(r.lookup_ms):.1f}"
            if r.lookup_ms
            else "-"
        )
        lines.append(
            f"| {r.stack} | {r.size} | {statistics.median(r.connect_ms):.1f} | "
            f"{r.saturation:g} | {_lossless(r)} | {r.provide_ms:.0f} | {lookups} | "
            f"{r.lookup_found}/{r.size} |"
        )
    lines += ["", "Ratios, ours over default, same run:", ""]
    by_key = {(r.stack, r.size): r for r in results}
    for size in args.sizes:
        ours = by_key.get(("ours", size))
        default = by_key.get(("default", size))
        if ours is None or default is None:
            continue
        lines.append(
            f"- {size} nodes: saturation {ours.saturation:g} vs "
            f"{default.saturation:g} msg/s "
            f"({_ratio(ours.saturation, default.saturation)}); lossless up to "
            f"{_lossless(ours)} vs {_lossless(default)} msg/s "
            f"({_lossless_ratio(ours, default)}); median connect "
            f"{_ratio(statistics.median(default.connect_ms), statistics.median(ours.connect_ms))} "
            "faster; CPU per message at the lowest rate "
            f"{_ratio(ours.points[0].cpu_ms_per_msg, default.points[0].cpu_ms_per_msg)} "
            "of default."
        )
    return "\n".join(lines)


def plot_results(results: list[ClusterResult], path: Path) -> None:
    """Write delivery ratio and p99 latency against publish rate, per cluster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for r in results:
        rates = [p.rate for p in r.points]
        style = "-" if r.stack == "ours" else "--"
        label = f"{r.stack}, {r.size} nodes"
        left.plot(
            rates, [p.delivery * 100 for p in r.points], style, marker="o", label=label
        )
        right.plot(rates, [p.p99_ms for p in r.points], style, marker="o", label=label)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("publish rate, messages/s (all nodes)")
        ax.grid(True, which="both", alpha=0.3)
    left.set_ylabel("delivery %")
    right.set_ylabel("p99 latency, ms")
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle("GossipSub on 127.0.0.1: our settings vs py-libp2p defaults")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _never_lost(result: ClusterResult) -> bool:
    return all(p.delivery >= _MIN_DELIVERY for p in result.points)


def _lossless(result: ClusterResult) -> str:
    """Return the lossless rate, as a lower bound when no rate lost messages."""
    prefix = ">= " if _never_lost(result) else ""
    return f"{prefix}{result.delivery_saturation:g}"


def _lossless_ratio(ours: ClusterResult, default: ClusterResult) -> str:
    if _never_lost(default):
        return "no ratio: neither lost messages at the rates run"
    ratio = _ratio(ours.delivery_saturation, default.delivery_saturation)
    return f"at least {ratio}" if _never_lost(ours) else ratio


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "n/a (zero baseline)"
    return f"{a / b:.2f}x"


def main(argv: list[str] | None = None) -> int:
    """Run the bench and write the ``p2p`` section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10])
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[10, 20, 40, 80, 160, 320],
        help="aggregate publish rates in messages/s, increasing",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="s per rate")
    parser.add_argument("--size-bytes", type=int, default=256, help="message size")
    parser.add_argument(
        "--quick", action="store_true", help="5 nodes, rates 10 and 20, 2 s each"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="also write delivery and p99 against rate to this PNG (matplotlib)",
    )
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.sizes, args.rates, args.duration = [5], [10.0, 20.0], 2.0

    def stop(signum: int, frame: Any) -> None:
        # Turn SIGTERM into an exception so the node processes get closed.
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    results = []
    with tempfile.TemporaryDirectory(prefix="gossip-bench-") as tmp:
        for stack in STACKS:
            (Path(tmp) / stack).mkdir()
        for size in args.sizes:
            results.extend(run_size(size, args, Path(tmp)))
    markdown = render(results, args)
    if args.plot is not None:
        plot_results(results, args.plot)
        markdown += f"\n\n![delivery and p99 latency against rate]({args.plot.name})"
    print(markdown)
    if not args.no_write:
        write_section("p2p", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
