"""The ``synaptic-mesh`` command.

Each command group lives in a module under ``node.commands`` that defines
``register(subparsers)``. The module adds its parsers and sets ``func`` on each
one to a callable that takes the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final

from node import __version__
from node.logs import LOG_FORMATS, configure_logging

# Modules are imported only while building the parser, so a command group that
# needs heavy imports (numpy, libp2p) costs nothing until its module is listed.
COMMAND_MODULES: Final[tuple[str, ...]] = (
    "node.commands.init",
    "node.commands.start",
    "node.commands.status",
    "node.commands.peers",
    "node.commands.publish",
    "node.commands.neural",
    "node.commands.model",
    "node.commands.infer",
    "node.commands.testnet",
    "node.commands.dag",
    "node.commands.simulate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synaptic-mesh",
        description=(
            "Peer-to-peer node: libp2p gossip and DHT, Avalanche DAG consensus "
            "over ML-DSA-65 signed vertices, FANN-compatible inference."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="lowest level of log records written to stderr (default: INFO)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="log record format on stderr: text for people, json for machines",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except _expected_errors() as error:
        # These carry a message written for the user (what failed and what to
        # do next), so a traceback would only hide it.
        print(f"synaptic-mesh: error: {error}", file=sys.stderr)
        return 1


def _expected_errors() -> tuple[type[BaseException], ...]:
    from dag import DagError
    from neural import NeuralError
    from node import NodeError
    from p2p import P2PError

    return (NodeError, P2PError, DagError, NeuralError)


if __name__ == "__main__":
    sys.exit(main())
