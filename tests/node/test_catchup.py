"""Catch-up of vertices accepted while a node was down."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dag.store import Store
from node.catchup import CatchupParams, CatchupSchedule
from node.client import ApiClient
from tests.node.daemons import Daemon, start_daemons, wait_for

GOSSIP_MEMORY_S = 6.0
PARAMS = CatchupParams(
    max_rounds_at_once=2, more_interval_s=0.2, base_interval_s=2.0, max_interval_s=8.0
)


def test_schedule_caps_concurrent_rounds():
    schedule = CatchupSchedule(PARAMS)
    schedule.set_peers(frozenset({"a", "b", "c"}), now=10.0)

    assert schedule.start_due(10.0) == [("a", 0), ("b", 0)]
    assert schedule.start_due(10.0) == []
    assert schedule.next_deadline() == 10.0


def test_schedule_backoff_and_reset():
    schedule = CatchupSchedule(PARAMS)
    schedule.set_peers(frozenset({"a"}), now=0.0)
    now = 0.0
    pauses = []
    for _ in range(4):
        [(peer, _)] = schedule.start_due(now)
        schedule.on_round_done(peer, 5, found=0, more=False, now=now)
        pauses.append(schedule.next_deadline() - now)
        now = schedule.next_deadline()
    assert pauses == [4.0, 8.0, 8.0, 8.0]

    schedule.start_due(now)
    schedule.on_round_done("a", 9, found=3, more=False, now=now)
    assert schedule.next_deadline() - now == 2.0
    schedule.start_due(schedule.next_deadline())
    schedule.on_round_done("a", 12, found=3, more=True, now=now)
    assert schedule.next_deadline() - now == pytest.approx(0.2)
    assert schedule.cursors() == {"a": 12}


def test_schedule_cursor_and_gone_peer():
    schedule = CatchupSchedule(PARAMS)
    schedule.set_peers(frozenset({"a"}), now=0.0)
    schedule.start_due(0.0)
    schedule.on_round_done("a", 7, found=1, more=False, now=0.0)
    schedule.start_due(2.0)
    schedule.on_round_done("a", 3, found=0, more=False, now=2.0)
    assert schedule.cursors() == {"a": 7}

    schedule.set_peers(frozenset(), now=3.0)
    schedule.on_round_failed("a", now=3.0)
    assert schedule.cursors() == {}
    schedule.set_peers(frozenset({"a"}), now=4.0)
    assert schedule.start_due(4.0) == [("a", 0)]


@pytest.mark.parametrize(
    "field, value",
    [("page_size", 0), ("page_size", 10_000), ("max_rounds_at_once", 0),
     ("base_interval_s", 0.0), ("max_interval_s", 1.0)],
)  # fmt: skip
def test_params_reject_out_of_range_values(field, value):
    import dataclasses

    with pytest.raises(ValueError, match=field):
        dataclasses.replace(PARAMS, **{field: value}).validate()


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def _publish(daemon: Daemon, count: int, label: str) -> list[str]:
    client = ApiClient.from_data_dir(daemon.data_dir, timeout=60.0)
    body = {"topic": "catchup", "timeout": 30}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda i: client.post("/publish", {**body, "message": f"{label} {i}"}),
                range(count),
            )
        )
    assert {r["status"] for r in results} == {"accepted"}, results
    return [r["vertex_id"] for r in results]


def _accepted(daemon: Daemon) -> int:
    return daemon.status()["dag"]["accepted"]


@pytest.mark.slow
def test_restarted_node_catches_up(tmp_path, daemons):
    first, second, third = start_daemons(tmp_path, 3)
    daemons.extend([first, second, third])
    bootstrap = first.runtime()["listen_addrs"][0]
    wait_for(lambda: len(third.status()["peers"]) >= 1, 20, "third to connect")
    _publish(first, 3, "before")
    wait_for(lambda: _accepted(third) == _accepted(first), 20, "third to accept")

    third.stop(signal.SIGKILL)
    _publish(first, 15, "first")
    _publish(second, 15, "second")
    published_at = time.monotonic()
    wait_for(
        lambda: _accepted(first) == _accepted(second) >= 34,
        20,
        "the running nodes to agree",
    )
    expected = _accepted(first)

    # Gossip re-advertises the messages of its last few heartbeats (about
    # 5 s, GossipParams.gossip_history) to a peer that joins, so the restart
    # waits them out. Nothing is published after it, so only catch-up can
    # bring the 30 missing vertices.
    time.sleep(max(0.0, GOSSIP_MEMORY_S - (time.monotonic() - published_at)))
    third.start("--bootstrap", bootstrap, "--log-level", "INFO")
    third.wait_ready()
    wait_for(lambda: _accepted(third) == expected, 25, "third to catch up", 0.25)
    catchup = third.status()["catchup"]
    assert catchup["requested"] >= 30, catchup

    for daemon in daemons:
        code, _ = daemon.stop()
        assert code == 0, daemon.stderr()
    sets = []
    for daemon in daemons:
        with Store.open(daemon.data_dir, create=False) as store:
            sets.append(set(store.accepted_ids()))
    assert sets[0] == sets[1] == sets[2]
    assert len(sets[2]) == expected
