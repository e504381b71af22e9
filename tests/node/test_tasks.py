"""Task lifecycle of `node.tasks.TaskCore`, driven with explicit time.

`_Mesh` stands in for the daemon and consensus: it hands every issued vertex
to every live core and accepts the first claim of each conflict set, which is
what Avalanche guarantees on a mesh of honest nodes.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import deque

import pytest

from dag.codec import decode_payload, encode_payload
from node.tasks import (
    ACCEPTED,
    ADMITTED,
    REJECTED,
    IssueClaim,
    IssueResult,
    IssueTask,
    RunInference,
    TaskCompleted,
    TaskCore,
    TaskFailed,
    TaskParams,
    TaskPayloadError,
    TaskSpec,
    claim_conflict_key,
    claim_payload,
    parse_claim,
    parse_result,
    parse_task,
    result_payload,
    task_payload,
)

HASH = "ab" * 32
PARAMS = TaskParams(claim_timeout_s=2.0, run_timeout_s=1.0, max_rounds=3, max_submits=2)


def _author(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


class _Mesh:
    """Delivers vertices between cores in virtual time."""

    def __init__(self, providers: int, seed: int = 1, params: TaskParams = PARAMS):
        self.now = 0.0
        self.requester = _author("requester")
        self.cores = {
            self.requester: TaskCore(params, random.Random(seed), self.requester)
        }
        self.providers = [_author(f"provider-{i}") for i in range(providers)]
        for i, author in enumerate(self.providers):
            core = TaskCore(params, random.Random(seed + i + 1), author)
            core.add_model(HASH)
            self.cores[author] = core
        self.dead: set[bytes] = set()
        self.winners: dict[bytes, bytes] = {}  # conflict key -> accepted author
        self.claims: list[tuple[bytes, int, bytes]] = []
        self.runs: list[tuple[bytes, RunInference]] = []
        self.results: list[tuple[bytes, IssueResult]] = []
        self.done: list[TaskCompleted | TaskFailed] = []
        self._next_id = 0
        self.queue: deque = deque()

    def _vertex_id(self) -> bytes:
        self._next_id += 1
        return hashlib.sha256(b"v%d" % self._next_id).digest()

    def live(self):
        return [(a, c) for a, c in self.cores.items() if a not in self.dead]

    def perform(self, author: bytes, actions) -> None:
        self.queue.extend((author, action) for action in actions)

    def flush(self) -> None:
        # Breadth first, so every provider sees a task before any claim on it
        # is decided: that is the race the claim conflict set resolves.
        while self.queue:
            self._perform(*self.queue.popleft())

    def _perform(self, author: bytes, action) -> None:
        core = self.cores[author]
        if isinstance(action, IssueTask):
            task_id = self._vertex_id()
            spec = parse_task(_roundtrip(task_payload(action.spec)))
            self.perform(author, core.on_task_issued(action.ref, task_id, self.now))
            for other, other_core in self.live():
                self.perform(other, other_core.on_task(task_id, author, spec, self.now))
        elif isinstance(action, IssueClaim):
            self.claims.append((action.task_id, action.round, author))
            key = claim_conflict_key(action.task_id, action.round)
            if key in self.winners:
                return  # loses its conflict set: rejected, so no core acts on it
            self.winners[key] = author
            for other, other_core in self.live():
                self.perform(
                    other,
                    other_core.on_claim(
                        action.task_id, action.round, author, ACCEPTED, self.now
                    ),
                )
        elif isinstance(action, RunInference):
            self.runs.append((author, action))
            if author in self.dead:
                return
            outputs = tuple(2 * x for x in action.inputs)
            self.perform(
                author,
                core.on_inference_done(action.task_id, action.round, outputs, self.now),
            )
        elif isinstance(action, IssueResult):
            self.results.append((author, action))
            for other, other_core in self.live():
                self.perform(
                    other,
                    other_core.on_result(
                        action.task_id,
                        action.round,
                        author,
                        action.outputs,
                        action.error,
                        self.now,
                    ),
                )
        else:
            self.done.append(action)

    def submit(self, inputs=(0.25, 0.5)) -> None:
        core = self.cores[self.requester]
        self.perform(self.requester, core.submit("digits", HASH, inputs, self.now))
        self.flush()

    def run_until(self, end: float) -> None:
        """Advance time to each core's next deadline until ``end``."""
        for _ in range(1000):
            deadline = min(c.next_deadline() for _, c in self.live())
            if deadline > end:
                self.now = end
                return
            self.now = max(self.now, deadline)
            for author, core in self.live():
                self.perform(author, core.on_tick(self.now))
            self.flush()
        raise AssertionError("run_until did not settle in 1000 steps")


def test_single_provider_serves_task():
    mesh = _Mesh(providers=1)
    mesh.submit((0.25, 0.5))
    assert len(mesh.done) == 1
    done = mesh.done[0]
    assert isinstance(done, TaskCompleted)
    assert done.outputs == (0.5, 1.0)
    assert done.provider == mesh.providers[0]
    assert done.round == 0


def test_three_providers_race_served_once():
    mesh = _Mesh(providers=3)
    mesh.submit()
    mesh.run_until(30.0)
    assert len(mesh.claims) == 3
    assert len(mesh.runs) == 1
    assert len(mesh.results) == 1
    assert [type(d) for d in mesh.done] == [TaskCompleted]
    assert mesh.runs[0][0] == mesh.done[0].provider
    assert mesh.cores[mesh.requester].stats().requests_completed == 1


def test_provider_killed_after_claim_task_reclaimed():
    mesh = _Mesh(providers=3)
    first = mesh.providers[0]
    original = mesh._perform

    def die_on_run(author, action):
        if isinstance(action, RunInference) and author == first:
            mesh.dead.add(first)
        original(author, action)

    mesh._perform = die_on_run
    mesh.submit()
    assert mesh.done == []
    assert mesh.runs[0][0] == first
    mesh.run_until(30.0)
    assert len(mesh.done) == 1
    done = mesh.done[0]
    assert isinstance(done, TaskCompleted)
    assert done.provider != first
    assert done.round == 1
    assert len(mesh.results) == 1
    reclaim_rounds = sorted({r for _, r, _ in mesh.claims})
    assert reclaim_rounds == [0, 1]


def test_reclaim_waits_for_run_timeout():
    mesh = _Mesh(providers=2)
    first = mesh.providers[0]
    original = mesh._perform

    def die_on_run(author, action):
        if isinstance(action, RunInference) and author == first:
            mesh.dead.add(first)
        original(author, action)

    mesh._perform = die_on_run
    mesh.submit()
    mesh.run_until(0.99)
    assert [r for _, r, _ in mesh.claims] == [0, 0]
    mesh.run_until(1.0 + PARAMS.reclaim_jitter_s)
    assert [r for _, r, _ in mesh.claims] == [0, 0, 1]


def test_no_provider_fails_after_bounded_submits():
    mesh = _Mesh(providers=0)
    mesh.submit()
    mesh.run_until(100.0)
    assert len(mesh.done) == 1
    failed = mesh.done[0]
    assert isinstance(failed, TaskFailed)
    assert failed.reason == (
        "model digits: submission 1: no provider claimed the task; "
        "submission 2: no provider claimed the task"
    )
    assert len(failed.task_ids) == PARAMS.max_submits
    assert failed.failed_at == pytest.approx(2 * PARAMS.claim_timeout_s)
    stats = mesh.cores[mesh.requester].stats()
    assert stats.requests_failed == 1
    assert stats.requests_open == 0
    assert failed.reason in stats.recent_failures


def test_all_providers_die_fails_with_reason():
    mesh = _Mesh(providers=2)
    original = mesh._perform

    def die_on_run(author, action):
        if isinstance(action, RunInference):
            mesh.dead.add(author)
        original(author, action)

    mesh._perform = die_on_run
    mesh.submit()
    mesh.run_until(100.0)
    assert len(mesh.done) == 1
    failed = mesh.done[0]
    assert isinstance(failed, TaskFailed)
    assert "submission 1: provider" in failed.reason
    assert "published no result" in failed.reason
    assert len(mesh.runs) == 2
    assert all(r < PARAMS.max_rounds for _, r, _ in mesh.claims)


def test_claim_rounds_bounded_by_max_rounds():
    params = TaskParams(claim_timeout_s=50.0, run_timeout_s=1.0, max_rounds=2)
    mesh = _Mesh(providers=4, params=params)
    original = mesh._perform

    def die_on_run(author, action):
        if isinstance(action, RunInference):
            mesh.dead.add(author)
        original(author, action)

    mesh._perform = die_on_run
    mesh.submit()
    mesh.run_until(40.0)
    assert max(r for _, r, _ in mesh.claims) == 1
    assert len(mesh.runs) == 2


def test_error_result_fails_request():
    mesh = _Mesh(providers=1)
    provider = mesh.providers[0]
    original = mesh._perform

    def fail_run(author, action):
        if isinstance(action, RunInference):
            mesh.runs.append((author, action))
            core = mesh.cores[author]
            mesh.perform(
                author,
                core.on_inference_failed(
                    action.task_id, action.round, "expected 64 inputs, got 2", mesh.now
                ),
            )
            return
        original(author, action)

    mesh._perform = fail_run
    mesh.submit()
    assert len(mesh.done) == 1
    failed = mesh.done[0]
    assert isinstance(failed, TaskFailed)
    assert "expected 64 inputs, got 2" in failed.reason
    assert provider.hex()[:16] in failed.reason


def test_result_from_loser_ignored():
    core = TaskCore(PARAMS, random.Random(3), _author("me"))
    (issue,) = core.submit("digits", HASH, (1.0,), 0.0)
    task_id = b"t" * 32
    assert core.on_task_issued(issue.ref, task_id, 0.1) == []
    winner, loser = _author("winner"), _author("loser")
    assert core.on_claim(task_id, 0, winner, ACCEPTED, 0.2) == []
    assert core.on_result(task_id, 0, loser, (9.0,), None, 0.3) == []
    (done,) = core.on_result(task_id, 0, winner, (1.5,), None, 0.4)
    assert done.outputs == (1.5,)
    assert done.provider == winner


def test_result_before_claim_acceptance_waits():
    core = TaskCore(PARAMS, random.Random(3), _author("me"))
    (issue,) = core.submit("digits", HASH, (1.0,), 0.0)
    task_id = b"t" * 32
    core.on_task_issued(issue.ref, task_id, 0.1)
    winner = _author("winner")
    assert core.on_result(task_id, 0, winner, (1.5,), None, 0.2) == []
    (done,) = core.on_claim(task_id, 0, winner, ACCEPTED, 0.3)
    assert isinstance(done, TaskCompleted)
    assert done.completed_at == 0.3


def test_claim_and_result_before_task_issued_reported():
    core = TaskCore(PARAMS, random.Random(3), _author("me"))
    (issue,) = core.submit("digits", HASH, (1.0,), 0.0)
    task_id = b"t" * 32
    winner = _author("winner")
    core.on_claim(task_id, 0, winner, ACCEPTED, 0.1)
    core.on_result(task_id, 0, winner, (1.5,), None, 0.2)
    (done,) = core.on_task_issued(issue.ref, task_id, 0.3)
    assert done.outputs == (1.5,)


def test_provider_without_model_does_not_claim():
    core = TaskCore(PARAMS, random.Random(3), _author("p"))
    spec = TaskSpec("digits", HASH, (1.0,), 7, 1000, 3)
    assert core.on_task(b"t" * 32, _author("r"), spec, 0.0) == []
    core.add_model(HASH)
    assert core.on_task(b"u" * 32, _author("r"), spec, 0.0) == [
        IssueClaim(task_id=b"u" * 32, round=0)
    ]
    core.remove_model(HASH)
    assert core.on_task(b"v" * 32, _author("r"), spec, 0.0) == []


def test_duplicate_task_vertex_claimed_once():
    core = TaskCore(PARAMS, random.Random(3), _author("p"))
    core.add_model(HASH)
    spec = TaskSpec("digits", HASH, (1.0,), 7, 1000, 3)
    assert len(core.on_task(b"t" * 32, _author("r"), spec, 0.0)) == 1
    assert core.on_task(b"t" * 32, _author("r"), spec, 0.1) == []


def test_claim_accepted_before_task_runs_when_task_arrives():
    me = _author("p")
    core = TaskCore(PARAMS, random.Random(3), me)
    core.add_model(HASH)
    assert core.on_claim(b"t" * 32, 0, me, ACCEPTED, 0.0) == []
    spec = TaskSpec("digits", HASH, (1.0, 2.0), 7, 1000, 3)
    (run,) = core.on_task(b"t" * 32, _author("r"), spec, 0.1)
    assert run == RunInference(b"t" * 32, 0, HASH, (1.0, 2.0))


def test_next_deadline_idle_is_inf():
    core = TaskCore(PARAMS, random.Random(3), _author("p"))
    assert core.next_deadline() == math.inf
    core.submit("digits", HASH, (1.0,), 5.0)
    assert core.next_deadline() == 5.0 + PARAMS.claim_timeout_s


def test_finished_tasks_forgotten_after_retain():
    params = TaskParams(retain_s=10.0)
    mesh = _Mesh(providers=1, params=params)
    mesh.submit()
    core = mesh.cores[mesh.providers[0]]
    assert len(core._tasks) == 1
    mesh.run_until(11.0)
    assert len(core._tasks) == 0


def test_tracked_tasks_bounded():
    core = TaskCore(TaskParams(max_tracked=5), random.Random(3), _author("p"))
    for i in range(20):
        core.on_claim(bytes([i]) * 32, 0, _author("x"), ACCEPTED, float(i))
    assert len(core._tasks) == 5


def test_nonces_follow_seed():
    def nonces(seed):
        core = TaskCore(PARAMS, random.Random(seed), _author("r"))
        return [core.submit("m", HASH, (1.0,), 0.0)[0].spec.nonce for _ in range(3)]

    assert nonces(5) == nonces(5)
    assert nonces(5) != nonces(6)


# --- payloads -------------------------------------------------------------


def _roundtrip(body):
    # The vertex payload codec, so tests see the types peers' payloads have.
    return decode_payload(encode_payload(body))


def test_task_payload_roundtrip_exact():
    spec = TaskSpec("digits", HASH, (0.1, 1 / 3, 0.0), 42, 3000, 3, "peer")
    assert parse_task(_roundtrip(task_payload(spec))) == spec


def test_claim_and_result_payload_roundtrip():
    task_id = bytes(range(32))
    assert parse_claim(_roundtrip(claim_payload(task_id, 2))) == (task_id, 2)
    body = _roundtrip(result_payload(task_id, 1, (0.5, 1e-300), None))
    assert parse_result(body) == (task_id, 1, (0.5, 1e-300), None)
    body = _roundtrip(result_payload(task_id, 1, None, "x" * 1000))
    assert parse_result(body)[3] == "x" * 500


def test_claim_conflict_key_per_round():
    task_id = bytes(32)
    assert claim_conflict_key(task_id, 0) == claim_conflict_key(task_id, 0)
    assert claim_conflict_key(task_id, 0) != claim_conflict_key(task_id, 1)
    assert claim_conflict_key(task_id, 0) != claim_conflict_key(bytes([1]) * 32, 0)


def _good_task():
    return task_payload(TaskSpec("digits", HASH, (0.5,), 1, 1000, 3))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": ""}, "model name length"),
        ({"model": 5}, "'model' has type int"),
        ({"model_hash": "AB" * 32}, "64 lower-case hex"),
        ({"inputs": []}, "0 values"),
        ({"inputs": [1.0] * 4097}, "4097 values"),
        ({"inputs": [float("nan")]}, "contains nan"),
        ({"inputs": [float("inf")]}, "contains inf"),
        ({"inputs": ["1"]}, "non-number"),
        ({"inputs": [True]}, "non-number"),
        ({"inputs": "1 2"}, "list of numbers"),
        ({"nonce": True}, "'nonce' has type bool"),
        ({"run_timeout_ms": 0}, "run_timeout_ms=0"),
        ({"max_rounds": 99}, "max_rounds=99"),
        ({"requester": b"x"}, "requester"),
        ({"providers": ["p"] * 17}, "providers"),
        ({"providers": [1]}, "providers"),
    ],
)
def test_parse_task_rejects(change, message):
    body = {**_good_task(), **change}
    with pytest.raises(TaskPayloadError, match=message):
        parse_task(body)


def test_parse_task_missing_field_and_non_map():
    body = _good_task()
    del body["nonce"]
    with pytest.raises(TaskPayloadError, match="'nonce' is missing"):
        parse_task(body)
    with pytest.raises(TaskPayloadError, match="must be a map"):
        parse_task([1, 2])


@pytest.mark.parametrize(
    "body",
    [
        {"task": b"x" * 31, "round": 0},
        {"task": "x" * 32, "round": 0},
        {"task": b"x" * 32, "round": -1},
        {"task": b"x" * 32, "round": 16},
        {"task": b"x" * 32},
    ],
)
def test_parse_claim_rejects(body):
    with pytest.raises(TaskPayloadError):
        parse_claim(body)


def test_parse_result_needs_outputs_or_error():
    with pytest.raises(TaskPayloadError, match="outputs"):
        parse_result({"task": b"x" * 32, "round": 0})


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"claim_timeout_s": 0.0}, "claim_timeout_s"),
        ({"run_timeout_s": -1.0}, "run_timeout_s"),
        ({"max_rounds": 0}, "max_rounds"),
        ({"max_rounds": 17}, "max_rounds"),
        ({"max_submits": 0}, "max_submits"),
        ({"reclaim_jitter_s": -0.1}, "reclaim_jitter_s"),
        ({"claim_stagger_s": -1.0}, "claim_stagger_s"),
        ({"request_timeout_s": 0.0}, "request_timeout_s"),
        ({"max_tracked": 0}, "max_tracked"),
    ],
)
def test_params_validate_names_setting(change, name):
    params = TaskParams(**change)
    with pytest.raises(ValueError, match=name):
        params.validate()


def test_reclaim_skipped_when_other_claimed_round():
    me, other, dead = _author("me"), _author("other"), _author("dead")
    core = TaskCore(PARAMS, random.Random(3), me)
    core.add_model(HASH)
    task_id = b"t" * 32
    spec = TaskSpec("digits", HASH, (1.0,), 7, 1000, 3)
    assert core.on_task(task_id, _author("r"), spec, 0.0) == [IssueClaim(task_id, 0)]
    assert core.on_claim(task_id, 0, dead, ACCEPTED, 0.1) == []
    assert core.on_claim(task_id, 1, other, ADMITTED, 1.05) == []
    assert core.on_tick(2.0) == []
    assert core.stats().reclaims == 0
    # When that round is accepted and its winner dies too, the next
    # round is claimed again.
    assert core.on_claim(task_id, 1, other, ACCEPTED, 2.0) == []
    assert core.on_tick(3.0 + PARAMS.reclaim_jitter_s) == [IssueClaim(task_id, 2)]


def test_all_claims_rejected_moves_to_next_round():
    me, other = _author("me"), _author("other")
    core = TaskCore(PARAMS, random.Random(3), me)
    core.add_model(HASH)
    task_id = b"t" * 32
    spec = TaskSpec("digits", HASH, (1.0,), 7, 1000, 3)
    assert core.on_task(task_id, _author("r"), spec, 0.0) == [IssueClaim(task_id, 0)]
    assert core.on_claim(task_id, 0, me, ADMITTED, 0.1) == []
    assert core.on_claim(task_id, 0, other, ADMITTED, 0.1) == []
    # One of two rejected: the other may still win.
    assert core.on_claim(task_id, 0, other, REJECTED, 0.2) == []
    assert core.on_claim(task_id, 0, me, REJECTED, 0.3) == [IssueClaim(task_id, 1)]


def test_all_claims_rejected_in_last_round_stops():
    me = _author("me")
    core = TaskCore(PARAMS, random.Random(3), me)
    core.add_model(HASH)
    task_id = b"t" * 32
    core.on_task(task_id, _author("r"), TaskSpec("d", HASH, (1.0,), 7, 1000, 1), 0.0)
    core.on_claim(task_id, 0, me, ADMITTED, 0.1)
    assert core.on_claim(task_id, 0, me, REJECTED, 0.2) == []


def test_rejected_task_vertex_resubmitted_at_once():
    core = TaskCore(PARAMS, random.Random(3), _author("me"))
    (issue,) = core.submit("digits", HASH, (1.0,), 0.0)
    task_id = b"t" * 32
    core.on_task_issued(issue.ref, task_id, 0.1)
    (again,) = core.on_task_rejected(task_id, 0.5)
    assert isinstance(again, IssueTask)
    assert again.ref == issue.ref
    core.on_task_issued(issue.ref, b"u" * 32, 0.6)
    (failed,) = core.on_task_rejected(b"u" * 32, 0.7)
    assert isinstance(failed, TaskFailed)
    assert "submission 1: consensus rejected the task vertex" in failed.reason


def test_provider_drops_rejected_task():
    core = TaskCore(PARAMS, random.Random(3), _author("me"))
    core.add_model(HASH)
    task_id = b"t" * 32
    core.on_task_rejected(task_id, 0.0)
    spec = TaskSpec("digits", HASH, (1.0,), 7, 1000, 3)
    assert core.on_task(task_id, _author("r"), spec, 0.1) == []


def test_listed_first_provider_claims_at_once_others_wait():
    task_id = b"t" * 32
    spec = TaskSpec("digits", HASH, (1.0,), 7, 1000, 3, providers=("p1", "p2"))
    first = TaskCore(PARAMS, random.Random(1), _author("a"), peer_id="p1")
    second = TaskCore(PARAMS, random.Random(2), _author("b"), peer_id="p2")
    unlisted = TaskCore(PARAMS, random.Random(3), _author("c"), peer_id="p3")
    for core in (first, second, unlisted):
        core.add_model(HASH)
    assert first.on_task(task_id, _author("r"), spec, 0.0) == [IssueClaim(task_id, 0)]
    assert second.on_task(task_id, _author("r"), spec, 0.0) == []
    assert unlisted.on_task(task_id, _author("r"), spec, 0.0) == []
    assert second.next_deadline() == PARAMS.claim_stagger_s
    assert unlisted.next_deadline() == 2 * PARAMS.claim_stagger_s
    # The first claim reaches the second provider before its turn.
    second.on_claim(task_id, 0, _author("a"), ADMITTED, 0.05)
    assert second.on_tick(PARAMS.claim_stagger_s) == []
    # The unlisted provider saw nothing and claims at its turn.
    assert unlisted.on_tick(2 * PARAMS.claim_stagger_s) == [IssueClaim(task_id, 0)]


def test_zero_stagger_everyone_claims_at_once():
    params = TaskParams(claim_stagger_s=0.0)
    spec = TaskSpec("digits", HASH, (1.0,), 7, 1000, 3, providers=("p1", "p2"))
    core = TaskCore(params, random.Random(2), _author("b"), peer_id="p2")
    core.add_model(HASH)
    assert core.on_task(b"t" * 32, _author("r"), spec, 0.0) == [
        IssueClaim(b"t" * 32, 0)
    ]


def test_submit_carries_provider_order():
    core = TaskCore(PARAMS, random.Random(3), _author("r"))
    (issue,) = core.submit("digits", HASH, (1.0,), 0.0, "req", ("p2", "p1"))
    assert issue.spec.providers == ("p2", "p1")
    body = _roundtrip(task_payload(issue.spec))
    assert parse_task(body).providers == ("p2", "p1")


def test_undecided_claims_extend_wait_not_resubmit():
    core = TaskCore(PARAMS, random.Random(3), _author("me"))
    (issue,) = core.submit("digits", HASH, (1.0,), 0.0)
    task_id = b"t" * 32
    core.on_task_issued(issue.ref, task_id, 0.0)
    core.on_claim(task_id, 0, _author("p"), ADMITTED, 0.1)
    assert core.on_tick(PARAMS.claim_timeout_s) == []
    assert core.next_deadline() == 2 * PARAMS.claim_timeout_s
    # Once every claim seen is rejected, the request is submitted again.
    core.on_claim(task_id, 0, _author("p"), REJECTED, 2.5)
    (again,) = core.on_tick(2 * PARAMS.claim_timeout_s)
    assert isinstance(again, IssueTask)


def test_request_timeout_bounds_waiting():
    params = TaskParams(claim_timeout_s=2.0, request_timeout_s=7.0)
    core = TaskCore(params, random.Random(3), _author("me"))
    (issue,) = core.submit("digits", HASH, (1.0,), 0.0)
    task_id = b"t" * 32
    core.on_task_issued(issue.ref, task_id, 0.0)
    core.on_claim(task_id, 0, _author("p"), ADMITTED, 0.1)
    actions = []
    for now in (2.0, 4.0, 6.0, 8.0):
        actions += core.on_tick(now)
    (failed,) = actions
    assert isinstance(failed, TaskFailed)
    assert failed.reason.endswith("gave up after 8.0 s")
    assert failed.failed_at == 8.0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "WORKERS",
            "0",
            (
                "invalid setting tasks.workers=0 (from environment variable "
                "SYNAPTIC_MESH_TASKS_WORKERS): must be from 1 to 64"
            ),
        ),
        (
            "RUN_TIMEOUT_S",
            "0",
            (
                "invalid setting tasks.run_timeout_s=0.0 (from environment variable "
                "SYNAPTIC_MESH_TASKS_RUN_TIMEOUT_S): must be above 0"
            ),
        ),
        (
            "MAX_ROUNDS",
            "17",
            (
                "invalid setting tasks.max_rounds=17 (from environment variable "
                "SYNAPTIC_MESH_TASKS_MAX_ROUNDS): must be from 1 to 16"
            ),
        ),
        (
            "CLAIM_STAGGER_S",
            "nan",
            (
                "invalid setting tasks.claim_stagger_s='nan' (from environment "
                "variable SYNAPTIC_MESH_TASKS_CLAIM_STAGGER_S): expected a finite number"
            ),
        ),
        (
            "MAX_SUBMITS",
            "two",
            (
                "invalid setting tasks.max_submits='two' (from environment variable "
                "SYNAPTIC_MESH_TASKS_MAX_SUBMITS): expected an integer"
            ),
        ),
    ],
)
def test_task_settings_from_env_use_the_config_message(variable, value, message):
    from node.config import ConfigError
    from node.inference import params_from_env

    with pytest.raises(ConfigError) as error:
        params_from_env({f"SYNAPTIC_MESH_TASKS_{variable}": value})
    assert str(error.value) == message
