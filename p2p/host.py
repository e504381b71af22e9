"""Host factory: a py-libp2p host with safe defaults for a daemon.

py-libp2p 0.8.1's `new_host()` is built for experimentation, and several of its
defaults are unsafe for a node that untrusted peers can reach. `build_host()`
assembles the same parts by hand with these differences:

- Security: Noise only. The default list also offers `/plaintext/2.0.0`, where
  a dialer that has only another peer's public key is accepted as that peer.
- Muxers: Yamux. Mplex can be enabled as a fallback, but is off by default
  because it stalls in py-libp2p 0.8.1 (see `HostConfig.muxers`).
- Listening: our own TCP listener without `SO_REUSEPORT`. The stock listener
  sets it, so a second process binds the same port silently and the kernel
  splits inbound connections between the two. `run_host()` raises
  `ListenError` naming the address when a port is taken.
- Dialing: `_MeshSwarm.dial_peer` tries the peer's addresses one after another.
  The stock version waits a fixed 250 ms "happy eyeballs" delay after starting
  each address, even the only one, so every loopback `connect()` took at
  least 250 ms. It also skips the stock 60 s negative cache that blocks a
  peer after one failed dial: reconnect backoff lives in `p2p.peers`.
- Inbound connections: the stock handler waits for the whole swarm to stop,
  not for its own connection, so each accepted connection kept a task and one
  slot of the inbound cap for the life of the process. After `max_connections`
  connections had come and gone the node rejected every new one. Ours returns
  when the connection closes.
- No mDNS, UPnP, bootstrap list, observed-address discovery, resource manager
  or auto-connector. Per-peer limits and bans come from `p2p.guard`.

Public API:
    HostConfig(identity_path, listen_addrs, network, max_connections, ...)
    build_host(config, guard) -> MeshHost
    mesh_protocol_id(network, name, version="1.0.0") -> str
    run_host(host, config) -> async context manager; listens, yields host
    collapse_single_errors() -> context manager unwrapping one-error groups
    ListenError(P2PError)
    MeshHost: a libp2p BasicHost whose stream handlers are wrapped by the guard
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import multiaddr
import trio
from libp2p.abc import IListener, INetConn, IRawConnection
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import StreamHandlerFn, TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.io.trio import TrioTCPStream
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStore, PeerStoreError
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.transport.exceptions import OpenConnectionError, SecurityUpgradeFailure
from libp2p.transport.tcp.tcp import TCP
from libp2p.transport.upgrader import TransportUpgrader
from libp2p.utils.multiaddr_utils import (
    extract_ip_from_multiaddr,
    multiaddr_from_socket,
)

from p2p import P2PError
from p2p.identity import load_or_create_identity

logger = logging.getLogger(__name__)

_NETWORK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
_MUXERS: dict[str, tuple[TProtocol, Any]] = {
    "yamux": (TProtocol(YAMUX_PROTOCOL_ID), Yamux),
    "mplex": (TProtocol(MPLEX_PROTOCOL_ID), Mplex),
}
# Same as the Linux default for somaxconn; connections beyond the backlog wait
# in SYN state instead of being refused.
_LISTEN_BACKLOG = 128
_MAX_READ_BYTES = 65536
# The sockets one `_MeshSwarm._dial_addresses` attempt opened, collected by
# `_Tcp.dial` in the same task.
_DIALED: ContextVar[list[_CappedTcpStream] | None] = ContextVar("_DIALED", default=None)


def mesh_protocol_id(network: str, name: str, version: str = "1.0.0") -> str:
    """Return the protocol id `/synaptic-mesh/<network>/<name>/<version>`."""
    return f"/synaptic-mesh/{network}/{name}/{version}"


class ListenError(P2PError):
    """A listen address could not be bound (port taken, bad address)."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Settings of one libp2p host.

    Attributes:
        identity_path: file with the Ed25519 private key, created on first use.
        listen_addrs: TCP multiaddrs to listen on; port 0 picks a free port.
        network: network name, part of every protocol id, topic and DHT key.
        max_connections: cap on open connections, inbound and outbound.
        data_dir: folder for state files such as the known-peers list;
            defaults to the folder of `identity_path`.
        muxers: stream muxers in order of preference.
        upgrade_timeout: seconds a new connection may take for its Noise
            handshake and muxer negotiation before it is dropped.
        dial_timeout: seconds one `connect()` may take, over all addresses.
        negotiate_timeout: seconds a new stream may take to agree on a
            protocol id.
    """

    identity_path: Path
    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    network: str = "devnet"
    # A mesh node keeps a few dozen neighbours. Each connection costs a
    # socket and a few tasks, so the cap stays well below the fd limit.
    max_connections: int = 128
    data_dir: Path | None = None
    # NOTE: py-libp2p 0.8.1's mplex negotiates but then stalls: with two
    # stock hosts the second stream on an mplex connection times out, and
    # ours also saw Noise authentication failures on it. So the default
    # offers Yamux only; add "mplex" to accept older peers anyway.
    muxers: tuple[str, ...] = ("yamux",)
    # A Noise handshake on one machine or a LAN takes milliseconds. So 5 s
    # only cuts off stalled peers, which hold a socket until then.
    upgrade_timeout: float = 5.0
    dial_timeout: float = 5.0
    negotiate_timeout: float = 5.0

    def validate(self) -> None:
        """Check every field; raise `ValueError` naming the first bad one."""
        if not _NETWORK_NAME.match(self.network):
            raise ValueError(
                f"network={self.network!r} must be 1-32 characters of "
                "a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
            )
        if not self.listen_addrs:
            raise ValueError("listen_addrs must name at least one address")
        for addr in self.listen_addrs:
            _parse_tcp_addr(multiaddr.Multiaddr(addr))
        if self.max_connections < 1:
            raise ValueError(f"max_connections={self.max_connections} must be >= 1")
        if not self.muxers or any(m not in _MUXERS for m in self.muxers):
            raise ValueError(
                f"muxers={self.muxers!r} must be a non-empty subset of {tuple(_MUXERS)}"
            )
        for name in ("upgrade_timeout", "dial_timeout", "negotiate_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name}={value} must be > 0 seconds")

    @property
    def state_dir(self) -> Path:
        """Folder for state files: `data_dir`, or the identity's folder."""
        if self.data_dir is not None:
            return Path(self.data_dir)
        return Path(self.identity_path).parent


class GuardHooks(Protocol):
    """The part of `p2p.guard.Guard` that the host calls."""

    def wrap_stream_handler(
        self, protocol_id: str, handler: StreamHandlerFn
    ) -> StreamHandlerFn: ...

    def is_banned(self, peer_id: str) -> bool: ...

    def on_inbound_rejected(self, remote: str, reason: str) -> None: ...


def _parse_tcp_addr(maddr: multiaddr.Multiaddr) -> tuple[str, int]:
    """Return (ip, port) of a plain TCP multiaddr, or raise `ValueError`."""
    names = [p.name for p in maddr.protocols()]
    if len(names) < 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
        raise ValueError(f"listen address {maddr} is not /ip4|ip6/<ip>/tcp/<port>")
    if any(n not in ("ip4", "ip6", "tcp", "p2p") for n in names):
        raise ValueError(f"listen address {maddr} has unsupported parts {names}")
    ip = extract_ip_from_multiaddr(maddr)
    port = int(maddr.value_for_protocol("tcp"))
    if ip is None or not 0 <= port <= 65535:
        raise ValueError(f"listen address {maddr} has no usable ip and port")
    return ip, port


class _CappedTcpStream(TrioTCPStream):
    """A TCP stream whose reads ask the kernel for at most 64 KiB.

    py-libp2p reads a multistream-select message by passing its varint
    length straight to `recv`, which allocates that many bytes first. Before
    the Noise handshake a stranger chooses that number, and one garbage
    prefix made the node try to allocate petabytes. Its readers loop until
    they have `n` bytes, so capping each read changes nothing else, and a
    Noise frame (at most 65535 bytes) still fits in one read.
    """

    async def read(self, n: int | None = None) -> bytes:
        if n is not None and n > _MAX_READ_BYTES:
            n = _MAX_READ_BYTES
        return await super().read(n)

    @property
    def is_open(self) -> bool:
        """True until the socket's file descriptor is closed."""
        return self.stream.socket.fileno() != -1

    def close_now(self) -> None:
        """Close the socket without awaiting, so it works while cancelled."""
        self.stream.socket.close()


class _TcpListener(IListener):
    """A TCP listener that binds without `SO_REUSEPORT`.

    `SO_REUSEADDR` stays on so a restarted node can bind while old connections
    sit in TIME_WAIT; on Linux it still refuses a second listening socket.
    The accept loop runs in the swarm's background nursery, which
    `Swarm.listen` assigns to `background_nursery` before calling `listen`.
    """

    def __init__(
        self,
        handler: Callable[[TrioTCPStream], Awaitable[None]],
        transport: _Tcp,
    ) -> None:
        self._handler = handler
        self._errors = transport.listen_errors
        self._streams = transport.streams
        self.background_nursery: trio.Nursery | None = None
        self._sockets: list[trio.SocketListener] = []
        self._scopes: list[trio.CancelScope] = []

    async def listen(self, maddr: multiaddr.Multiaddr) -> None:
        ip, port = _parse_tcp_addr(maddr)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            await sock.bind((ip, port))
            sock.listen(_LISTEN_BACKLOG)
        except OSError as error:
            sock.close()
            self._errors[str(maddr)] = error
            raise OpenConnectionError(f"cannot listen on {maddr}: {error}") from error
        listener = trio.SocketListener(sock)
        if self.background_nursery is None:
            await listener.aclose()
            raise OpenConnectionError(f"cannot listen on {maddr}: swarm not running")
        self._sockets.append(listener)
        await self.background_nursery.start(self._serve, listener)

    async def _serve(
        self,
        listener: trio.SocketListener,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            task_status.started()
            await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream: trio.SocketStream) -> None:
        # One raw connection's failure must never reach the swarm's nursery.
        capped = _CappedTcpStream(stream)
        self._streams.add(capped)
        try:
            await self._handler(capped)
        except Exception:
            logger.warning("inbound connection handler failed", exc_info=True)
            await trio.aclose_forcefully(stream)

    def get_addrs(self) -> tuple[multiaddr.Multiaddr, ...]:
        return tuple(multiaddr_from_socket(s.socket) for s in self._sockets)

    async def close(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        for listener in self._sockets:
            await listener.aclose()
        self._sockets.clear()


class _Tcp(TCP):
    """TCP transport whose listeners are `_TcpListener`."""

    def __init__(self) -> None:
        super().__init__()
        self.listen_errors: dict[str, OSError] = {}
        # Every socket this transport opened or accepted, so run_host can
        # close those py-libp2p leaves open (see _MeshSwarm._dial_addresses).
        self.streams: weakref.WeakSet[_CappedTcpStream] = weakref.WeakSet()

    def create_listener(self, handler_function: Any) -> Any:
        return _TcpListener(handler_function, self)

    async def dial(self, maddr: multiaddr.Multiaddr) -> Any:
        raw_conn = await super().dial(maddr)
        capped = _CappedTcpStream(raw_conn.stream.stream)
        raw_conn.stream = capped
        self.streams.add(capped)
        sink = _DIALED.get()
        if sink is not None:
            sink.append(capped)
        return raw_conn

    def close_leftovers(self) -> int:
        """Close every tracked socket still open; return how many there were."""
        leftovers = [s for s in list(self.streams) if s.is_open]
        for stream in leftovers:
            stream.close_now()
        return len(leftovers)


class _BanCheckingUpgrader(TransportUpgrader):
    """Upgrader that drops a banned peer right after the Noise handshake.

    The peer id is known once Noise completes. Closing there, before the
    muxer is negotiated, means a banned dialer gets a failed dial instead of
    a connection that closes a moment later.
    """

    def __init__(self, guard: GuardHooks, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard

    async def upgrade_security(
        self, raw_conn: IRawConnection, is_initiator: bool, peer_id: ID | None = None
    ) -> Any:
        secure_conn = await super().upgrade_security(raw_conn, is_initiator, peer_id)
        remote = secure_conn.get_remote_peer().to_base58()
        if self._guard.is_banned(remote):
            await secure_conn.close()
            raise SecurityUpgradeFailure(f"peer {remote} is banned")
        return secure_conn


class _IdleAutoConnector(AutoConnector):
    """An auto-connector that never starts.

    The stock one dials peerstore entries (DHT contacts included) until the
    node has half of `high_watermark` connections. `p2p.peers` chooses whom
    to keep connected instead.
    """

    async def start(self) -> None:
        return None


class _MeshSwarm(Swarm):
    """Swarm with sequential dialing, bans and per-connection inbound tasks."""

    guard: GuardHooks

    def _init_connection_management(self) -> None:
        self._held: dict[ID, float] = {}
        super()._init_connection_management()
        self.auto_connector = _IdleAutoConnector(
            swarm=self,
            auto_connect_interval=self.connection_config.auto_connect_interval,
        )

    def hold(self, peer_id: ID, seconds: float) -> None:
        """Refuse implicit dials to `peer_id` for `seconds`.

        Any `new_stream` to an unconnected peer dials it, so after an explicit
        disconnect Pubsub's peer registration retry or a DHT query would
        reconnect at once. `release` lifts the hold for an explicit connect.
        """
        self._held[peer_id] = trio.current_time() + seconds

    def release(self, peer_id: ID) -> None:
        """Lift a `hold` on `peer_id`."""
        self._held.pop(peer_id, None)

    async def dial_peer(self, peer_id: ID) -> list[INetConn]:
        if self.guard.is_banned(peer_id.to_base58()):
            raise SwarmException(f"peer {peer_id} is banned")
        held_until = self._held.get(peer_id)
        if held_until is not None:
            if trio.current_time() < held_until:
                raise SwarmException(f"peer {peer_id} was disconnected on request")
            del self._held[peer_id]
        live = [c for c in self.get_connections(peer_id) if not c.is_closed]
        if live:
            return live
        pending = self._ongoing_dials.get(peer_id)
        if pending is not None:
            await pending.wait()
            live = [c for c in self.get_connections(peer_id) if not c.is_closed]
            if live:
                return live
        done = trio.Event()
        self._ongoing_dials[peer_id] = done
        try:
            return [await self._dial_addresses(peer_id)]
        finally:
            done.set()
            self._ongoing_dials.pop(peer_id, None)

    async def _dial_addresses(self, peer_id: ID) -> INetConn:
        try:
            addrs = self.peerstore.addrs(peer_id)
        except PeerStoreError as error:
            raise SwarmException(f"no known addresses for peer {peer_id}") from error
        dialable = [a for a in addrs if self.transport_manager.transport_for_dialing(a)]
        if not dialable:
            raise SwarmException(f"no dialable TCP address for peer {peer_id}")
        errors: list[str] = []
        for addr in dialable:
            dialed: list[_CappedTcpStream] = []
            token = _DIALED.set(dialed)
            try:
                # NOTE: `_dial_addr_single_attempt` is private to py-libp2p
                # 0.8.1; it opens the socket and runs the Noise and muxer
                # upgrade with the configured timeouts.
                return await self._dial_addr_single_attempt(addr, peer_id)
            except SwarmException as error:
                errors.append(f"{addr}: {error.__cause__ or error}")
                _close_all(dialed)
            except BaseException:
                # py-libp2p's cleanup awaits before it closes the socket, so a
                # dial cancelled mid-upgrade (a Pubsub task stopping, a caller's
                # timeout) left the socket and the peer's connection open.
                _close_all(dialed)
                raise
            finally:
                _DIALED.reset(token)
        raise SwarmException(f"dial to {peer_id} failed: {'; '.join(errors)}")

    def set_stream_handler(self, stream_handler: Any) -> None:
        # The host's handler runs multistream negotiation before any guarded
        # protocol handler; an error there would end the connection's task
        # and with it the swarm service.
        super().set_stream_handler(_contain_stream(stream_handler))

    async def add_conn(self, muxed_conn: Any, direction: str = "unknown") -> Any:
        peer_id = muxed_conn.peer_id
        if self.guard.is_banned(peer_id.to_base58()):
            await muxed_conn.close()
            raise SwarmException(f"peer {peer_id} is banned")
        # The swarm runs the muxer's read loop as a task of its own service,
        # so a frame that fails to decrypt (mplex does not catch it) would
        # stop the swarm. Contained, it closes only this connection.
        muxed_conn.start = _contain_muxer_start(muxed_conn)
        if len(self.get_connections()) >= self.connection_config.max_connections:
            await muxed_conn.close()
            raise SwarmException(
                f"max_connections={self.connection_config.max_connections} reached"
            )
        return await super().add_conn(muxed_conn, direction)

    async def _handle_inbound_connection(
        self, read_write_closer: Any, maddr: multiaddr.Multiaddr
    ) -> None:
        # Same cap as the stock handler, but each rejection is logged.
        try:
            self._inbound_limiter.acquire_nowait()
        except trio.WouldBlock:
            self.guard.on_inbound_rejected(
                _remote_of(read_write_closer),
                f"inbound connection cap {self._inbound_limiter.total_tokens} reached",
            )
            await _close_quietly(read_write_closer)
            return
        try:
            await self._do_handle_inbound_connection(read_write_closer, maddr, None)
        finally:
            self._inbound_limiter.release()

    async def _do_handle_inbound_connection(
        self,
        read_write_closer: Any,
        maddr: multiaddr.Multiaddr,
        failure_event: Any,
    ) -> None:
        remote = _remote_of(read_write_closer)
        raw_conn: IRawConnection = RawConnection(read_write_closer, False)
        try:
            muxed_conn = await self.upgrade_inbound_raw_conn(raw_conn, maddr)
        except Exception as error:
            reason = str(error.__cause__ or error) or type(error).__name__
            self.guard.on_inbound_rejected(remote, reason)
            _close_all([read_write_closer])
            return
        except BaseException:
            _close_all([read_write_closer])
            raise
        # Returning releases this connection's inbound slot; the SwarmConn
        # itself runs in the swarm's nursery.
        try:
            await muxed_conn.event_closed.wait()
        finally:
            _close_all([read_write_closer])


def _contain_stream(handler: Any) -> Any:
    async def contained(stream: Any) -> None:
        try:
            await handler(stream)
        except Exception as error:
            logger.warning(
                "stream negotiation failed peer_id=%s error=%r",
                _peer_of(stream.muxed_conn),
                error,
            )
            try:
                await stream.reset()
            except Exception:
                logger.debug("stream reset failed", exc_info=True)

    return contained


def _contain_muxer_start(muxed_conn: Any) -> Any:
    start = muxed_conn.start

    async def contained() -> None:
        try:
            await start()
        except Exception as error:
            logger.warning(
                "connection failed peer_id=%s error=%r", _peer_of(muxed_conn), error
            )
            await _close_quietly(muxed_conn)

    return contained


def _peer_of(muxed_conn: Any) -> str:
    try:
        return muxed_conn.peer_id.to_base58()
    except Exception:
        return "unknown"


def _close_all(streams: list[Any]) -> None:
    for stream in streams:
        if isinstance(stream, _CappedTcpStream) and stream.is_open:
            stream.close_now()


async def _close_quietly(read_write_closer: Any) -> None:
    try:
        await read_write_closer.close()
    except Exception:
        logger.debug("closing a rejected connection failed", exc_info=True)


def _remote_of(read_write_closer: Any) -> str:
    try:
        host, port = read_write_closer.get_remote_address()
    except Exception:
        return "unknown"
    return f"{host}:{port}"


class MeshHost(BasicHost):
    """BasicHost whose every stream handler is wrapped by the guard.

    Pubsub and the DHT register their handlers through `set_stream_handler`,
    so they are contained too, without patching them. BasicHost installs
    identify and ping straight into its multistream table, so those are
    wrapped once the base constructor returns.
    """

    def __init__(self, network: Any, guard: GuardHooks, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(network=network, **kwargs)
        for protocol_id, handler in list(self.multiselect.handlers.items()):
            if protocol_id is not None and handler is not None:
                self.set_stream_handler(protocol_id, handler)

    def set_stream_handler(
        self, protocol_id: TProtocol, stream_handler: StreamHandlerFn
    ) -> None:
        wrapped = self.guard.wrap_stream_handler(str(protocol_id), stream_handler)
        super().set_stream_handler(protocol_id, wrapped)


def build_host(config: HostConfig, guard: GuardHooks) -> MeshHost:
    """Create a host from `config`; `run_host` starts it.

    Raises:
        ValueError: if `config` is invalid.
        p2p.identity.IdentityError: if the identity file cannot be used.
    """
    config.validate()
    key_pair: KeyPair = load_or_create_identity(Path(config.identity_path))
    peer_id = ID.from_pubkey(key_pair.public_key)
    peerstore = PeerStore()
    peerstore.add_key_pair(peer_id, key_pair)

    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    upgrader = _BanCheckingUpgrader(
        guard,
        secure_transports_by_protocol={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_transports_by_protocol=dict(_MUXERS[m] for m in config.muxers),
    )
    connection_config = ConnectionConfig(
        max_connections=config.max_connections,
        # The pruner closes connections above high_watermark, so it equals
        # the cap; the auto-connector is replaced by _IdleAutoConnector.
        min_connections=0,
        low_watermark=0,
        high_watermark=config.max_connections,
        max_connections_per_peer=2,
        dial_timeout=config.dial_timeout,
        inbound_upgrade_timeout=config.upgrade_timeout,
        outbound_upgrade_timeout=config.upgrade_timeout,
        inbound_stream_protocol_negotiation_timeout=config.negotiate_timeout,
        outbound_stream_protocol_negotiation_timeout=config.negotiate_timeout,
    )
    swarm = _MeshSwarm(
        peer_id,
        peerstore,
        upgrader,
        transports=[_Tcp()],
        # One attempt per address; `p2p.peers` retries with its own backoff.
        retry_config=RetryConfig(max_retries=0),
        connection_config=connection_config,
    )
    swarm.guard = guard
    host = MeshHost(
        swarm,
        guard,
        negotiate_timeout=int(max(1, config.negotiate_timeout)),
        disable_identify_address_discovery=True,
    )
    logger.info("host built peer_id=%s network=%s", peer_id, config.network)
    return host


@asynccontextmanager
async def run_host(host: MeshHost, config: HostConfig) -> AsyncIterator[MeshHost]:
    """Run `host`'s swarm and listen on `config.listen_addrs`.

    Raises:
        ListenError: if any listen address cannot be bound; the message names
            the address and the OS error, e.g. "Address already in use".
    """
    swarm = host.get_network()
    addrs = [multiaddr.Multiaddr(a) for a in config.listen_addrs]
    failure: ListenError | None = None
    with collapse_single_errors():
        async with background_trio_service(swarm):
            await swarm.listen(*addrs)
            failure = _listen_failure(swarm, addrs)
            if failure is None:
                logger.info(
                    "host listening peer_id=%s addrs=%s",
                    host.get_id(),
                    [str(a) for a in host.get_addrs()],
                )
                try:
                    yield host
                finally:
                    logger.info("host stopping peer_id=%s", host.get_id())
                    with trio.CancelScope(shield=True):
                        await host.close()
                    _close_leftovers(swarm)
            else:
                with trio.CancelScope(shield=True):
                    await host.close()
    if failure is not None:
        raise failure


@contextmanager
def collapse_single_errors() -> Iterator[None]:
    """Re-raise an exception group holding one exception as that exception.

    Nurseries inside a context manager wrap whatever the caller's block
    raises; callers of `open_service` expect `DialError`, not a group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        raise leaf from None


def _close_leftovers(swarm: Swarm) -> None:
    for transport in swarm.transport_manager.get_transports():
        if isinstance(transport, _Tcp):
            count = transport.close_leftovers()
            if count:
                logger.info("closed sockets left open at stop count=%d", count)


def _listen_failure(
    swarm: Swarm, addrs: list[multiaddr.Multiaddr]
) -> ListenError | None:
    tcp = next(
        t for t in swarm.transport_manager.get_transports() if isinstance(t, _Tcp)
    )
    for addr in addrs:
        if str(addr) in swarm.listeners:
            continue
        error = tcp.listen_errors.get(str(addr))
        detail = error.strerror if error is not None else "no listener started"
        if error is not None and error.errno == errno.EADDRINUSE:
            detail += "; another process holds the port"
        # Named as a node operator sets it: the --listen flag of `start` or
        # p2p.listen in config.toml, both passed here as listen_addrs.
        return ListenError(
            f"cannot listen on {addr}: {detail}; choose another address with "
            "--listen or the p2p.listen setting"
        )
    return None
