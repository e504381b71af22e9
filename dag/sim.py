"""Deterministic simulator: many Avalanche engines on one virtual network.

The simulator runs the real `dag.consensus.Avalanche` engine for every honest
node in one process. Messages are events on a heap of ``(time, seq, node,
kind, ...)`` and one seeded `random.Random` draws every latency, jitter, loss
and peer sample, so a seed always replays the same run and the same result.
Time is virtual (seconds); nothing sleeps.

Workload. Vertex 0 is a genesis that every node has accepted. Vertices
1..V are issued one per ``issue_interval_ms`` by a random honest node, which
names its preferred frontier as parents and gossips the vertex to every node.
With probability ``conflict_rate`` a vertex instead double-spends a recent
vertex: it takes that vertex's conflict key and parents, so the two compete as
siblings. With ``conflict_rate=1`` and ``issue_interval_ms=0`` every vertex is
one more colour of a single conflict set.

Byzantine nodes run no engine:
    silent: drop every message.
    stubborn: reply to every poll with their own pick in each conflict set (the
        member issued last, which the honest majority usually does not prefer
        because it arrives later) and never vote for anything else.
    equivocate: vote for every asked vertex and every member of every conflict
        set, and issue the double-spends themselves, sending one side to half
        the nodes and the other side to the rest.

Network. Every message takes ``latency_ms`` plus up to ``jitter_ms`` and is
dropped with probability ``loss``; a dropped vertex is gossiped again one 1 s
heartbeat later. A partition drops polls and fetches between
its sides, and holds gossiped vertices until it heals, standing in for the
sync a node runs on reconnect. Honest nodes admit a vertex once its parents
are in and fetch missing ones from the sender, as the admission layer does.
The requests of one poll are answered in one event at the mean one-way delay,
and the poller gets all replies in one event at the last reply's arrival time
(see `_Simulation.open_poll`).

Metrics: finality latency is the virtual time from issue to each honest node's
decision; a disagreement is an honest node accepting a vertex whose conflict
key another honest node accepted a different vertex for. A run is finished
when every honest node decided every vertex, or when no honest node has
anything left to decide and all of them accepted the same vertices (a node
that never heard of a rejected double-spend cannot decide it).

Public API:
    SimParams(...), Partition(start, end, fraction), SimResult
    simulate(params, seed, progress=None) -> SimResult
    parse_partition(text) -> Partition
"""

from __future__ import annotations

import gc
import heapq
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from operator import itemgetter

from dag import DagError
from dag.consensus import (
    Avalanche,
    AvalancheParams,
    Decided,
    FetchVertices,
    ProcessingFull,
    SendPoll,
)

BYZANTINE_MODES = ("silent", "stubborn", "equivocate")

_first = itemgetter(0)

# Event kinds, small ints so the heap tuples compare cheaply.
_ISSUE = 0
_DELIVER = 1
_POLL = 2
_REPLY = 3
_FETCH = 4
_TICK = 5

# Byzantine votes cover at most this many recent conflict sets, so a reply
# stays within the engine's max_votes limit.
_RECENT_CONFLICTS = 32
# Seconds between gossip repair rounds (GossipSub's default heartbeat is 1 s).
_GOSSIP_HEARTBEAT = 1.0
# Repair rounds drawn for one lost vertex before it is delivered anyway. Even
# at loss 0.99 a vertex reaches it with odds 4e-5, so real runs do not change;
# near loss 1 it keeps one message from redrawing for hours.
_MAX_GOSSIP_REPAIRS = 1000
# Largest runs `SimParams.validate` accepts; they bound memory and run time.
MAX_NODES = 10_000
MAX_VERTICES = 1_000_000
# A double-spend picks its target among the last few issued vertices.
_CONFLICT_WINDOW = 8


@dataclass(frozen=True, slots=True)
class Partition:
    """Split the nodes in two for ``start <= t < end`` virtual seconds.

    Nodes with index below ``fraction * nodes`` form one side; messages
    between the sides are dropped.
    """

    start: float
    end: float
    fraction: float


def parse_partition(text: str) -> Partition:
    """Parse ``START-END:FRACTION`` (seconds, seconds, share of nodes).

    Raises:
        DagError: if the text does not have that form.
    """
    try:
        span, fraction = text.split(":")
        start, end = span.split("-")
        part = Partition(float(start), float(end), float(fraction))
    except ValueError:
        raise DagError(
            f"invalid partition {text!r}: expected START-END:FRACTION, "
            "for example 1.0-3.0:0.5"
        ) from None
    if not (0 <= part.start < part.end and 0 < part.fraction < 1):
        raise DagError(
            f"invalid partition {text!r}: need 0 <= START < END and 0 < FRACTION < 1"
        )
    return part


@dataclass(frozen=True, slots=True)
class SimParams:
    """One simulated network and workload.

    Attributes:
        nodes: Nodes in the network, Byzantine ones included.
        vertices: Vertices issued after genesis.
        conflict_rate: Probability that a vertex double-spends a recent one.
        byzantine: Share of nodes that are Byzantine, in [0, 1).
        byzantine_mode: One of silent, stubborn, equivocate.
        latency_ms: Base one-way message latency.
        jitter_ms: Extra latency drawn uniformly from [0, jitter_ms].
        loss: Probability that a message is dropped.
        partitions: Time windows in which the network is split.
        issue_interval_ms: Virtual time between two issued vertices.
        max_time: Virtual seconds after which the run stops unfinished.
        consensus: Engine parameters shared by all honest nodes.
    """

    nodes: int = 100
    vertices: int = 100
    conflict_rate: float = 0.0
    byzantine: float = 0.0
    byzantine_mode: str = "stubborn"
    latency_ms: float = 50.0
    jitter_ms: float = 10.0
    loss: float = 0.0
    partitions: tuple[Partition, ...] = ()
    issue_interval_ms: float = 10.0
    max_time: float = 600.0
    consensus: AvalancheParams = field(default_factory=AvalancheParams)

    @property
    def byzantine_count(self) -> int:
        """Number of Byzantine nodes (the share rounded to the nearest node)."""
        return round(self.byzantine * self.nodes)

    def validate(self) -> None:
        """Raise DagError naming every invalid field."""
        problems = []
        if self.nodes < 2:
            problems.append(f"nodes={self.nodes} must be at least 2")
        elif self.nodes > MAX_NODES:
            problems.append(f"nodes={self.nodes} must be at most {MAX_NODES}")
        if self.vertices < 1:
            problems.append(f"vertices={self.vertices} must be at least 1")
        elif self.vertices > MAX_VERTICES:
            problems.append(f"vertices={self.vertices} must be at most {MAX_VERTICES}")
        if not 0 <= self.conflict_rate <= 1:
            problems.append(f"conflict_rate={self.conflict_rate} must be in [0, 1]")
        # At loss 1 no vertex ever arrives, so no run could finish.
        if not 0 <= self.loss < 1:
            problems.append(f"loss={self.loss} must be in [0, 1)")
        if not 0 <= self.byzantine < 1:
            problems.append(f"byzantine={self.byzantine} must be in [0, 1)")
        elif self.nodes - self.byzantine_count < 1:
            problems.append("at least one node must be honest")
        if self.byzantine_mode not in BYZANTINE_MODES:
            problems.append(
                f"byzantine_mode={self.byzantine_mode!r} must be one of "
                + ", ".join(BYZANTINE_MODES)
            )
        for name in ("latency_ms", "jitter_ms", "issue_interval_ms"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                problems.append(f"{name}={value} must be a finite number >= 0")
        if not self.max_time > 0:
            problems.append(f"max_time={self.max_time} must be positive")
        if self.consensus.alpha_confidence > self.nodes:
            problems.append(
                f"alpha_confidence={self.consensus.alpha_confidence} must be at most "
                f"nodes={self.nodes}, or no poll can ever succeed"
            )
        if problems:
            raise DagError("invalid simulation parameters: " + "; ".join(problems))
        self.consensus.validate()


@dataclass(frozen=True, slots=True)
class SimResult:
    """Outcome of one run; every field is a pure function of params and seed."""

    seed: int
    nodes: int
    honest: int
    vertices: int
    finished: bool
    virtual_time: float
    decided_fraction: float
    accepted: int
    rejected: int
    disagreements: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    polls_per_vertex: float
    messages_per_vertex: float
    polls_to_finality_min: int | None
    polls_to_finality_max: int | None
    events: int
    latencies_ms: tuple[float, ...] = field(repr=False, default=())
    accepted_ids: tuple[int, ...] = field(repr=False, default=())

    def to_dict(self) -> dict:
        """Return the result as JSON-ready data, without the per-item tuples."""
        data = asdict(self)
        del data["latencies_ms"]
        del data["accepted_ids"]
        return data

    def format_text(self) -> str:
        """Return a short human-readable report."""

        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1f} ms"

        lines = [
            (
                f"nodes {self.nodes} ({self.honest} honest), vertices {self.vertices}, "
                f"seed {self.seed}"
            ),
            (
                f"finished: {'yes' if self.finished else 'no'} after "
                f"{self.virtual_time:.3f} s virtual, "
                f"{100 * self.decided_fraction:.2f}% of honest decisions made"
            ),
            (
                f"accepted {self.accepted}, rejected {self.rejected}, "
                f"disagreements {self.disagreements}"
            ),
            (
                f"finality latency p50 {ms(self.latency_p50_ms)}, "
                f"p99 {ms(self.latency_p99_ms)}, max {ms(self.latency_max_ms)}"
            ),
            (
                f"polls per vertex {self.polls_per_vertex:.1f}, "
                f"messages per vertex {self.messages_per_vertex:.1f}"
            ),
        ]
        if self.polls_to_finality_min is not None:
            lines.append(
                f"polls from add to decision: min {self.polls_to_finality_min}, "
                f"max {self.polls_to_finality_max}"
            )
        return "\n".join(lines)


class _Honest:
    __slots__ = (
        "add_polls",
        "added",
        "blocked",
        "engine",
        "known",
        "tick_at",
        "waiting",
    )

    def __init__(self, engine: Avalanche):
        self.engine = engine
        self.added: set[int] = {0}
        self.known: set[int] = {0}
        self.blocked: dict[int, int] = {}  # vertex -> parents still missing
        self.waiting: dict[int, list[int]] = {}  # parent -> children waiting
        self.tick_at = math.inf
        self.add_polls: dict[int, int] = {}


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


class _Simulation:
    def __init__(self, params: SimParams, seed: int, progress):
        params.validate()
        self.params = params
        self.seed = seed
        self.progress = progress
        self.rng = rng = random.Random(seed)
        n = params.nodes
        byz_count = params.byzantine_count
        self.byzantine = set(rng.sample(range(n), byz_count))
        self.honest_ids = [i for i in range(n) if i not in self.byzantine]
        self.nodes: dict[int, _Honest] = {}
        for i in self.honest_ids:
            engine = Avalanche(params.consensus, rng, self_id=i)
            engine.set_peers(range(n), 0.0)
            self.nodes[i] = _Honest(engine)
        # Engine of each node by index, None for Byzantine nodes.
        self.engines: list[Avalanche | None] = [None] * n
        for i, node in self.nodes.items():
            self.engines[i] = node.engine
        self.heap: list = []
        self.seq = 0
        self.now = 0.0
        # Global knowledge of issued vertices.
        self.parents: dict[int, tuple[int, ...]] = {0: ()}
        self.keys: dict[int, tuple[int, ...]] = {0: ()}
        self.issued_at: dict[int, float] = {0: 0.0}
        self.key_members: dict[int, list[int]] = {}
        self.recent_conflicts: list[int] = []
        self.next_vid = 1
        self.targeted: set[int] = set()
        self.accepted_by_key: dict[int, int] = {}
        self.accepted_any: set[int] = set()
        self.accept_count: dict[int, int] = {}
        self.rejected_any: set[int] = set()
        self.latencies: list[float] = []
        self.polls_to_finality: list[int] = []
        self.decided_pairs = 0
        self.disagreements = 0
        self.messages = 0
        self.events = 0
        self.latency = params.latency_ms / 1000
        self.jitter = params.jitter_ms / 1000
        # (poller, request id) -> poll record, laid out in `open_poll`
        self.poll_replies: dict[tuple[int, int], list] = {}
        self.partitions_on = bool(params.partitions)
        self.loss = params.loss
        self.reliable = not self.loss and not self.partitions_on
        self.partition_side = [
            [i < n * part.fraction for i in range(n)] for part in params.partitions
        ]

    # -- plumbing -------------------------------------------------------

    def push(self, at: float, node: int, kind: int, src=None, a=None, b=None, c=None):
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, node, kind, src, a, b, c))

    def lost(self, src: int, dst: int, at: float) -> bool:
        """Count one message sent at `at` and draw whether it is dropped."""
        self.messages += 1
        if self.loss and self.rng.random() < self.loss:
            return True
        return self.partitions_on and self.partition_end(src, dst, at) is not None

    def partition_end(self, src: int, dst: int, at: float) -> float | None:
        """Return when the partition separating src and dst at `at` heals."""
        for part, side in zip(self.params.partitions, self.partition_side):
            if part.start <= at < part.end and side[src] != side[dst]:
                return part.end
        return None

    def delay(self) -> float:
        if self.jitter:
            return self.latency + self.rng.random() * self.jitter
        return self.latency

    def send(self, src: int, dst: int, kind: int, a=None) -> None:
        if kind == _DELIVER and self.loss:
            # Gossip repairs a lost vertex at its next heartbeat (GossipSub's
            # IHAVE/IWANT), so each loss delays the vertex by one heartbeat.
            sent_at = self.now
            for _ in range(_MAX_GOSSIP_REPAIRS):
                if self.rng.random() >= self.loss:
                    break
                self.messages += 1
                sent_at += _GOSSIP_HEARTBEAT
            self.messages += 1
            healed = self.partitions_on and self.partition_end(src, dst, sent_at)
            self.push((healed or sent_at) + self.delay(), dst, kind, src, a)
            return
        if kind == _DELIVER and self.partitions_on:
            # Vertices held back by a partition arrive once it heals, which
            # models the sync a node runs when it reconnects. Polls and
            # fetches across a partition are lost.
            healed = self.partition_end(src, dst, self.now)
            if healed is not None:
                self.messages += 1
                self.push(healed + self.delay(), dst, kind, src, a)
                return
        if not self.lost(src, dst, self.now):
            self.push(self.now + self.delay(), dst, kind, src, a)

    def open_poll(self, node_id: int, action: SendPoll, opened: list) -> list:
        """Return the record of the poll `action` belongs to, opening it once.

        The requests of one poll reach their responders in one event at the
        mean one-way delay, and the poller gets all replies in one event when
        the last one arrives. Each message still draws its own loss, and each
        reply its own arrival time against the poll's deadline. Only the
        instant at which responders vote is shared, which trades up to half a
        jitter of accuracy for about 20 times fewer events per poll.
        """
        key = (node_id, action.request_id)
        record = self.poll_replies.get(key)
        if record is None:
            deadline = self.now + self.params.consensus.poll_timeout
            # deadline, last reply time, replies, requests, batch, request id
            record = [deadline, -1.0, [], [], action.vertex_ids, action.request_id]
            self.poll_replies[key] = record
            opened.append(key)
        return record

    def send_request(self, node_id: int, record: list, peer: int) -> None:
        """Send one poll request and draw the fate of its reply now."""
        if self.lost(node_id, peer, self.now):
            return
        arrive = self.now + self.delay()
        reply_at = None
        if not self.lost(peer, node_id, arrive):
            reply_at = arrive + self.delay()
            # A reply after the poll's deadline counts as missing.
            if reply_at < record[0]:
                record[1] = max(record[1], reply_at)
            else:
                reply_at = None
        record[3].append((peer, reply_at))

    def send_request_reliable(self, record: list, peer: int) -> None:
        """`send_request` without loss or partitions, drawing the same numbers.

        This is the path of almost every message in a large run, so it does
        the work of `lost` and `delay` inline.
        """
        self.messages += 2
        latency = self.latency
        jitter = self.jitter
        if jitter:
            rand = self.rng.random
            arrive = self.now + (latency + rand() * jitter)
            reply_at = arrive + (latency + rand() * jitter)
        else:
            reply_at = self.now + latency + latency
        if reply_at < record[0]:
            record[1] = max(record[1], reply_at)
        else:
            reply_at = None
        record[3].append((peer, reply_at))

    def answer_poll(self, poller: int, request_id: int) -> None:
        """Let every reached responder of one poll vote, now."""
        record = self.poll_replies[(poller, request_id)]
        replies = record[2]
        batch = record[4]
        now = self.now
        silent = self.params.byzantine_mode == "silent"
        engines = self.engines
        for peer, reply_at in record[3]:
            engine = engines[peer]
            if engine is None:
                if silent:
                    continue
                votes = self.byzantine_votes(batch)
            else:
                out = engine.on_poll(poller, request_id, batch, now)
                votes = out[0].votes
                if len(out) > 1:
                    self.perform(peer, out[1:])
            if reply_at is not None:
                replies.append((reply_at, peer, votes))
        if record[1] < 0:
            # Every reply was lost: no completion event will collect this.
            del self.poll_replies[(poller, request_id)]

    def perform(self, node_id: int, actions: list) -> None:
        opened: list = []
        record = None
        reliable = self.reliable
        for action in actions:
            kind = type(action)
            if kind is SendPoll:
                # The engine emits one poll's requests back to back, so the
                # poll's record is looked up once, not once per peer.
                if record is None or record[5] != action.request_id:
                    record = self.open_poll(node_id, action, opened)
                if reliable:
                    self.send_request_reliable(record, action.peer)
                else:
                    self.send_request(node_id, record, action.peer)
            elif kind is Decided:
                self.record_decisions(node_id, action)
            elif kind is FetchVertices:
                self.send(node_id, action.peer, _FETCH, action.vertex_ids)
        for key in opened:
            record = self.poll_replies[key]
            if record[3]:
                # Responders vote before the first reply can arrive.
                answer_at = self.now + self.latency + self.jitter / 2
                for _, reply_at in record[3]:
                    if reply_at is not None and reply_at < answer_at:
                        answer_at = reply_at
                self.push(answer_at, node_id, _POLL, None, key[1])
            if record[1] >= 0:
                self.push(record[1], node_id, _REPLY, None, key[1])
            elif not record[3]:
                del self.poll_replies[key]
        node = self.nodes[node_id]
        deadline = node.engine.next_deadline()
        if deadline < node.tick_at:
            # A deadline in the past still moves time forward by a tick so a
            # confused engine cannot spin the simulator.
            at = deadline if deadline > self.now else self.now + 1e-3
            node.tick_at = at
            self.push(at, node_id, _TICK)

    def record_decisions(self, node_id: int, decided: Decided) -> None:
        node = self.nodes[node_id]
        now = self.now
        polls = node.engine.polls_completed
        for vid in decided.accepted:
            self.accepted_any.add(vid)
            self.accept_count[vid] = self.accept_count.get(vid, 0) + 1
            for key in self.keys[vid]:
                winner = self.accepted_by_key.setdefault(key, vid)
                if winner != vid:
                    self.disagreements += 1
        for vid in decided.rejected:
            self.rejected_any.add(vid)
        for vid in decided.accepted + decided.rejected:
            self.decided_pairs += 1
            self.latencies.append((now - self.issued_at[vid]) * 1000)
            added = node.add_polls.pop(vid, None)
            if added is not None:
                self.polls_to_finality.append(polls - added)

    # -- workload -------------------------------------------------------

    def plan_workload(self) -> list[tuple[str, int | None]]:
        """Draw up front which vertices double-spend which.

        Knowing the targets before the run lets only vertices that take part
        in a conflict carry a conflict key; the others conflict with nothing.
        """
        rng = self.rng
        params = self.params
        pairs = params.byzantine_mode == "equivocate" and bool(self.byzantine)
        plan: list[tuple[str, int | None]] = []
        vid = 1
        while vid <= params.vertices:
            kind, target = "plain", None
            if vid > 1 and rng.random() < params.conflict_rate:
                target = rng.randrange(max(1, vid - _CONFLICT_WINDOW), vid)
                kind = "pair" if pairs and vid < params.vertices else "spend"
            plan.append((kind, target))
            if kind == "spend":
                self.targeted.add(target)
            vid += 2 if kind == "pair" else 1
        return plan

    def schedule_issues(self) -> None:
        interval = self.params.issue_interval_ms / 1000
        for i, step in enumerate(self.plan_workload()):
            self.push(i * interval, -1, _ISSUE, None, step)

    def new_vertex(self, parents: tuple[int, ...], key: int | None) -> int:
        vid = self.next_vid
        self.next_vid += 1
        if key is None and vid in self.targeted:
            key = vid
        self.parents[vid] = parents
        self.issued_at[vid] = self.now
        if key is None:
            self.keys[vid] = ()
            return vid
        self.keys[vid] = (key,)
        members = self.key_members.setdefault(key, [])
        members.append(vid)
        if len(members) == 2:
            self.recent_conflicts.append(key)
            del self.recent_conflicts[:-_RECENT_CONFLICTS]
        return vid

    def issue(self, step: tuple[str, int | None]) -> None:
        kind, target = step
        rng = self.rng
        if kind == "pair":
            self.issue_equivocation(rng.choice(sorted(self.byzantine)), target)
            return
        issuer = rng.choice(self.honest_ids)
        if kind == "plain":
            parents = self.nodes[issuer].engine.frontier() or (0,)
            vid = self.new_vertex(tuple(parents), None)
        else:
            key = self.keys[target][0] if self.keys[target] else target
            vid = self.new_vertex(self.parents[target], key)
        # Gossip goes out before the issuer's own first poll, as a node would
        # publish before polling, so a poll never overtakes the vertex.
        for dst in range(self.params.nodes):
            if dst != issuer:
                self.send(issuer, dst, _DELIVER, vid)
        self.deliver(issuer, vid, issuer)

    def issue_equivocation(self, issuer: int, target: int) -> None:
        """Issue two fresh conflicting siblings and show each half one side."""
        parents = self.parents[target]
        first = self.new_vertex(parents, self.next_vid)
        second = self.new_vertex(parents, first)
        for dst in range(self.params.nodes):
            if dst != issuer:
                self.send(issuer, dst, _DELIVER, first if dst % 2 else second)

    # -- honest nodes -----------------------------------------------------

    def deliver(self, node_id: int, vid: int, src: int) -> None:
        """Admit a vertex once its parents are in; fetch missing ones from src.

        This plays the part of the node's admission layer and orphan buffer.
        """
        node = self.nodes[node_id]
        if vid in node.added:
            return
        if vid not in node.known:
            node.known.add(vid)
            missing = [p for p in self.parents[vid] if p not in node.added]
            if not missing:
                self.add(node_id, vid)
                return
            node.blocked[vid] = len(missing)
            for parent in missing:
                node.waiting.setdefault(parent, []).append(vid)
        # Seen again while waiting (a fetch reply or a repeat): the earlier
        # request for its ancestors may have been lost, so request them again.
        unseen = self.unseen_ancestors(node, vid)
        if unseen:
            self.send(node_id, src, _FETCH, unseen)

    def unseen_ancestors(self, node: _Honest, vid: int) -> tuple[int, ...]:
        unseen = []
        stack = [vid]
        visited = set()
        while stack:
            for parent in self.parents[stack.pop()]:
                if parent in node.added or parent in visited:
                    continue
                visited.add(parent)
                if parent in node.known:
                    stack.append(parent)
                else:
                    unseen.append(parent)
        return tuple(unseen)

    def add(self, node_id: int, first: int) -> None:
        node = self.nodes[node_id]
        ready = [first]
        while ready:
            vid = ready.pop()
            node.added.add(vid)
            node.add_polls[vid] = node.engine.polls_completed
            try:
                actions = node.engine.add_vertex(
                    vid, self.parents[vid], self.keys[vid], self.now
                )
            except ProcessingFull:
                actions = []
            self.perform(node_id, actions)
            for child in node.waiting.pop(vid, ()):
                node.blocked[child] -= 1
                if node.blocked[child] == 0:
                    del node.blocked[child]
                    ready.append(child)

    # -- Byzantine nodes --------------------------------------------------

    def byzantine_votes(self, asked: tuple) -> tuple:
        mode = self.params.byzantine_mode
        picks = []
        for key in self.recent_conflicts:
            members = self.key_members[key]
            if mode == "stubborn":
                picks.append(members[-1])
            else:
                picks.extend(members)
        if mode == "equivocate":
            picks = list(asked) + picks
        limit = self.params.consensus.max_votes
        return tuple(dict.fromkeys(picks[-limit:]))

    # -- main loop --------------------------------------------------------

    def handle(self, node_id: int, kind: int, src, a, b, c) -> None:
        if kind == _ISSUE:
            self.issue(a)
            return
        if kind == _POLL:
            self.answer_poll(node_id, a)
            return
        if node_id in self.byzantine:
            mode = self.params.byzantine_mode
            if mode == "silent":
                return
            if kind == _FETCH:
                for vid in a:
                    self.send(node_id, src, _DELIVER, vid)
            return
        node = self.nodes[node_id]
        engine = node.engine
        now = self.now
        if kind == _DELIVER:
            self.deliver(node_id, a, src)
        elif kind == _REPLY:
            replies = self.poll_replies.pop((node_id, a))[2]
            replies.sort(key=_first)
            actions = []
            on_reply = engine.on_poll_reply
            for _, peer, votes in replies:
                actions += on_reply(peer, a, votes, now)
            self.perform(node_id, actions)
        elif kind == _TICK:
            if now == node.tick_at:
                node.tick_at = math.inf
                self.perform(node_id, engine.on_tick(now))
        elif kind == _FETCH:
            for vid in a:
                if vid in node.known:
                    self.send(node_id, src, _DELIVER, vid)

    def run(self) -> SimResult:
        self.schedule_issues()
        heap = self.heap
        params = self.params
        total_pairs = params.vertices * len(self.honest_ids)
        last_report = time.monotonic()
        finished = False
        pop = heapq.heappop
        handle = self.handle
        max_time = params.max_time
        while heap:
            at, _, node_id, kind, src, a, b, c = pop(heap)
            if at > max_time:
                break
            self.now = at
            self.events += 1
            handle(node_id, kind, src, a, b, c)
            if self.decided_pairs >= total_pairs and self.next_vid > params.vertices:
                finished = True
                break
            if not self.events & 0x3FF and self.settled():
                finished = True
                break
            if self.progress is not None and not self.events & 0x3FFF:
                wall = time.monotonic()
                if wall - last_report >= 1.0:
                    last_report = wall
                    self.progress(self.now, self.decided_pairs, total_pairs)
        return self.result(finished, total_pairs)

    def settled(self) -> bool:
        """Return True once no honest node has anything left to decide.

        A node that never heard of a double-spend its peers rejected cannot
        decide it, so the run also ends when every honest node is idle and
        every accepted vertex is accepted by all of them.
        """
        if self.next_vid <= self.params.vertices:
            return False
        honest = len(self.honest_ids)
        for node in self.nodes.values():
            if node.engine.processing_count or node.blocked:
                return False
        return all(self.accept_count[v] == honest for v in self.accepted_any)

    def result(self, finished: bool, total_pairs: int) -> SimResult:
        latencies = sorted(self.latencies)
        polls = sum(node.engine.stats().polls_sent for node in self.nodes.values())
        vertices = self.params.vertices
        return SimResult(
            seed=self.seed,
            nodes=self.params.nodes,
            honest=len(self.honest_ids),
            vertices=vertices,
            finished=finished,
            virtual_time=round(self.now, 9),
            decided_fraction=self.decided_pairs / total_pairs,
            accepted=len(self.accepted_any),
            rejected=len(self.rejected_any),
            disagreements=self.disagreements,
            latency_p50_ms=_percentile(latencies, 0.50),
            latency_p99_ms=_percentile(latencies, 0.99),
            latency_max_ms=latencies[-1] if latencies else None,
            polls_per_vertex=polls / vertices,
            messages_per_vertex=self.messages / vertices,
            polls_to_finality_min=min(self.polls_to_finality, default=None),
            polls_to_finality_max=max(self.polls_to_finality, default=None),
            events=self.events,
            latencies_ms=tuple(latencies),
            accepted_ids=tuple(sorted(self.accepted_any)),
        )


def simulate(
    params: SimParams,
    seed: int,
    progress: Callable[[float, int, int], None] | None = None,
) -> SimResult:
    """Run one simulation and return its result.

    Args:
        params: Network, workload and engine parameters (validated here).
        seed: Seeds the one generator behind every random draw.
        progress: Called about once per wall-clock second of a long run with
            (virtual time, honest decisions made, honest decisions expected).

    Raises:
        DagError: if the parameters are invalid.
    """
    # The engines hold millions of small objects, and the cyclic collector
    # rescans all of them every few thousand allocations (a third of the run
    # time at 300 nodes x 1,000 vertices). The run frees little, so the
    # collector is paused for the run and switched back on afterwards.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Simulation(params, seed, progress).run()
    finally:
        if was_enabled:
            gc.enable()
