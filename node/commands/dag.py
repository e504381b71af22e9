"""``synaptic-mesh dag``: offline inspection and repair of the DAG store.

``register`` creates the ``dag`` parser and its subparsers; each subcommand
is added by its own ``_add_<name>`` function so that new ones slot in beside
``verify``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from node.config import DEFAULT_HOME, HOME_ENV, resolve_data_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dag",
        help="inspect the DAG store of a data directory",
        description="Inspect and repair the node's DAG store (dag.sqlite3).",
    )
    commands = parser.add_subparsers(
        dest="dag_command", metavar="SUBCOMMAND", required=True
    )
    _add_verify(commands)
    _add_tail(commands)
    _add_show(commands)


def _add_verify(commands) -> None:
    parser = commands.add_parser(
        "verify",
        help="check every stored vertex offline; optionally rebuild a damaged store",
        description=(
            "Check the DAG store without a running node: SQLite integrity, that "
            "every vertex decodes and hashes to its id, that every parent is "
            "stored, and that accepted vertices have accepted parents. Exits 0 "
            "if the store is intact, 1 if it is damaged, 2 if it is missing."
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"node data directory (default: ${HOME_ENV} or {DEFAULT_HOME})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help=(
            "if the store is damaged, copy its intact vertices into a new store "
            "and keep the old file as dag.sqlite3.damaged-<time>; stop the node "
            "first"
        ),
    )
    parser.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from dag.store import StoreError, rebuild, resolve_path, verify_file

    data_dir = resolve_data_dir(args.data_dir, os.environ)
    if not data_dir.exists():
        print(
            f"synaptic-mesh: error: data directory {data_dir} does not exist; "
            f"create it with `synaptic-mesh init --data-dir {data_dir}`",
            file=sys.stderr,
        )
        return 2
    path = resolve_path(data_dir)
    if path != data_dir and not path.exists():
        print(
            f"synaptic-mesh: error: data directory {data_dir} has no DAG store "
            f"({path.name} does not exist); `synaptic-mesh init` creates it",
            file=sys.stderr,
        )
        return 2
    try:
        report = verify_file(path)
    except StoreError as exc:
        print(f"synaptic-mesh: error: {exc}", file=sys.stderr)
        return 2
    result = _report_dict(report)
    if not report.ok and args.rebuild:
        rebuilt = rebuild(path)
        result["rebuild"] = {
            "kept": rebuilt.kept,
            "dropped": rebuilt.dropped,
            "accepted": rebuilt.accepted,
            "damaged_copy": str(rebuilt.damaged_copy),
        }
        result["after_rebuild"] = _report_dict(verify_file(path))
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(_format(result))
    final = result.get("after_rebuild", result)
    return 0 if final["ok"] else 1


def _report_dict(report) -> dict:
    result = dataclasses.asdict(report)
    result["path"] = str(report.path)
    return result


def _format(result: dict) -> str:
    lines = [_format_report(result)]
    rebuilt = result.get("rebuild")
    if rebuilt:
        lines.append(
            f"rebuilt: kept {rebuilt['kept']} vertices ({rebuilt['accepted']} "
            f"accepted), dropped {rebuilt['dropped']}; the damaged file is now "
            f"{rebuilt['damaged_copy']}"
        )
        lines.append(_format_report(result["after_rebuild"]))
        lines.append("the node resyncs the dropped vertices from its peers")
    return "\n".join(lines)


def _format_report(report: dict) -> str:
    counts = "  ".join(f"{name}={n}" for name, n in report["counts"].items())
    if report["ok"]:
        noun = "vertex" if report["vertices"] == 1 else "vertices"
        return f"{report['path']}: ok, {report['vertices']} {noun}  {counts}"
    count = len(report["problems"])
    noun = "problem" if count == 1 else "problems"
    lines = [f"{report['path']}: damaged, {count} {noun} found"]
    lines.extend(f"  {problem}" for problem in report["problems"])
    lines.append("run again with --rebuild to keep the intact vertices")
    return "\n".join(lines)


def _add_tail(commands) -> None:
    from node.commands._common import add_data_dir

    parser = commands.add_parser(
        "tail",
        help="list the most recent vertices of a running node",
        description=(
            "List the N most recently stored vertices of the running node, oldest "
            "first: id, consensus status, payload type, author key id and time."
        ),
    )
    add_data_dir(parser)
    parser.add_argument(
        "-n", type=int, default=20, metavar="N", help="number of vertices (default: 20)"
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.set_defaults(func=run_tail)


def run_tail(args: argparse.Namespace) -> int:
    import time

    from node.commands._common import client_of, print_json

    vertices = client_of(args).get("/dag/tail", n=args.n)
    if args.json:
        print_json(vertices)
        return 0
    for vertex in vertices:
        when = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(vertex["timestamp_ms"] / 1000)
        )
        print(
            f"{vertex['id']}  {vertex['status']:<10}  {vertex['payload_type']:<12}  "
            f"{vertex['author'][:16]}  {when}"
        )
    return 0


def _add_show(commands) -> None:
    from node.commands._common import add_data_dir

    parser = commands.add_parser(
        "show",
        help="show one vertex of a running node with its decoded payload",
        description="Show one vertex, its consensus status and its decoded payload.",
    )
    add_data_dir(parser)
    parser.add_argument("vertex_id", metavar="ID", help="vertex id, 64 hex digits")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    from node.commands._common import client_of, print_json

    vertex = client_of(args).get(f"/dag/vertex/{args.vertex_id}")
    if args.json:
        print_json(vertex)
        return 0
    for key in ("id", "status", "payload_type", "author", "scheme", "timestamp_ms"):
        print(f"{key:<14}{vertex[key]}")
    print(f"{'parents':<14}{' '.join(vertex['parents'])}")
    print(f"{'conflict_keys':<14}{' '.join(vertex['conflict_keys']) or '-'}")
    print(f"{'signature':<14}{vertex['signature_bytes']} bytes")
    print(f"{'payload':<14}{json.dumps(vertex['payload'], sort_keys=True)}")
    return 0
