"""GossipSub for the mesh's topics: py-libp2p's router with safe settings.

py-libp2p 0.8.1's ``Pubsub`` and ``GossipSub`` speak the wire protocol
correctly, but their defaults lose messages without telling anyone. This module
configures and subclasses them as follows:

- StrictSign: every message is signed by its origin and verified on every hop.
- Message ids are the SHA-256 of the data, so the application gets the same
  bytes once, no matter which peer publishes or forwards them.
- The router's built-in spam check (10 messages/s per forwarder and topic,
  applied to our own publishes too, dropped silently) is off. A token bucket per
  forwarding peer (:class:`PeerRateLimiter`) runs before the signature check.
- Adaptive gossip is off, so the heartbeat stays at ``heartbeat_interval``
  (py-libp2p stretches it to 30-60 s when it rates the network unhealthy).
- Our own messages are flooded to every peer subscribed to the topic (flood
  publish, as in go-libp2p-pubsub), so a leaf of a star reaches the hub and a
  hub reaches every leaf without waiting for IHAVE/IWANT gossip.
- ``publish`` raises :class:`MessageTooLarge` above ``max_message_size`` and
  :class:`PublishBackpressure` when a subscriber's send queue stays full
  (py-libp2p drops from its 32-entry queues and logs at DEBUG).
- Validators are plain functions ``bytes -> Verdict``. One that raises counts as
  a rejection, logged with the forwarding peer id. No error from a peer's
  stream or message escapes into the caller's nursery.
- The checks, local delivery and forwarding of each message run in our own
  code, not in ``Pubsub.push_msg`` and ``GossipSub.publish``: that skips a
  signed peer record per forwarded message, a task per duplicate copy and a
  second signature check of our own messages.

Public API::

    topic_name(network: str, name: str) -> str
    GossipParams(network, d, d_lo, d_hi, heartbeat_interval, ...).validate()
    Verdict(accepted: bool, reason: str); ACCEPT; reject(reason) -> Verdict
    GossipMessage(topic, data, origin, forwarder, message_id)
    PeerRateLimiter(rate, burst, max_peers).allow(peer, now) -> bool
    async with open_gossip(host, params) as gossip:
        gossip.topic(name) -> str
        await gossip.subscribe(topic, validator=None)
            -> trio.MemoryReceiveChannel[GossipMessage]
        await gossip.unsubscribe(topic)
        await gossip.publish(topic, data) -> bytes  (the message id)
        gossip.topic_peers(topic) -> list[str]; gossip.mesh_peers(topic)
        gossip.stats() -> GossipStats

Errors: ``GossipError(P2PError)`` and its subclasses ``TopicError``,
``MessageTooLarge``, ``MessageRejected``, ``PublishBackpressure``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import (
    PROTOCOL_ID,
    PROTOCOL_ID_V11,
    PROTOCOL_ID_V12,
    GossipSub,
)
from libp2p.pubsub.mcache import CacheEntry, MessageCache
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import signature_validator
from libp2p.tools.anyio_service import background_trio_service

from p2p import P2PError

logger = logging.getLogger(__name__)

TOPIC_PREFIX: Final = "/synaptic-mesh/"

# py-libp2p reads pubsub RPC frames up to 1 MiB; the message, its signature,
# key and topic must fit in one frame with room to spare.
_RPC_FRAME_LIMIT: Final = 1024 * 1024
_RPC_OVERHEAD_ALLOWANCE: Final = 16 * 1024


class GossipError(P2PError):
    """Root of the errors raised by the gossip layer."""


class TopicError(GossipError):
    """A topic name is outside this network's namespace, or already subscribed."""


class MessageTooLarge(GossipError):
    """A message to publish exceeds ``GossipParams.max_message_size``."""


class MessageRejected(GossipError):
    """The topic's validator rejected a message that we tried to publish."""


class PublishBackpressure(GossipError):
    """Subscribers' send queues stayed full; the message was not sent to all."""


def topic_name(network: str, name: str) -> str:
    """Return the full topic name ``/synaptic-mesh/<network>/<name>``."""
    return f"{TOPIC_PREFIX}{network}/{name}"


@dataclass(frozen=True, slots=True)
class GossipParams:
    """Settings of the gossip layer; ``validate()`` before use."""

    network: str = "default"
    # Mesh degree D and its bounds; the GossipSub v1.1 spec suggests D=6,
    # D_lo=5, D_hi=12. Every forwarded message is sent to the whole mesh, so
    # a node receives about one copy per mesh peer, and DHT lookups soon
    # connect small networks completely. D_hi=8 caps the copies per node
    # at 8 instead of one per peer. A hub with more than D_hi leaves keeps
    # D of them in its mesh and reaches the rest by IHAVE/IWANT gossip,
    # about one heartbeat later.
    d: int = 6
    d_lo: int = 4
    d_hi: int = 8
    # The spec and rust-libp2p use a 1 s heartbeat; py-libp2p's default is 120 s.
    heartbeat_interval: float = 1.0
    # Number of heartbeats whose message ids go into IHAVE gossip, and kept
    # in the message cache for IWANT (spec defaults 3 and 5).
    gossip_window: int = 3
    gossip_history: int = 5
    # How long a message id stays in the seen cache; a copy arriving later is
    # delivered again (go-libp2p-pubsub uses 120 s).
    seen_ttl: int = 120
    # Send our own messages to every subscribed peer, not only the mesh.
    flood_publish: bool = True
    # Bytes of application data per message.
    max_message_size: int = 512 * 1024
    # Token bucket per forwarding peer: sustained messages/s and burst size.
    # The rate must exceed the whole network's message rate, because a mesh
    # neighbour forwards every message on the topic.
    peer_rate: float = 500.0
    peer_burst: float = 1000.0
    # Peers tracked by the rate limiter at once (least recently seen evicted).
    max_tracked_peers: int = 4096
    # Outbound RPCs queued per peer before py-libp2p drops (its default is 32).
    send_queue_size: int = 512
    # ``publish`` waits while a subscriber's queue contains this many RPCs ...
    backpressure_high_water: int = 384
    # ... for at most this many seconds, then raises PublishBackpressure.
    publish_timeout: float = 2.0
    # Messages buffered per local subscription before new ones are dropped.
    subscription_buffer: int = 1024
    # go-libp2p-pubsub sends IDONTWANT only for messages of at least 1 KiB;
    # below that the control message costs as much as the duplicate it saves.
    idontwant_min_size: int = 1024
    # Whether our own published messages are also delivered to our own
    # subscription channels.
    deliver_own: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range."""
        if not self.network or "/" in self.network:
            raise ValueError(f"network={self.network!r} must be non-empty without '/'")

        if not 1 <= self.d_lo <= self.d <= self.d_hi:
            raise ValueError(
                f"degrees must satisfy 1 <= d_lo={self.d_lo} <= d={self.d} "
                f"<= d_hi={self.d_hi}"
            )
        if not 0.05 <= self.heartbeat_interval <= 60:
            raise ValueError(
                f"heartbeat_interval={self.heartbeat_interval} must be in [0.05, 60]"
            )
        if not 1 <= self.gossip_window <= self.gossip_history:
            raise ValueError(
                f"gossip_window={self.gossip_window} must be in "
                f"[1, gossip_history={self.gossip_history}]"
            )
        if self.seen_ttl < 1:
            raise ValueError(f"seen_ttl={self.seen_ttl} must be at least 1 s")

        limit = _RPC_FRAME_LIMIT - _RPC_OVERHEAD_ALLOWANCE
        if not 1 <= self.max_message_size <= limit:
            raise ValueError(
                f"max_message_size={self.max_message_size} must be in [1, {limit}]"
            )
        if not (self.peer_rate > 0 and self.peer_burst >= 1):
            raise ValueError(
                f"peer_rate={self.peer_rate} must be > 0 and "
                f"peer_burst={self.peer_burst} >= 1"
            )
        if self.max_tracked_peers < 1:
            raise ValueError(f"max_tracked_peers={self.max_tracked_peers} must be >= 1")

        if not 1 <= self.backpressure_high_water < self.send_queue_size:
            raise ValueError(
                f"backpressure_high_water={self.backpressure_high_water} must be in "
                f"[1, send_queue_size={self.send_queue_size})"
            )
        if self.publish_timeout <= 0:
            raise ValueError(f"publish_timeout={self.publish_timeout} must be > 0")
        if self.subscription_buffer < 1:
            raise ValueError(
                f"subscription_buffer={self.subscription_buffer} must be >= 1"
            )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A validator's decision on one message."""

    accepted: bool
    reason: str = ""


ACCEPT: Final = Verdict(True)


def reject(reason: str) -> Verdict:
    """Return a rejecting verdict that carries `reason` into the log."""
    return Verdict(False, reason)


Validator = Callable[[bytes], Verdict]


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """A validated message delivered to a local subscriber.

    ``origin`` is the peer id that signed the message; ``forwarder`` is the
    connected peer that sent us this copy (equal to ``origin`` on one hop).
    """

    topic: str
    data: bytes
    origin: str
    forwarder: str
    message_id: bytes


@dataclass(frozen=True, slots=True)
class GossipStats:
    """Counters since the gossip layer started."""

    published: int
    delivered: int
    rejected: int
    rate_limited: int
    contained_errors: int
    subscriber_overflow: int
    own_send_drops: int
    forward_send_drops: int
    duplicates: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class PeerRateLimiter:
    """Token bucket per peer, driven by an explicit clock.

    Each peer starts with ``burst`` tokens; a message costs one token and
    tokens refill at ``rate`` per second up to ``burst``. At most ``max_peers``
    buckets are kept, and the least recently used one is evicted first. An
    evicted peer starts again with a full bucket, which costs at most one
    burst per eviction.
    """

    def __init__(self, rate: float, burst: float, max_peers: int = 4096) -> None:
        if not (rate > 0 and burst >= 1 and max_peers >= 1):
            raise ValueError(
                f"rate={rate} must be > 0, burst={burst} >= 1, max_peers={max_peers} >= 1"
            )
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, peer: str, now: float) -> bool:
        """Take one token from `peer`'s bucket; return False if it is empty."""
        tokens, last = self._buckets.pop(peer, (self.burst, now))
        elapsed = max(0.0, now - last)
        tokens = min(self.burst, tokens + elapsed * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[peer] = (tokens, now)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return allowed

    def forget(self, peer: str) -> None:
        """Drop `peer`'s bucket, for example when it disconnects."""
        self._buckets.pop(peer, None)

    def __len__(self) -> int:
        return len(self._buckets)


def content_message_id(msg: rpc_pb2.Message) -> bytes:
    """Return the SHA-256 digest of the message data, its GossipSub id."""
    return hashlib.sha256(msg.data).digest()


class _Throttle:
    """Let one log line per key through per `interval` seconds."""

    def __init__(self, interval: float = 10.0, max_keys: int = 1024) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._last: OrderedDict[str, float] = OrderedDict()

    def ready(self, key: str, now: float) -> bool:
        last = self._last.get(key, -math.inf)
        if now - last < self._interval:
            return False
        self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self._max_keys:
            self._last.popitem(last=False)
        return True


class _Counters:
    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.rejected = 0
        self.rate_limited = 0
        self.contained_errors = 0
        self.subscriber_overflow = 0
        self.own_send_drops = 0
        self.forward_send_drops = 0
        self.duplicates = 0
        self.rejected_by_reason: dict[str, int] = {}


class _ContentMessageCache(MessageCache):
    """GossipSub's message cache keyed by the content-addressed message id."""

    def put(self, msg: rpc_pb2.Message) -> None:
        mid = content_message_id(msg)
        if mid not in self.msgs:
            self.msgs[mid] = msg
            self.history[0].append(CacheEntry(mid, msg.topicIDs))


class _MeshRouter(GossipSub):
    """GossipSub with flood publish, sized send queues and drop accounting."""

    def __init__(self, params: GossipParams, counters: _Counters) -> None:
        super().__init__(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=params.d,
            degree_low=params.d_lo,
            degree_high=params.d_hi,
            gossip_window=params.gossip_window,
            gossip_history=params.gossip_history,
            heartbeat_interval=params.heartbeat_interval,  # type: ignore[arg-type]
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            # The diversity check wants 3 distinct IPs in every mesh and grafts
            # extra peers each heartbeat until it has them, which never settles
            # on one host or behind one NAT.
            eclipse_protection_enabled=False,
        )
        self._params = params
        self._counters = counters
        # py-libp2p's cache keys messages by from+seqno, so IHAVE carried ids
        # that never matched the content-addressed seen cache, and every
        # IHAVE led to an IWANT for messages already delivered.
        self.mcache = _ContentMessageCache(params.gossip_window, params.gossip_history)

    async def flush_pending_messages(self, peer_id: ID) -> None:
        # Pubsub creates the peer's RpcQueue with py-libp2p's 32 entries just
        # before calling this hook, so this is where it gets our size.
        pubsub = self.pubsub
        if pubsub is not None:
            queue = pubsub.peer_queues.get(peer_id)
            if queue is not None:
                queue._queue.max_size = self._params.send_queue_size
        await super().flush_pending_messages(peer_id)

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        """Forward a validated message to its mesh (or, if ours, every) peer.

        Replaces GossipSub.publish, which re-signs our peer record for every
        message, applies the 10 msg/s spam check, keeps per-message health
        statistics and queues copies for peers still being identified (the
        message cache replays those on subscription anyway).
        """
        pubsub = self.pubsub
        if pubsub is None:
            return
        self.mcache.put(pubsub_msg)
        msg_id = content_message_id(pubsub_msg)
        origin = ID(pubsub_msg.from_id)
        topics = list(pubsub_msg.topicIDs)
        peers = self._get_peers_to_send(topics, msg_forwarder, origin, msg_id)
        if len(pubsub_msg.data) >= self._params.idontwant_min_size:
            await self._emit_idontwant_for_message(msg_id, topics)
        rpc = rpc_pb2.RPC(publish=[pubsub_msg])
        scorer = self.scorer
        for peer_id in peers:
            if peer_id not in pubsub.peers:
                continue
            if scorer is not None and not scorer.allow_publish(peer_id, topics):
                continue
            self.send_rpc(peer_id, rpc)
        now = int(time.time())
        for topic in topics:
            # Read by the fanout heartbeat to expire unused fanout topics.
            self.time_since_last_publish[topic] = now

    def send_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        if rpc.publish and rpc.senderRecord:
            # py-libp2p attaches the signed peer record to IWANT replies too,
            # costing the receiver a signature check per RPC; the hello packet
            # and identify already carry it once per connection.
            rpc = rpc_pb2.RPC(publish=rpc.publish, subscriptions=rpc.subscriptions)
        super().send_rpc(peer_id, rpc, priority)

    def _handle_dropped_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, reason: str) -> None:
        pubsub = self.pubsub
        own = pubsub.my_id.to_bytes() if pubsub is not None else b""
        for msg in rpc.publish:
            if msg.from_id == own:
                self._counters.own_send_drops += 1
            else:
                self._counters.forward_send_drops += 1
        if rpc.publish:
            logger.warning(
                "gossip send dropped peer_id=%s reason=%s messages=%d",
                peer_id,
                reason,
                len(rpc.publish),
            )
        super()._handle_dropped_rpc(peer_id, rpc, reason)


class _MeshPubsub(Pubsub):
    """Pubsub that contains peer errors, rate-limits peers and feeds our channels."""

    def __init__(
        self,
        host: IHost,
        router: _MeshRouter,
        params: GossipParams,
        counters: _Counters,
    ) -> None:
        super().__init__(
            host,
            router,
            seen_ttl=params.seen_ttl,
            strict_signing=True,
            msg_id_constructor=content_message_id,
            max_inbound_rpc_size=_RPC_FRAME_LIMIT,
        )
        self._params = params
        self._counters = counters
        self._limiter = PeerRateLimiter(
            params.peer_rate, params.peer_burst, params.max_tracked_peers
        )
        self._log_throttle = _Throttle()
        self.channels: dict[str, trio.MemorySendChannel[GossipMessage]] = {}
        self.validators: dict[str, Validator] = {}
        # Called with (peer_id, reason) for every rejected message, so a peer
        # scorer outside the gossip layer can count them.
        self.report_rejection: Callable[[str, str], None] | None = None

    def log_peer_problem(self, peer_id: ID | str, message: str, *args: object) -> None:
        """Log a peer's misbehaviour at WARNING, at most once per 10 s per peer."""
        if self._log_throttle.ready(str(peer_id), trio.current_time()):
            logger.warning(message, peer_id, *args)

    async def stream_handler(self, stream) -> None:  # type: ignore[no-untyped-def]
        peer_id = stream.muxed_conn.peer_id
        try:
            await super().stream_handler(stream)
        except Exception as exc:
            self._counters.contained_errors += 1
            self.log_peer_problem(
                peer_id, "gossip stream failed peer_id=%s error=%r", exc
            )
            try:
                await stream.reset()
            except Exception:
                logger.debug("gossip stream reset failed peer_id=%s", peer_id)
            self._handle_dead_peer(peer_id)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """Check one message, deliver it locally and hand it to the router.

        Replaces Pubsub.push_msg so that the rate limit runs before any
        signature check, our own messages skip re-verification and validators
        see the forwarder. No error from a peer's message escapes, because in
        py-libp2p a malformed ``key`` field made the signature check raise and
        stopped the whole Pubsub service.
        """
        try:
            if self._accept(msg_forwarder, msg):
                await self.router.publish(msg_forwarder, msg)
        except Exception as exc:
            self._counters.contained_errors += 1
            self.log_peer_problem(
                msg_forwarder, "gossip message dropped peer_id=%s error=%r", exc
            )

    def _accept(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        own = forwarder == self.my_id
        if not own and not self._limiter.allow(str(forwarder), trio.current_time()):
            self._counters.rate_limited += 1
            self.log_peer_problem(
                forwarder,
                "gossip message rate-limited peer_id=%s rate=%s/s",
                self._params.peer_rate,
            )
            return False
        msg_id = content_message_id(msg)
        if self.seen_messages.has(msg_id):
            return False
        if forwarder in self.blacklisted_peers:
            return False
        if not own:
            verdict = self._check_remote(msg)
            if not verdict.accepted:
                self._reject(forwarder, list(msg.topicIDs), verdict.reason)
                return False
        self.seen_messages.add(msg_id)
        self._deliver(msg, forwarder, msg_id)
        return True

    def _check_remote(self, msg: rpc_pb2.Message) -> Verdict:
        if msg.from_id == self.my_id.to_bytes():
            return reject("message claims to come from this node")
        if len(msg.data) > self._params.max_message_size:
            return reject(f"size {len(msg.data)} > max {self._params.max_message_size}")
        if not signature_validator(msg):
            return reject("invalid signature")
        for topic in msg.topicIDs:
            validator = self.validators.get(topic)
            if validator is not None:
                verdict = _run_validator(validator, msg.data)
                if not verdict.accepted:
                    return verdict
        return ACCEPT

    def _reject(self, forwarder: ID, topics: list[str], reason: str) -> None:
        self._counters.rejected += 1
        reasons = self._counters.rejected_by_reason
        key = reason.split(":", 1)[0][:64]
        reasons[key] = reasons.get(key, 0) + 1
        scorer = getattr(self.router, "scorer", None)
        if scorer is not None:
            for topic in topics:
                scorer.on_invalid_message(forwarder, topic)
        if self.report_rejection is not None:
            self.report_rejection(str(forwarder), f"gossip: {reason}")
        self.log_peer_problem(
            forwarder,
            "gossip message rejected peer_id=%s topics=%s reason=%s",
            topics,
            reason,
        )

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        # Pubsub's read loop calls this before it spawns a task per message.
        # Returning False for copies already seen saves that task for every
        # duplicate, and in a mesh of degree D most arrivals are duplicates.
        if self.seen_messages.has(content_message_id(msg)):
            self._counters.duplicates += 1
            return False
        return any(topic in self.channels for topic in msg.topicIDs)

    def _handle_dead_peer(self, peer_id: ID) -> None:
        self._limiter.forget(str(peer_id))
        super()._handle_dead_peer(peer_id)

    def _deliver(self, msg: rpc_pb2.Message, forwarder: ID, msg_id: bytes) -> None:
        if forwarder == self.my_id and not self._params.deliver_own:
            return
        origin = str(ID(msg.from_id))
        for topic in msg.topicIDs:
            channel = self.channels.get(topic)
            if channel is None:
                continue
            item = GossipMessage(topic, msg.data, origin, str(forwarder), msg_id)
            try:
                channel.send_nowait(item)
                self._counters.delivered += 1
            except trio.WouldBlock:
                self._counters.subscriber_overflow += 1
                self.log_peer_problem(
                    "subscriber:" + topic,
                    "gossip subscriber full, message dropped topic=%s buffer=%d",
                    self._params.subscription_buffer,
                )
            except trio.BrokenResourceError:
                logger.debug("gossip subscriber closed topic=%s", topic)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        # Delivery happens in _deliver, which receives the forwarder.
        return


def _run_validator(validator: Validator, data: bytes) -> Verdict:
    try:
        verdict = validator(data)
    except Exception as exc:
        return reject(f"validator raised {type(exc).__name__}: {exc}")
    if not isinstance(verdict, Verdict):
        return reject(f"validator returned {type(verdict).__name__}, not Verdict")
    return verdict


class Gossip:
    """The node's GossipSub endpoint; create it with :func:`open_gossip`."""

    def __init__(self, host: IHost, params: GossipParams) -> None:
        params.validate()
        self.params = params
        self._host = host
        self._counters = _Counters()
        self.router = _MeshRouter(params, self._counters)
        self.pubsub = _MeshPubsub(host, self.router, params, self._counters)
        # p2p.host's MeshHost carries the node's guard; its peer score then
        # counts gossip rejections too.
        guard = getattr(host, "guard", None)
        self.pubsub.report_rejection = getattr(guard, "report", None)

    @property
    def peer_id(self) -> str:
        """This node's peer id in base58."""
        return str(self._host.get_id())

    def topic(self, name: str) -> str:
        """Return the full topic name for `name` in this network.

        A name that starts with ``/`` must already be a full name of this
        network; any other name gets the ``/synaptic-mesh/<network>/`` prefix.
        """
        prefix = topic_name(self.params.network, "")
        if name.startswith("/"):
            if not name.startswith(prefix) or len(name) == len(prefix):
                raise TopicError(f"topic {name!r} is outside namespace {prefix!r}")
            return name
        if not name:
            raise TopicError("topic name must not be empty")
        return prefix + name

    async def subscribe(
        self, topic: str, validator: Validator | None = None
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Join `topic` and return the channel of its validated messages.

        `validator` gets each message's data from other peers and returns a
        :class:`Verdict`; it runs inside the Pubsub service, so it must be fast
        and must not block. Messages larger than ``max_message_size`` are
        rejected before it runs. Raises :class:`TopicError` if already
        subscribed.
        """
        full = self.topic(topic)
        if full in self.pubsub.channels:
            raise TopicError(f"already subscribed to {full!r}")
        send, receive = trio.open_memory_channel[GossipMessage](
            self.params.subscription_buffer
        )
        self.pubsub.channels[full] = send
        if validator is not None:
            self.pubsub.validators[full] = validator
        # Messages reach our channel through _MeshPubsub._deliver, so the
        # subscription object that Pubsub returns is never read.
        await self.pubsub.subscribe(full)
        logger.info("gossip subscribed topic=%s", full)
        return receive

    async def unsubscribe(self, topic: str) -> None:
        """Leave `topic` and close its channel."""
        full = self.topic(topic)
        send = self.pubsub.channels.pop(full, None)
        self.pubsub.validators.pop(full, None)
        await self.pubsub.unsubscribe(full)
        if send is not None:
            await send.aclose()
        logger.info("gossip unsubscribed topic=%s", full)

    async def publish(self, topic: str, data: bytes) -> bytes:
        """Sign and send `data` to `topic`'s subscribers; return its message id.

        Data identical to a message seen in the last ``seen_ttl`` seconds is not
        sent again (the ids are content hashes). Raises
        :class:`MessageTooLarge`, :class:`MessageRejected` when the topic's own
        validator rejects `data`, and :class:`PublishBackpressure` when a
        subscriber's send queue stays above the high-water mark for
        ``publish_timeout`` seconds or a queue dropped this message.
        """
        full = self.topic(topic)
        if len(data) > self.params.max_message_size:
            raise MessageTooLarge(
                f"message of {len(data)} bytes exceeds "
                f"max_message_size={self.params.max_message_size}"
            )
        validator = self.pubsub.validators.get(full)
        if validator is not None:
            verdict = _run_validator(validator, data)
            if not verdict.accepted:
                raise MessageRejected(f"topic {full!r}: {verdict.reason}")
        await self._wait_for_send_room(full)
        drops_before = self._counters.own_send_drops
        await self.pubsub.publish(full, data)
        self._counters.published += 1
        dropped = self._counters.own_send_drops - drops_before
        if dropped:
            raise PublishBackpressure(
                f"topic {full!r}: send queues of {dropped} peers were full; the "
                "message went only to the others"
            )
        return hashlib.sha256(data).digest()

    async def _wait_for_send_room(self, topic: str) -> None:
        high = self.params.backpressure_high_water
        deadline = trio.current_time() + self.params.publish_timeout
        while True:
            queues = self.pubsub.peer_queues
            full = [
                peer_id
                for peer_id in self.pubsub.peer_topics.get(topic, ())
                if peer_id in queues and len(queues[peer_id]) >= high
            ]
            if not full:
                return
            if trio.current_time() >= deadline:
                raise PublishBackpressure(
                    f"topic {topic!r}: send queues of {len(full)} peers stayed at "
                    f">= {high} RPCs for {self.params.publish_timeout} s "
                    f"(first: {full[0]})"
                )
            await trio.sleep(0.005)

    def topic_peers(self, topic: str) -> list[str]:
        """Return the connected peers subscribed to `topic`."""
        return sorted(
            str(p) for p in self.pubsub.peer_topics.get(self.topic(topic), ())
        )

    def mesh_peers(self, topic: str) -> list[str]:
        """Return the peers in our GossipSub mesh for `topic`."""
        return sorted(str(p) for p in self.router.mesh.get(self.topic(topic), ()))

    def stats(self) -> GossipStats:
        """Return a snapshot of the counters."""
        c = self._counters
        return GossipStats(
            published=c.published,
            delivered=c.delivered,
            rejected=c.rejected,
            rate_limited=c.rate_limited,
            contained_errors=c.contained_errors,
            subscriber_overflow=c.subscriber_overflow,
            own_send_drops=c.own_send_drops,
            forward_send_drops=c.forward_send_drops,
            duplicates=c.duplicates,
            rejected_by_reason=dict(c.rejected_by_reason),
        )


@asynccontextmanager
async def open_gossip(host: IHost, params: GossipParams) -> AsyncIterator[Gossip]:
    """Run GossipSub on a running `host` for the duration of the block.

    The host must already be listening; Pubsub registers its stream handlers
    and connection notifee here, so peers connected earlier are not seen.
    """
    gossip = Gossip(host, params)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(background_trio_service(gossip.pubsub))
        await stack.enter_async_context(background_trio_service(gossip.router))
        await gossip.pubsub.wait_until_ready()
        logger.info(
            "gossip started peer_id=%s network=%s", gossip.peer_id, params.network
        )
        try:
            yield gossip
        finally:
            logger.info("gossip stopping peer_id=%s", gossip.peer_id)
