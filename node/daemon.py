"""The foreground daemon behind ``synaptic-mesh start``.

:func:`run_daemon` runs a node until SIGINT or SIGTERM. The first signal
starts a graceful stop: services are cancelled, the API and libp2p streams are
closed and the store is closed, all within ``daemon.shutdown_timeout_s``
seconds, after which whatever is left is cancelled. A second signal ends the
process at once; the store stays consistent because SQLite's WAL makes every
committed transaction durable.

While the node runs, ``runtime.json`` in the data directory contains its process
id, peer id, listen addresses and the API and metrics addresses, so that the
CLI and scripts can find it. The file is removed when the daemon stops.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from node import NodeError
from node.client import RUNTIME_FILE
from node.config import Config

log = logging.getLogger(__name__)


def run_daemon(config: Config, *, out: Callable[[str], None] | None = None) -> int:
    """Run the node of `config` in the foreground and return the exit code.

    Raises:
        NodeError, p2p.P2PError, dag.DagError: the node could not start; the
            error is the first one found inside any exception group.
    """
    _check_not_running(config.data_dir)
    try:
        return trio.run(_main, config, out or _print)
    except BaseExceptionGroup as group:
        raise _first_error(group) from None


def _print(line: str) -> None:
    print(line, flush=True)


async def _main(config: Config, out: Callable[[str], None]) -> int:
    from node.runtime import open_node

    stop = trio.Event()
    runtime_path = config.path(RUNTIME_FILE)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, stop, runtime_path)
            with trio.CancelScope() as scope:
                async with open_node(config) as node:
                    info = _runtime_info(node)
                    _write_runtime(runtime_path, info)
                    _announce(info, out)
                    log.info(
                        "node started peer_id=%s network=%s api=%s",
                        node.peer_id,
                        config.network,
                        node.api_address,
                    )
                    await stop.wait()
                    # Bounds the rest of the block and the cleanup in
                    # open_node's exit; what is still running then is cancelled.
                    scope.deadline = (
                        trio.current_time() + config.daemon.shutdown_timeout_s
                    )
                    _remove_runtime(runtime_path)
            if scope.cancelled_caught:
                log.warning(
                    "graceful stop took longer than %.1f s; cancelled the rest",
                    config.daemon.shutdown_timeout_s,
                )
            nursery.cancel_scope.cancel()
    _remove_runtime(runtime_path)
    log.info("node stopped")
    return 0


async def _watch_signals(signals, stop: trio.Event, runtime_path: Path) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if not stop.is_set():
            log.info("stopping on signal=%s; send it again to stop at once", name)
            stop.set()
            continue
        log.warning("second signal=%s; exiting without a graceful stop", name)
        _remove_runtime(runtime_path)
        logging.shutdown()
        os._exit(128 + signum)


def _runtime_info(node: Any) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "peer_id": node.peer_id,
        "network": node.config.network,
        "listen_addrs": node.p2p.listen_addrs,
        "api": node.api_address,
        "metrics": node.metrics_address,
        "vertex_key_id": node.signing_key.key_id.hex(),
        "started_at": time.time(),
    }


def _announce(info: dict[str, Any], out: Callable[[str], None]) -> None:
    out(f"peer id   {info['peer_id']}")
    out(f"network   {info['network']}")
    for addr in info["listen_addrs"]:
        out(f"listening {addr}")
    out(f"api       {info['api']}")
    out(f"metrics   {info['metrics'] or 'off'}")


def _write_runtime(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _remove_runtime(path: Path) -> None:
    # Only the daemon that wrote the file removes it, so a second daemon that
    # failed to start never deletes the first one's file.
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if info.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _check_not_running(data_dir: Path) -> None:
    path = data_dir / RUNTIME_FILE
    try:
        pid = int(json.loads(path.read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        log.info("removing stale runtime file path=%s pid=%d", path, pid)
        path.unlink(missing_ok=True)
        return
    except PermissionError:
        pass
    raise NodeError(
        f"a daemon (pid {pid}) is already running with data directory {data_dir}; "
        f"stop it first, or remove {path} if that process is not a synaptic-mesh daemon"
    )


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """Return the most useful leaf of `group`: a package error if there is one."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    from dag import DagError
    from p2p import P2PError

    for leaf in leaves:
        if isinstance(leaf, (NodeError, P2PError, DagError)):
            return leaf
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return group
