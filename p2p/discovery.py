"""DHT service discovery on py-libp2p's Kademlia DHT.

A node that serves something (a model, a task type) announces it as a
provider record under the key ``multihash(sha256(text))``, where text is
``/synaptic-mesh/<network>/service/<name>``. It republishes the record every
``republish_interval`` seconds. Every copy expires ``provider_ttl`` seconds
after its last announcement, so a provider that dies disappears from lookups
within one TTL.

py-libp2p 0.8.1's ``KadDHT`` is used in server mode with these changes:

- A connected peer enters the routing table once identify shows it serves
  ``/ipfs/kad/1.0.0``, and leaves it when its last connection closes. Stock
  py-libp2p adds peers only from its own lookups and adds any peer that opens a
  DHT stream, so client-mode peers entered servers' tables.
- Provider records live in :class:`ProviderRecords`, a sans-IO table with a
  short TTL, instead of py-libp2p's 48 h store. Records learned from lookups
  are not cached locally, so a lookup never returns a copy older than one TTL.
- ``find_providers`` queries the peers closest to the key, accepts a provider
  only with a valid signed peer record for that same peer id, takes the
  addresses from that record, and returns each provider once.
- ``bootstrap`` dials its peers one at a time with retries, then walks the DHT
  towards its own id. Concurrent bootstraps in py-libp2p left most tables
  nearly empty.

The DHT protocol id stays ``/ipfs/kad/1.0.0`` so other libp2p software can
join; the network name lives in every key instead.

Public API::

    service_key(network: str, name: str) -> bytes
    DiscoveryParams(network, provider_ttl, republish_interval, ...).validate()
    ProviderRecords(ttl, max_per_key, max_keys): add(key, peer, addrs, now),
        get(key, now) -> list[ProviderInfo], expire(now) -> int
    ProviderInfo(peer_id: str, addrs: tuple[str, ...])
    async with open_discovery(host, params) as discovery:
        await discovery.provide(name) -> int   (peers that took the record)
        await discovery.stop_providing(name)
        await discovery.find_providers(name, timeout=None) -> list[ProviderInfo]
        await discovery.bootstrap(addrs: Sequence[str]) -> int
        discovery.routing_table_peers() -> list[str]
        discovery.provided() -> list[str]

Errors: ``DiscoveryError(P2PError)``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import multiaddr
import trio
import varint
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import MAX_DHT_MESSAGE_SIZE, PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.kad_dht.provider_store import ProviderStore
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from p2p import P2PError

logger = logging.getLogger(__name__)

_KAD_PROTOCOL: Final = str(PROTOCOL_ID)
_SHA2_256_MULTIHASH_PREFIX: Final = b"\x12\x20"
_PEER_RECORD_DOMAIN: Final = "libp2p-peer-record"
# Addresses kept per provider, and providers accepted from one response.
_MAX_ADDRS: Final = 16
_MAX_PROVIDERS_PER_RESPONSE: Final = 20


class DiscoveryError(P2PError):
    """A discovery operation failed or got invalid input."""


def service_key(network: str, name: str) -> bytes:
    """Return the DHT key of service `name`: a SHA-256 multihash.

    The hashed text is ``/synaptic-mesh/<network>/service/<name>``, so the
    same service name in two networks gives two keys.
    """
    if not name or "/" in name:
        raise DiscoveryError(f"service name {name!r} must be non-empty without '/'")
    text = f"/synaptic-mesh/{network}/service/{name}"
    return _SHA2_256_MULTIHASH_PREFIX + hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True, slots=True)
class DiscoveryParams:
    """Settings of DHT discovery; ``validate()`` before use."""

    network: str = "default"
    # Seconds a provider record lives after its last announcement. IPFS uses
    # 48 h; a mesh service must vanish soon after its node dies.
    provider_ttl: float = 90.0
    # Seconds between announcements; None means provider_ttl / 3, so two
    # announcements may be lost before a live provider's record expires.
    republish_interval: float | None = None
    # Seconds one find_providers call may take when the caller passes none.
    lookup_timeout: float = 10.0
    # Providers returned per lookup, and kept per key.
    max_providers: int = 20
    # Keys kept in the provider table; the least recently announced go first.
    max_keys: int = 10_000
    # Peers queried for providers at once.
    lookup_concurrency: int = 10
    # Seconds to wait for identify to name a new peer's protocols.
    identify_wait: float = 10.0
    # Dial attempts per bootstrap address, and the first retry delay (doubled
    # after each failure).
    bootstrap_attempts: int = 4
    bootstrap_backoff: float = 0.5
    # Seconds between walks towards our own id that refill the routing table.
    # Each walk dials the peers it finds, and py-libp2p keeps those
    # connections, so a short interval soon connects a small network
    # completely. 600 s is py-libp2p's own refresh interval.
    refresh_interval: float = 600.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range."""
        if not self.network or "/" in self.network:
            raise ValueError(f"network={self.network!r} must be non-empty without '/'")
        if not self.provider_ttl >= 1:
            raise ValueError(f"provider_ttl={self.provider_ttl} must be >= 1 s")
        interval = self.effective_republish_interval
        if not 0 < interval < self.provider_ttl:
            raise ValueError(
                f"republish_interval={interval} must be in "
                f"(0, provider_ttl={self.provider_ttl})"
            )
        positive = (
            "lookup_timeout",
            "identify_wait",
            "bootstrap_backoff",
            "refresh_interval",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("max_providers", "max_keys", "lookup_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.bootstrap_attempts < 1:
            raise ValueError(
                f"bootstrap_attempts={self.bootstrap_attempts} must be >= 1"
            )

    @property
    def effective_republish_interval(self) -> float:
        """The republish interval, with the default filled in."""
        if self.republish_interval is None:
            return self.provider_ttl / 3
        return self.republish_interval


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A peer that provides a service, with the addresses to dial it."""

    peer_id: str
    addrs: tuple[str, ...]


class ProviderRecords:
    """Provider records with a TTL, driven by an explicit clock.

    Invariants: a key maps to at most ``max_per_key`` providers, and the
    table contains at most ``max_keys`` keys. ``get`` never returns a record
    whose last ``add`` is ``ttl`` or more seconds before ``now``. A full key
    keeps its current providers and ignores new ones until some expire, as
    the Kademlia limit of k providers per key does.
    """

    def __init__(self, ttl: float, max_per_key: int = 20, max_keys: int = 10_000):
        if not (ttl > 0 and max_per_key >= 1 and max_keys >= 1):
            raise ValueError(
                f"ttl={ttl} must be > 0, max_per_key={max_per_key} and "
                f"max_keys={max_keys} >= 1"
            )
        self.ttl = ttl
        self.max_per_key = max_per_key
        self.max_keys = max_keys
        self._records: OrderedDict[bytes, dict[str, tuple[float, tuple[str, ...]]]]
        self._records = OrderedDict()

    def add(self, key: bytes, peer: str, addrs: Sequence[str], now: float) -> bool:
        """Store or refresh `peer` as a provider of `key`; return False if full."""
        self._expire_key(key, now)
        providers = self._records.get(key)
        if providers is None:
            providers = {}
            self._records[key] = providers
        if peer not in providers and len(providers) >= self.max_per_key:
            return False
        providers[peer] = (now, tuple(addrs)[:_MAX_ADDRS])
        self._records.move_to_end(key)
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)
        return True

    def remove(self, key: bytes, peer: str) -> None:
        """Forget `peer` as a provider of `key`."""
        providers = self._records.get(key)
        if providers is not None:
            providers.pop(peer, None)
            if not providers:
                del self._records[key]

    def get(self, key: bytes, now: float) -> list[ProviderInfo]:
        """Return the live providers of `key`, most recently announced first."""
        self._expire_key(key, now)
        providers = self._records.get(key, {})
        ordered = sorted(providers.items(), key=lambda item: -item[1][0])
        return [ProviderInfo(peer, addrs) for peer, (_, addrs) in ordered]

    def expire(self, now: float) -> int:
        """Drop every record that has outlived the TTL; return how many."""
        removed = 0
        for key in list(self._records):
            removed += self._expire_key(key, now)
        return removed

    def _expire_key(self, key: bytes, now: float) -> int:
        providers = self._records.get(key)
        if providers is None:
            return 0
        stale = [p for p, (added, _) in providers.items() if now - added >= self.ttl]
        for peer in stale:
            del providers[peer]
        if not providers:
            del self._records[key]
        return len(stale)

    def __len__(self) -> int:
        return sum(len(providers) for providers in self._records.values())


class _TtlProviderStore(ProviderStore):
    """py-libp2p's provider store backed by :class:`ProviderRecords`."""

    def __init__(self, host: IHost, peer_routing: Any, records: ProviderRecords):
        super().__init__(host=host, peer_routing=peer_routing, persist_path=None)
        self.records = records

    def _save(self) -> None:
        pass

    def add_provider(self, key: bytes, provider: PeerInfo) -> None:
        addrs = [str(a) for a in provider.addrs]
        now = trio.current_time()
        if not self.records.add(key, str(provider.peer_id), addrs, now):
            logger.debug(
                "provider table full key=%s peer_id=%s", key.hex(), provider.peer_id
            )

    def get_providers(self, key: bytes) -> list[PeerInfo]:
        found = self.records.get(key, trio.current_time())
        return [
            PeerInfo(
                ID.from_base58(p.peer_id), [multiaddr.Multiaddr(a) for a in p.addrs]
            )
            for p in found
        ]

    def cleanup_expired(self) -> None:
        self.records.expire(trio.current_time())

    async def _republish_provider_records(self) -> None:
        # Discovery republishes on its own, shorter schedule.
        return

    def size(self) -> int:
        return len(self.records)


class _MeshDHT(KadDHT):
    """KadDHT in server mode whose routing table takes only DHT servers."""

    def __init__(self, host: IHost, records: ProviderRecords) -> None:
        super().__init__(host, DHTMode.SERVER, enable_random_walk=False)
        self.provider_store = _TtlProviderStore(host, self.peer_routing, records)

    async def add_peer(
        self, peer_id: ID, *, skip_server_mode_check: bool = False
    ) -> bool:
        # py-libp2p skips its check for any peer that opens a DHT stream, so
        # client-mode peers entered the table; only identify decides here.
        if not _serves_dht(self.host, peer_id):
            return False
        return await self.routing_table.add_peer(peer_id)


def _serves_dht(host: IHost, peer_id: ID) -> bool:
    try:
        protocols = host.get_peerstore().get_protocols(peer_id)
    except Exception:  # the peerstore raises PeerStoreError for unknown peers
        return False
    return _KAD_PROTOCOL in (protocols or ())


class _ConnectionEvents(INotifee):
    """Forward connect and disconnect events to a channel without blocking."""

    def __init__(self, send: trio.MemorySendChannel[tuple[str, ID]]) -> None:
        self._send = send

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._put("connected", conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._put("disconnected", conn)

    def _put(self, kind: str, conn: INetConn) -> None:
        try:
            self._send.send_nowait((kind, conn.muxed_conn.peer_id))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            # A full channel loses one event; the periodic refresh adds the
            # peer later, so the table only lags.
            logger.debug("dht connection event dropped kind=%s", kind)
        except AttributeError:
            logger.debug("dht connection event without peer id kind=%s", kind)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Any) -> None:
        pass


class Discovery:
    """Service discovery over the DHT; create it with :func:`open_discovery`."""

    def __init__(self, host: IHost, params: DiscoveryParams) -> None:
        params.validate()
        self.params = params
        self._host = host
        self.records = ProviderRecords(
            params.provider_ttl, params.max_providers, params.max_keys
        )
        self.dht = _MeshDHT(host, self.records)
        self._provided: dict[str, bytes] = {}
        self._refreshing = False
        self._events_send, self._events_receive = trio.open_memory_channel[
            tuple[str, ID]
        ](1024)

    @property
    def peer_id(self) -> str:
        """This node's peer id in base58."""
        return str(self._host.get_id())

    def key(self, name: str) -> bytes:
        """Return the DHT key of service `name` in this network."""
        return service_key(self.params.network, name)

    async def provide(self, name: str) -> int:
        """Announce that this node provides `name`, and keep announcing it.

        Returns the number of peers that accepted the record now; 0 means only
        the local table has it so far, and the republish loop tries again.
        """
        key = self.key(name)
        self._provided[name] = key
        accepted = await self._announce(name, key)
        logger.info("service provided name=%s peers=%d", name, accepted)
        return accepted

    async def stop_providing(self, name: str) -> None:
        """Stop announcing `name`; remote copies expire within one TTL."""
        key = self._provided.pop(name, None)
        if key is not None:
            self.records.remove(key, self.peer_id)
            logger.info("service no longer provided name=%s", name)

    def provided(self) -> list[str]:
        """Return the service names this node announces."""
        return sorted(self._provided)

    async def _announce(self, name: str, key: bytes) -> int:
        store = self.dht.provider_store
        own = PeerInfo(self._host.get_id(), list(self._host.get_addrs()))
        store.add_provider(key, own)
        closest = await self.dht.peer_routing.find_closest_peers_network(key)
        accepted = 0
        for peer_id in closest:
            if peer_id == self._host.get_id():
                continue
            with trio.move_on_after(self.params.lookup_timeout):
                if await store._send_add_provider(peer_id, key):
                    accepted += 1
        logger.debug("provider announced name=%s peers=%d", name, accepted)
        return accepted

    async def find_providers(
        self, name: str, timeout: float | None = None
    ) -> list[ProviderInfo]:
        """Return the live providers of `name`, each peer once.

        Waits at most `timeout` seconds (default ``lookup_timeout``) and
        returns what it has found by then, possibly an empty list.
        """
        key = self.key(name)
        if timeout is None:
            timeout = self.params.lookup_timeout
        found: dict[str, ProviderInfo] = {}
        for info in self.records.get(key, trio.current_time()):
            found[info.peer_id] = info
        with trio.move_on_after(timeout):
            closest = await self.dht.peer_routing.find_closest_peers_network(key)
            limiter = trio.CapacityLimiter(self.params.lookup_concurrency)
            async with trio.open_nursery() as nursery:
                for peer_id in closest:
                    if peer_id != self._host.get_id():
                        nursery.start_soon(
                            self._query_into, peer_id, key, found, limiter
                        )
        return list(found.values())[: self.params.max_providers]

    async def _query_into(
        self,
        peer_id: ID,
        key: bytes,
        found: dict[str, ProviderInfo],
        limiter: trio.CapacityLimiter,
    ) -> None:
        async with limiter:
            try:
                providers = await self._query_providers(peer_id, key)
            except DiscoveryError as exc:
                logger.warning(
                    "dht response rejected peer_id=%s reason=%s", peer_id, exc
                )
                return
            except Exception as exc:
                logger.debug(
                    "dht provider query failed peer_id=%s error=%r", peer_id, exc
                )
                return
        for info in providers:
            known = found.get(info.peer_id)
            if known is None or (not known.addrs and info.addrs):
                found[info.peer_id] = info

    async def _query_providers(self, peer_id: ID, key: bytes) -> list[ProviderInfo]:
        stream = await self._host.new_stream(peer_id, [TProtocol(PROTOCOL_ID)])
        try:
            request = Message()
            request.type = Message.MessageType.GET_PROVIDERS
            request.key = key
            request.senderRecord = env_to_send_in_RPC(self._host)[0]
            payload = request.SerializeToString()
            await stream.write(varint.encode(len(payload)) + payload)
            raw = await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE)
        finally:
            await stream.close()
        response = Message()
        response.ParseFromString(raw)
        if response.type != Message.MessageType.GET_PROVIDERS or response.key != key:
            raise DiscoveryError("GET_PROVIDERS response has the wrong type or key")
        if len(response.providerPeers) > _MAX_PROVIDERS_PER_RESPONSE:
            raise DiscoveryError(
                f"{len(response.providerPeers)} providers in one response, "
                f"max {_MAX_PROVIDERS_PER_RESPONSE}"
            )
        providers = []
        for entry in response.providerPeers:
            if entry.id == peer_id.to_bytes():
                # Noise authenticated the responder, so it may name itself
                # without a signed record; py-libp2p sends none for itself.
                info = _self_provider(self._host, peer_id, entry)
            else:
                info = _verified_provider(entry)
            if info is None:
                logger.warning(
                    "dht provider rejected peer_id=%s reason=%s",
                    peer_id,
                    "missing or invalid signed peer record",
                )
                continue
            providers.append(info)
        return providers

    def routing_table_peers(self) -> list[str]:
        """Return the peer ids in the DHT routing table."""
        return sorted(str(p) for p in self.dht.routing_table.get_peer_ids())

    async def bootstrap(self, addrs: Sequence[str]) -> int:
        """Dial `addrs` one at a time with retries, then fill the routing table.

        Returns the number of addresses that connected. Raises
        :class:`DiscoveryError` if `addrs` is not empty and none connected.
        """
        connected = 0
        for addr in addrs:
            if await self._dial_with_retries(addr):
                connected += 1
        if addrs and connected == 0:
            raise DiscoveryError(f"no bootstrap peer reachable out of {len(addrs)}")
        await self.refresh()
        return connected

    async def _dial_with_retries(self, addr: str) -> bool:
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise DiscoveryError(
                f"invalid bootstrap address {addr!r}: {exc}; expected "
                "/ip4/<ip>/tcp/<port>/p2p/<peer id>"
            ) from exc
        delay = self.params.bootstrap_backoff
        for attempt in range(1, self.params.bootstrap_attempts + 1):
            try:
                with trio.fail_after(self.params.lookup_timeout):
                    await self._host.connect(info)
                await self._admit_when_identified(info.peer_id)
                return True
            except Exception as exc:
                logger.info(
                    "bootstrap dial failed addr=%s attempt=%d error=%r",
                    addr,
                    attempt,
                    exc,
                )
            if attempt < self.params.bootstrap_attempts:
                await trio.sleep(delay)
                delay *= 2
        return False

    async def refresh(self) -> None:
        """Walk the DHT towards our own id to learn the peers around us."""
        if self._refreshing:
            return
        self._refreshing = True
        try:
            own = self._host.get_id()
            with trio.move_on_after(self.params.lookup_timeout):
                await self.dht.peer_routing.find_closest_peers_network(own.to_bytes())
            for peer_id in self._host.get_connected_peers():
                await self.dht.add_peer(peer_id)
        finally:
            self._refreshing = False
        logger.debug("dht refreshed table_size=%d", self.dht.routing_table.size())

    async def _admit_when_identified(self, peer_id: ID) -> None:
        deadline = trio.current_time() + self.params.identify_wait
        while trio.current_time() < deadline:
            if _serves_dht(self._host, peer_id):
                await self.dht.add_peer(peer_id)
                return
            protocols = _known_protocols(self._host, peer_id)
            if protocols:
                # Identify has run and the peer does not serve the DHT.
                return
            await trio.sleep(0.05)

    async def _watch_connections(self, nursery: trio.Nursery) -> None:
        async for kind, peer_id in self._events_receive:
            if kind == "connected":
                nursery.start_soon(self._admit_when_identified, peer_id)
            elif not self._host.get_network().get_connections(peer_id):
                self.dht.routing_table.remove_peer(peer_id)

    async def _republish_loop(self) -> None:
        interval = self.params.effective_republish_interval
        while True:
            await trio.sleep(interval)
            self.records.expire(trio.current_time())
            for name, key in list(self._provided.items()):
                try:
                    await self._announce(name, key)
                except Exception as exc:
                    logger.warning(
                        "provider republish failed name=%s error=%r", name, exc
                    )

    async def _refresh_loop(self) -> None:
        while True:
            await trio.sleep(self.params.refresh_interval)
            await self.refresh()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the DHT and the discovery loops until cancelled."""
        self._host.get_network().register_notifee(_ConnectionEvents(self._events_send))
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(background_trio_service(self.dht))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_connections, nursery)
                nursery.start_soon(self._republish_loop)
                nursery.start_soon(self._refresh_loop)
                for peer_id in self._host.get_connected_peers():
                    nursery.start_soon(self._admit_when_identified, peer_id)
                logger.info(
                    "discovery started peer_id=%s network=%s ttl=%.0f",
                    self.peer_id,
                    self.params.network,
                    self.params.provider_ttl,
                )
                task_status.started()


def _known_protocols(host: IHost, peer_id: ID) -> list[str]:
    try:
        return list(host.get_peerstore().get_protocols(peer_id) or ())
    except Exception:  # the peerstore raises PeerStoreError for unknown peers
        return []


def _self_provider(host: IHost, peer_id: ID, entry: Any) -> ProviderInfo:
    addrs: list[str] = []
    for raw in entry.addrs[:_MAX_ADDRS]:
        try:
            addrs.append(str(multiaddr.Multiaddr(raw)))
        except Exception:  # multiaddr raises several types for bad bytes
            logger.debug("invalid provider address peer_id=%s", peer_id)
    if not addrs:
        addrs = [str(a) for a in host.get_peerstore().addrs(peer_id)][:_MAX_ADDRS]
    return ProviderInfo(str(peer_id), tuple(addrs))


def _verified_provider(entry: Any) -> ProviderInfo | None:
    """Return the provider in `entry` if its signed peer record proves it."""
    if not entry.signedRecord:
        return None
    try:
        claimed = ID(entry.id)
        _, record = consume_envelope(entry.signedRecord, _PEER_RECORD_DOMAIN)
    except Exception:  # any parse or signature failure means an invalid record
        return None
    if record.peer_id != claimed:
        return None
    addrs = tuple(str(a) for a in record.addrs[:_MAX_ADDRS])
    return ProviderInfo(str(claimed), addrs)


@asynccontextmanager
async def open_discovery(
    host: IHost, params: DiscoveryParams
) -> AsyncIterator[Discovery]:
    """Run DHT discovery on a running `host` for the duration of the block."""
    discovery = Discovery(host, params)
    async with trio.open_nursery() as nursery:
        await nursery.start(discovery.run)
        try:
            yield discovery
        finally:
            logger.info("discovery stopping peer_id=%s", discovery.peer_id)
            nursery.cancel_scope.cancel()
