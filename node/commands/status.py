"""``synaptic-mesh status``: what a running node is doing."""

from __future__ import annotations

import argparse
import json

from node.commands._common import add_data_dir, client_of, print_json

# Keys that `format_status` renders itself or that only --json shows.
_SHOWN_ELSEWHERE = frozenset(
    {
        "peer_id", "network", "uptime_s", "api", "metrics", "listen_addrs", "peers",
        "topics", "dag", "services", "engine", "vertex_key_id",
    }
)  # fmt: skip


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show a running node: peer id, addresses, peers, DAG counts, services",
        description="Show the state of the daemon that uses the data directory.",
    )
    add_data_dir(parser)
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    status = client_of(args).get("/status")
    if args.json:
        print_json(status)
        return 0
    print(format_status(status))
    return 0


def format_status(status: dict) -> str:
    """Render the ``/status`` document for people."""
    dag = status.get("dag", {})
    lines = [
        f"peer id    {status['peer_id']}",
        f"network    {status['network']}",
        f"uptime     {_duration(status.get('uptime_s', 0.0))}",
        f"api        {status.get('api')}",
        f"metrics    {status.get('metrics') or 'off'}",
        "addresses",
        *(f"  {addr}" for addr in status.get("listen_addrs", [])),
        f"peers      {len(status.get('peers', []))}",
        *(f"  {peer}" for peer in status.get("peers", [])),
        "topics",
        *(f"  {topic}" for topic in status.get("topics", [])),
        "dag        "
        + "  ".join(
            f"{name}={dag.get(name, 0)}"
            for name in ("vertices", "accepted", "rejected", "processing")
        ),
        "services",
    ]
    for service in status.get("services", []):
        line = f"  {service['name']:<20} {service['state']}"
        if service.get("restarts"):
            line += f" (restarted {service['restarts']}x: {service.get('last_error')})"
        lines.append(line)
    # Sections that services add (for example tasks) follow, shown generically.
    for name, value in status.items():
        if name in _SHOWN_ELSEWHERE:
            continue
        lines.append(name)
        items = value.items() if isinstance(value, dict) else [("", value)]
        for key, item in items:
            text = item if isinstance(item, str) else json.dumps(item)
            lines.append(f"  {key:<20} {text}" if key else f"  {text}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return (
        f"{hours}h{minutes:02d}m{seconds:02d}s"
        if hours
        else f"{minutes}m{seconds:02d}s"
    )
