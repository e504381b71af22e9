"""``synaptic-mesh model``: add models to a running node and list them."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.commands._common import add_data_dir, client_of, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "model",
        help="add a FANN .net model to the running node, or list models",
        description="Manage the models a running node serves to the mesh.",
    )
    commands = parser.add_subparsers(
        dest="model_command",
        metavar="COMMAND",
        required=True,
        help="add, fetch or list",
    )

    add = commands.add_parser(
        "add",
        help="serve FILE.net under NAME: register the name and advertise it",
        description=(
            "Load FILE.net (C FANN format) into the running node, register NAME on "
            "the DAG (one registration per name wins mesh-wide) and advertise the "
            "model in the DHT, so that `infer --model NAME` on any node reaches it. "
            "A name the mesh has already given to other content is rejected, and "
            "the node keeps no local binding for it."
        ),
    )
    add_data_dir(add)
    add.add_argument("file", metavar="FILE.net", type=Path, help="FANN network file")
    add.add_argument("--name", required=True, help="model name on the mesh")
    add.add_argument("--json", action="store_true", help="print the raw JSON")
    add.set_defaults(func=run_add)

    fetch = commands.add_parser(
        "fetch",
        help="copy model NAME from a provider by content hash and serve it too",
        description=(
            "Look up providers of NAME in the DHT, fetch the model file from one of "
            "them, check its SHA-256 against the registered content hash, and "
            "serve it from this node as well."
        ),
    )
    add_data_dir(fetch)
    fetch.add_argument("name", metavar="NAME", help="registered model name")
    fetch.add_argument("--json", action="store_true", help="print the raw JSON")
    fetch.set_defaults(func=run_fetch)

    listing = commands.add_parser(
        "list",
        help="list the models stored on this node and the names registered on the mesh",
        description=(
            "Print the models this node stores and serves, each with its content "
            "hash, input and output count, size and whether its name is "
            "registered on the mesh, then every name the mesh has registered "
            "(accepted model.register vertices), with the hash it stands for."
        ),
    )
    add_data_dir(listing)
    listing.add_argument("--json", action="store_true", help="print the raw JSON")
    listing.set_defaults(func=run_list)


def _print_info(info: dict) -> None:
    print(f"model         {info['name']}")
    print(f"content hash  {info['model_hash']}")
    print(f"inputs        {info['num_inputs']}")
    print(f"outputs       {info['num_outputs']}")
    print(f"size          {info['size']} bytes")
    print(f"registration  {info.get('registration', '')}")


def run_add(args: argparse.Namespace) -> int:
    info = client_of(args).post(
        "/models", {"name": args.name, "path": str(args.file.resolve())}
    )
    print_json(info) if args.json else _print_info(info)
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    client = client_of(args)
    info = client.post("/models/fetch", {"name": args.name, "timeout": 30})
    print_json(info) if args.json else _print_info(info)
    return 0


def run_list(args: argparse.Namespace) -> int:
    models = client_of(args).get("/models")
    if args.json:
        print_json(models)
        return 0
    print("stored on this node")
    for info in models["local"] or []:
        registered = models["registered"].get(info["name"], {})
        mark = (
            "registered"
            if registered.get("model_hash") == info["model_hash"]
            else "not registered"
        )
        print(
            f"  {info['name']:<20} {info['model_hash'][:16]}  "
            f"{info['num_inputs']} -> {info['num_outputs']}  {info['size']} bytes  "
            f"{mark}"
        )
    if not models["local"]:
        print("  (none)")
    print("registered on the mesh")
    for name, info in sorted(models["registered"].items()):
        print(f"  {name:<20} {info['model_hash'][:16]}")
    if not models["registered"]:
        print("  (none)")
    return 0
