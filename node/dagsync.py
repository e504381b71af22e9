"""The trio shell around admission, consensus and the store.

Data flow of one vertex:

1. It arrives on the gossip topic ``vertices/1`` (or is issued locally, or is
   fetched by id). The gossip validator only decodes it, so malformed bytes
   are neither delivered nor forwarded.
2. ``dag.admission.Admission`` checks it and returns actions. The shell
   performs them: fetch missing parents or author keys from the peer that sent
   the vertex (the store is consulted first), persist learned keys, count and
   log rejections with the peer id.
3. An admitted vertex is stored, handed to the ``dag.consensus.Avalanche``
   engine and reported to the node's ``on_vertex`` callbacks.
4. Engine actions are performed. Polls go to peers over request/response, and
   their replies go back into the engine. ``Decided`` is written to the store
   in one transaction before callbacks, metrics and waiters see it.

A driver task waits until the engine's or the admission's next deadline, or
until new work arrives, and then calls their ``on_tick``. The engine runs on
``trio.current_time()``; admission runs on ``time.time()`` because it compares
vertex timestamps with the wall clock.

The engine's peer set is the set of connected peers subscribed to the vertex
topic, which is exactly the peers of the same network that run a daemon.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

from node import NodeError

if TYPE_CHECKING:
    from node.runtime import Node

log = logging.getLogger(__name__)

VERTEX_TOPIC: Final = "vertices/1"
POLL_METHOD: Final = "dag.poll"
FETCH_METHOD: Final = "dag.vertices"
KEY_METHOD: Final = "dag.key"
MAX_FETCH_IDS: Final = 64
FETCH_TIMEOUT_S: Final = 5.0
PEER_SCAN_INTERVAL_S: Final = 0.25


class DagSync:
    """Connects a node's gossip, request/response and store to the DAG cores."""

    def __init__(self, node: Node) -> None:
        from dag.admission import Admission, AdmissionParams
        from dag.consensus import Avalanche
        from dag.vertex import genesis_vertex

        self.node = node
        self.store = node.store
        self.genesis = genesis_vertex(node.config.network)
        # A year: far older than any node's downtime, so catch-up still
        # fetches its history, while 1970 and other made-up dates are refused.
        self.admission = Admission(
            AdmissionParams(max_age_ms=365 * 86_400_000), self.genesis.id
        )
        self.engine = Avalanche(
            consensus_params(node.config), node.rng, self_id=node.peer_id
        )
        self._wake = trio.Event()
        self._admitted_at: dict[bytes, float] = {}
        self._waiters: dict[bytes, set[trio.Event]] = {}
        self._admitted_events: dict[bytes, trio.Event] = {}
        self._peers: frozenset[str] = frozenset()
        # Accepted vertices without an accepted child yet, oldest first.
        self._accepted_tips: dict[bytes, None] = {}
        # Stored vertices that waited for room in a full engine, oldest first.
        self._deferred: deque[Any] = deque()

    # Start-up ------------------------------------------------------------

    async def start(self) -> None:
        """Reload state from the store, subscribe and start the DAG services."""
        node = self.node
        self.admission.add_keys([node.signing_key.public()])
        self.admission.add_keys(self.store.public_keys())
        self._reload()

        reqresp = node.p2p.reqresp
        reqresp.set_handler(POLL_METHOD, self._handle_poll)
        reqresp.set_handler(FETCH_METHOD, self._handle_fetch)
        reqresp.set_handler(KEY_METHOD, self._handle_key)
        channel = await node.p2p.gossip.subscribe(VERTEX_TOPIC, _validate_vertex_bytes)
        node.metrics.watch_gossip(node.p2p.gossip.stats)

        node.start_service("dag.gossip", self._read_gossip, channel)
        node.start_service("dag.driver", self._drive)
        node.start_service("dag.peers", self._watch_peers)

    def _reload(self) -> None:
        # Accepted and rejected vertices need no engine state; undecided ones
        # are fed to the engine again, parents first, as the store returns them.
        # Admission learns stored ids lazily: a parent it does not know is
        # looked up in the store before anything is fetched from a peer.
        processing = list(self.store.processing())
        self._deferred.extend(processing)
        self._add_deferred()
        if processing:
            log.info("reloaded undecided vertices count=%d", len(processing))

    # Hooks used by Node --------------------------------------------------

    async def issue(
        self, payload_type: str, payload: Any, conflict_keys: Sequence[bytes | str]
    ) -> bytes:
        """Create, admit, store and gossip a vertex signed by this node."""
        from dag import codec
        from dag.vertex import create_vertex

        limit = self.engine.params.max_processing
        if self._deferred or self.engine.processing_count >= limit:
            raise NodeError(
                f"cannot issue {payload_type} vertex: {limit} vertices are undecided "
                "(consensus.max_processing); retry after some are decided"
            )
        parents = self._parents_for_new_vertex()
        try:
            vertex = create_vertex(
                self.node.signing_key,
                parents,
                payload_type,
                payload,
                conflict_keys,
                int(time.time() * 1000),
            )
        except (ValueError, codec.DecodeError) as error:
            raise NodeError(f"cannot issue {payload_type} vertex: {error}") from None

        # After a restart admission learns stored ids lazily, so parents taken
        # from the store would send our own vertex to the orphan buffer.
        await self._perform_admission(self.admission.mark_known(parents))
        actions = self.admission.on_vertex(self.node.peer_id, vertex, time.time())
        await self._perform_admission(actions)
        if not self.admission.is_known(vertex.id):
            raise NodeError(
                f"own {payload_type} vertex {vertex.id.hex()} was not admitted: "
                f"{_reasons(actions)}"
            )
        await self._publish(codec.encode_vertex(vertex))
        return vertex.id

    def _parents_for_new_vertex(self) -> tuple[bytes, ...]:
        # Only accepted vertices become parents. Rejection flows to every
        # descendant, so naming an undecided vertex (say a task claim that
        # later loses its conflict set) would doom an unrelated new vertex;
        # this node does not re-issue rejected vertices as avalanchego does.
        limit = self.engine.params.max_parents
        if self._accepted_tips:
            return tuple(list(self._accepted_tips)[-limit:])
        # After a restart: the most recent accepted vertices in the store.
        recent = [
            v.id for v in self.store.tail(limit) if self.status_of(v.id) == "accepted"
        ]
        return tuple(recent) or (self.genesis.id,)

    async def wait_decided(self, vertex_id: bytes, timeout: float) -> str:
        status = self.status_of(vertex_id)
        if status in ("accepted", "rejected"):
            return status
        event = trio.Event()
        waiting = self._waiters.setdefault(vertex_id, set())
        waiting.add(event)
        try:
            with trio.move_on_after(timeout):
                await event.wait()
        finally:
            # A waiter that timed out leaves nothing behind.
            waiting.discard(event)
            if not waiting and self._waiters.get(vertex_id) is waiting:
                del self._waiters[vertex_id]
        return self.status_of(vertex_id)

    def status_of(self, vertex_id: bytes) -> str:
        """Return ``processing``, ``accepted``, ``rejected`` or ``unknown``."""
        status = self.store.status(vertex_id)
        return "unknown" if status is None else str(status)

    def counts(self) -> dict[str, int]:
        """Return stored vertices by state (the genesis counts as accepted)."""
        counts = {str(status): count for status, count in self.store.counts().items()}
        counts["vertices"] = sum(counts.values())
        return counts

    def voters(self) -> frozenset[str]:
        """Return the peers that consensus polls sample from."""
        return self._peers

    def engine_stats(self) -> dict[str, Any]:
        """Return consensus and admission counters for ``status``."""
        import dataclasses

        return {
            "consensus": dataclasses.asdict(self.engine.stats()),
            "admission": dataclasses.asdict(self.admission.stats()),
            "voters": len(self._peers),
        }

    def tail(self, n: int) -> list[Any]:
        return self.store.tail(n)

    def get(self, vertex_id: bytes) -> Any:
        return self.store.get(vertex_id)

    def describe(self, vertex: Any, *, full: bool) -> dict[str, Any]:
        """Render `vertex` as JSON for ``dag tail`` and ``dag show``."""
        from dag import codec

        entry = {
            "id": vertex.id.hex(),
            "status": self.status_of(vertex.id),
            "author": vertex.author.hex(),
            "payload_type": vertex.payload_type,
            "timestamp_ms": vertex.timestamp_ms,
            "parents": [parent.hex() for parent in vertex.parents],
        }
        if full:
            entry["conflict_keys"] = [key.hex() for key in vertex.conflict_keys]
            entry["scheme"] = vertex.scheme
            entry["signature_bytes"] = len(vertex.signature)
            entry["payload"] = _jsonable(codec.decode_payload(vertex.payload))
        return entry

    # Gossip and fetches --------------------------------------------------

    async def _read_gossip(self, channel) -> None:
        async for message in channel:
            actions = self.admission.on_vertex_bytes(
                message.forwarder, message.data, time.time()
            )
            await self._perform_admission(actions)

    async def _publish(self, data: bytes) -> None:
        from p2p.gossip import GossipError

        try:
            await self.node.p2p.gossip.publish(VERTEX_TOPIC, data)
        except GossipError as error:
            # Peers still learn the vertex: they fetch it by id when a poll
            # or a child names it.
            log.warning("vertex gossip failed error=%s", error)

    async def _fetch_vertices(self, peer: str, ids: Sequence[bytes]) -> None:
        from dag import codec
        from p2p.reqresp import ReqRespError

        local = [vertex_id for vertex_id in ids if self.store.has(vertex_id)]
        if local:
            await self._perform_admission(self.admission.mark_known(local))
        missing = [vertex_id for vertex_id in ids if vertex_id not in set(local)]
        if not missing:
            return
        try:
            reply = await self.node.p2p.reqresp.request(
                peer, FETCH_METHOD, {"ids": missing[:MAX_FETCH_IDS]}, FETCH_TIMEOUT_S
            )
        except ReqRespError as error:
            log.info(
                "vertex fetch failed peer_id=%s count=%d error=%s",
                peer,
                len(missing),
                error,
            )
            return
        encoded = reply.get("vertices")
        if not isinstance(encoded, list) or len(encoded) > MAX_FETCH_IDS:
            self._misbehaved(peer, "malformed vertex fetch reply")
            return
        vertices = []
        for data in encoded:
            try:
                vertices.append(codec.decode_vertex(data))
            except (codec.DecodeError, TypeError):
                self._misbehaved(peer, "undecodable vertex in fetch reply")
                return
        await self._perform_admission(
            self.admission.on_vertices(peer, vertices, time.time())
        )

    async def _fetch_key(self, peer: str, key_id: bytes) -> None:
        from p2p.reqresp import ReqRespError

        stored = self.store.get_public_key(key_id)
        if stored is not None:
            await self._perform_admission(
                self.admission.on_public_key(
                    peer, stored.scheme, stored.key, time.time()
                )
            )
            return
        try:
            reply = await self.node.p2p.reqresp.request(
                peer, KEY_METHOD, {"key_id": key_id}, FETCH_TIMEOUT_S
            )
        except ReqRespError as error:
            log.info(
                "key fetch failed peer_id=%s key_id=%s error=%s",
                peer,
                key_id.hex(),
                error,
            )
            return
        data = reply.get("key")
        if data is None:
            # An honest peer may have forwarded a vertex without holding its
            # author's key, so admission requests it from the next peer that
            # names the vertex.
            log.info("key not held by peer peer_id=%s key_id=%s", peer, key_id.hex())
            return
        if not isinstance(data, bytes):
            self._misbehaved(peer, "malformed key fetch reply")
            return
        await self._perform_admission(
            self.admission.on_public_key_bytes(peer, data, time.time())
        )

    # Request handlers ----------------------------------------------------

    async def _handle_fetch(self, peer: str, request: dict) -> dict:
        from dag import codec
        from p2p.reqresp import RequestRejected

        ids = request.get("ids")
        if not _is_id_list(ids, MAX_FETCH_IDS):
            raise RequestRejected(
                f"ids must be a list of at most {MAX_FETCH_IDS} 32-byte ids"
            )
        found = (self.store.get(vertex_id) for vertex_id in ids)
        return {"vertices": [codec.encode_vertex(v) for v in found if v is not None]}

    async def _handle_key(self, peer: str, request: dict) -> dict:
        from dag import codec
        from p2p.reqresp import RequestRejected

        key_id = request.get("key_id")
        if not isinstance(key_id, bytes) or len(key_id) != 32:
            raise RequestRejected("key_id must be 32 bytes")
        own = self.node.signing_key
        if key_id == own.key_id:
            return {"key": codec.encode_public_key(own.scheme, own.public_key)}
        stored = self.store.get_public_key(key_id)
        if stored is None:
            return {}
        return {"key": codec.encode_public_key(stored.scheme, stored.key)}

    async def _handle_poll(self, peer: str, request: dict) -> dict:
        from dag.consensus import PollReply
        from p2p.reqresp import RequestRejected

        request_id = request.get("request_id")
        ids = request.get("ids")
        limit = self.engine.params.max_poll_batch
        if not isinstance(request_id, int) or not _is_id_list(ids, limit):
            raise RequestRejected("poll needs an integer request_id and a list of ids")
        await self._await_unknown(peer, ids)

        actions = self.engine.on_poll(peer, request_id, ids, trio.current_time())
        replies = [a for a in actions if isinstance(a, PollReply)]
        self._perform_engine([a for a in actions if not isinstance(a, PollReply)])
        votes = replies[0].votes if replies else ()
        return {"request_id": request_id, "votes": list(votes)}

    async def _await_unknown(self, peer: str, ids: Sequence[bytes]) -> None:
        # A poll often overtakes the gossip of the vertex it names. The reply
        # waits until that vertex is fetched and admitted (or half the poll
        # timeout passes), because an empty reply counts as a failed poll and
        # pushes the poller into repoll backoff.
        unknown = [v for v in ids if not self.store.has(v)]
        if not unknown:
            return
        self._spawn(self._fetch_vertices, peer, unknown)
        events = [self._admitted_events.setdefault(v, trio.Event()) for v in unknown]
        with trio.move_on_after(self.engine.params.poll_timeout / 2):
            for event in events:
                await event.wait()
        # Admitted ids were popped by _admit. Dropping the rest bounds the map;
        # a concurrent poll still waiting on one of them times out instead.
        for vertex_id in unknown:
            self._admitted_events.pop(vertex_id, None)

    async def _send_poll(
        self, peer: str, request_id: int, ids: Sequence[bytes]
    ) -> None:
        from p2p.reqresp import ReqRespError

        timeout = self.engine.params.poll_timeout
        try:
            reply = await self.node.p2p.reqresp.request(
                peer, POLL_METHOD, {"request_id": request_id, "ids": list(ids)}, timeout
            )
        except ReqRespError as error:
            log.debug(
                "poll failed peer_id=%s request_id=%d error=%s", peer, request_id, error
            )
            self._perform_engine(
                self.engine.on_poll_failed(peer, request_id, trio.current_time())
            )
            return
        votes = reply.get("votes")
        if not _is_id_list(votes, self.engine.params.max_votes):
            self._misbehaved(peer, "malformed poll reply")
            return
        self._perform_engine(
            self.engine.on_poll_reply(
                peer, request_id, tuple(votes), trio.current_time()
            )
        )

    # Performing actions --------------------------------------------------

    async def _perform_admission(self, actions: Iterable[Any]) -> None:
        from dag.admission import (
            Admitted,
            Rejected,
            RequestKey,
            RequestVertices,
            StoreKey,
        )

        admitted = []
        for action in actions:
            if isinstance(action, Admitted):
                admitted.append(action.vertex)
            elif isinstance(action, Rejected):
                self._rejected(action)
            elif isinstance(action, RequestVertices):
                self._spawn(self._fetch_vertices, action.peer, action.ids)
            elif isinstance(action, RequestKey):
                self._spawn(self._fetch_key, action.peer, action.key_id)
            elif isinstance(action, StoreKey):
                self.store.put_public_key(action.public_key)
        if admitted:
            self._admit(admitted)
        self._wake.set()

    def _admit(self, vertices: list[Any]) -> None:
        from dag.consensus import ProcessingFull

        # A vertex stored before a restart is admitted again when a peer
        # sends it; it needs no second store write or callback.
        vertices = [v for v in vertices if not self.store.has(v.id)]
        if not vertices:
            return
        # One transaction for the batch; admission already ordered it parents first.
        self.store.put_vertices(vertices)
        now = trio.current_time()
        for vertex in vertices:
            self._admitted_at[vertex.id] = now
            event = self._admitted_events.pop(vertex.id, None)
            if event is not None:
                event.set()
            self.node.metrics.vertices.labels(event="admitted").inc()
            self.node._notify(vertex, "admitted")
            if self._deferred:
                # Children must reach the engine after their parents.
                self._deferred.append(vertex)
                continue
            try:
                actions = self.engine.add_vertex(
                    vertex.id, vertex.parents, vertex.conflict_keys, now
                )
            except ProcessingFull:
                log.warning(
                    "consensus full, vertex waits for room vertex=%s processing=%d",
                    vertex.id.hex(),
                    self.engine.processing_count,
                )
                self._deferred.append(vertex)
                continue
            self._perform_engine(actions)

    def _add_deferred(self) -> None:
        from dag.consensus import ProcessingFull

        while self._deferred:
            vertex = self._deferred[0]
            try:
                actions = self.engine.add_vertex(
                    vertex.id, vertex.parents, vertex.conflict_keys, trio.current_time()
                )
            except ProcessingFull:
                return
            self._deferred.popleft()
            self._perform_engine(actions)

    def _perform_engine(self, actions: Iterable[Any]) -> None:
        from dag.consensus import Decided, FetchVertices, SendPoll

        for action in actions:
            if isinstance(action, SendPoll):
                self._spawn(
                    self._send_poll, action.peer, action.request_id, action.vertex_ids
                )
            elif isinstance(action, FetchVertices):
                self._spawn(self._fetch_vertices, action.peer, action.vertex_ids)
            elif isinstance(action, Decided):
                self._decided(action.accepted, action.rejected)
        self._wake.set()

    def _decided(self, accepted: Sequence[bytes], rejected: Sequence[bytes]) -> None:
        # Persist before anyone hears of the decision, so nothing reported
        # accepted can be lost by a crash right after.
        self.store.record_decisions(list(accepted), list(rejected))
        now = trio.current_time()
        metrics = self.node.metrics
        for status, ids in (("accepted", accepted), ("rejected", rejected)):
            for vertex_id in ids:
                metrics.vertices.labels(event=status).inc()
                started = self._admitted_at.pop(vertex_id, None)
                if started is not None and status == "accepted":
                    metrics.finality_seconds.observe(now - started)
                for event in self._waiters.pop(vertex_id, ()):
                    event.set()
                vertex = self.store.get(vertex_id)
                if vertex is None:
                    continue
                if status == "accepted":
                    self._add_accepted_tip(vertex)
                self.node._notify(vertex, status)

    def _add_accepted_tip(self, vertex: Any) -> None:
        for parent in vertex.parents:
            self._accepted_tips.pop(parent, None)
        self._accepted_tips[vertex.id] = None
        # Tips that stay childless for long (quiet authors) age out.
        while len(self._accepted_tips) > 4 * self.engine.params.max_parents:
            del self._accepted_tips[next(iter(self._accepted_tips))]

    def _rejected(self, action: Any) -> None:
        reason = str(action.reason)
        self.node.metrics.count_invalid(reason)
        vertex = action.vertex_id.hex() if action.vertex_id else "-"
        if action.peer == self.node.peer_id:
            log.error("own vertex rejected vertex=%s reason=%s", vertex, reason)
            return
        log.warning(
            "vertex rejected peer_id=%s vertex=%s reason=%s",
            action.peer,
            vertex,
            reason,
        )
        self.node.p2p.guard.report(action.peer, f"vertex {reason}")

    def _misbehaved(self, peer: str, reason: str) -> None:
        self.node.metrics.count_invalid(reason)
        log.warning("peer misbehaved peer_id=%s reason=%s", peer, reason)
        self.node.p2p.guard.report(peer, reason)

    def _spawn(self, fn, *args: Any) -> None:
        # These tasks run in the node's nursery; an error in one of them must
        # not cancel the node, so it is logged and the task ends.
        async def contained() -> None:
            try:
                await fn(*args)
            except Exception:
                log.exception("dag task failed task=%s", fn.__name__)

        self.node.nursery.start_soon(contained, name=f"dag:{fn.__name__}")

    # Background loops ----------------------------------------------------

    async def _drive(self) -> None:
        while True:
            self._wake = trio.Event()
            engine_at = self.engine.next_deadline()
            admission_at = _wall_to_trio(self.admission.next_deadline())
            with trio.move_on_at(min(engine_at, admission_at)):
                await self._wake.wait()
            now = trio.current_time()
            if now >= self.engine.next_deadline():
                self._perform_engine(self.engine.on_tick(now))
            if self._deferred:
                self._add_deferred()
            wall = time.time()
            if wall >= self.admission.next_deadline():
                await self._perform_admission(self.admission.on_tick(wall))

    async def _watch_peers(self) -> None:
        gossip = self.node.p2p.gossip
        connected: set[str] = set()
        while True:
            current = set(self.node.p2p.connected_peers())
            for peer in sorted(current - connected):
                log.info("peer connected peer_id=%s", peer)
            for peer in sorted(connected - current):
                log.info("peer disconnected peer_id=%s", peer)
            connected = current
            self.node.metrics.peers.set(len(current))

            voters = frozenset(gossip.topic_peers(VERTEX_TOPIC)) & current
            if voters != self._peers:
                self._peers = voters
                self._perform_engine(
                    self.engine.set_peers(sorted(voters), trio.current_time())
                )
            await trio.sleep(PEER_SCAN_INTERVAL_S)


def consensus_params(config: Any) -> Any:
    """Build ``AvalancheParams`` from the ``[consensus]`` settings."""
    from dag.consensus_params import AvalancheParams

    settings = config.consensus
    return AvalancheParams(
        k=settings.k,
        alpha_preference=settings.alpha_preference,
        alpha_confidence=settings.alpha_confidence,
        beta=settings.beta,
        concurrent_repolls=settings.concurrent_repolls,
        max_parents=settings.max_parents,
        max_processing=settings.max_processing,
        poll_timeout=settings.poll_timeout_s,
    )


def _validate_vertex_bytes(data: bytes):
    from dag import codec
    from p2p.gossip import ACCEPT, reject

    try:
        codec.decode_vertex(data)
    except codec.DecodeError as error:
        return reject(f"malformed vertex: {error}")
    return ACCEPT


def _wall_to_trio(deadline: float) -> float:
    if math.isinf(deadline):
        return deadline
    return trio.current_time() + (deadline - time.time())


def _is_id_list(value: object, limit: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= limit
        and all(isinstance(item, bytes) and len(item) == 32 for item in value)
    )


def _reasons(actions: Iterable[Any]) -> str:
    reasons = [str(a.reason) for a in actions if hasattr(a, "reason")]
    return ", ".join(reasons) or "no reason given"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
