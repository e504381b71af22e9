"""Catch-up: fetch the vertices that peers accepted while this node was away.

Gossip and the parents named by new vertices only bring a node what is
published while it runs, plus the ancestors of that. A node that was stopped,
or whose store was rebuilt from a damaged file, would never see the rest.

This service pages through each voter's accepted vertices over
request/response (``dag.accepted``), in the peer's acceptance order, and
fetches the ids that are not in the local store through the node's ordinary
fetch path. Fetched vertices therefore pass admission (signatures, parents)
and are then polled by consensus like any other vertex: a peer's word never
makes a vertex accepted here.

Every peer has a cursor, the position of the last accepted vertex it listed
that this node now stores. A round requests at most ``max_pages_per_round``
pages of ``page_size`` ids, starting at the cursor. A round runs when a voter
appears and again later: soon while pages remain, and with a doubling
interval up to ``max_interval_s`` while the peer lists nothing new. A reply
that breaks the protocol is reported to the peer guard.

Public API::

    CatchupParams(...).validate()
    CatchupSchedule(params)            # sans-IO per-peer timing and cursors
    Catchup(node, params=None).start()
    ACCEPTED_METHOD
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    from node.runtime import Node

log = logging.getLogger(__name__)

ACCEPTED_METHOD: Final = "dag.accepted"
MAX_PAGE_SIZE: Final = 512


@dataclass(frozen=True, slots=True)
class CatchupParams:
    """Limits and timing of catch-up.

    Attributes:
        page_size: accepted ids asked for per request (the server caps it at
            ``MAX_PAGE_SIZE``).
        max_pages_per_round: pages read from one peer before the round ends.
        max_rounds_at_once: peers caught up from at the same time.
        more_interval_s: pause before the next round while pages remain.
        base_interval_s: first pause after a round that found nothing missing.
        max_interval_s: maximum pause between rounds for one peer.
        request_timeout_s: seconds one page request may take.
        room_timeout_s: seconds a round waits for consensus to have room for
            more undecided vertices before it ends.
    """

    page_size: int = 256
    max_pages_per_round: int = 8
    max_rounds_at_once: int = 2
    more_interval_s: float = 0.2
    base_interval_s: float = 2.0
    max_interval_s: float = 60.0
    request_timeout_s: float = 5.0
    room_timeout_s: float = 10.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field out of range."""
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size={self.page_size} must be 1..{MAX_PAGE_SIZE}")
        for name in ("max_pages_per_round", "max_rounds_at_once"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in (
            "more_interval_s",
            "base_interval_s",
            "request_timeout_s",
            "room_timeout_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.max_interval_s < self.base_interval_s:
            raise ValueError(
                f"max_interval_s={self.max_interval_s} must be >= "
                f"base_interval_s={self.base_interval_s}"
            )


@dataclass(slots=True)
class _PeerState:
    cursor: int = 0
    due: float = 0.0
    interval: float = 0.0
    running: bool = False


class CatchupSchedule:
    """Decides which peer to catch up from next; driven with explicit ``now``."""

    def __init__(self, params: CatchupParams) -> None:
        params.validate()
        self.params = params
        self._peers: dict[str, _PeerState] = {}

    def set_peers(self, peers: frozenset[str], now: float) -> None:
        """Track exactly `peers`; a new one is due at once, a gone one is dropped."""
        for peer in list(self._peers):
            if peer not in peers:
                del self._peers[peer]
        for peer in peers:
            if peer not in self._peers:
                self._peers[peer] = _PeerState(
                    due=now, interval=self.params.base_interval_s
                )

    def start_due(self, now: float) -> list[tuple[str, int]]:
        """Mark due peers running and return them with their cursors."""
        running = sum(state.running for state in self._peers.values())
        room = self.params.max_rounds_at_once - running
        due = sorted(
            (state.due, peer)
            for peer, state in self._peers.items()
            if not state.running and state.due <= now
        )
        started = []
        for _, peer in due[: max(room, 0)]:
            state = self._peers[peer]
            state.running = True
            started.append((peer, state.cursor))
        return started

    def on_round_done(
        self, peer: str, cursor: int, *, found: int, more: bool, now: float
    ) -> None:
        """Record a round's end: the new cursor, ids found missing, pages left."""
        state = self._peers.get(peer)
        if state is None:
            return
        state.running = False
        state.cursor = max(state.cursor, cursor)
        if more:
            state.due = now + self.params.more_interval_s
            return
        if found:
            state.interval = self.params.base_interval_s
        else:
            state.interval = min(state.interval * 2, self.params.max_interval_s)
        state.due = now + state.interval

    def on_round_failed(self, peer: str, now: float) -> None:
        """Back off from a peer whose request failed or whose reply was bad."""
        state = self._peers.get(peer)
        if state is None:
            return
        state.running = False
        state.interval = min(state.interval * 2, self.params.max_interval_s)
        state.due = now + state.interval

    def next_deadline(self) -> float:
        """Return when the next idle peer is due, or infinity."""
        return min(
            (s.due for s in self._peers.values() if not s.running), default=math.inf
        )

    def cursors(self) -> dict[str, int]:
        return {peer: state.cursor for peer, state in self._peers.items()}


class _BadReply(Exception):
    pass


class Catchup:
    """The trio shell: serves ``dag.accepted`` and runs catch-up rounds."""

    SCAN_INTERVAL_S: Final = 0.5

    def __init__(self, node: Node, params: CatchupParams | None = None) -> None:
        self.node = node
        self.schedule = CatchupSchedule(params or CatchupParams())
        self.params = self.schedule.params
        self.requested = 0
        self.rounds = 0
        self.failed = 0
        # Ids that a round is fetching, so two peers' rounds do not both
        # request the same vertices.
        self._inflight: set[bytes] = set()

    def start(self) -> None:
        self.node.p2p.reqresp.set_handler(ACCEPTED_METHOD, self._handle_accepted)
        self.node.add_status_section("catchup", self.status)
        self.node.start_service("dag.catchup", self._run)

    def status(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "failed_rounds": self.failed,
            "requested": self.requested,
            "cursors": self.schedule.cursors(),
        }

    async def _handle_accepted(self, peer: str, request: dict) -> dict:
        from p2p.reqresp import RequestRejected

        after = request.get("after")
        limit = request.get("limit")
        if not _is_int(after) or after < 0:
            raise RequestRejected("after must be a non-negative integer")
        if not _is_int(limit) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise RequestRejected(f"limit must be an integer 1..{MAX_PAGE_SIZE}")
        rows = self.node.store.accepted_after(after, limit)
        return {
            "ids": [vertex_id for _, vertex_id in rows],
            "next": rows[-1][0] if rows else after,
        }

    async def _run(self) -> None:
        while True:
            now = trio.current_time()
            self.schedule.set_peers(self.node.dag.voters(), now)
            for peer, cursor in self.schedule.start_due(now):
                self.node.nursery.start_soon(
                    self._round, peer, cursor, name="dag:catchup"
                )
            wake = min(self.schedule.next_deadline(), now + self.SCAN_INTERVAL_S)
            await trio.sleep_until(wake)

    async def _round(self, peer: str, cursor: int) -> None:
        from p2p.reqresp import ReqRespError

        found = 0
        more = False
        outcome = "stored"
        try:
            for _ in range(self.params.max_pages_per_round):
                ids, next_cursor = await self._page(peer, cursor)
                missing = [v for v in ids if not self.node.store.has(v)]
                found += len(missing)
                outcome = await self._fetch(peer, missing) if missing else "stored"
                if outcome != "stored":
                    # The cursor stays at the page's start, so the next round
                    # requests the page again.
                    more = outcome == "no room"
                    break
                cursor = next_cursor
                more = len(ids) == self.params.page_size
                if not more:
                    break
        except ReqRespError as error:
            self.failed += 1
            log.info("catch-up request failed peer_id=%s error=%s", peer, error)
            self.schedule.on_round_failed(peer, trio.current_time())
            return
        except _BadReply as error:
            self.failed += 1
            self.node.dag._misbehaved(peer, f"bad catch-up reply: {error}")
            self.schedule.on_round_failed(peer, trio.current_time())
            return
        except Exception:
            # One peer's round must not stop the service or the node.
            self.failed += 1
            log.exception("catch-up round failed peer_id=%s", peer)
            self.schedule.on_round_failed(peer, trio.current_time())
            return
        self.rounds += 1
        if outcome == "partial":
            # Parents still on their way, or a peer that lists ids it does
            # not serve: ask again, less often each time.
            self.schedule.on_round_failed(peer, trio.current_time())
            return
        if found:
            log.info(
                "catch-up round peer_id=%s missing=%d cursor=%d more=%s",
                peer,
                found,
                cursor,
                more,
            )
        self.schedule.on_round_done(
            peer, cursor, found=found, more=more, now=trio.current_time()
        )

    async def _page(self, peer: str, cursor: int) -> tuple[list[bytes], int]:
        from node.dagsync import _is_id_list

        limit = self.params.page_size
        reply = await self.node.p2p.reqresp.request(
            peer,
            ACCEPTED_METHOD,
            {"after": cursor, "limit": limit},
            self.params.request_timeout_s,
        )
        ids = reply.get("ids")
        next_cursor = reply.get("next")
        if not _is_id_list(ids, limit):
            raise _BadReply(f"ids must be a list of at most {limit} 32-byte ids")
        if not _is_int(next_cursor) or next_cursor < cursor:
            raise _BadReply("next must be an integer not below the cursor")
        if ids and next_cursor == cursor:
            raise _BadReply("next must move past a non-empty page")
        return ids, next_cursor

    async def _fetch(self, peer: str, missing: list[bytes]) -> str:
        """Fetch `missing`; return ``stored``, ``partial`` or ``no room``."""
        from node.dagsync import MAX_FETCH_IDS

        dag = self.node.dag
        outcome = "stored"
        mine = [v for v in missing if v not in self._inflight]
        self._inflight.update(mine)
        try:
            for start in range(0, len(mine), MAX_FETCH_IDS):
                chunk = mine[start : start + MAX_FETCH_IDS]
                if not await self._wait_for_room(len(chunk)):
                    log.info("catch-up paused, consensus full peer_id=%s", peer)
                    outcome = "no room"
                    break
                self.requested += len(chunk)
                await dag._fetch_vertices(peer, chunk)
        finally:
            self._inflight.difference_update(mine)
        # A vertex can still wait in admission for its author's key or a
        # parent, which are fetched in the background. The next round checks it
        # again.
        stored = sum(self.node.store.has(v) for v in missing)
        if outcome == "stored" and stored < len(missing):
            outcome = "partial"
        return outcome

    async def _wait_for_room(self, count: int) -> bool:
        # Catch-up must not fill consensus: undecided vertices wait in memory,
        # and a node that keeps up with new vertices needs the room too.
        engine = self.node.dag.engine
        limit = max(engine.params.max_processing // 2, count)
        with trio.move_on_after(self.params.room_timeout_s):
            while engine.processing_count + count > limit:
                await trio.sleep(0.1)
            return True
        return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
