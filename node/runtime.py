"""The running node: p2p service, DAG, consensus, control API and services.

:func:`open_node` starts everything in one trio nursery and yields a
:class:`Node`. Leaving the block stops the services, closes the API and the
libp2p streams, and closes the store (which flushes it).

Hooks for code that runs inside the daemon (the inference tasks, tests)::

    vertex_id = await node.issue_vertex(payload_type, payload: dict, conflict_keys=())
    node.on_vertex(payload_type, callback)      # callback(vertex, status)
    status = await node.wait_decided(vertex_id, timeout)
    node.vertex_status(vertex_id) -> str
    node.start_service(name, async_fn, *args)   # supervised, restarted on crash
    node.add_status_section(name, fn)           # fn() -> JSON value in /status
    node.api.add_route(method, path, handler)   # see node.api
    node.metrics                                # node.metrics.NodeMetrics
    node.p2p, node.store, node.config, node.signing_key, node.peer_id
    node.nursery                                # for short-lived tasks

A callback's ``status`` is ``"admitted"`` (stored, consensus undecided),
``"accepted"`` or ``"rejected"``. A callback runs once per vertex and status,
in the order admitted, then accepted or rejected, for vertices this node
issued and for those that peers sent. A callback may be a plain function or
return an awaitable, which is then run as a task. An exception in a callback
is logged and does not stop the node.

Modules listed in ``EXTENSIONS`` that exist define ``install(node)``; the
daemon calls it once the node is up and before it reports itself started.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

from node import NodeError
from node.api import TOKEN_FILE, ControlApi, read_token, serve_http
from node.config import Config
from node.metrics import NodeMetrics
from node.services import Services

log = logging.getLogger(__name__)

IDENTITY_FILE: Final = "identity.key"
VERTEX_KEY_FILE: Final = "vertex.key"
STORE_FILE: Final = "dag.sqlite3"
# Modules that add services and API routes to a node when they are present.
EXTENSIONS: Final[tuple[str, ...]] = ("node.inference",)

VertexCallback = Callable[[Any, str], Awaitable[None] | None]
_STATUS_KEYS: Final = frozenset(
    {
        "peer_id", "network", "listen_addrs", "peers", "topics", "dag", "engine",
        "services", "uptime_s", "api", "metrics", "vertex_key_id",
    }
)  # fmt: skip


class Node:
    """One running node; build it with :func:`open_node`."""

    def __init__(
        self,
        config: Config,
        *,
        p2p: Any,
        store: Any,
        signing_key: Any,
        metrics: NodeMetrics,
        api: ControlApi,
        nursery: trio.Nursery,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.p2p = p2p
        self.store = store
        self.signing_key = signing_key
        self.metrics = metrics
        self.api = api
        self.nursery = nursery
        self.rng = rng
        self.peer_id: str = p2p.peer_id
        self.started_at = time.time()
        self.api_address = ""
        self.metrics_address = ""
        self.services = Services(
            nursery, restart_delay=config.daemon.service_restart_delay_s
        )
        self._callbacks: dict[str, list[VertexCallback]] = defaultdict(list)
        self._status_sections: dict[str, Callable[[], Any]] = {}
        # Imported here so that `node.runtime` stays cheap for commands that
        # only need its file-name constants.
        from node.dagsync import DagSync

        self.dag = DagSync(self)

    # Hooks ---------------------------------------------------------------

    async def issue_vertex(
        self,
        payload_type: str,
        payload: Any,
        conflict_keys: Iterable[bytes | str] = (),
    ) -> bytes:
        """Sign a vertex with the node key, store it, gossip it and start voting.

        Returns:
            The 32-byte vertex id.

        Raises:
            NodeError: the payload does not fit the vertex limits, or the node
                has too many undecided vertices.
        """
        return await self.dag.issue(payload_type, payload, tuple(conflict_keys))

    def on_vertex(self, payload_type: str, callback: VertexCallback) -> None:
        """Call ``callback(vertex, status)`` for every vertex of `payload_type`."""
        self._callbacks[payload_type].append(callback)

    async def wait_decided(self, vertex_id: bytes, timeout: float) -> str:
        """Wait until consensus decides `vertex_id` or `timeout` seconds pass.

        Returns:
            ``"accepted"`` or ``"rejected"``, or the status at the timeout
            (``"processing"`` while undecided, ``"unknown"`` if never seen).
        """
        return await self.dag.wait_decided(vertex_id, timeout)

    def vertex_status(self, vertex_id: bytes) -> str:
        """Return ``processing``, ``accepted``, ``rejected`` or ``unknown``."""
        return self.dag.status_of(vertex_id)

    def start_service(
        self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        """Run ``fn(*args)`` for the life of the node, restarting it if it raises."""
        self.services.start(name, fn, *args)

    def add_status_section(self, name: str, fn: Callable[[], Any]) -> None:
        """Add ``fn()`` to ``GET /status`` under `name`, computed per request.

        Raises:
            ValueError: the name is already a key of the status document.
        """
        if name in self._status_sections or name in _STATUS_KEYS:
            raise ValueError(f"status section {name!r} already exists")
        self._status_sections[name] = fn

    # Internal ------------------------------------------------------------

    def _notify(self, vertex: Any, status: str) -> None:
        for callback in self._callbacks.get(vertex.payload_type, ()):
            try:
                result = callback(vertex, status)
                if inspect.isawaitable(result):
                    self.nursery.start_soon(
                        self._await_callback, result, vertex.payload_type
                    )
            except Exception:
                log.exception(
                    "vertex callback failed payload_type=%s vertex=%s status=%s",
                    vertex.payload_type,
                    vertex.id.hex(),
                    status,
                )

    async def _await_callback(
        self, awaitable: Awaitable[None], payload_type: str
    ) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("vertex callback failed payload_type=%s", payload_type)

    def status(self) -> dict[str, Any]:
        """Return the document that ``GET /status`` serves."""
        gossip = self.p2p.gossip
        document = {
            "peer_id": self.peer_id,
            "network": self.config.network,
            "listen_addrs": self.p2p.listen_addrs,
            "peers": self.p2p.connected_peers(),
            "topics": sorted(gossip.pubsub.channels) if gossip is not None else [],
            "dag": self.dag.counts(),
            "engine": self.dag.engine_stats(),
            "services": self.services.snapshot(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "api": self.api_address,
            "metrics": self.metrics_address,
            "vertex_key_id": self.signing_key.key_id.hex(),
        }
        for name, fn in self._status_sections.items():
            try:
                document[name] = fn()
            except Exception as error:
                log.exception("status section failed name=%s", name)
                document[name] = {"error": f"{type(error).__name__}: {error}"}
        return document


@asynccontextmanager
async def open_node(config: Config, *, new_store: bool = False) -> AsyncIterator[Node]:
    """Start a node for `config` and yield it; stop everything on exit.

    Args:
        config: the node's settings.
        new_store: create an empty DAG store if ``dag.sqlite3`` is missing;
            without it a missing store is an error, because ``init`` creates
            one and a store that vanished is data lost, not a fresh start.

    Raises:
        NodeError: the data directory is not initialised or a file in it is
            unusable.
        p2p.P2PError: a listen address cannot be bound.
        dag.DagError: the store is damaged.
    """
    from dag.keys import SigningKey
    from p2p.host import HostConfig
    from p2p.service import open_service

    _check_initialised(config)
    signing_key = SigningKey.load(config.path(VERTEX_KEY_FILE))
    token = read_token(config.path(TOKEN_FILE), private=True)
    host_config = HostConfig(
        identity_path=config.path(IDENTITY_FILE),
        listen_addrs=config.p2p.listen,
        network=config.network,
        max_connections=config.p2p.max_connections,
        data_dir=config.data_dir,
    )
    gossip_params = _gossip_params(config)

    store = _open_store(config, new_store)
    try:
        async with (
            open_service(host_config, gossip_params=gossip_params) as svc,
            trio.open_nursery() as nursery,
        ):
            node = Node(
                config,
                p2p=svc,
                store=store,
                signing_key=signing_key,
                metrics=NodeMetrics(),
                api=ControlApi(token),
                nursery=nursery,
                rng=random.Random(),
            )
            shutdown = trio.Event()
            try:
                await _start(node, shutdown)
                yield node
            finally:
                shutdown.set()
                log.info("node stopping peer_id=%s", node.peer_id)
                nursery.cancel_scope.cancel()
    finally:
        store.close()
        log.info("store closed path=%s", config.path(STORE_FILE))


async def _start(node: Node, shutdown: trio.Event) -> None:
    from node import routes
    from node.catchup import Catchup
    from node.peering import PeerExchange

    config = node.config
    await node.dag.start()
    PeerExchange(node).start()
    Catchup(node).start()
    routes.install(node)
    node.api_address = await node.nursery.start(
        serve_http, node.api, config.api.listen, "api", shutdown
    )
    if config.metrics.listen != "off":
        from node.api import MetricsApp

        node.metrics_address = await node.nursery.start(
            serve_http,
            MetricsApp(node.metrics.registry),
            config.metrics.listen,
            "metrics",
            shutdown,
        )
    _install_extensions(node, EXTENSIONS)
    for address in config.p2p.bootstrap:
        node.nursery.start_soon(_bootstrap, node, address)


async def _bootstrap(node: Node, address: str) -> None:
    # Peer management in p2p reconnects known peers with backoff, so one
    # attempt that fails here is logged and not retried by hand.
    from p2p import P2PError

    timeout = node.config.p2p.connect_timeout_s
    try:
        peer_id = await node.p2p.connect(address, timeout)
    except P2PError as error:
        log.warning("bootstrap dial failed address=%s error=%s", address, error)
        return
    log.info("bootstrap peer connected peer_id=%s address=%s", peer_id, address)


def _install_extensions(node: Node, names: Sequence[str]) -> None:
    import importlib

    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        install = getattr(module, "install", None)
        if install is not None:
            install(node)
            log.info("extension installed module=%s", name)


def _gossip_params(config: Config) -> Any:
    from p2p.gossip import GossipParams

    return GossipParams(network=config.network)


def _open_store(config: Config, new_store: bool) -> Any:
    from dag.store import Store

    path = config.path(STORE_FILE)
    if not new_store and not path.exists():
        raise NodeError(
            f"DAG store {path} is missing; `synaptic-mesh init` created it, so it "
            "was moved or deleted. Put it back, or run `synaptic-mesh start "
            f"--data-dir {config.data_dir} --new-store` to start from an empty "
            "store (keeping the identity) that resyncs from the peers"
        )
    # quick_check reads every page once, so a damaged file stops the start
    # here instead of failing the first write much later.
    return Store.open(path, network=config.network, quick_check=True)


def _check_initialised(config: Config) -> None:
    missing = [
        name
        for name in (IDENTITY_FILE, VERTEX_KEY_FILE, TOKEN_FILE)
        if not config.path(name).exists()
    ]
    if missing:
        raise NodeError(
            f"data directory {config.data_dir} is not initialised "
            f"({', '.join(missing)} missing); run "
            f"`synaptic-mesh init --data-dir {config.data_dir}` first"
        )
