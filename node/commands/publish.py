"""``synaptic-mesh publish``: post a signed message to the mesh's DAG."""

from __future__ import annotations

import argparse
import sys

from node import NodeError
from node.commands._common import add_data_dir, client_of, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="publish a signed message vertex under a topic and wait for acceptance",
        description=(
            "Sign MESSAGE under TOPIC as a vertex of payload type 'message', gossip "
            "it to every peer and wait until consensus accepts it. Every node then "
            "shows it in `dag tail`."
        ),
    )
    add_data_dir(parser)
    parser.add_argument("topic", metavar="TOPIC", help="topic name, 1 to 64 characters")
    parser.add_argument("message", metavar="MESSAGE", help="message text (UTF-8)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for acceptance (default: 10; 0 returns at once)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        args.message.encode("utf-8")
    except UnicodeEncodeError:
        # Python keeps argument bytes that are not UTF-8 as lone surrogates.
        raise NodeError(
            "MESSAGE is not UTF-8 text; convert it first, e.g. with iconv"
        ) from None
    result = client_of(args).post(
        "/publish",
        {"topic": args.topic, "message": args.message, "timeout": args.timeout},
    )
    if args.json:
        print_json(result)
    else:
        print(f"vertex {result['vertex_id']} {result['status']}")
    if result["status"] == "accepted":
        return 0
    if args.timeout == 0 and result["status"] == "processing":
        return 0
    print(
        f"error: vertex {result['vertex_id']} is {result['status']}, not accepted "
        f"after {args.timeout:g} s",
        file=sys.stderr,
    )
    return 1
