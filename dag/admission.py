"""Admission of vertices from peers: checks, orphan buffer, key and parent fetch.

``Admission`` is a sans-IO core. The shell feeds it decoded vertices, public
keys and ticks with an explicit ``now`` and performs the actions it returns.
It does no I/O, reads no clock and does not log.

Theory and invariants:

- A vertex is *admitted* once its signature verifies against its author's
  key and every parent is admitted. ``Admitted`` actions come out in
  topological order: a vertex never comes out before any of its parents.
  The genesis of the network is admitted from the start.
- Cheap checks run first, each with a reason that is counted per peer: unknown
  scheme, no parents (only the genesis has none), too many parents, oversized
  payload, self-reference, timestamp beyond the maximum clock skew or older
  than ``max_age_ms``, and a signature of the wrong length. The signature is
  verified only after these, and only once per vertex id. Duplicates of admitted or waiting vertices
  cost a set lookup.
- Reasons that depend only on a vertex's content are remembered by id in a
  bounded cache, so a repeat costs a lookup. A bad signature is never
  remembered by id, because the id does not cover the signature: a forger
  must not be able to block a valid vertex by sending it first with garbage.
  A future timestamp is not remembered either, because it may become valid.
- A vertex whose author key is unknown waits, unverified, while the key is
  requested with ``RequestKey``. A verified vertex whose parents are not all
  admitted waits in the orphan buffer while the missing parents are
  requested with ``RequestVertices``. Both waits share one buffer, bounded
  in total, per peer and in age. Each missing id is requested at most
  ``max_fetch_attempts`` times, from the peers that referenced it in turn.
  A waiting vertex that is dropped takes its waiting descendants with it.
- Ids are content hashes, so a cycle or a vertex naming itself needs a
  SHA-256 preimage. Both are still checked (cycles through at most 64
  buffered vertices), so that a forged id is rejected with a reason rather
  than left to expire in the orphan buffer.
- ``now`` is in seconds since the Unix epoch (``time.time()``), because
  vertex timestamps are wall-clock milliseconds and the clock-skew check
  compares the two.
- The set of admitted ids is bounded (``known_capacity``, oldest evicted).
  A parent that was evicted is requested like any missing parent; the shell
  must look requested ids up in its store first and pass the ones it has to
  ``mark_known``, so only truly missing vertices go to the network.

Public API:
    ``AdmissionParams`` (frozen, ``validate()``)
    ``Admission(params: AdmissionParams, genesis_id: bytes)``
    ``.on_vertex(peer: str, vertex: Vertex, now: float) -> list[Action]``
    ``.on_vertices(peer: str, vertices: Iterable[Vertex], now: float)
    -> list[Action]``
    ``.on_vertex_bytes(peer: str, data: bytes, now: float) -> list[Action]``
    ``.on_public_key(peer: str, scheme: str, public_key: bytes, now: float)
    -> list[Action]``
    ``.on_public_key_bytes(peer: str, data: bytes, now: float) -> list[Action]``
    ``.mark_known(ids: Iterable[bytes]) -> list[Action]``
    ``.add_keys(keys: Iterable[PublicKey]) -> None``
    ``.on_tick(now: float) -> list[Action]``, ``.next_deadline() -> float``
    ``.is_known(vertex_id) -> bool``, ``.rejection_counts(peer) -> dict``,
    ``.rejection_totals() -> dict``, ``.stats() -> AdmissionStats``
    Actions: ``Admitted(vertex, peer)``, ``Rejected(peer, vertex_id, reason)``,
    ``RequestVertices(peer, ids)``, ``RequestKey(peer, key_id)``,
    ``StoreKey(public_key)``.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from dag import codec
from dag.keys import SCHEMES, InvalidKey, PublicKey, UnknownScheme
from dag.vertex import Vertex, verify_signature


class Reason(enum.StrEnum):
    """Reason for rejecting a vertex or key, the unit of the per-peer counters."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED_KEY = "malformed_key"
    UNKNOWN_SCHEME = "unknown_scheme"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    NO_PARENTS = "no_parents"
    TOO_MANY_PARENTS = "too_many_parents"
    OVERSIZED_PAYLOAD = "oversized_payload"
    SELF_REFERENCE = "self_reference"
    CYCLE = "cycle"
    PARENT_REJECTED = "parent_rejected"
    PARENT_DROPPED = "parent_dropped"
    ORPHAN_LIMIT = "orphan_limit"
    ORPHAN_EXPIRED = "orphan_expired"


# Reasons fixed by the content alone, which stay true for every copy of the
# id; only these are remembered by id. A descendant of such a vertex is
# rejected for good as PARENT_REJECTED. A descendant of a vertex dropped for a
# reason that may not hold for another copy (a bad signature, a future
# timestamp) is dropped as PARENT_DROPPED and may come back.
_PERMANENT_REASONS: Final = frozenset(
    {
        Reason.UNKNOWN_SCHEME,
        Reason.NO_PARENTS,
        Reason.TOO_MANY_PARENTS,
        Reason.OVERSIZED_PAYLOAD,
        Reason.SELF_REFERENCE,
        Reason.CYCLE,
        Reason.PARENT_REJECTED,
    }
)
# Peers remembered per missing id, asked in turn on repeat requests.
_MAX_FETCH_PEERS: Final = 8
# Buffered vertices visited per cycle check; see ``Admission._creates_cycle``.
_CYCLE_SEARCH_LIMIT: Final = 64
# Other copies of an unverified vertex (same id, other signature) kept in case
# the first copy's signature turns out bad once the key arrives.
_MAX_ALTERNATES: Final = 2


@dataclass(frozen=True, slots=True)
class AdmissionParams:
    """Limits of admission; defaults are this project's choices, not a spec's."""

    # A vertex normally names the few preferred tips of the frontier; 16
    # leaves room for merging after a partition.
    max_parents: int = 16
    # Task and registration payloads are a few hundred bytes; 16 KiB leaves
    # room for small model metadata while keeping gossip messages small.
    max_payload_bytes: int = 16 * 1024
    # Hosts without NTP drift by seconds; 30 s admits them but limits how far
    # ahead an author can date a vertex.
    max_clock_skew_ms: int = 30_000
    # Oldest timestamp admitted, as an age before ``now``; None admits any.
    # A node that joins or restarts fetches history as old as the network,
    # so a bound must exceed the network's age, not the downtime of a node.
    max_age_ms: int | None = None
    max_orphans: int = 10_000
    max_orphans_per_peer: int = 1_000
    # Seconds a vertex may wait for its key or parents before it is dropped.
    orphan_ttl: float = 120.0
    max_fetch_attempts: int = 3
    # Seconds between two requests for the same missing id.
    fetch_interval: float = 2.0
    max_ids_per_request: int = 64
    # About 100 bytes of memory per admitted id.
    known_capacity: int = 200_000
    rejected_capacity: int = 20_000
    max_keys: int = 50_000
    max_tracked_peers: int = 10_000

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        if not 1 <= self.max_parents <= codec.MAX_PARENTS:
            raise ValueError(
                f"max_parents={self.max_parents} must be in 1..{codec.MAX_PARENTS}"
            )
        if not 0 <= self.max_payload_bytes <= codec.MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"max_payload_bytes={self.max_payload_bytes} must be in "
                f"0..{codec.MAX_PAYLOAD_BYTES}"
            )
        if self.max_clock_skew_ms < 0:
            raise ValueError(f"max_clock_skew_ms={self.max_clock_skew_ms} must be >= 0")
        if self.max_age_ms is not None and self.max_age_ms < 0:
            raise ValueError(f"max_age_ms={self.max_age_ms} must be >= 0 or None")
        if not 1 <= self.max_orphans_per_peer <= self.max_orphans:
            raise ValueError(
                f"max_orphans_per_peer={self.max_orphans_per_peer} must be in "
                f"1..max_orphans={self.max_orphans}"
            )
        for name in ("orphan_ttl", "fetch_interval"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value} must be a positive number of seconds")
        for name in (
            "max_fetch_attempts",
            "max_ids_per_request",
            "known_capacity",
            "rejected_capacity",
            "max_keys",
            "max_tracked_peers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


# -- actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admitted:
    """The vertex is valid and all its ancestors are admitted; store and relay it."""

    vertex: Vertex
    peer: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A vertex (or, with ``vertex_id=None``, a key) from ``peer`` was rejected."""

    peer: str
    vertex_id: bytes | None
    reason: Reason


@dataclass(frozen=True, slots=True)
class RequestVertices:
    """Fetch these vertices from ``peer``; look them up in the store first."""

    peer: str
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RequestKey:
    """Fetch the public key with this id from ``peer`` (or the store)."""

    peer: str
    key_id: bytes


@dataclass(frozen=True, slots=True)
class StoreKey:
    """The key verified a vertex for the first time; persist it."""

    public_key: PublicKey


Action = Admitted | Rejected | RequestVertices | RequestKey | StoreKey


@dataclass(frozen=True, slots=True)
class AdmissionStats:
    """Counters and sizes of an ``Admission`` at one moment."""

    admitted: int
    duplicates: int
    orphans: int
    waiting_for_key: int
    pending_fetches: int
    keys: int
    rejected: int


# -- internal state -------------------------------------------------------------


@dataclass(slots=True)
class _Orphan:
    vertex: Vertex
    peer: str
    arrived: float
    # None until the signature is verified; then the parents not yet admitted.
    missing: set[bytes] | None
    alternates: list[Vertex] = field(default_factory=list)


@dataclass(slots=True)
class _Fetch:
    peers: list[str]
    attempts: int
    next_at: float
    waiters: set[bytes] = field(default_factory=set)


class Admission:
    """Sans-IO admission core; see the module docstring for the rules."""

    def __init__(self, params: AdmissionParams, genesis_id: bytes) -> None:
        params.validate()
        self.params = params
        self._genesis_id = genesis_id
        # dicts used as insertion-ordered sets, so the oldest entry goes first.
        self._known: dict[bytes, None] = {}
        self._rejected: dict[bytes, Reason] = {}
        self._keys: dict[bytes, PublicKey] = {}
        self._stored_keys: set[bytes] = set()
        # Insertion order is arrival order, which ``on_tick`` relies on to
        # expire the oldest orphans first.
        self._orphans: dict[bytes, _Orphan] = {}
        self._orphans_per_peer: dict[str, int] = {}
        self._waiting_parent: dict[bytes, set[bytes]] = {}
        self._waiting_key: dict[bytes, set[bytes]] = {}
        self._vertex_fetches: dict[bytes, _Fetch] = {}
        self._key_fetches: dict[bytes, _Fetch] = {}
        self._rejections: dict[str, dict[Reason, int]] = {}
        self._rejection_totals: dict[Reason, int] = {}
        self._admitted = 0
        self._duplicates = 0

    # -- queries -----------------------------------------------------------------

    def is_known(self, vertex_id: bytes) -> bool:
        """Return whether ``vertex_id`` is admitted (and not yet evicted)."""
        return vertex_id == self._genesis_id or vertex_id in self._known

    def rejection_counts(self, peer: str) -> dict[Reason, int]:
        """Return the rejections of ``peer`` by reason (empty if never rejected)."""
        return dict(self._rejections.get(peer, {}))

    def rejection_totals(self) -> dict[Reason, int]:
        """Return the rejections of all peers by reason, since construction."""
        return dict(self._rejection_totals)

    def stats(self) -> AdmissionStats:
        """Return the current counters and buffer sizes."""
        unverified = sum(len(ids) for ids in self._waiting_key.values())
        return AdmissionStats(
            admitted=self._admitted,
            duplicates=self._duplicates,
            orphans=len(self._orphans),
            waiting_for_key=unverified,
            pending_fetches=len(self._vertex_fetches) + len(self._key_fetches),
            keys=len(self._keys),
            rejected=sum(self._rejection_totals.values()),
        )

    def next_deadline(self) -> float:
        """Return when ``on_tick`` next has work, or ``math.inf``."""
        deadline = math.inf
        if self._orphans:
            oldest = next(iter(self._orphans.values()))
            deadline = oldest.arrived + self.params.orphan_ttl
        for fetches in (self._vertex_fetches, self._key_fetches):
            for fetch in fetches.values():
                if fetch.attempts < self.params.max_fetch_attempts:
                    deadline = min(deadline, fetch.next_at)
        return deadline

    # -- events --------------------------------------------------------------------

    def add_keys(self, keys: Iterable[PublicKey]) -> None:
        """Preload trusted keys, e.g. from the store at startup."""
        for key in keys:
            self._cache_key(key)
            self._stored_keys.add(key.key_id)

    def mark_known(self, ids: Iterable[bytes]) -> list[Action]:
        """Record ids the shell found in its store; releases waiting children.

        The caller vouches for these ids: they are not verified again.
        """
        actions: list[Action] = []
        for vertex_id in ids:
            if self.is_known(vertex_id):
                continue
            self._remember(vertex_id)
            self._vertex_fetches.pop(vertex_id, None)
            actions.extend(self._release_children([vertex_id]))
        return actions

    def on_vertex_bytes(self, peer: str, data: bytes, now: float) -> list[Action]:
        """Decode and admit one encoded vertex; malformed bytes are counted."""
        try:
            vertex = codec.decode_vertex(data)
        except codec.DecodeError:
            return [self._count(peer, None, Reason.MALFORMED)]
        return self.on_vertex(peer, vertex, now)

    def on_vertices(
        self, peer: str, vertices: Iterable[Vertex], now: float
    ) -> list[Action]:
        """Admit a batch, parents within the batch first, with merged requests."""
        actions: list[Action] = []
        for vertex in _batch_order(list(vertices)):
            actions.extend(self.on_vertex(peer, vertex, now))
        return self._merge_requests(actions)

    def on_vertex(self, peer: str, vertex: Vertex, now: float) -> list[Action]:
        """Check one vertex from ``peer`` and admit it, buffer it or reject it."""
        vertex_id = vertex.id
        if self.is_known(vertex_id):
            self._duplicates += 1
            return []
        orphan = self._orphans.get(vertex_id)
        if orphan is not None:
            self._duplicates += 1
            self._keep_alternate(orphan, vertex)
            return []
        cached = self._rejected.get(vertex_id)
        if cached is not None:
            return self._reject(peer, vertex_id, cached)
        reason = self._check_content(vertex, now)
        if reason is not None:
            return self._reject(peer, vertex_id, reason)

        key = self._keys.get(vertex.author)
        if key is None:
            return self._wait_for_key(peer, vertex, now)
        if not verify_signature(vertex, key):
            return self._reject(peer, vertex_id, Reason.BAD_SIGNATURE)
        actions = self._note_key_used(key)
        actions.extend(self._link(peer, vertex, now))
        return actions

    def on_public_key_bytes(self, peer: str, data: bytes, now: float) -> list[Action]:
        """Decode a key announcement and pass it to ``on_public_key``."""
        try:
            scheme, public_key = codec.decode_public_key(data)
        except codec.DecodeError:
            return [self._count(peer, None, Reason.MALFORMED)]
        return self.on_public_key(peer, scheme, public_key, now)

    def on_public_key(
        self, peer: str, scheme: str, public_key: bytes, now: float
    ) -> list[Action]:
        """Learn a public key and verify the vertices that waited for it.

        The key id is recomputed from the bytes, so a peer cannot bind a key
        to an id it does not hash to.
        """
        try:
            key = PublicKey.from_bytes(scheme, public_key)
        except UnknownScheme:
            return [self._count(peer, None, Reason.UNKNOWN_SCHEME)]
        except InvalidKey:
            return [self._count(peer, None, Reason.MALFORMED_KEY)]
        if key.key_id in self._keys:
            return []
        self._cache_key(key)
        self._key_fetches.pop(key.key_id, None)
        actions: list[Action] = []
        for vertex_id in sorted(self._waiting_key.pop(key.key_id, ())):
            orphan = self._orphans.get(vertex_id)
            if orphan is None:
                continue
            candidates = [orphan.vertex, *orphan.alternates]
            valid = next((v for v in candidates if verify_signature(v, key)), None)
            if valid is None:
                actions.extend(
                    self._drop(vertex_id, Reason.BAD_SIGNATURE, unlink_key=False)
                )
                continue
            orphan.vertex = valid
            orphan.alternates.clear()
            actions.extend(self._note_key_used(key))
            actions.extend(self._link_waiting(orphan, now))
        return self._merge_requests(actions)

    def on_tick(self, now: float) -> list[Action]:
        """Expire old orphans and repeat due requests for missing ids and keys."""
        actions: list[Action] = []
        expire_before = now - self.params.orphan_ttl
        while self._orphans:
            vertex_id, orphan = next(iter(self._orphans.items()))
            if orphan.arrived > expire_before:
                break
            actions.extend(self._drop(vertex_id, Reason.ORPHAN_EXPIRED))

        by_peer: dict[str, list[bytes]] = {}
        for vertex_id, fetch in self._vertex_fetches.items():
            peer = self._due_peer(fetch, now)
            if peer is not None:
                by_peer.setdefault(peer, []).append(vertex_id)
        actions.extend(self._requests(by_peer))
        for key_id, fetch in self._key_fetches.items():
            peer = self._due_peer(fetch, now)
            if peer is not None:
                actions.append(RequestKey(peer, key_id))
        return actions

    # -- checks ----------------------------------------------------------------------

    def _check_content(self, vertex: Vertex, now: float) -> Reason | None:
        params = self.params
        info = SCHEMES.get(vertex.scheme)
        if info is None:
            return Reason.UNKNOWN_SCHEME
        if not vertex.parents:
            # The genesis is known from the start, so this is another root.
            return Reason.NO_PARENTS
        if len(vertex.parents) > params.max_parents:
            return Reason.TOO_MANY_PARENTS
        if len(vertex.payload) > params.max_payload_bytes:
            return Reason.OVERSIZED_PAYLOAD
        if vertex.id in vertex.parents:
            return Reason.SELF_REFERENCE
        if vertex.timestamp_ms > now * 1000 + params.max_clock_skew_ms:
            return Reason.FUTURE_TIMESTAMP
        if (
            params.max_age_ms is not None
            and vertex.timestamp_ms < now * 1000 - params.max_age_ms
        ):
            return Reason.STALE_TIMESTAMP
        if len(vertex.signature) != info.signature_bytes:
            return Reason.BAD_SIGNATURE
        for parent in vertex.parents:
            if parent in self._rejected:
                return Reason.PARENT_REJECTED
        return None

    def _keep_alternate(self, orphan: _Orphan, copy: Vertex) -> None:
        if orphan.missing is not None or len(orphan.alternates) >= _MAX_ALTERNATES:
            return
        if copy.signature != orphan.vertex.signature and copy not in orphan.alternates:
            orphan.alternates.append(copy)

    def _creates_cycle(self, vertex_id: bytes, missing: set[bytes]) -> bool:
        """Return whether a waiting ancestor of ``vertex_id`` waits for it.

        The search visits at most ``_CYCLE_SEARCH_LIMIT`` buffered vertices, so
        a flood of orphans cannot make admission quadratic. A longer cycle
        goes undetected here, but its members can never be admitted, so they
        expire with the orphan TTL like any orphan whose parents never come.
        """
        if vertex_id not in self._waiting_parent:
            return False
        stack = [p for p in missing if p in self._orphans]
        seen: set[bytes] = set()
        while stack and len(seen) < _CYCLE_SEARCH_LIMIT:
            current = stack.pop()
            if current == vertex_id:
                return True
            if current in seen:
                continue
            seen.add(current)
            orphan = self._orphans.get(current)
            if orphan is not None and orphan.missing:
                stack.extend(orphan.missing)
        return False

    # -- buffering and linking -----------------------------------------------------------

    def _has_room(self, peer: str) -> bool:
        params = self.params
        if len(self._orphans) >= params.max_orphans:
            return False
        return self._orphans_per_peer.get(peer, 0) < params.max_orphans_per_peer

    def _add_orphan(self, orphan: _Orphan) -> None:
        self._orphans[orphan.vertex.id] = orphan
        # The vertex may have been requested as someone's parent; it is here.
        self._vertex_fetches.pop(orphan.vertex.id, None)
        peer = orphan.peer
        self._orphans_per_peer[peer] = self._orphans_per_peer.get(peer, 0) + 1

    def _wait_for_key(self, peer: str, vertex: Vertex, now: float) -> list[Action]:
        if not self._has_room(peer):
            return self._reject(peer, vertex.id, Reason.ORPHAN_LIMIT)
        self._add_orphan(_Orphan(vertex, peer, now, None))
        author = vertex.author
        self._waiting_key.setdefault(author, set()).add(vertex.id)
        if self._want(self._key_fetches, author, vertex.id, peer, now):
            return [RequestKey(peer, author)]
        return []

    def _link(self, peer: str, vertex: Vertex, now: float) -> list[Action]:
        """Admit a verified vertex, or buffer it until its parents arrive."""
        missing = {p for p in vertex.parents if not self.is_known(p)}
        if not missing:
            return self._admit(vertex, peer)
        if self._creates_cycle(vertex.id, missing):
            return self._reject(peer, vertex.id, Reason.CYCLE)
        if not self._has_room(peer):
            return self._reject(peer, vertex.id, Reason.ORPHAN_LIMIT)
        orphan = _Orphan(vertex, peer, now, missing)
        self._add_orphan(orphan)
        return self._wait_for_parents(orphan, now)

    def _link_waiting(self, orphan: _Orphan, now: float) -> list[Action]:
        """Continue with an orphan whose signature has just been verified."""
        vertex = orphan.vertex
        missing = {p for p in vertex.parents if not self.is_known(p)}
        if not missing:
            self._remove_orphan(vertex.id)
            return self._admit(vertex, orphan.peer)
        if self._creates_cycle(vertex.id, missing):
            return self._drop(vertex.id, Reason.CYCLE)
        orphan.missing = missing
        return self._wait_for_parents(orphan, now)

    def _wait_for_parents(self, orphan: _Orphan, now: float) -> list[Action]:
        vertex_id = orphan.vertex.id
        wanted: list[bytes] = []
        for parent in sorted(orphan.missing or ()):
            self._waiting_parent.setdefault(parent, set()).add(vertex_id)
            # A parent that is itself waiting is on its way already.
            if parent in self._orphans:
                continue
            if self._want(self._vertex_fetches, parent, vertex_id, orphan.peer, now):
                wanted.append(parent)
        return self._requests({orphan.peer: wanted}) if wanted else []

    def _want(
        self,
        fetches: dict[bytes, _Fetch],
        wanted_id: bytes,
        waiter: bytes,
        peer: str,
        now: float,
    ) -> bool:
        """Register interest in ``wanted_id``; True if it should be requested now."""
        fetch = fetches.get(wanted_id)
        if fetch is None:
            fetches[wanted_id] = _Fetch(
                [peer], 1, now + self.params.fetch_interval, {waiter}
            )
            return True
        fetch.waiters.add(waiter)
        if peer not in fetch.peers and len(fetch.peers) < _MAX_FETCH_PEERS:
            fetch.peers.append(peer)
        return False

    def _due_peer(self, fetch: _Fetch, now: float) -> str | None:
        """Return the peer to ask again if a repeat request is due, else None."""
        if fetch.attempts >= self.params.max_fetch_attempts or fetch.next_at > now:
            return None
        peer = fetch.peers[fetch.attempts % len(fetch.peers)]
        fetch.attempts += 1
        fetch.next_at = now + self.params.fetch_interval
        return peer

    def _requests(self, by_peer: dict[str, list[bytes]]) -> list[Action]:
        """Split requests for missing ids into messages of bounded size."""
        size = self.params.max_ids_per_request
        actions: list[Action] = []
        for peer, ids in by_peer.items():
            for start in range(0, len(ids), size):
                actions.append(RequestVertices(peer, tuple(ids[start : start + size])))
        return actions

    def _merge_requests(self, actions: list[Action]) -> list[Action]:
        """Merge the vertex requests of one batch into one request per peer.

        Ids admitted later in the same batch are no longer fetched, so they
        are left out.
        """
        merged: dict[str, list[bytes]] = {}
        others: list[Action] = []
        for action in actions:
            if not isinstance(action, RequestVertices):
                others.append(action)
                continue
            ids = merged.setdefault(action.peer, [])
            for vertex_id in action.ids:
                if vertex_id in self._vertex_fetches and vertex_id not in ids:
                    ids.append(vertex_id)
        others.extend(self._requests(merged))
        return others

    # -- admitting -------------------------------------------------------------------------

    def _admit(self, vertex: Vertex, peer: str) -> list[Action]:
        self._remember(vertex.id)
        self._admitted += 1
        self._vertex_fetches.pop(vertex.id, None)
        actions: list[Action] = [Admitted(vertex, peer)]
        actions.extend(self._release_children([vertex.id]))
        return actions

    def _release_children(self, admitted: list[bytes]) -> list[Action]:
        """Admit waiting vertices whose last missing parent was just admitted.

        Breadth-first from the newly admitted ids, so every vertex comes out
        after all its parents.
        """
        actions: list[Action] = []
        queue = deque(admitted)
        while queue:
            parent = queue.popleft()
            for child_id in sorted(self._waiting_parent.pop(parent, ())):
                orphan = self._orphans.get(child_id)
                if orphan is None or orphan.missing is None:
                    continue
                orphan.missing.discard(parent)
                if orphan.missing:
                    continue
                self._remove_orphan(child_id)
                self._remember(child_id)
                self._admitted += 1
                self._vertex_fetches.pop(child_id, None)
                actions.append(Admitted(orphan.vertex, orphan.peer))
                queue.append(child_id)
        return actions

    def _remember(self, vertex_id: bytes) -> None:
        self._known[vertex_id] = None
        if len(self._known) > self.params.known_capacity:
            del self._known[next(iter(self._known))]

    def _cache_key(self, key: PublicKey) -> None:
        self._keys[key.key_id] = key
        if len(self._keys) > self.params.max_keys:
            oldest = next(iter(self._keys))
            del self._keys[oldest]
            self._stored_keys.discard(oldest)

    def _note_key_used(self, key: PublicKey) -> list[Action]:
        if key.key_id in self._stored_keys:
            return []
        self._stored_keys.add(key.key_id)
        return [StoreKey(key)]

    # -- rejecting and dropping ------------------------------------------------------------

    def _count(self, peer: str, vertex_id: bytes | None, reason: Reason) -> Rejected:
        counts = self._rejections.get(peer)
        if counts is None:
            if len(self._rejections) >= self.params.max_tracked_peers:
                del self._rejections[next(iter(self._rejections))]
            counts = self._rejections[peer] = {}
        counts[reason] = counts.get(reason, 0) + 1
        self._rejection_totals[reason] = self._rejection_totals.get(reason, 0) + 1
        return Rejected(peer, vertex_id, reason)

    def _reject(self, peer: str, vertex_id: bytes, reason: Reason) -> list[Action]:
        """Reject a vertex that is not buffered, and drop orphans waiting for it."""
        if reason in _PERMANENT_REASONS:
            self._remember_rejected(vertex_id, reason)
        actions: list[Action] = [self._count(peer, vertex_id, reason)]
        actions.extend(self._drop_waiting_children(vertex_id, reason))
        return actions

    def _remember_rejected(self, vertex_id: bytes, reason: Reason) -> None:
        self._rejected[vertex_id] = reason
        if len(self._rejected) > self.params.rejected_capacity:
            del self._rejected[next(iter(self._rejected))]

    def _drop(
        self, vertex_id: bytes, reason: Reason, *, unlink_key: bool = True
    ) -> list[Action]:
        """Remove a buffered vertex and its waiting descendants, rejecting each."""
        orphan = self._remove_orphan(vertex_id, unlink_key=unlink_key)
        if orphan is None:
            return []
        return self._reject(orphan.peer, vertex_id, reason)

    def _drop_waiting_children(self, root: bytes, reason: Reason) -> list[Action]:
        """Drop every buffered descendant that waits, directly or not, for ``root``."""
        if reason in _PERMANENT_REASONS:
            child_reason = Reason.PARENT_REJECTED
        elif reason in (Reason.ORPHAN_EXPIRED, Reason.ORPHAN_LIMIT):
            child_reason = reason
        else:
            child_reason = Reason.PARENT_DROPPED
        actions: list[Action] = []
        # Iterative, because waiting chains can be as long as the buffer.
        stack = [root]
        while stack:
            parent = stack.pop()
            self._vertex_fetches.pop(parent, None)
            for child_id in sorted(self._waiting_parent.pop(parent, ())):
                orphan = self._remove_orphan(child_id)
                if orphan is None:
                    continue
                if child_reason is Reason.PARENT_REJECTED:
                    self._remember_rejected(child_id, child_reason)
                actions.append(self._count(orphan.peer, child_id, child_reason))
                stack.append(child_id)
        return actions

    def _remove_orphan(
        self, vertex_id: bytes, *, unlink_key: bool = True
    ) -> _Orphan | None:
        """Take a vertex out of the buffer and out of every index that names it."""
        orphan = self._orphans.pop(vertex_id, None)
        if orphan is None:
            return None
        peer = orphan.peer
        remaining = self._orphans_per_peer[peer] - 1
        if remaining:
            self._orphans_per_peer[peer] = remaining
        else:
            del self._orphans_per_peer[peer]
        if orphan.missing is None:
            if unlink_key:
                _unlink(self._waiting_key, orphan.vertex.author, vertex_id)
            _forget_waiter(self._key_fetches, orphan.vertex.author, vertex_id)
            return orphan
        for parent in orphan.missing:
            _unlink(self._waiting_parent, parent, vertex_id)
            _forget_waiter(self._vertex_fetches, parent, vertex_id)
        return orphan


def _unlink(index: dict[bytes, set[bytes]], key: bytes, member: bytes) -> None:
    members = index.get(key)
    if members is None:
        return
    members.discard(member)
    if not members:
        del index[key]


def _forget_waiter(
    fetches: dict[bytes, _Fetch], wanted_id: bytes, waiter: bytes
) -> None:
    """Stop fetching ``wanted_id`` once no buffered vertex waits for it."""
    fetch = fetches.get(wanted_id)
    if fetch is None:
        return
    fetch.waiters.discard(waiter)
    if not fetch.waiters:
        del fetches[wanted_id]


def _batch_order(vertices: list[Vertex]) -> list[Vertex]:
    """Order a batch so that parents inside the batch come before children."""
    by_id = {v.id: v for v in vertices}
    indegree = {
        vertex_id: sum(p in by_id for p in v.parents) for vertex_id, v in by_id.items()
    }
    children: dict[bytes, list[bytes]] = {}
    for vertex_id, vertex in by_id.items():
        for parent in vertex.parents:
            if parent in by_id:
                children.setdefault(parent, []).append(vertex_id)
    ready = deque(vertex_id for vertex_id, n in indegree.items() if n == 0)
    ordered: list[Vertex] = []
    while ready:
        vertex_id = ready.popleft()
        ordered.append(by_id[vertex_id])
        for child_id in children.get(vertex_id, ()):
            indegree[child_id] -= 1
            if indegree[child_id] == 0:
                ready.append(child_id)
    # Vertices on an in-batch cycle never reach indegree 0; on_vertex rejects them.
    placed = {v.id for v in ordered}
    ordered.extend(v for v in by_id.values() if v.id not in placed)
    return ordered
