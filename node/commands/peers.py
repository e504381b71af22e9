"""``synaptic-mesh peers``: the peers a running node is connected to."""

from __future__ import annotations

import argparse

from node.commands._common import add_data_dir, client_of, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "peers",
        help="list the peers a running node is connected to",
        description="List the connected peers of the daemon, one per line.",
    )
    add_data_dir(parser)
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    peers = client_of(args).get("/peers")
    if args.json:
        print_json(peers)
        return 0
    if not peers:
        print("no connected peers")
    for peer in peers:
        addrs = " ".join(peer.get("addrs", [])) or "-"
        line = f"{peer['peer_id']}  {addrs}"
        if not peer.get("voter", True):
            # Connected, but not (yet) subscribed to this network's vertices.
            line += "  (not voting)"
        if peer.get("rejections"):
            counts = ", ".join(
                f"{r}={n}" for r, n in sorted(peer["rejections"].items())
            )
            line += f"  rejected: {counts}"
        print(line)
    return 0
