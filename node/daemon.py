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

import fcntl
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

LOCK_FILE = "lock"


def run_daemon(
    config: Config,
    *,
    out: Callable[[str], None] | None = None,
    new_store: bool = False,
) -> int:
    """Run the node of `config` in the foreground and return the exit code.

    Args:
        config: the node's settings.
        out: prints the start banner; default prints to stdout.
        new_store: create an empty DAG store if it is missing.

    Raises:
        NodeError, p2p.P2PError, dag.DagError: the node could not start; the
            error is the first one found inside any exception group.
    """
    lock_fd = _lock_data_dir(config.data_dir)
    try:
        _check_task_settings()
        try:
            return trio.run(_main, config, out or _print, new_store)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
    finally:
        os.close(lock_fd)


def _check_task_settings() -> None:
    # The task service reads its settings from the environment when it is
    # installed, after the host listens; checking them here lets a bad value
    # stop the start before any socket opens, like a bad config.toml value.
    from node.inference import params_from_env

    params_from_env(os.environ)


def _print(line: str) -> None:
    print(line, flush=True)


async def _main(config: Config, out: Callable[[str], None], new_store: bool) -> int:
    from node.runtime import open_node

    stop = trio.Event()
    runtime_path = config.path(RUNTIME_FILE)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, stop, runtime_path)
            with trio.CancelScope() as scope:
                async with open_node(config, new_store=new_store) as node:
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


def _lock_data_dir(data_dir: Path) -> int:
    # The kernel drops a flock when its holder exits, even on kill -9, so a
    # held lock always means a live daemon and a free one a stale runtime.json.
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise NodeError(f"cannot open lock file {path}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise NodeError(
            f"a daemon (pid {holder}) is already running with data directory "
            f"{data_dir}; stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    runtime = data_dir / RUNTIME_FILE
    if runtime.exists():
        log.info("removing stale runtime file path=%s", runtime)
        runtime.unlink(missing_ok=True)
    return fd


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
