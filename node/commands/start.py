"""``synaptic-mesh start``: run a node in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from node.commands._common import add_data_dir, data_dir_of
from node.config import load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "start",
        help="run the node daemon in the foreground until SIGINT or SIGTERM",
        description=(
            "Run the node in the foreground. It prints its peer id, each listen "
            "multiaddr (pass one to another node's --bootstrap) and the control API "
            "address, and writes them to runtime.json in the data directory. "
            "SIGINT or SIGTERM stops it gracefully; a second signal stops it at once. "
            "Flags override config.toml and SYNAPTIC_MESH_* environment variables."
        ),
    )
    add_data_dir(parser)
    parser.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="libp2p listen address, repeatable (default: /ip4/127.0.0.1/tcp/0)",
    )
    parser.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="peer to dial at start, ending in /p2p/<peer id>; repeatable",
    )
    parser.add_argument(
        "--api", metavar="HOST:PORT", help="control API address (default: 127.0.0.1:0)"
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="Prometheus /metrics address, or 'off' (default: 127.0.0.1:0)",
    )
    parser.add_argument(
        "--new-store",
        action="store_true",
        help=(
            "if dag.sqlite3 is missing, start from an empty DAG store that resyncs "
            "from the peers (default: a missing store is an error)"
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.daemon import run_daemon
    from node.logs import route_libp2p_logging

    route_libp2p_logging()

    data_dir = data_dir_of(args)
    overrides = {
        "p2p.listen": args.listen,
        "p2p.bootstrap": args.bootstrap,
        "api.listen": args.api,
        "metrics.listen": args.metrics,
    }
    config = load_config(data_dir, env=os.environ, overrides=overrides)
    code = run_daemon(config, new_store=args.new_store)
    # Everything is closed by now. Interpreter teardown (freeing the modules
    # of libp2p, numpy and the rest) adds some hundreds of milliseconds that
    # only delay the exit a supervisor or a test is waiting for.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
