"""Containment, per-peer limits, peer scores and bans.

In py-libp2p 0.8.1 an exception raised by a stream handler escapes into the
swarm's nursery and an exception inside Pubsub's message task stops the Pubsub
service, so one bad message from a remote peer could stop a node. The guard
sits between peers and every handler:

- `Guard.wrap_stream_handler` runs each inbound stream's handler with a cap on
  concurrent streams per peer. Any exception is logged with the peer id and
  protocol and resets only that stream. It costs the peer score unless it
  is only the error for a stream or connection that the peer closed or reset.
- `Guard.wrap_validator` turns a raising pubsub validator into a rejection.
- `Guard.guard_pubsub` contains Pubsub's per-message task. With strict signing,
  a message whose `from` is not an identity peer id and whose `key` field is
  not a valid protobuf key made py-libp2p's signature check raise instead of
  returning False, and the exception stopped the Pubsub service.
- `Guard.supervise` restarts a service that dies anyway, logging why, with
  exponential backoff.

The scoring core `PeerScorer` is sans-IO: callers pass `now` (seconds, any
monotonic clock) and act on the returned `Ban` actions. A score starts at 0,
each penalty subtracts from it, and it decays back towards 0 with a fixed
half-life, so an honest peer that sends one bad frame recovers, while a peer
that keeps misbehaving falls below `ban_threshold` and is banned for
`ban_seconds`. A token bucket per peer limits the message rate.

Public API:
    GuardParams(...) with validate()
    PeerScorer(params): on_penalty(peer, penalty, reason, now) -> Ban | None,
        allow_message(peer, now) -> bool, score(peer, now), is_banned(peer, now),
        banned_until(peer), forget(peer, now)
    Ban(peer, until, reason)
    Guard(params, clock=trio.current_time):
        attach(host), wrap_stream_handler(protocol_id, handler),
        wrap_validator(topic, validator), guard_pubsub(pubsub),
        report(peer_id, reason, penalty=None), allow_message(peer_id) -> bool,
        stream_slot(peer_id) (context manager), is_banned(peer_id),
        on_inbound_rejected(remote, reason),
        async supervise(name, async_fn, task_status), async run(task_status),
        rejections: Counter[(peer_id, reason)]
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF, StreamReset
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import (
    MuxedConnUnavailable,
    MuxedStreamClosed,
    MuxedStreamEOF,
    MuxedStreamReset,
)

from p2p import P2PError

logger = logging.getLogger(__name__)

_CLOSURE_ERRORS: Final = (
    StreamEOF,
    StreamReset,
    StreamClosed,
    ConnectionClosedError,
    IncompleteReadError,
    MuxedStreamEOF,
    MuxedStreamReset,
    MuxedStreamClosed,
    MuxedConnUnavailable,
)


class LimitExceeded(P2PError):
    """A peer went over a per-peer limit; the request was dropped."""


@dataclass(frozen=True, slots=True)
class GuardParams:
    """Per-peer limits and scoring weights.

    Attributes:
        max_message_rate: messages per second one peer may send, sustained.
        message_burst: messages a peer may send at once before the rate holds.
        max_streams_per_peer: inbound streams one peer may have open at once.
        invalid_penalty: score lost per invalid message.
        handler_error_penalty: score lost when a peer's input made a handler
            raise.
        rate_penalty: score lost per message over the rate limit.
        half_life: seconds for a negative score to decay halfway back to 0.
        ban_threshold: a peer whose score falls below this is banned.
        ban_seconds: how long a ban lasts.
        max_tracked_peers: scores kept at most; the oldest entries at score 0
            are dropped first.
    """

    # Consensus polls and gossip run at tens of messages per second per peer;
    # 200/s with a burst of 400 leaves headroom for catch-up bursts.
    max_message_rate: float = 200.0
    message_burst: float = 400.0
    # rust-libp2p's yamux allows 512 streams per connection; a mesh peer needs
    # a handful, so 64 concurrent inbound streams is far above honest use.
    max_streams_per_peer: int = 64
    invalid_penalty: float = 10.0
    handler_error_penalty: float = 10.0
    rate_penalty: float = 1.0
    half_life: float = 60.0
    # Ten invalid messages in quick succession ban a peer.
    ban_threshold: float = -100.0
    ban_seconds: float = 600.0
    max_tracked_peers: int = 10_000

    def validate(self) -> None:
        """Check every field; raise `ValueError` naming the first bad one."""
        for name in ("max_message_rate", "message_burst", "half_life"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("max_streams_per_peer", "max_tracked_peers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("invalid_penalty", "handler_error_penalty", "rate_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not self.ban_threshold < 0:
            raise ValueError(f"ban_threshold={self.ban_threshold} must be < 0")
        if self.ban_seconds < 0:
            raise ValueError(f"ban_seconds={self.ban_seconds} must be >= 0")


@dataclass(frozen=True, slots=True)
class Ban:
    """Action: disconnect `peer` and refuse it until `until`."""

    peer: str
    until: float
    reason: str


@dataclass(slots=True)
class _PeerState:
    score: float = 0.0
    scored_at: float = 0.0
    tokens: float = 0.0
    filled_at: float = -math.inf
    banned_until: float = -math.inf


class PeerScorer:
    """Sans-IO peer scores, rate buckets and bans, driven by explicit `now`."""

    def __init__(self, params: GuardParams) -> None:
        params.validate()
        self._params = params
        self._peers: dict[str, _PeerState] = {}
        self._decay = math.log(2) / params.half_life

    def _state(self, peer: str, now: float) -> _PeerState:
        state = self._peers.get(peer)
        if state is None:
            if len(self._peers) >= self._params.max_tracked_peers:
                self._evict(now)
            state = _PeerState(scored_at=now, tokens=self._params.message_burst)
            state.filled_at = now
            self._peers[peer] = state
        return state

    def _evict(self, now: float) -> None:
        # Drop peers that are neither banned nor noticeably in debt; if all
        # are, drop the one whose ban ends first.
        idle = [
            p
            for p, s in self._peers.items()
            if s.banned_until <= now and self._decayed(s, now) > -1.0
        ]
        for peer in idle[: max(1, len(idle) // 2)]:
            del self._peers[peer]
        if len(self._peers) >= self._params.max_tracked_peers:
            first = min(self._peers, key=lambda p: self._peers[p].banned_until)
            del self._peers[first]

    def _decayed(self, state: _PeerState, now: float) -> float:
        elapsed = max(0.0, now - state.scored_at)
        return state.score * math.exp(-self._decay * elapsed)

    def score(self, peer: str, now: float) -> float:
        """Return `peer`'s current score (0 for a peer never penalised)."""
        state = self._peers.get(peer)
        return 0.0 if state is None else self._decayed(state, now)

    def is_banned(self, peer: str, now: float) -> bool:
        """Return True while `peer` is serving a ban."""
        state = self._peers.get(peer)
        return state is not None and now < state.banned_until

    def banned_until(self, peer: str) -> float:
        """Return when `peer`'s ban ends (-inf if it was never banned)."""
        state = self._peers.get(peer)
        return -math.inf if state is None else state.banned_until

    def on_penalty(
        self, peer: str, penalty: float, reason: str, now: float
    ) -> Ban | None:
        """Lower `peer`'s score; return a `Ban` when it crosses the threshold."""
        state = self._state(peer, now)
        state.score = self._decayed(state, now) - penalty
        state.scored_at = now
        if now < state.banned_until or state.score >= self._params.ban_threshold:
            return None
        state.banned_until = now + self._params.ban_seconds
        # A ban wipes the debt so the peer starts from 0 after it expires.
        state.score = 0.0
        return Ban(peer=peer, until=state.banned_until, reason=reason)

    def allow_message(self, peer: str, now: float) -> bool:
        """Take one token from `peer`'s bucket; False means over the rate."""
        state = self._state(peer, now)
        elapsed = max(0.0, now - state.filled_at)
        state.tokens = min(
            self._params.message_burst,
            state.tokens + elapsed * self._params.max_message_rate,
        )
        state.filled_at = now
        if state.tokens < 1.0:
            return False
        state.tokens -= 1.0
        return True

    def forget(self, peer: str, now: float) -> None:
        """Drop `peer`'s state unless it is banned (a ban outlives reconnects)."""
        state = self._peers.get(peer)
        if state is not None and state.banned_until <= now:
            del self._peers[peer]


class Guard:
    """The trio shell around `PeerScorer`: containment, limits and bans.

    Args:
        params: limits and weights.
        clock: returns the current time in seconds; `trio.current_time` by
            default, so tests under `trio.testing.MockClock` control bans.
    """

    def __init__(
        self,
        params: GuardParams | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.params = params or GuardParams()
        self.scorer = PeerScorer(self.params)
        self._clock = clock or trio.current_time
        self._host: Any = None
        self._streams: Counter[str] = Counter()
        self._send_ban, self._receive_ban = trio.open_memory_channel[Ban](256)
        self.rejections: Counter[tuple[str, str]] = Counter()
        self.handler_errors = 0

    def attach(self, host: Any) -> None:
        """Let the guard disconnect banned peers through `host`."""
        self._host = host

    def is_banned(self, peer_id: str) -> bool:
        """Return True while `peer_id` is banned."""
        return self.scorer.is_banned(peer_id, self._clock())

    def report(self, peer_id: str, reason: str, penalty: float | None = None) -> None:
        """Record a rejected message from `peer_id` and lower its score.

        Logs at WARNING with the peer id and `reason`. A ban that results is
        carried out by `run()`, which disconnects the peer.
        """
        self.rejections[(peer_id, reason)] += 1
        logger.warning("peer rejected peer_id=%s reason=%s", peer_id, reason)
        if penalty is None:
            penalty = self.params.invalid_penalty
        ban = self.scorer.on_penalty(peer_id, penalty, reason, self._clock())
        if ban is not None:
            self._queue_ban(ban)

    def allow_message(self, peer_id: str) -> bool:
        """Apply the per-peer rate limit; over the limit counts as a rejection."""
        if self.scorer.allow_message(peer_id, self._clock()):
            return True
        self.report(peer_id, "rate limit exceeded", self.params.rate_penalty)
        return False

    @contextmanager
    def stream_slot(self, peer_id: str) -> Iterator[None]:
        """Hold one of `peer_id`'s concurrent stream slots.

        Raises:
            LimitExceeded: if the peer already has `max_streams_per_peer`.
        """
        if self._streams[peer_id] >= self.params.max_streams_per_peer:
            self.report(
                peer_id, "too many concurrent streams", self.params.rate_penalty
            )
            raise LimitExceeded(
                f"peer {peer_id} has {self._streams[peer_id]} open streams, "
                f"max_streams_per_peer={self.params.max_streams_per_peer}"
            )
        self._streams[peer_id] += 1
        try:
            yield
        finally:
            self._streams[peer_id] -= 1
            if self._streams[peer_id] <= 0:
                del self._streams[peer_id]

    def on_inbound_rejected(self, remote: str, reason: str) -> None:
        """Log a connection dropped before its peer id was known."""
        self.rejections[(remote, "connection upgrade failed")] += 1
        logger.warning(
            "inbound connection rejected remote=%s reason=%s", remote, reason
        )

    def _queue_ban(self, ban: Ban) -> None:
        logger.warning(
            "peer banned peer_id=%s seconds=%.0f reason=%s",
            ban.peer,
            self.params.ban_seconds,
            ban.reason,
        )
        try:
            self._send_ban.send_nowait(ban)
        except trio.WouldBlock:
            # The peer is banned either way; its connection closes on the
            # next disconnect sweep or when add_conn refuses it.
            logger.warning("ban queue full, disconnect deferred peer_id=%s", ban.peer)

    def wrap_stream_handler(
        self, protocol_id: str, handler: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """Return `handler` contained: limits applied, exceptions logged."""

        @functools.wraps(handler)
        async def contained(stream: Any) -> None:
            peer_id = _stream_peer(stream)
            if self.is_banned(peer_id):
                await _reset(stream)
                return
            try:
                with self.stream_slot(peer_id):
                    await handler(stream)
            except LimitExceeded:
                await _reset(stream)
            except _CLOSURE_ERRORS as error:
                # The peer closed or reset the stream or connection mid-way,
                # which honest peers do when they shut down.
                logger.debug(
                    "stream closed under handler peer_id=%s protocol=%s error=%r",
                    peer_id,
                    protocol_id,
                    error,
                )
                await _reset(stream)
            except Exception as error:
                self.handler_errors += 1
                logger.warning(
                    "stream handler failed peer_id=%s protocol=%s error=%r",
                    peer_id,
                    protocol_id,
                    error,
                    exc_info=True,
                )
                self.report(
                    peer_id,
                    f"handler error on {protocol_id}",
                    self.params.handler_error_penalty,
                )
                await _reset(stream)

        return contained

    def wrap_validator(self, topic: str, validator: Callable[..., Any]) -> Callable:
        """Return a pubsub validator that rejects instead of raising.

        Works for both sync and async validators with py-libp2p's
        `(forwarder: ID, msg) -> bool` signature. A False result or an
        exception is reported against the forwarding peer.
        """
        if inspect.iscoroutinefunction(validator):

            async def contained_async(forwarder: ID, msg: Any) -> bool:
                try:
                    ok = bool(await validator(forwarder, msg))
                except Exception as error:
                    return self._validator_failed(topic, forwarder, error)
                if not ok:
                    self.report(str(forwarder), f"invalid message on {topic}")
                return ok

            return contained_async

        def contained_sync(forwarder: ID, msg: Any) -> bool:
            try:
                ok = bool(validator(forwarder, msg))
            except Exception as error:
                return self._validator_failed(topic, forwarder, error)
            if not ok:
                self.report(str(forwarder), f"invalid message on {topic}")
            return ok

        return contained_sync

    def _validator_failed(self, topic: str, forwarder: ID, error: Exception) -> bool:
        self.handler_errors += 1
        logger.warning(
            "validator failed peer_id=%s topic=%s error=%r",
            forwarder,
            topic,
            error,
            exc_info=error,
        )
        self.report(str(forwarder), f"validator error on {topic}")
        return False

    def guard_pubsub(self, pubsub: Any) -> None:
        """Contain Pubsub's per-message task (`push_msg`) for one instance.

        Pubsub schedules `self.push_msg` per received message in its own
        service; an exception there stops the whole Pubsub service. The
        instance attribute shadows the method, so nothing global is patched.
        """
        original = pubsub.push_msg

        async def push_msg(msg_forwarder: ID, msg: Any) -> None:
            try:
                await original(msg_forwarder, msg)
            except Exception as error:
                self.handler_errors += 1
                logger.warning(
                    "pubsub message failed peer_id=%s error=%r",
                    msg_forwarder,
                    error,
                    exc_info=True,
                )
                self.report(str(msg_forwarder), "malformed pubsub message")

        pubsub.push_msg = push_msg

    async def run(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Disconnect peers as they get banned; runs until cancelled."""
        task_status.started()
        async for ban in self._receive_ban:
            if self._host is None:
                continue
            try:
                await self._host.disconnect(ID.from_base58(ban.peer))
                logger.info("banned peer disconnected peer_id=%s", ban.peer)
            except Exception as error:
                logger.warning(
                    "disconnect of banned peer failed peer_id=%s error=%r",
                    ban.peer,
                    error,
                )

    async def supervise(
        self,
        name: str,
        async_fn: Callable[..., Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run `async_fn(task_status=...)`, restarting it when it raises.

        `async_fn` is started with `nursery.start`, so it must call
        `task_status.started()`. Our `task_status` is reported after the first
        start. Restarts wait 0.1 s, doubling up to 30 s; a run that lasted
        over 60 s resets the delay. Returns when `async_fn` returns.
        """
        delay = 0.1
        reported = False
        while True:
            started_at = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(async_fn)
                    if not reported:
                        reported = True
                        task_status.started()
                logger.info("service stopped name=%s", name)
                return
            except Exception:
                if trio.current_time() - started_at > 60.0:
                    delay = 0.1
                logger.exception(
                    "service crashed, restarting name=%s delay=%.1f", name, delay
                )
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)


def _stream_peer(stream: Any) -> str:
    try:
        return stream.muxed_conn.peer_id.to_base58()
    except Exception:
        return "unknown"


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception:
        logger.debug("stream reset failed", exc_info=True)
