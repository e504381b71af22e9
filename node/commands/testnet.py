"""``synaptic-mesh testnet``: a local multi-node testnet doing real inference."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "testnet",
        help="run N daemons on 127.0.0.1, train a model and serve it as mesh tasks",
        description=(
            "Start N daemons as separate processes on 127.0.0.1 (all bootstrapping "
            "from the first), train a FANN-style network on scikit-learn's "
            "handwritten digits (or on --train/--test FANN .data files), add it "
            "to provider nodes, submit test rows as tasks from random nodes, and "
            "print latency, finality, accuracy and memory. Exits 0 only if every "
            "check held: all tasks answered, accuracy above 90%, answers equal to "
            "local inference, the same accepted vertices on every node, and a "
            "clean stop on SIGTERM."
        ),
    )
    parser.add_argument(
        "--nodes", type=int, default=5, help="daemons to start (default: 5)"
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=50,
        help="test rows to submit as tasks (default: 50)",
    )
    parser.add_argument(
        "--providers",
        type=int,
        default=2,
        help="nodes that serve the model, at least 2 when N > 2 (default: 2)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        help="folder for the data directories and logs (default: a temporary one)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data directories and logs"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--train", type=Path, help="FANN .data file to train on")
    parser.add_argument("--test", type=Path, help="FANN .data file of the test rows")
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed of weights, rows and senders (default: 1)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="tasks in flight at once (default: 4)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.testnet import TestnetParams, main_json, run_testnet

    params = TestnetParams(
        nodes=args.nodes,
        tasks=args.tasks,
        providers=args.providers,
        seed=args.seed,
        base_dir=args.dir,
        keep=args.keep,
        train=args.train,
        test=args.test,
        concurrency=args.concurrency,
    )
    try:
        params.validate()
    except ValueError as error:
        print(f"synaptic-mesh testnet: {error}", file=sys.stderr)
        return 2
    # Creating N data directories logs two INFO records each, which would
    # bury the progress lines; the summary reports failures instead.
    for name in ("node.commands.init", "p2p.identity"):
        logging.getLogger(name).setLevel(logging.WARNING)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(
            f"[{time.monotonic() - started:6.1f}s] {message}",
            file=sys.stderr,
            flush=True,
        )

    report = run_testnet(params, progress)
    print(main_json(report) if args.json else report.format_text())
    return 0 if report.ok else 1
