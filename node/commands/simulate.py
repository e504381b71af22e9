"""``synaptic-mesh simulate``: run Avalanche on a virtual network of many nodes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dag import DagError

BYZANTINE_MODES = ("silent", "stubborn", "equivocate")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run the consensus engine for many nodes on a virtual network",
        description=(
            "Run the real Avalanche engine for every node in one process on a "
            "deterministic virtual network (virtual time, one seeded generator): "
            "the same seed prints the same result. Reports finality latency, "
            "polls and messages per vertex, and disagreements between honest "
            "nodes."
        ),
    )
    parser.add_argument("--nodes", type=int, default=100, help="nodes (default 100)")
    parser.add_argument(
        "--vertices", type=int, default=100, help="vertices issued (default 100)"
    )
    parser.add_argument(
        "--conflict-rate",
        type=float,
        default=0.0,
        help="probability that a vertex double-spends a recent one (default 0)",
    )
    parser.add_argument(
        "--byzantine",
        type=float,
        default=0.0,
        help="share of Byzantine nodes, 0 to below 1 (default 0)",
    )
    parser.add_argument(
        "--byzantine-mode",
        choices=BYZANTINE_MODES,
        default="stubborn",
        help="silent: drop everything; stubborn: always vote the last-issued "
        "member of each conflict; equivocate: vote for everything and send each "
        "half of the network one side of a double-spend (default stubborn)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=50.0, help="one-way latency (default 50)"
    )
    parser.add_argument(
        "--jitter-ms",
        type=float,
        default=10.0,
        help="extra latency drawn from [0, J] per message (default 10)",
    )
    parser.add_argument(
        "--loss", type=float, default=0.0, help="message loss probability (default 0)"
    )
    parser.add_argument(
        "--partition",
        action="append",
        default=[],
        metavar="START-END:FRACTION",
        help="split nodes [0, FRACTION*N) from the rest between START and END "
        "virtual seconds; repeatable",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--issue-interval-ms",
        type=float,
        default=10.0,
        help="virtual time between issued vertices (default 10)",
    )
    parser.add_argument(
        "--max-time",
        type=float,
        default=600.0,
        help="virtual seconds after which the run stops unfinished (default 600)",
    )
    _add_consensus_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="write a histogram of finality latency (needs the plot extra)",
    )
    parser.set_defaults(func=run)


def _add_consensus_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "consensus parameters (default: avalanchego's 20/15/15/20/4)"
    )
    group.add_argument(
        "--k", type=int, default=20, help="nodes sampled per poll (default 20)"
    )
    group.add_argument(
        "--alpha-preference",
        type=int,
        metavar="N",
        default=15,
        help="votes in one poll that change a preference (default 15)",
    )
    group.add_argument(
        "--alpha-confidence",
        type=int,
        metavar="N",
        default=15,
        help="votes in one poll that count towards confidence (default 15)",
    )
    group.add_argument(
        "--beta",
        type=int,
        metavar="N",
        default=20,
        help="consecutive successful polls that accept a vertex (default 20)",
    )
    group.add_argument(
        "--concurrent-repolls",
        type=int,
        metavar="N",
        default=4,
        help="polls kept in flight while vertices are processing (default 4)",
    )
    group.add_argument(
        "--poll-timeout",
        type=float,
        metavar="S",
        default=2.0,
        help="seconds before an unanswered poll counts as failed (default 2)",
    )


def run(args: argparse.Namespace) -> int:
    from dag.consensus import AvalancheParams
    from dag.sim import SimParams, parse_partition, simulate

    if args.plot is not None:
        try:
            _pyplot()
        except DagError as exc:
            print(f"synaptic-mesh: error: {exc}", file=sys.stderr)
            return 2
    try:
        params = SimParams(
            nodes=args.nodes,
            vertices=args.vertices,
            conflict_rate=args.conflict_rate,
            byzantine=args.byzantine,
            byzantine_mode=args.byzantine_mode,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            loss=args.loss,
            partitions=tuple(parse_partition(text) for text in args.partition),
            issue_interval_ms=args.issue_interval_ms,
            max_time=args.max_time,
            consensus=AvalancheParams(
                k=args.k,
                alpha_preference=args.alpha_preference,
                alpha_confidence=args.alpha_confidence,
                beta=args.beta,
                concurrent_repolls=args.concurrent_repolls,
                poll_timeout=args.poll_timeout,
            ),
        )
        params.validate()
    except DagError as exc:
        print(f"synaptic-mesh: error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    result = simulate(params, args.seed, progress=_print_progress)
    wall = time.monotonic() - started
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(result.format_text())
    # Wall time varies between runs, so it stays off stdout, which must be the
    # same for the same seed.
    print(f"wall time {wall:.2f} s", file=sys.stderr)
    if args.plot is not None:
        _plot(result, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _print_progress(virtual_time: float, decided: int, expected: int) -> None:
    print(
        f"progress: {virtual_time:.2f} s virtual, {decided}/{expected} honest "
        "decisions",
        file=sys.stderr,
        flush=True,
    )


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DagError(
            "--plot needs matplotlib, which is not installed; install it with "
            "pip install 'synaptic-mesh[plot]'"
        ) from None
    return plt


def _plot(result, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if result.latencies_ms:
        ax.hist(result.latencies_ms, bins=60)
        for label, value in (
            ("p50", result.latency_p50_ms),
            ("p99", result.latency_p99_ms),
        ):
            ax.axvline(value, linestyle="--", color="black")
            ax.annotate(label, (value, ax.get_ylim()[1] * 0.9))
    ax.set_xlabel("finality latency (ms, virtual)")
    ax.set_ylabel("honest node decisions")
    ax.set_title(
        f"{result.nodes} nodes, {result.vertices} vertices, seed {result.seed}: "
        f"{result.disagreements} disagreements"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
