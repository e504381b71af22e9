"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from node.client import ApiClient
from node.config import HOME_ENV, resolve_data_dir


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-dir`` to `parser`."""
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"node data directory (default: ${HOME_ENV} or ~/.synaptic-mesh)",
    )


def data_dir_of(args: argparse.Namespace) -> Path:
    """Return the data directory that `args` and the environment select."""
    return resolve_data_dir(args.data_dir, os.environ)


def client_of(args: argparse.Namespace) -> ApiClient:
    """Return an API client for the daemon of the selected data directory."""
    return ApiClient.from_data_dir(data_dir_of(args))


def print_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout."""
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
