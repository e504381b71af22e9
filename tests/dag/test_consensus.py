"""Unit tests of the Avalanche engine, driven by hand with explicit `now`."""

from __future__ import annotations

import gc
import itertools
import random
import tracemalloc

import pytest

from dag import DagError
from dag.consensus import (
    Avalanche,
    AvalancheParams,
    Decided,
    FetchVertices,
    InvalidParams,
    PollReply,
    ProcessingFull,
    SendPoll,
    Status,
)

PEERS = ("p0", "p1", "p2", "p3")
SMALL = AvalancheParams(
    k=4, alpha_preference=3, alpha_confidence=3, beta=4, concurrent_repolls=1
)


class Driver:
    """One engine whose polls the test replies to peer by peer."""

    def __init__(self, params: AvalancheParams = SMALL, peers=PEERS) -> None:
        self.engine = Avalanche(params, random.Random(7))
        self.now = 0.0
        self.outbox: list[SendPoll] = []
        self.accepted: list = []
        self.rejected: list = []
        self.fetches: list[FetchVertices] = []
        self.take(self.engine.set_peers(peers, self.now))

    def take(self, actions: list) -> list:
        for action in actions:
            if isinstance(action, SendPoll):
                self.outbox.append(action)
            elif isinstance(action, Decided):
                self.accepted.extend(action.accepted)
                self.rejected.extend(action.rejected)
            elif isinstance(action, FetchVertices):
                self.fetches.append(action)
        return actions

    def add(self, vid, parents=(), keys=()) -> list:
        return self.take(self.engine.add_vertex(vid, parents, keys, self.now))

    def answer(self, votes_for_peer) -> list:
        """Reply to the oldest outstanding poll with `votes_for_peer(peer, batch)`.

        After a failed poll the engine waits out its backoff, so the driver
        first moves time to the engine's deadline when no poll is out.
        """
        if not self.outbox:
            self.now = max(self.now, self.engine.next_deadline())
            self.take(self.engine.on_tick(self.now))
        assert self.outbox, "no poll outstanding"
        request_id = self.outbox[0].request_id
        sends = [s for s in self.outbox if s.request_id == request_id]
        self.outbox = [s for s in self.outbox if s.request_id != request_id]
        self.now += 0.01
        actions = []
        for send in sends:
            votes = votes_for_peer(send.peer, send.vertex_ids)
            actions += self.take(
                self.engine.on_poll_reply(send.peer, request_id, votes, self.now)
            )
        return actions

    def settle(self, votes_for_peer, max_polls: int = 50) -> int:
        """Reply to polls until nothing is processing; return the polls used."""
        for used in range(max_polls):
            if not self.engine.processing_count:
                return used
            self.answer(votes_for_peer)
        raise AssertionError(f"still processing after {max_polls} polls")


def echo(peer, batch):
    return batch


def test_params_defaults_match_avalanchego():
    params = AvalancheParams()
    params.validate()
    assert (params.k, params.alpha_preference, params.alpha_confidence) == (20, 15, 15)
    assert (params.beta, params.concurrent_repolls) == (20, 4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"alpha_preference": 10}, "alpha_preference=10 must exceed k/2=10"),
        ({"alpha_confidence": 14}, "alpha_confidence=14 must be at least"),
        ({"alpha_confidence": 21}, "alpha_confidence=21 must be at most k=20"),
        ({"concurrent_repolls": 0}, "concurrent_repolls=0 must be at least 1"),
        ({"concurrent_repolls": 21}, "concurrent_repolls=21 must be at most beta=20"),
        ({"poll_timeout": 0.0}, "poll_timeout=0.0 must be a positive number"),
        ({"max_processing": 0}, "max_processing=0 must be at least 1"),
    ],
)
def test_params_violation_named(fields, message):
    with pytest.raises(InvalidParams, match=message):
        AvalancheParams(**fields).validate()


def test_params_lists_every_violation():
    with pytest.raises(InvalidParams) as excinfo:
        AvalancheParams(k=4, alpha_preference=1, alpha_confidence=5).validate()
    text = str(excinfo.value)
    assert "alpha_preference=1 must exceed k/2=2" in text
    assert "alpha_confidence=5 must be at most k=4" in text


def test_params_for_small_network():
    params = AvalancheParams.for_network(5)
    assert (params.k, params.alpha_preference, params.alpha_confidence) == (4, 3, 3)
    assert params.beta == 20
    large = AvalancheParams.for_network(100)
    assert (large.k, large.alpha_preference, large.alpha_confidence) == (20, 11, 15)
    with pytest.raises(InvalidParams):
        AvalancheParams.for_network(1)


def test_engine_rejects_invalid_params():
    with pytest.raises(DagError):
        Avalanche(AvalancheParams(beta=0), random.Random(1))


def test_beta_rule_accepts_on_exactly_beta_th_poll():
    driver = Driver()
    driver.add(1)
    for _ in range(SMALL.beta - 1):
        driver.answer(echo)
        assert driver.engine.status(1) is Status.PROCESSING
    actions = driver.answer(echo)
    assert driver.engine.status(1) is Status.ACCEPTED
    assert Decided(accepted=(1,), rejected=()) in actions
    assert driver.engine.polls_completed == SMALL.beta


def test_beta_rule_failed_poll_resets_confidence():
    driver = Driver()
    driver.add(1)
    for _ in range(SMALL.beta - 1):
        driver.answer(echo)
    # Two of four votes is below alpha_confidence=3: the run starts over.
    driver.answer(lambda peer, batch: batch if peer in ("p0", "p1") else ())
    for _ in range(SMALL.beta - 1):
        driver.answer(echo)
        assert driver.engine.status(1) is Status.PROCESSING
    driver.answer(echo)
    assert driver.engine.status(1) is Status.ACCEPTED


def test_replies_about_decided_vertices_are_neutral():
    params = AvalancheParams(
        k=4, alpha_preference=3, alpha_confidence=3, beta=3, concurrent_repolls=3
    )
    driver = Driver(params)
    driver.add(1)
    for _ in range(params.beta):
        driver.answer(echo)
    assert driver.engine.status(1) is Status.ACCEPTED
    # Two polls about vertex 1 were sent before it was accepted.
    assert {s.vertex_ids for s in driver.outbox} == {(1,)}
    driver.add(2, parents=(1,))
    driver.answer(echo)
    driver.answer(echo)
    stats = driver.engine.stats()
    assert (stats.polls_failed, stats.polls_stale) == (0, 2)
    assert stats.repoll_backoff == 0.0
    assert driver.settle(echo) == params.beta
    assert driver.engine.stats().polls_failed == 0


def test_missing_replies_count_as_no_vote():
    driver = Driver()
    driver.add(1)
    for _ in range(SMALL.beta - 1):
        driver.answer(echo)
    # Only two peers answer; the other two time out.
    request_id = driver.outbox[0].request_id
    driver.outbox = [s for s in driver.outbox if s.request_id != request_id]
    for peer in ("p0", "p1"):
        driver.take(driver.engine.on_poll_reply(peer, request_id, (1,), 0.5))
    driver.take(driver.engine.on_tick(0.5 + SMALL.poll_timeout))
    assert driver.engine.stats().replies_missing == 2
    assert driver.engine.status(1) is Status.PROCESSING
    for _ in range(SMALL.beta):
        driver.answer(echo)
    assert driver.engine.status(1) is Status.ACCEPTED


def test_votes_for_tip_count_for_ancestors():
    driver = Driver()
    driver.add("a")
    driver.add("b", parents=("a",))
    driver.add("c", parents=("b",))
    assert driver.outbox[0].vertex_ids == ("a",)
    # The first poll was sent before b and c existed; it counts only for a.
    driver.answer(echo)
    for _ in range(SMALL.beta - 1):
        assert driver.outbox[0].vertex_ids == ("c",)
        driver.answer(lambda peer, batch: ("c",))
    assert driver.accepted == ["a"]
    driver.answer(lambda peer, batch: ("c",))
    assert driver.accepted == ["a", "b", "c"]


def test_child_votes_accept_parent_first():
    driver = Driver()
    driver.add("x", keys=("k",))
    driver.add("y", keys=("k",))
    driver.add("child", parents=("x",))
    # Votes name only the child but count for x too. The first poll went out
    # before the child existed, so the child finalizes one poll after x.
    for _ in range(SMALL.beta):
        driver.answer(lambda peer, batch: ("child",))
    assert driver.accepted == ["x"]
    assert driver.rejected == ["y"]
    driver.answer(lambda peer, batch: ("child",))
    assert driver.accepted == ["x", "child"]


def test_rejection_flows_to_descendants():
    driver = Driver()
    driver.add("x", keys=("k",))
    driver.add("x1", parents=("x",))
    driver.add("x2", parents=("x1",))
    driver.add("y", keys=("k",))
    assert driver.engine.frontier() == ("x2",)
    driver.settle(lambda peer, batch: ("y",))
    assert driver.accepted == ["y"]
    assert sorted(driver.rejected) == ["x", "x1", "x2"]
    assert driver.engine.frontier() == ("y",)
    # A late child of a rejected vertex is rejected on arrival.
    actions = driver.add("x3", parents=("x2",))
    assert Decided(accepted=(), rejected=("x3",)) in actions
    # So is a late member of a decided conflict set.
    driver.add("z", keys=("k",))
    assert driver.engine.status("z") is Status.REJECTED


def test_conflict_set_of_three_converges():
    driver = Driver()
    for vid in ("red", "green", "blue"):
        driver.add(vid, keys=("colour",))
    assert driver.engine.frontier() == ("red",)
    # Split votes: no colour reaches alpha_preference, nothing finalizes.
    split = {"p0": ("red",), "p1": ("green",), "p2": ("blue",), "p3": ("red",)}
    for _ in range(3):
        driver.answer(lambda peer, batch: split[peer])
    assert driver.accepted == []
    # Then the network settles on blue.
    driver.settle(lambda peer, batch: ("blue",))
    assert driver.accepted == ["blue"]
    assert sorted(driver.rejected) == ["green", "red"]
    assert driver.engine.status("red") is Status.REJECTED


def test_vertex_in_two_sets_needs_both():
    driver = Driver()
    driver.add("a", keys=("k1",))
    driver.add("ab", keys=("k1", "k2"))
    driver.add("b", keys=("k2",))
    driver.settle(lambda peer, batch: ("ab",))
    assert driver.accepted == ["ab"]
    assert sorted(driver.rejected) == ["a", "b"]


def test_responder_votes_strong_preference():
    engine = Avalanche(SMALL, random.Random(1))
    engine.add_vertex("x", (), ("k",), 0.0)
    engine.add_vertex("y", (), ("k",), 0.0)
    engine.add_vertex("x1", ("x",), (), 0.0)
    engine.add_vertex("y1", ("y",), (), 0.0)
    [reply] = engine.on_poll("peer", 9, ("x1",), 0.0)
    assert reply == PollReply("peer", 9, ("x1",))
    # y1 is not strongly preferred: the reply carries our frontier instead.
    [reply] = engine.on_poll("peer", 10, ("y1",), 0.0)
    assert reply == PollReply("peer", 10, ("x1",))


def test_responder_fetches_unknown_ids_once():
    engine = Avalanche(SMALL, random.Random(1))
    engine.add_vertex("x", (), (), 0.0)
    actions = engine.on_poll("peer", 1, ("x", "new"), 0.0)
    assert actions[0] == PollReply("peer", 1, ("x",))
    assert actions[1] == FetchVertices("peer", ("new",))
    # Asked again before the retry interval: no second request.
    assert len(engine.on_poll("peer", 2, ("new",), 0.1)) == 1
    later = engine.on_poll("peer", 3, ("new",), 0.1 + SMALL.poll_timeout)
    assert later[1] == FetchVertices("peer", ("new",))


def test_poller_fetches_unknown_voted_ids():
    driver = Driver()
    driver.add(1)
    driver.answer(lambda peer, batch: (1, 99))
    # One request to the first peer that named the id, not one per reply.
    assert len(driver.fetches) == 1
    assert driver.fetches[0].vertex_ids == (99,)
    assert driver.fetches[0].peer in PEERS


def test_oversized_request_gets_empty_reply():
    engine = Avalanche(SMALL, random.Random(1))
    batch = tuple(range(SMALL.max_poll_batch + 1))
    assert engine.on_poll("peer", 1, batch, 0.0) == [PollReply("peer", 1, ())]


def test_unexpected_and_oversized_replies_ignored():
    driver = Driver()
    driver.add(1)
    request_id = driver.outbox[0].request_id
    engine = driver.engine
    assert engine.on_poll_reply("stranger", request_id, (1,), 0.0) == []
    assert engine.on_poll_reply("p0", request_id + 5, (1,), 0.0) == []
    huge = tuple(range(SMALL.max_votes + 1))
    engine.on_poll_reply("p0", request_id, huge, 0.0)
    engine.on_poll_reply("p0", request_id, (1,), 0.0)
    stats = engine.stats()
    assert stats.replies_unexpected == 3
    assert stats.replies_invalid == 1


def test_self_vote_answers_without_message():
    params = AvalancheParams(
        k=3, alpha_preference=2, alpha_confidence=2, beta=2, concurrent_repolls=1
    )
    engine = Avalanche(params, random.Random(3), self_id="me")
    engine.set_peers(["a", "b", "me"], 0.0)
    sends = [a for a in engine.add_vertex(1, (), (), 0.0) if isinstance(a, SendPoll)]
    assert sorted(s.peer for s in sends) == ["a", "b"]
    # One peer plus our own vote reach alpha=2.
    engine.on_poll_reply("a", sends[0].request_id, (1,), 0.1)
    actions = engine.on_poll_failed("b", sends[0].request_id, 0.1)
    assert engine.polls_completed == 1
    assert any(isinstance(a, SendPoll) for a in actions)


def test_too_few_peers_backs_off_without_polling():
    engine = Avalanche(SMALL, random.Random(1))
    engine.set_peers(["p0", "p1"], 0.0)
    actions = engine.add_vertex(1, (), (), 0.0)
    assert not any(isinstance(a, SendPoll) for a in actions)
    assert engine.next_deadline() == pytest.approx(SMALL.repoll_backoff_min)
    actions = engine.set_peers(PEERS, 1.0)
    assert sum(isinstance(a, SendPoll) for a in actions) == 4


def test_processing_full_raises():
    params = AvalancheParams(
        k=4, alpha_preference=3, alpha_confidence=3, max_processing=2
    )
    engine = Avalanche(params, random.Random(1))
    engine.add_vertex(1, (), (), 0.0)
    engine.add_vertex(2, (), (), 0.0)
    with pytest.raises(ProcessingFull, match="max_processing=2"):
        engine.add_vertex(3, (), (), 0.0)


def test_no_quorum_repolls_with_backoff_and_flat_memory():
    params = AvalancheParams(
        k=4, alpha_preference=3, alpha_confidence=3, repoll_backoff_max=8.0
    )
    engine = Avalanche(params, random.Random(5))
    engine.set_peers(PEERS, 0.0)
    engine.add_vertex(1, (), (), 0.0)

    def run_until(end: float, now: float, sent_at: list | None) -> tuple[float, int]:
        polls = 0
        while now < end:
            now = engine.next_deadline()
            for action in engine.on_tick(now):
                if isinstance(action, SendPoll) and action.peer == "p0":
                    polls += 1
                    if sent_at is not None:
                        sent_at.append(now)
        return now, polls

    sent_at: list[float] = []
    now, _ = run_until(1_000.0, 0.0, sent_at)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    # Polls time out (2 s) and the delay doubles up to 8 s between polls.
    assert max(gaps) <= params.poll_timeout + params.repoll_backoff_max + 1e-9
    assert gaps[-1] >= params.repoll_backoff_max
    assert len(sent_at) < 1_000 / params.repoll_backoff_max + 10
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    now, later = run_until(now + 20_000.0, now, None)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # Count only what the engine's modules allocated (not this test's lists).
    engine_files = [tracemalloc.Filter(True, "*/dag/consensus*")]
    before = before.filter_traces(engine_files)
    after = after.filter_traces(engine_files)
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert later > 1_000
    assert growth < 2_000
    stats = engine.stats()
    assert stats.outstanding_polls <= params.concurrent_repolls
    assert stats.processing == 1
    assert engine.status(1) is Status.PROCESSING


def test_frontier_merges_tips_and_caps_parents():
    params = AvalancheParams(k=4, alpha_preference=3, alpha_confidence=3, max_parents=2)
    engine = Avalanche(params, random.Random(1))
    assert engine.frontier() == ()
    for vid in (1, 2, 3):
        engine.add_vertex(vid, (), (), 0.0)
    assert engine.frontier() == (2, 3)
    engine.add_vertex(4, (1, 2, 3), (), 0.0)
    assert engine.frontier() == (4,)


def test_bytes_ids_and_restart_parents():
    engine = Avalanche(SMALL, random.Random(1))
    stored_parent = b"\x01" * 32
    child = b"\x02" * 32
    # A parent the engine never saw is taken as accepted (restart from store).
    engine.add_vertex(child, (stored_parent,), (b"key",), 0.0)
    assert engine.status(child) is Status.PROCESSING
    assert engine.status(stored_parent) is Status.UNKNOWN
    assert engine.frontier() == (child,)
