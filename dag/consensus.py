"""Avalanche consensus over a DAG of vertices, as a sans-IO engine.

Theory. Every vertex belongs to one conflict set per conflict key it carries
(vertices that share a key conflict, and a vertex without keys conflicts with
nothing). Each set chooses its preferred member with a Snowball tree, as
avalanchego's snowman does. Members are leaves of a binary trie over the bits
of their ids. At each split, a side whose members got at least
``alpha_preference`` votes in a poll gains one preference strength. The set
prefers the stronger side at every split, keeping its current side on ties.
Splitting by bits lets many colours converge: a flat vote over ten colours
rarely gives any one of them ``alpha_preference`` of ``k`` votes, but each
binary split does.

A vote for a vertex is a vote for all of its ancestors. A vertex is *strongly
preferred* when it and every processing ancestor are preferred in all their
sets. A poll in which a strongly preferred vertex gets at least
``alpha_confidence`` votes is successful for it. Its confidence counts consecutive successful polls, and
any other poll resets it. A vertex is accepted once its confidence reaches
``beta`` and all its parents are accepted. Accepting a vertex rejects the other
members of its sets, and rejection flows to all descendants.

Invariants:
    * A vertex with confidence > 0 is strongly preferred (a preference change
      resets the confidence of every vertex that lost strong preference).
    * A poll counts only for vertices added before it was sent, and poll
      results are applied in the order the polls were sent, so "consecutive"
      follows the node's own poll sequence, as in avalanchego.
    * Accepted vertices have accepted ancestors, so `Decided.accepted` lists
      ids in topological order.

Polls. The engine samples ``k`` nodes from its peers plus itself (when it
knows its own id, like avalanchego's validator sampling) and asks about its
preferred frontier: the processing tips of the strongly preferred part of the
DAG. A responder votes for the asked ids it strongly prefers. If it prefers
all of them, its reply equals the request; otherwise it adds its own frontier,
which carries its preference to the poller.

Counting. Each processing vertex owns a bit, and its ancestor mask has the
bits of itself and its processing ancestors. A reply becomes the OR of its
voted vertices' masks, per-vertex counts are kept bit-sliced over those masks,
and the thresholds are bitwise comparisons (`dag.consensus_sets`). A poll
therefore costs big-int operations plus Python work only for vertices whose
confidence starts, resets or finalizes, never a walk over the DAG.

A poll whose vertices were all decided while it was in flight is dropped as if lost:
it neither resets confidence nor counts as a failed poll.

No quorum. When polls fail for want of replies (timeouts, too few peers), or
``beta`` polls in a row fail on split votes, the engine re-polls its frontier
after a delay that doubles up to ``repoll_backoff_max``, with one poll per
delay. It never creates vertices, and
a failing poll adds nothing that outlives it, so memory stays flat.

Public API:
    Avalanche(params, rng, self_id=None)
        .set_peers(peers, now) -> list[Action]
        .add_vertex(vertex_id, parents, conflict_keys, now) -> list[Action]
        .on_poll(peer, request_id, vertex_ids, now) -> list[Action]
        .on_poll_reply(peer, request_id, votes, now) -> list[Action]
        .on_poll_failed(peer, request_id, now) -> list[Action]
        .on_tick(now) -> list[Action]
        .next_deadline() -> float          (math.inf when idle)
        .status(vertex_id) -> Status
        .frontier() -> tuple[VertexId, ...]
        .processing_count -> int
        .polls_completed -> int
        .stats() -> EngineStats
    Actions: SendPoll(peer, request_id, vertex_ids), PollReply(peer, request_id,
        votes), FetchVertices(peer, vertex_ids), Decided(accepted, rejected)
    Errors: ProcessingFull(DagError); parameters in dag.consensus_params.
"""

from __future__ import annotations

import bisect
import enum
import math
import random
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from dag import DagError
from dag.consensus_params import AvalancheParams, InvalidParams
from dag.consensus_sets import ConflictSet, add_weighted, at_least, iter_bits, order_key

__all__ = [
    "Action",
    "Avalanche",
    "AvalancheParams",
    "Decided",
    "EngineStats",
    "FetchVertices",
    "InvalidParams",
    "PollReply",
    "ProcessingFull",
    "SendPoll",
    "Status",
]

VertexId: TypeAlias = Hashable
PeerId: TypeAlias = Hashable

_PROCESSING: Final = 0
_ACCEPTED: Final = 1
_REJECTED: Final = 2


class ProcessingFull(DagError):
    """More undecided vertices than ``max_processing``; retry after decisions."""


class Status(enum.Enum):
    """Consensus status of a vertex as recorded by this engine."""

    UNKNOWN = "unknown"
    PROCESSING = "processing"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class SendPoll:
    """Send a poll request about `vertex_ids` to `peer`."""

    peer: PeerId
    request_id: int
    vertex_ids: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class PollReply:
    """Reply to poll `request_id` from `peer` with `votes`."""

    peer: PeerId
    request_id: int
    votes: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class FetchVertices:
    """Request vertices this engine has never seen from `peer`."""

    peer: PeerId
    vertex_ids: tuple[VertexId, ...]


@dataclass(frozen=True, slots=True)
class Decided:
    """Decisions to persist before reporting; `accepted` is topological."""

    accepted: tuple[VertexId, ...]
    rejected: tuple[VertexId, ...]


Action: TypeAlias = SendPoll | PollReply | FetchVertices | Decided


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters since the engine started."""

    processing: int
    outstanding_polls: int
    polls_sent: int
    polls_completed: int
    polls_failed: int
    polls_stale: int
    replies_missing: int
    replies_unexpected: int
    replies_invalid: int
    accepted: int
    rejected: int
    repoll_backoff: float


class _Vertex:
    __slots__ = (
        "anc",
        "children",
        "d_children",
        "index",
        "keys",
        "order",
        "parents",
        "seq",
        "sp",
        "start",
        "state",
        "vid",
    )

    def __init__(self, vid, parents, keys, seq, index):
        self.vid = vid
        self.parents: tuple[_Vertex, ...] = parents
        self.children: list[_Vertex] = []
        self.keys: tuple[Hashable, ...] = keys
        self.seq: int = seq
        # Bit of this vertex in the engine's masks (renumbered by _reindex).
        self.index: int = index
        # Mask of this vertex and its processing ancestors at insertion.
        self.anc: int = 0
        self.state: int = _PROCESSING
        # Member of the strongly preferred DAG (accepted vertices always are).
        self.sp: bool = False
        # Children that are in the strongly preferred DAG; 0 means a tip.
        self.d_children: int = 0
        # Poll number that started the current run of successes, or -1.
        self.start: int = -1
        # Position in conflict-set tries: the id's bits as an integer.
        self.order: int = order_key(vid)


class _Poll:
    __slots__ = ("batch", "deadline", "pending", "replies", "request_id", "snapshot")

    def __init__(self, request_id, batch, snapshot, deadline):
        self.request_id: int = request_id
        self.batch: tuple = batch
        self.pending: set = set()
        self.replies: list[tuple] = []
        # Vertices with a lower index existed when the poll was sent.
        self.snapshot: int = snapshot
        self.deadline: float = deadline


class Avalanche:
    """Avalanche engine for one node; see the module docstring.

    Args:
        params: Validated on construction.
        rng: Source of the peer samples, injected so runs replay exactly.
        self_id: This node's peer id. When given, the node is part of the
            population that polls sample from and supplies its own vote in a
            poll without a message, as avalanchego does. When None, polls
            sample only peers.

    Vertex ids and peer ids may be any hashable, orderable values (bytes in
    the node, ints in the simulator).
    """

    def __init__(
        self,
        params: AvalancheParams,
        rng: random.Random,
        self_id: PeerId | None = None,
    ) -> None:
        params.validate()
        self.params = params
        self._rng = rng
        self._self_id = self_id
        self._population: list = [] if self_id is None else [self_id]
        self._vertices: dict = {}  # processing vertices and accepted tips
        self._processing: dict[_Vertex, None] = {}  # ordered by seq
        self._decided: dict = {}  # vertex id -> True (accepted) / False
        # Ids a responder votes for: strongly preferred or accepted.
        self._yes: set = set()
        self._sets: dict = {}  # conflict key -> ConflictSet
        self._accepted_keys: set = set()
        self._contested: set[ConflictSet] = set()
        self._frontier: set[_Vertex] = set()
        self._accepted_tips: set[_Vertex] = set()
        self._by_index: dict[int, _Vertex] = {}
        self._proc_mask = 0  # processing vertices
        self._sp_mask = 0  # strongly preferred processing vertices
        self._run_mask = 0  # vertices with confidence > 0
        self._next_index = 0
        self._runs: deque = deque()  # (start, vertex), ordered by start
        self._ready: set[_Vertex] = set()
        self._polls: dict[int, _Poll] = {}
        self._fetching: dict = {}  # vertex id -> time of last request
        self._seq = 0
        self._poll_no = 0
        self._next_request_id = 1
        self._next_poll_at = -math.inf
        self._backoff = 0.0
        self._failures = 0  # polls in a row without quorum
        self._pending_accepted: list = []
        self._pending_rejected: list = []
        self._counters = Counter()
        self._pending_recompute = False

    # ------------------------------------------------------------------
    # Events

    def set_peers(self, peers: Iterable[PeerId], now: float) -> list[Action]:
        """Replace the set of peers that polls sample from."""
        population = sorted({p for p in peers if p != self._self_id})
        if self._self_id is not None:
            population.append(self._self_id)
        self._population = population
        return self._finish(now)

    def add_vertex(
        self,
        vertex_id: VertexId,
        parents: Sequence[VertexId],
        conflict_keys: Sequence[Hashable],
        now: float,
    ) -> list[Action]:
        """Add an admitted vertex and start polling for it.

        Parents this engine has never seen are taken as accepted: the caller
        adds a vertex only after its parents are stored, and after a restart
        the engine holds only the store's processing vertices.

        Raises:
            ProcessingFull: if ``max_processing`` vertices are undecided.
        """
        if vertex_id in self._vertices or vertex_id in self._decided:
            return []
        if len(self._processing) >= self.params.max_processing:
            raise ProcessingFull(
                f"{len(self._processing)} vertices are processing, the maximum "
                f"is max_processing={self.params.max_processing}; retry after "
                "decisions"
            )
        self._fetching.pop(vertex_id, None)
        parent_objs = []
        doomed = False
        vertices = self._vertices
        decided = self._decided
        for pid in dict.fromkeys(parents):
            parent = vertices.get(pid)
            if parent is not None:
                parent_objs.append(parent)
            elif decided.get(pid) is False:
                doomed = True
        keys = tuple(dict.fromkeys(conflict_keys)) if conflict_keys else ()
        if doomed or (keys and not self._accepted_keys.isdisjoint(keys)):
            self._decided[vertex_id] = False
            self._pending_rejected.append(vertex_id)
            self._counters["rejected"] += 1
            return self._finish(now)
        self._insert(vertex_id, tuple(parent_objs), keys)
        return self._finish(now)

    def on_poll(
        self,
        peer: PeerId,
        request_id: int,
        vertex_ids: Sequence[VertexId],
        now: float,
    ) -> list[Action]:
        """Reply to a poll from `peer` and fetch requested ids never seen."""
        if len(vertex_ids) > self.params.max_poll_batch:
            self._counters["requests_invalid"] += 1
            return [PollReply(peer, request_id, ())]
        votes, unknown = self._votes_for(tuple(vertex_ids))
        actions: list[Action] = [PollReply(peer, request_id, votes)]
        fetch = self._fetch_action(peer, unknown, now)
        if fetch is not None:
            actions.append(fetch)
        return actions

    def on_poll_reply(
        self,
        peer: PeerId,
        request_id: int,
        votes: Sequence[VertexId],
        now: float,
    ) -> list[Action]:
        """Record `peer`'s votes for poll `request_id`."""
        poll = self._polls.get(request_id)
        if poll is None or peer not in poll.pending:
            self._counters["replies_unexpected"] += 1
            return []
        poll.pending.discard(peer)
        votes = tuple(votes)
        actions: list[Action] = []
        if votes == poll.batch:
            # The common reply names only ids we asked about: nothing to check.
            poll.replies.append(votes)
        elif len(votes) > self.params.max_votes:
            self._counters["replies_invalid"] += 1
        else:
            poll.replies.append(votes)
            unknown = [
                v for v in votes if v not in self._vertices and v not in self._decided
            ]
            fetch = self._fetch_action(peer, unknown, now)
            if fetch is not None:
                actions.append(fetch)
        # Until this poll is complete nothing else can change: polls start on
        # ticks or completions, and results apply in order.
        return self._finish(now, actions) if not poll.pending else actions

    def on_poll_failed(self, peer: PeerId, request_id: int, now: float) -> list[Action]:
        """Count `peer`'s reply as missing (unreachable, error, closed)."""
        poll = self._polls.get(request_id)
        if poll is not None and peer in poll.pending:
            poll.pending.discard(peer)
            self._counters["replies_missing"] += 1
        return self._finish(now)

    def on_tick(self, now: float) -> list[Action]:
        """Time out overdue polls and start polls whose delay has passed."""
        for poll in self._polls.values():
            if poll.deadline > now:
                break
            self._counters["replies_missing"] += len(poll.pending)
            poll.pending.clear()
        return self._finish(now)

    # ------------------------------------------------------------------
    # Queries

    def next_deadline(self) -> float:
        """Return the time `on_tick` next has work, or math.inf when idle."""
        deadline = math.inf
        for poll in self._polls.values():
            deadline = poll.deadline
            break
        if self._processing and len(self._polls) < self.params.concurrent_repolls:
            deadline = min(deadline, self._next_poll_at)
        return deadline

    def status(self, vertex_id: VertexId) -> Status:
        """Return the consensus status of `vertex_id`."""
        vertex = self._vertices.get(vertex_id)
        if vertex is not None:
            return Status.PROCESSING if vertex.state == _PROCESSING else Status.ACCEPTED
        decided = self._decided.get(vertex_id)
        if decided is None:
            return Status.UNKNOWN
        return Status.ACCEPTED if decided else Status.REJECTED

    def frontier(self) -> tuple[VertexId, ...]:
        """Return the preferred tips a new vertex should name as parents.

        At most ``max_parents`` ids, newest first when there are more, sorted.
        Empty until the engine has seen a vertex.
        """
        tips = sorted(self._frontier, key=lambda v: v.seq, reverse=True)
        return tuple(sorted(v.vid for v in tips[: self.params.max_parents]))

    @property
    def processing_count(self) -> int:
        """Number of undecided vertices."""
        return len(self._processing)

    @property
    def polls_completed(self) -> int:
        """Number of polls whose results have been applied."""
        return self._poll_no

    def stats(self) -> EngineStats:
        """Return a snapshot of the engine's counters."""
        c = self._counters
        return EngineStats(
            processing=len(self._processing),
            outstanding_polls=len(self._polls),
            polls_sent=c["polls_sent"],
            polls_completed=self._poll_no,
            polls_failed=c["polls_failed"],
            polls_stale=c["polls_stale"],
            replies_missing=c["replies_missing"],
            replies_unexpected=c["replies_unexpected"],
            replies_invalid=c["replies_invalid"],
            accepted=c["accepted"],
            rejected=c["rejected"],
            repoll_backoff=self._backoff,
        )

    # ------------------------------------------------------------------
    # Vertex bookkeeping

    def _insert(self, vid, parents: tuple[_Vertex, ...], keys: tuple) -> None:
        if self._next_index > 2 * len(self._processing) + 256:
            self._reindex()
        index = self._next_index
        self._next_index += 1
        vertex = _Vertex(vid, parents, keys, self._seq, index)
        self._seq += 1
        bit = 1 << index
        anc = bit
        # Conflict sets below never change a parent's strong preference, so
        # it is read in this one pass over the parents.
        parents_sp = True
        for parent in parents:
            parent.children.append(vertex)
            if parent.state == _PROCESSING:
                anc |= parent.anc
            if not parent.sp:
                parents_sp = False
        vertex.anc = anc
        self._vertices[vid] = vertex
        self._processing[vertex] = None
        self._by_index[index] = vertex
        self._proc_mask |= bit
        for key in keys:
            cset = self._sets.get(key)
            if cset is None:
                self._sets[key] = ConflictSet(vertex)
            else:
                cset.members.append(vertex)
                self._contested.add(cset)
                if cset.choose():
                    self._pending_recompute = True
        preferred = parents_sp
        for key in keys:
            if self._sets[key].pref is not vertex:
                preferred = False
        if preferred:
            vertex.sp = True
            self._yes.add(vid)
            self._sp_mask |= bit
            frontier = self._frontier
            for parent in parents:
                parent.d_children += 1
                frontier.discard(parent)
            frontier.add(vertex)

    def _reindex(self) -> None:
        """Renumber processing vertices densely so the masks stay small."""
        old_indices = [v.index for v in self._processing]
        self._by_index = {}
        self._proc_mask = self._sp_mask = self._run_mask = 0
        for index, vertex in enumerate(self._processing):
            vertex.index = index
            bit = 1 << index
            anc = bit
            for parent in vertex.parents:
                if parent.state == _PROCESSING:
                    anc |= parent.anc
            vertex.anc = anc
            self._by_index[index] = vertex
            self._proc_mask |= bit
            if vertex.sp:
                self._sp_mask |= bit
            if vertex.start >= 0:
                self._run_mask |= bit
        self._next_index = len(old_indices)
        for poll in self._polls.values():
            poll.snapshot = bisect.bisect_left(old_indices, poll.snapshot)

    def _is_preferred(self, vertex: _Vertex) -> bool:
        sets = self._sets
        return all(sets[key].pref is vertex for key in vertex.keys)

    def _recompute_preferred_dag(self) -> None:
        """Rebuild strong preference after a conflict set changed preference."""
        self._pending_recompute = False
        sp_mask = 0
        for vertex in self._processing:
            vertex.sp = self._is_preferred(vertex) and all(p.sp for p in vertex.parents)
            if vertex.sp:
                sp_mask |= 1 << vertex.index
                self._yes.add(vertex.vid)
            else:
                self._yes.discard(vertex.vid)
        self._sp_mask = sp_mask
        for vertex in self._vertices.values():
            vertex.d_children = 0
        for vertex in self._vertices.values():
            if vertex.sp:
                for parent in vertex.parents:
                    parent.d_children += 1
        self._frontier = {
            v for v in self._vertices.values() if v.sp and v.d_children == 0
        }
        for index in iter_bits(self._run_mask & ~sp_mask):
            self._reset_run(self._by_index[index])

    # ------------------------------------------------------------------
    # Responder side

    def _votes_for(self, batch: tuple) -> tuple[tuple, list]:
        if self._yes.issuperset(batch):
            return batch, []
        votes = []
        unknown = []
        vertices = self._vertices
        for vid in batch:
            vertex = vertices.get(vid)
            if vertex is not None:
                if vertex.sp:
                    votes.append(vid)
                continue
            decided = self._decided.get(vid)
            if decided:
                votes.append(vid)
            elif decided is None:
                unknown.append(vid)
        if len(votes) == len(batch):
            return batch, unknown
        # We prefer something else or lack a vertex: add our frontier so the
        # poller learns what we prefer instead.
        asked = set(votes)
        extra = sorted(v.vid for v in self._frontier if v.vid not in asked)
        return tuple(votes + extra)[: self.params.max_votes], unknown

    def _fetch_action(self, peer, unknown: list, now: float) -> FetchVertices | None:
        wanted = []
        for vid in unknown:
            last = self._fetching.get(vid)
            if last is None or now - last >= self.params.poll_timeout:
                self._fetching[vid] = now
                wanted.append(vid)
        # The request memory is bounded: forget the oldest requests first.
        while len(self._fetching) > 4 * self.params.max_processing:
            del self._fetching[next(iter(self._fetching))]
        if not wanted:
            return None
        return FetchVertices(peer, tuple(wanted))

    # ------------------------------------------------------------------
    # Poller side

    def _finish(self, now: float, actions: list[Action] | None = None) -> list[Action]:
        """Apply completed polls, start new ones, and collect the actions."""
        actions = [] if actions is None else actions
        if self._pending_recompute:
            self._recompute_preferred_dag()
        while self._polls:
            head = next(iter(self._polls.values()))
            if head.pending:
                break
            del self._polls[head.request_id]
            self._apply(head, now)
        polls = self._start_polls(now)
        if self._pending_accepted or self._pending_rejected:
            decided = Decided(
                tuple(self._pending_accepted), tuple(self._pending_rejected)
            )
            self._pending_accepted = []
            self._pending_rejected = []
            actions.insert(0, decided)
        actions.extend(polls)
        return actions

    def _start_polls(self, now: float) -> list[Action]:
        actions: list[Action] = []
        params = self.params
        while (
            self._processing
            and len(self._polls) < params.concurrent_repolls
            and now >= self._next_poll_at
        ):
            if len(self._population) < params.alpha_preference:
                # Too few nodes to ever reach a quorum: wait, then look again.
                self._record_failure(now)
                break
            actions.extend(self._send_poll(now))
            if self._backoff > 0:
                self._next_poll_at = now + self._backoff
        return actions

    def _send_poll(self, now: float) -> list[Action]:
        params = self.params
        tips = [v for v in self._frontier if v.state == _PROCESSING]
        if not tips:
            # Nothing processing is strongly preferred (every undecided vertex
            # descends from a losing conflict): ask about the processing tips.
            tips = [
                v
                for v in self._processing
                if not any(c.state == _PROCESSING for c in v.children)
            ]
        tips.sort(key=lambda v: v.seq)
        batch = tuple(v.vid for v in tips[-params.max_poll_batch :])
        request_id = self._next_request_id
        self._next_request_id += 1
        poll = _Poll(request_id, batch, self._next_index, now + params.poll_timeout)
        size = min(params.k, len(self._population))
        sample = self._rng.sample(self._population, size)
        self._polls[request_id] = poll
        self._counters["polls_sent"] += 1
        actions: list[Action] = []
        for peer in sample:
            if peer == self._self_id:
                poll.replies.append(self._votes_for(batch)[0])
            else:
                poll.pending.add(peer)
                actions.append(SendPoll(peer, request_id, batch))
        return actions

    def _record_failure(self, now: float, replies: int = 0) -> None:
        """Count a poll without quorum and decide when the next one may start.

        Too few replies for any quorum means peers are unreachable: back off
        at once. Enough replies without a quorum is normal while vertices
        spread, so the engine re-polls at once until ``beta`` such polls in a
        row show that the network is split or stuck, then backs off too.
        """
        params = self.params
        self._counters["polls_failed"] += 1
        self._failures += 1
        if replies >= params.alpha_preference and self._failures <= params.beta:
            return
        self._backoff = min(
            params.repoll_backoff_max,
            max(params.repoll_backoff_min, 2 * self._backoff),
        )
        self._next_poll_at = now + self._backoff

    def _apply(self, poll: _Poll, now: float) -> None:
        """Apply one poll's votes: strengths, preference, confidence, accepts."""
        params = self.params
        closures = []
        groups: dict[tuple, int] = {}
        for votes in poll.replies:
            groups[votes] = groups.get(votes, 0) + 1
        # A poll counts only for vertices that existed when it was sent.
        universe = self._proc_mask & ((1 << poll.snapshot) - 1)
        touched = 0
        for votes, weight in groups.items():
            mask = self._closure_mask(votes)
            if mask:
                closures.append((mask, weight))
                touched |= mask
        if not (touched & universe) and not self._asks_processing(poll.batch):
            # Every vertex the poll requested was decided while it was in
            # flight. Its votes carry no information about what is still
            # processing, so it is dropped as if it had been lost. It neither
            # resets confidence nor counts as a failure that leads to backoff.
            self._counters["polls_stale"] += 1
            return
        self._poll_no += 1
        planes = [0] * params.k.bit_length()
        for mask, weight in closures:
            add_weighted(planes, mask, weight)
        quorum = at_least(planes, params.alpha_preference, universe) != 0
        if self._contested and self._record_strengths(closures, poll.snapshot):
            quorum = True
        if self._pending_recompute:
            self._recompute_preferred_dag()
        confident = at_least(planes, params.alpha_confidence, universe)
        confident &= self._sp_mask
        for index in iter_bits(self._run_mask & ~confident):
            self._reset_run(self._by_index[index])
        for index in iter_bits(confident & ~self._run_mask):
            self._start_run(self._by_index[index])
        self._accept_ready()
        if quorum:
            self._backoff = 0.0
            self._failures = 0
            self._next_poll_at = -math.inf
        else:
            self._record_failure(now, len(poll.replies))

    def _asks_processing(self, batch: tuple) -> bool:
        vertices = self._vertices
        for vid in batch:
            vertex = vertices.get(vid)
            if vertex is not None and vertex.state == _PROCESSING:
                return True
        return False

    def _closure_mask(self, votes: tuple) -> int:
        mask = 0
        vertices = self._vertices
        for vid in votes:
            vertex = vertices.get(vid)
            if vertex is not None and vertex.state == _PROCESSING:
                mask |= vertex.anc
        return mask & self._proc_mask

    def _record_strengths(self, closures: list, snapshot: int) -> bool:
        """Feed vote counts to contested sets; True if any trie side had alpha."""
        alpha = self.params.alpha_preference
        reached = False
        for cset in list(self._contested):
            counts = {}
            for member in cset.members:
                if member.index < snapshot:
                    counts[member] = sum(
                        weight
                        for mask, weight in closures
                        if (mask >> member.index) & 1
                    )
            if cset.record_counts(counts, alpha):
                reached = True
            if cset.choose():
                self._pending_recompute = True
        return reached

    def _start_run(self, vertex: _Vertex) -> None:
        vertex.start = self._poll_no
        self._run_mask |= 1 << vertex.index
        self._runs.append((vertex.start, vertex))

    def _reset_run(self, vertex: _Vertex) -> None:
        vertex.start = -1
        self._run_mask &= ~(1 << vertex.index)
        self._ready.discard(vertex)

    # ------------------------------------------------------------------
    # Decisions

    def _accept_ready(self) -> None:
        limit = self._poll_no - self.params.beta + 1
        runs = self._runs
        work = deque()
        while runs and runs[0][0] <= limit:
            start, vertex = runs.popleft()
            if vertex.start == start and vertex.state == _PROCESSING:
                self._ready.add(vertex)
                work.append(vertex)
        while work:
            vertex = work.popleft()
            if not self._can_accept(vertex):
                continue
            self._accept(vertex)
            work.extend(c for c in vertex.children if c in self._ready)
        if self._pending_recompute:
            self._recompute_preferred_dag()

    def _can_accept(self, vertex: _Vertex) -> bool:
        if vertex.state != _PROCESSING or not vertex.sp or vertex not in self._ready:
            return False
        for parent in vertex.parents:
            if parent.state != _ACCEPTED:
                return False
        return self._is_preferred(vertex)

    def _forget_processing(self, vertex: _Vertex) -> None:
        vertex.start = -1
        self._ready.discard(vertex)
        del self._processing[vertex]
        del self._by_index[vertex.index]
        keep = ~(1 << vertex.index)
        self._proc_mask &= keep
        self._sp_mask &= keep
        self._run_mask &= keep

    def _accept(self, vertex: _Vertex) -> None:
        vertex.state = _ACCEPTED
        self._forget_processing(vertex)
        self._decided[vertex.vid] = True
        self._pending_accepted.append(vertex.vid)
        self._counters["accepted"] += 1
        for key in vertex.keys:
            cset = self._sets.pop(key)
            self._contested.discard(cset)
            self._accepted_keys.add(key)
            for member in cset.members:
                if member is not vertex:
                    self._reject(member)
        # An accepted parent with an accepted child can never be a tip again,
        # so only its decision is kept.
        for parent in vertex.parents:
            if parent.state == _ACCEPTED and parent in self._accepted_tips:
                self._accepted_tips.discard(parent)
                self._vertices.pop(parent.vid, None)
        self._accepted_tips.add(vertex)

    def _reject(self, first: _Vertex) -> None:
        stack = [first]
        while stack:
            vertex = stack.pop()
            if vertex.state != _PROCESSING:
                continue
            vertex.state = _REJECTED
            if vertex.sp:
                # Only a vertex that lost strong preference can be rejected, so
                # this is a bug guard: rebuild the preferred DAG from scratch.
                self._pending_recompute = True
            self._forget_processing(vertex)
            del self._vertices[vertex.vid]
            self._frontier.discard(vertex)
            self._decided[vertex.vid] = False
            self._yes.discard(vertex.vid)
            self._pending_rejected.append(vertex.vid)
            self._counters["rejected"] += 1
            for key in vertex.keys:
                self._leave_set(key, vertex)
            stack.extend(c for c in vertex.children if c.state == _PROCESSING)

    def _leave_set(self, key, vertex: _Vertex) -> None:
        cset = self._sets.get(key)
        if cset is None:
            return
        cset.members.remove(vertex)
        if not cset.members:
            del self._sets[key]
            self._contested.discard(cset)
            return
        if len(cset.members) == 1:
            self._contested.discard(cset)
        if cset.pref is vertex:
            cset.pref = cset.members[0]
            cset.choose()
            self._pending_recompute = True
