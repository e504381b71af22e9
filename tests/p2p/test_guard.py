"""Guard: the scoring core with explicit time, and the containment shell."""

from __future__ import annotations

import itertools
import logging

import pytest
import trio
import trio.testing
from libp2p.peer.id import ID

from p2p.guard import Ban, Guard, GuardParams, PeerScorer

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
OTHER = "12D3KooWRzj9wpjcjLAdyaZeRKKJYpNiLzpSH8QnpPsZNvvsfE4A"


def _params(**overrides) -> GuardParams:
    base = {"invalid_penalty": 10.0, "ban_threshold": -30.0, "ban_seconds": 100.0}
    base.update(overrides)
    return GuardParams(**base)


def test_scorer_bans_below_threshold():
    scorer = PeerScorer(_params())
    assert scorer.on_penalty(PEER, 10, "bad", now=0.0) is None
    assert scorer.on_penalty(PEER, 10, "bad", now=0.0) is None
    assert scorer.on_penalty(PEER, 10, "bad", now=0.0) is None
    ban = scorer.on_penalty(PEER, 10, "bad", now=0.0)
    assert ban == Ban(peer=PEER, until=100.0, reason="bad")
    assert scorer.is_banned(PEER, now=99.9)
    assert not scorer.is_banned(PEER, now=100.0)
    assert not scorer.is_banned(OTHER, now=0.0)


def test_scorer_decays_with_half_life():
    scorer = PeerScorer(_params(half_life=10.0))
    scorer.on_penalty(PEER, 20, "bad", now=0.0)
    assert scorer.score(PEER, now=0.0) == pytest.approx(-20.0)
    assert scorer.score(PEER, now=10.0) == pytest.approx(-10.0)
    assert scorer.score(PEER, now=20.0) == pytest.approx(-5.0)


def test_scorer_slow_offender_never_banned():
    scorer = PeerScorer(_params(half_life=10.0))
    # One penalty of 10 every 10 s converges to -20, above the -30 threshold.
    bans = [scorer.on_penalty(PEER, 10, "bad", now=10.0 * i) for i in range(50)]
    assert bans == [None] * 50


def test_scorer_no_second_ban_during_ban():
    scorer = PeerScorer(_params())
    for _ in range(4):
        scorer.on_penalty(PEER, 10, "bad", now=0.0)
    assert scorer.is_banned(PEER, now=1.0)
    assert scorer.on_penalty(PEER, 100, "worse", now=1.0) is None
    assert scorer.banned_until(PEER) == 100.0


def test_rate_bucket_refills():
    scorer = PeerScorer(_params(max_message_rate=2.0, message_burst=3.0))
    assert [scorer.allow_message(PEER, now=0.0) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert scorer.allow_message(PEER, now=0.5)
    assert not scorer.allow_message(PEER, now=0.5)
    assert scorer.allow_message(OTHER, now=0.5)


def test_scorer_tracks_bounded_peers():
    scorer = PeerScorer(_params(max_tracked_peers=10))
    for i in range(100):
        scorer.allow_message(f"peer{i}", now=float(i))
    assert len(scorer._peers) <= 10


def test_forget_keeps_ban():
    scorer = PeerScorer(_params())
    for _ in range(4):
        scorer.on_penalty(PEER, 10, "bad", now=0.0)
    scorer.forget(PEER, now=1.0)
    assert scorer.is_banned(PEER, now=1.0)


def test_params_invalid_field_named():
    with pytest.raises(ValueError, match="ban_threshold"):
        GuardParams(ban_threshold=5).validate()
    with pytest.raises(ValueError, match="max_streams_per_peer"):
        GuardParams(max_streams_per_peer=0).validate()


class _FakeConn:
    def __init__(self, peer: str) -> None:
        self.peer_id = ID.from_base58(peer)


class _FakeStream:
    def __init__(self, peer: str) -> None:
        self.muxed_conn = _FakeConn(peer)
        self.was_reset = False

    async def reset(self) -> None:
        self.was_reset = True


async def test_stream_handler_exception_contained(caplog):
    guard = Guard(_params())

    async def broken(stream):
        raise RuntimeError("boom")

    stream = _FakeStream(PEER)
    with caplog.at_level(logging.WARNING):
        await guard.wrap_stream_handler("/x/1.0.0", broken)(stream)
    assert stream.was_reset
    assert guard.handler_errors == 1
    assert f"stream handler failed peer_id={PEER} protocol=/x/1.0.0" in caplog.text
    assert guard.scorer.score(PEER, trio.current_time()) < 0


async def test_stream_handler_cancel_propagates():
    guard = Guard(_params())

    async def forever(stream):
        await trio.sleep_forever()

    with trio.move_on_after(0.01) as scope:
        await guard.wrap_stream_handler("/x/1.0.0", forever)(_FakeStream(PEER))
    assert scope.cancelled_caught
    assert guard.handler_errors == 0


async def test_stream_limit_per_peer():
    guard = Guard(_params(max_streams_per_peer=2))
    entered = []
    release = trio.Event()

    async def hold(stream):
        entered.append(stream)
        await release.wait()

    handler = guard.wrap_stream_handler("/x/1.0.0", hold)
    streams = [_FakeStream(PEER) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(handler, stream)
        await trio.testing.wait_all_tasks_blocked()
        assert len(entered) == 2
        # Trio starts tasks in no fixed order, so any one of the three.
        assert sum(s.was_reset for s in streams) == 1
        # Another peer is not affected by PEER's streams.
        nursery.start_soon(handler, _FakeStream(OTHER))
        await trio.testing.wait_all_tasks_blocked()
        assert len(entered) == 3
        release.set()


async def test_banned_peer_streams_reset():
    guard = Guard(_params())
    for _ in range(4):
        guard.report(PEER, "bad")
    called = []

    async def handler(stream):
        called.append(stream)

    stream = _FakeStream(PEER)
    await guard.wrap_stream_handler("/x/1.0.0", handler)(stream)
    assert called == []
    assert stream.was_reset


async def test_sync_validator_exception_rejects(caplog):
    guard = Guard(_params())

    def validator(forwarder, msg):
        raise ValueError("bad key")

    wrapped = guard.wrap_validator("t", validator)
    assert wrapped(ID.from_base58(PEER), object()) is False
    assert f"validator failed peer_id={PEER} topic=t" in caplog.text


async def test_async_validator_false_reported():
    guard = Guard(_params())

    async def validator(forwarder, msg):
        return False

    wrapped = guard.wrap_validator("t", validator)
    assert await wrapped(ID.from_base58(PEER), object()) is False
    assert guard.rejections[(PEER, "invalid message on t")] == 1


async def test_guard_pubsub_contains_push_msg(caplog):
    guard = Guard(_params())

    class _Pubsub:
        async def push_msg(self, forwarder, msg):
            raise ValueError("malformed key")

    pubsub = _Pubsub()
    guard.guard_pubsub(pubsub)
    await pubsub.push_msg(ID.from_base58(PEER), object())
    assert f"pubsub message failed peer_id={PEER}" in caplog.text
    assert guard.rejections[(PEER, "malformed pubsub message")] == 1


async def test_ban_disconnects_through_host():
    guard = Guard(_params())
    disconnected = []

    class _Host:
        async def disconnect(self, peer_id):
            disconnected.append(peer_id.to_base58())

    guard.attach(_Host())
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)
        for _ in range(4):
            guard.report(PEER, "bad")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert disconnected == [PEER]


async def test_supervise_restarts_with_logged_reason(caplog, autojump_clock):
    guard = Guard(_params())
    runs = []

    async def flaky(task_status=trio.TASK_STATUS_IGNORED):
        runs.append(trio.current_time())
        task_status.started()
        if len(runs) < 4:
            raise RuntimeError(f"crash {len(runs)}")

    async with trio.open_nursery() as nursery:
        await nursery.start(guard.supervise, "flaky", flaky)
    assert len(runs) == 4
    delays = [b - a for a, b in itertools.pairwise(runs)]
    assert delays == pytest.approx([0.1, 0.2, 0.4])
    assert "service crashed, restarting name=flaky" in caplog.text
    assert "crash 3" in caplog.text


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_stream_reset_by_peer_not_penalised():
    from libp2p.network.stream.exceptions import StreamReset

    guard = Guard(_params())

    async def reading(stream):
        raise StreamReset("reset by peer")

    stream = _FakeStream(PEER)
    await guard.wrap_stream_handler("/x/1.0.0", reading)(stream)
    assert stream.was_reset
    assert guard.handler_errors == 0
    assert guard.scorer.score(PEER, trio.current_time()) == 0
