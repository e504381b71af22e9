"""The p2p service: one object that owns the host and everything on top of it.

`open_service(config)` builds the host, starts it listening, and runs the
guard, request/response, peer management, gossip and discovery in one trio
nursery. Leaving the `async with` block stops them all and closes the host.

Gossip and discovery plug in from their own modules. When `p2p.gossip` defines
`open_gossip(host, params)` (and `p2p.discovery` defines
`open_discovery(host, params)`), the service enters that async context
manager once the host listens, before `open_service` yields. Params default
to `GossipParams(network=config.network)` (`DiscoveryParams` likewise). Each
runs in a task under `Guard.supervise`, so if it raises it is re-entered with
a logged reason, and `svc.gossip` / `svc.discovery` then name the new object.
If the gossip object has a `pubsub` attribute, `Guard.guard_pubsub` wraps its
per-message task.

Public API:
    async with open_service(config, *, guard_params=None, reqresp_params=None,
                            peer_params=None, gossip_params=None,
                            discovery_params=None) as svc:
    svc.peer_id: str
    svc.listen_addrs: list[str], full multiaddrs ending in /p2p/<peer id>
    await svc.connect(multiaddr: str, timeout: float | None = None) -> str
    svc.connected_peers() -> list[str]
    await svc.disconnect(peer_id: str, hold: float = 30.0) -> None
    svc.protocol_id(name: str, version: str = "1.0.0") -> str
    svc.guard, svc.reqresp, svc.peers, svc.gossip, svc.discovery, svc.host
    DialError(P2PError)
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2p import P2PError
from p2p.guard import Guard, GuardParams
from p2p.host import (
    HostConfig,
    MeshHost,
    build_host,
    collapse_single_errors,
    mesh_protocol_id,
    run_host,
)
from p2p.peers import PeerManager, PeerParams
from p2p.reqresp import ReqResp, ReqRespParams

logger = logging.getLogger(__name__)


class DialError(P2PError):
    """A connect() failed: bad address, banned peer, refused or timed out."""


class P2PService:
    """The running p2p stack of one node; create it with `open_service`."""

    def __init__(self, config: HostConfig, host: MeshHost, guard: Guard) -> None:
        self.config = config
        self.host = host
        self.guard = guard
        self.peer_id: str = host.get_id().to_base58()
        self.reqresp: Any = None
        self.peers: Any = None
        self.gossip: Any = None
        self.discovery: Any = None

    @property
    def listen_addrs(self) -> list[str]:
        """Full multiaddrs this node listens on, each ending in /p2p/<id>."""
        return [str(a) for a in self.host.get_addrs()]

    def protocol_id(self, name: str, version: str = "1.0.0") -> str:
        """Return `/synaptic-mesh/<network>/<name>/<version>`."""
        return mesh_protocol_id(self.config.network, name, version)

    def connected_peers(self) -> list[str]:
        """Return the peer ids with at least one open connection."""
        return sorted(p.to_base58() for p in self.host.get_connected_peers())

    async def connect(self, address: str, timeout: float | None = None) -> str:
        """Connect to the peer at `address` (`.../p2p/<id>`); return its id.

        Returns at once if a connection already exists. The peer becomes a
        known peer: it is saved and redialed whenever the connection drops.

        Raises:
            DialError: if the address is invalid, the peer is banned or is
                this node, or the dial fails or takes over `timeout` seconds
                (default `config.dial_timeout`).
        """
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as error:
            raise DialError(
                f"invalid peer address {address!r}: {error}; "
                "expected /ip4/<ip>/tcp/<port>/p2p/<peer id>"
            ) from error
        peer_id = info.peer_id.to_base58()
        if peer_id == self.peer_id:
            raise DialError(f"address {address} is this node's own address")
        if self.guard.is_banned(peer_id):
            raise DialError(f"peer {peer_id} is banned")
        if timeout is None:
            timeout = self.config.dial_timeout
        self.host.get_network().release(info.peer_id)
        try:
            with trio.fail_after(timeout):
                await self.host.connect(info)
        except trio.TooSlowError:
            raise DialError(
                f"connect to {address} timed out after {timeout:.1f} s"
            ) from None
        except Exception as error:
            cause = error.__cause__ or error
            raise DialError(f"connect to {address} failed: {cause}") from error
        if self.peers is not None:
            self.peers.note_dialed(peer_id, [str(a) for a in info.addrs])
        return peer_id

    async def disconnect(self, peer_id: str, hold: float = 30.0) -> None:
        """Close every connection to `peer_id` and stop redialing it.

        For `hold` seconds no component may dial the peer implicitly; an
        explicit `connect` lifts that at once. The peer may still dial us.
        """
        if self.peers is not None:
            self.peers.forget(peer_id)
        self.host.get_network().hold(ID.from_base58(peer_id), hold)
        await self.host.disconnect(ID.from_base58(peer_id))


def _plugin(module_name: str, opener_name: str, params_name: str) -> Any:
    """Return (opener, params class) from `module_name`, or None if absent."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        return None
    opener = getattr(module, opener_name, None)
    if opener is None:
        return None
    return opener, getattr(module, params_name, None)


@asynccontextmanager
async def open_service(
    config: HostConfig,
    *,
    guard_params: GuardParams | None = None,
    reqresp_params: ReqRespParams | None = None,
    peer_params: PeerParams | None = None,
    gossip_params: Any = None,
    discovery_params: Any = None,
) -> AsyncIterator[P2PService]:
    """Build and run the p2p stack; yield it once it listens.

    Raises:
        ValueError: if a config or params object is invalid.
        p2p.host.ListenError: if a listen address cannot be bound.
        p2p.identity.IdentityError: if the identity file cannot be used.
    """
    guard = Guard(guard_params)
    host = build_host(config, guard)
    guard.attach(host)
    with collapse_single_errors():
        async with run_host(host, config), trio.open_nursery() as nursery:
            svc = P2PService(config, host, guard)
            await nursery.start(guard.run)
            svc.reqresp = ReqResp(host, guard, config.network, reqresp_params)
            await nursery.start(guard.supervise, "reqresp", svc.reqresp.run)
            svc.peers = PeerManager(svc, peer_params)
            await nursery.start(guard.supervise, "peers", svc.peers.run)
            await _start_components(svc, nursery, gossip_params, discovery_params)
            logger.info("p2p service started peer_id=%s", svc.peer_id)
            try:
                yield svc
            finally:
                logger.info("p2p service stopping peer_id=%s", svc.peer_id)
                nursery.cancel_scope.cancel()


async def _start_components(
    svc: P2PService,
    nursery: trio.Nursery,
    gossip_params: Any,
    discovery_params: Any,
) -> None:
    plugins = (
        ("gossip", "p2p.gossip", "open_gossip", "GossipParams", gossip_params),
        (
            "discovery",
            "p2p.discovery",
            "open_discovery",
            "DiscoveryParams",
            discovery_params,
        ),
    )
    for attribute, module_name, opener_name, params_name, params in plugins:
        found = _plugin(module_name, opener_name, params_name)
        if found is None:
            logger.debug("component absent name=%s", attribute)
            continue
        opener, params_class = found
        if params is None and params_class is not None:
            params = params_class(network=svc.config.network)
        run = functools.partial(_run_plugin, svc, attribute, opener, params)
        await nursery.start(svc.guard.supervise, attribute, run)


async def _run_plugin(
    svc: P2PService,
    attribute: str,
    opener: Any,
    params: Any,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # NOTE: a plugin re-entered after a crash registers its stream handlers
    # and connection notifee with the same host again. Handlers are replaced,
    # but the old notifee stays unless the plugin removes it on exit.
    async with opener(svc.host, params) as component:
        setattr(svc, attribute, component)
        pubsub = getattr(component, "pubsub", None)
        if pubsub is not None:
            svc.guard.guard_pubsub(pubsub)
        task_status.started()
        await trio.sleep_forever()
