"""``synaptic-mesh infer``: run a model on the mesh and print the outputs."""

from __future__ import annotations

import argparse
import sys
import time

from node.client import ApiClient
from node.commands._common import add_data_dir, data_dir_of, print_json

STAGE_NAMES = {
    "lookup_s": "DHT lookup",
    "task_issued_s": "task vertex issued",
    "claim_accepted_s": "claim accepted",
    "finished_s": "result received",
    "total_s": "total",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="run a registered model on the mesh with one input row",
        description=(
            "Submit one input row as a signed task vertex. Providers of the model "
            "race to claim it, consensus accepts one claim, and that node runs the "
            "network and publishes the result. Prints the outputs, the serving "
            "node and the time each stage took."
        ),
    )
    add_data_dir(parser)
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument(
        "--input",
        required=True,
        metavar='"X1 X2 ..."',
        help="input values separated by spaces or commas",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait (default: 60)"
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.set_defaults(func=run)


def parse_inputs(text: str) -> list[float]:
    """Parse space- or comma-separated numbers."""
    tokens = text.replace(",", " ").split()
    try:
        return [float(token) for token in tokens]
    except ValueError as error:
        raise ValueError(f"invalid --input value: {error}") from None


def run(args: argparse.Namespace) -> int:
    try:
        inputs = parse_inputs(args.input)
    except ValueError as error:
        print(f"synaptic-mesh infer: {error}", file=sys.stderr)
        return 2
    if not inputs:
        print("synaptic-mesh infer: --input has no numbers", file=sys.stderr)
        return 2
    client = ApiClient.from_data_dir(data_dir_of(args), timeout=args.timeout + 10)
    sent = time.monotonic()
    reply = client.post(
        "/infer", {"model": args.model, "inputs": inputs, "timeout": args.timeout}
    )
    wall_ms = (time.monotonic() - sent) * 1000
    if args.json:
        print_json(reply)
        return 0 if reply.get("state") == "completed" else 1
    if reply.get("state") != "completed":
        print(f"task {reply.get('state')}: {reply.get('reason', '')}", file=sys.stderr)
        return 1
    print("outputs  " + " ".join(repr(x) for x in reply["outputs"]))
    print(f"served by peer {reply.get('provider_peer') or '?'}")
    print(f"  vertex key {reply['provider_key_id'][:16]}, claim round {reply['round']}")
    print(f"task     {reply['task_id']}")
    print("stages")
    for key, label in STAGE_NAMES.items():
        if key in reply.get("stages", {}):
            print(f"  {label:<20} {reply['stages'][key] * 1000:8.1f} ms")
    # The stages are counted inside the daemon; a large gap to this figure
    # means the request waited before the daemon read it (a busy event loop).
    print(f"  {'round trip (client)':<20} {wall_ms:8.1f} ms")
    return 0
