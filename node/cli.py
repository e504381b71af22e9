"""The ``synaptic-mesh`` command.

Each command group lives in a module under ``node.commands`` that defines
``register(subparsers)``. The module adds its parsers and sets ``func`` on each
one to a callable that takes the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
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


def _logging_options(*, suppress: bool) -> argparse.ArgumentParser:
    """Return a parent parser with the logging flags.

    The top-level parser holds the defaults; each subcommand gets a copy whose
    defaults are suppressed, so a flag given after the subcommand wins and an
    absent one leaves the top-level value alone.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--log-level",
        default=argparse.SUPPRESS if suppress else "INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="lowest level of log records written to stderr (default: INFO)",
    )
    parent.add_argument(
        "--log-format",
        default=argparse.SUPPRESS if suppress else "text",
        choices=LOG_FORMATS,
        help="log record format on stderr: text for people, json for machines "
        "(default: text)",
    )
    return parent


class _SubParsers(argparse._SubParsersAction):
    """Gives every subcommand parser the logging flags."""

    def add_parser(self, name, **kwargs):
        kwargs["parents"] = [
            *kwargs.get("parents", ()),
            _logging_options(suppress=True),
        ]
        parser = super().add_parser(name, **kwargs)
        # Nested groups (``dag verify``) build their parsers through this
        # parser's own subparsers, so they get the flags too.
        parser.register("action", "parsers", _SubParsers)
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synaptic-mesh",
        description=(
            "Peer-to-peer node: libp2p gossip and DHT, Avalanche DAG consensus "
            "over ML-DSA-65 signed vertices, FANN-compatible inference."
        ),
        parents=[_logging_options(suppress=False)],
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.register("action", "parsers", _SubParsers)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            # Flushed here, not at interpreter exit, so that a reader that
            # went away (``| head``) is noticed while it can still be handled.
            sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return 141


def _run(argv: Sequence[str] | None) -> int:
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


def _discard_stdout() -> None:
    # Output still buffered for the closed pipe would fail again when Python
    # flushes stdout at exit, printing a second traceback.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        # stdout is not a real file (a test's capture): nothing to redirect.
        pass


def _expected_errors() -> tuple[type[BaseException], ...]:
    from dag import DagError
    from neural import NeuralError
    from node import NodeError
    from p2p import P2PError

    return (NodeError, P2PError, DagError, NeuralError)


if __name__ == "__main__":
    sys.exit(main())
