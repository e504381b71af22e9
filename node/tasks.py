"""Inference tasks across the mesh: the sans-IO task lifecycle.

A task moves through three kinds of signed vertex:

* ``task.submit`` (issued by the requester): model name, model content hash,
  one input row, a nonce, and the contract every provider follows (how long a
  claimed task may run before others claim it again, how many claim rounds
  there may be). The vertex id is the task id. It has no conflict key.
* ``task.claim`` (issued by a provider): the task id and a round number. Its
  single conflict key is ``claim_conflict_key(task_id, round)``, so the claims
  of one round form one conflict set and consensus accepts exactly one of
  them. Only the author of the accepted claim runs the inference.
* ``task.result`` (issued by the winning provider): the task id, the round and
  either the outputs or an error message. It has no conflict key. A result
  counts only when its author is the author of the accepted claim of its
  round.

Recovery is bounded on both sides. A provider that sees an accepted claim
with no result after ``run_timeout_ms`` claims round ``round + 1`` (at most
``max_rounds`` rounds per task), which covers a provider that died after
claiming. A requester whose task gets no accepted claim, or no result, before
its own deadline submits the task again as a new vertex (at most
``max_submits`` times) and then reports the task failed with the reason.

`TaskCore` holds both roles because one node is often requester and provider
at once. It is sans-IO: every event takes an explicit ``now`` in seconds, the
nonce and re-claim jitter come from an injected ``random.Random``, and each
event returns a list of frozen action dataclasses that the trio service in
``node.inference`` performs.

Public API:
    TaskParams(claim_timeout_s, run_timeout_s, max_rounds, max_submits, ...)
    SettingError(name, value, rule)  (raised by TaskParams.validate)
    TaskSpec, TaskPayloadError, parse_task, parse_claim, parse_result,
    task_payload(spec), claim_payload(task_id, round),
    result_payload(task_id, round, outputs, error),
    claim_conflict_key(task_id, round)
    TaskCore(params, rng, author)
        .submit(model, model_hash, inputs, now, requester="") -> list[Action]
        .on_task_issued(ref, task_id, now) -> list[Action]
        .add_model(model_hash) / .remove_model(model_hash)
        .on_task(task_id, author, spec, now) -> list[Action]
        .on_claim(task_id, round, author, status, now) -> list[Action]
        .on_result(task_id, round, author, outputs, error, now) -> list[Action]
        .on_inference_done(task_id, round, outputs, now) -> list[Action]
        .on_inference_failed(task_id, round, reason, now) -> list[Action]
        .on_tick(now) -> list[Action]
        .next_deadline() -> float
        .stats() -> TaskStats
    Actions: IssueTask, IssueClaim, RunInference, IssueResult, TaskCompleted,
    TaskFailed.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from node import NodeError

TASK_TYPE: Final = "task.submit"
CLAIM_TYPE: Final = "task.claim"
RESULT_TYPE: Final = "task.result"

# Status names that `Node.on_vertex` callbacks receive.
ADMITTED: Final = "admitted"
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
VertexStatus = Literal["admitted", "accepted", "rejected"]

# Bounds on what a peer may put in a task payload. 4096 float64 values pack
# into about 37 KB of msgpack, which fits the 64 KiB payload limit of a
# vertex with room for the other fields.
MAX_INPUTS: Final = 4096
MAX_OUTPUTS: Final = 4096
MAX_MODEL_NAME: Final = 128
MAX_ERROR_TEXT: Final = 500
MAX_ROUNDS_LIMIT: Final = 16
MAX_PROVIDERS: Final = 16
ID_LEN: Final = 32

_CLAIM_KEY_TAG: Final = b"synaptic-mesh/task-claim\x00"


class SettingError(ValueError):
    """A task setting out of range: its field name, its value and the rule."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        super().__init__(f"{name}={value!r} {rule}")
        self.name = name
        self.value = value
        self.rule = rule


class TaskPayloadError(NodeError):
    """A task, claim or result payload that breaks the task protocol."""


@dataclass(frozen=True, slots=True)
class TaskParams:
    """Timeouts and bounds of the task protocol.

    Attributes:
        claim_timeout_s: how long a requester waits for an accepted claim (and,
            once a claim is accepted, for the result beyond ``run_timeout_s``)
            before it submits the task again. Consensus on a loopback mesh
            decides in well under a second, so 5 s leaves room for a loaded
            machine.
        run_timeout_s: how long providers give the winner of a claim to publish
            its result before they claim the task again. One forward pass takes
            milliseconds; the rest is gossip and a loaded machine.
        max_rounds: claim rounds per task, so at most ``max_rounds - 1``
            providers may die holding one task before it fails.
        max_submits: submissions of one request (the first included). A
            task vertex that names a rejected vertex as a parent is rejected
            with it and submitted again at once, which on a busy testnet
            happens to a few percent of tasks (measured with
            ``synaptic-mesh testnet``), so four keep a double loss rare.
        reclaim_jitter_s: providers spread their re-claims over this many
            seconds, so the first re-claim usually reaches the others (tens
            of milliseconds on a LAN) before their own timers fire, and they
            leave the round to it.
        claim_stagger_s: delay between the claims of consecutive providers in
            the requester's order. The first provider claims at once; the
            others claim only if no claim reached them first. Conflicting
            claims are resolved by consensus, but every vertex built on the
            losing claim is rejected with it, so a healthy mesh avoids the
            conflict. Zero makes every provider claim at once.
        request_timeout_s: how long a requester waits in total before it
            reports a request failed. It waits past ``claim_timeout_s`` only
            while claims it has seen are still undecided.
        retain_s: how long finished tasks are kept to drop late vertices.
        max_tracked: tasks tracked at once; the oldest finished ones go first.
    """

    claim_timeout_s: float = 5.0
    run_timeout_s: float = 3.0
    max_rounds: int = 3
    max_submits: int = 4
    reclaim_jitter_s: float = 0.5
    claim_stagger_s: float = 0.3
    request_timeout_s: float = 60.0
    retain_s: float = 120.0
    max_tracked: int = 10_000

    def validate(self) -> None:
        """Raise `SettingError` naming the first setting out of range."""
        for name in ("claim_timeout_s", "run_timeout_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise SettingError(name, getattr(self, name), "must be above 0")
        if not 1 <= self.max_rounds <= MAX_ROUNDS_LIMIT:
            raise SettingError(
                "max_rounds", self.max_rounds, f"must be from 1 to {MAX_ROUNDS_LIMIT}"
            )
        for name in ("max_submits", "max_tracked"):
            if getattr(self, name) < 1:
                raise SettingError(name, getattr(self, name), "must be at least 1")
        for name in ("reclaim_jitter_s", "claim_stagger_s", "retain_s"):
            if not getattr(self, name) >= 0:
                raise SettingError(name, getattr(self, name), "must be at least 0")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """The body of a ``task.submit`` vertex."""

    model: str
    model_hash: str
    inputs: tuple[float, ...]
    nonce: int
    run_timeout_ms: int
    max_rounds: int
    requester: str = ""
    # Peer ids in the order the requester would like them to claim; empty
    # when the requester did not look providers up.
    providers: tuple[str, ...] = ()


# --- payloads -------------------------------------------------------------


def claim_conflict_key(task_id: bytes, round_: int) -> bytes:
    """Return the conflict key that all claims of one task round share."""
    return hashlib.sha256(_CLAIM_KEY_TAG + task_id + round_.to_bytes(4, "big")).digest()


def task_payload(spec: TaskSpec) -> dict[str, Any]:
    """Return the payload dict of a ``task.submit`` vertex."""
    return {
        "model": spec.model,
        "model_hash": spec.model_hash,
        "inputs": [float(x) for x in spec.inputs],
        "nonce": spec.nonce,
        "run_timeout_ms": spec.run_timeout_ms,
        "max_rounds": spec.max_rounds,
        "requester": spec.requester,
        "providers": list(spec.providers),
    }


def claim_payload(task_id: bytes, round_: int) -> dict[str, Any]:
    """Return the payload dict of a ``task.claim`` vertex."""
    return {"task": task_id, "round": round_}


def result_payload(
    task_id: bytes,
    round_: int,
    outputs: tuple[float, ...] | None,
    error: str | None,
) -> dict[str, Any]:
    """Return the payload dict of a ``task.result`` vertex."""
    body: dict[str, Any] = {"task": task_id, "round": round_}
    if error is not None:
        body["error"] = error[:MAX_ERROR_TEXT]
    else:
        body["outputs"] = [float(x) for x in outputs or ()]
    return body


def _field(body: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(body, dict):
        raise TaskPayloadError(f"payload must be a map, got {type(body).__name__}")
    if name not in body:
        raise TaskPayloadError(f"payload field {name!r} is missing")
    value = body[name]
    # bool is an int subclass; a flag where a count belongs is malformed.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TaskPayloadError(
            f"payload field {name!r} has type {type(value).__name__}"
        )
    return value


def _floats(values: Any, name: str, limit: int) -> tuple[float, ...]:
    if not isinstance(values, list | tuple):
        raise TaskPayloadError(f"payload field {name!r} must be a list of numbers")
    if not 1 <= len(values) <= limit:
        raise TaskPayloadError(
            f"payload field {name!r} has {len(values)} values, allowed 1..{limit}"
        )
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TaskPayloadError(f"payload field {name!r} contains a non-number")
        number = float(value)
        if not math.isfinite(number):
            raise TaskPayloadError(f"payload field {name!r} contains {number}")
        out.append(number)
    return tuple(out)


def _task_id(body: Any) -> bytes:
    task_id = _field(body, "task", bytes)
    if len(task_id) != ID_LEN:
        raise TaskPayloadError(f"task id has {len(task_id)} bytes, expected {ID_LEN}")
    return task_id


def _round(body: Any) -> int:
    round_ = _field(body, "round", int)
    if not 0 <= round_ < MAX_ROUNDS_LIMIT:
        raise TaskPayloadError(f"round={round_} must be in 0..{MAX_ROUNDS_LIMIT - 1}")
    return round_


def parse_task(body: Any) -> TaskSpec:
    """Check an untrusted ``task.submit`` payload and return its `TaskSpec`.

    Raises:
        TaskPayloadError: a field is missing, of the wrong type or out of range.
    """
    model = _field(body, "model", str)
    if not 1 <= len(model) <= MAX_MODEL_NAME:
        raise TaskPayloadError(f"model name length {len(model)} not in 1..128")
    model_hash = _field(body, "model_hash", str)
    if len(model_hash) != 64 or any(c not in "0123456789abcdef" for c in model_hash):
        raise TaskPayloadError("model_hash must be 64 lower-case hex digits")
    run_timeout_ms = _field(body, "run_timeout_ms", int)
    if not 1 <= run_timeout_ms <= 600_000:
        raise TaskPayloadError(f"run_timeout_ms={run_timeout_ms} not in 1..600000")
    max_rounds = _field(body, "max_rounds", int)
    if not 1 <= max_rounds <= MAX_ROUNDS_LIMIT:
        raise TaskPayloadError(f"max_rounds={max_rounds} not in 1..{MAX_ROUNDS_LIMIT}")
    requester = body.get("requester", "")
    if not isinstance(requester, str) or len(requester) > 128:
        raise TaskPayloadError("requester must be a string of at most 128 chars")
    providers = body.get("providers", [])
    if (
        not isinstance(providers, list | tuple)
        or len(providers) > MAX_PROVIDERS
        or not all(isinstance(p, str) and len(p) <= 128 for p in providers)
    ):
        raise TaskPayloadError(
            f"providers must be a list of at most {MAX_PROVIDERS} peer ids"
        )
    return TaskSpec(
        model=model,
        model_hash=model_hash,
        inputs=_floats(body.get("inputs"), "inputs", MAX_INPUTS),
        nonce=_field(body, "nonce", int),
        run_timeout_ms=run_timeout_ms,
        max_rounds=max_rounds,
        requester=requester,
        providers=tuple(providers),
    )


def parse_claim(body: Any) -> tuple[bytes, int]:
    """Check an untrusted ``task.claim`` payload; return (task id, round)."""
    return _task_id(body), _round(body)


def parse_result(
    body: Any,
) -> tuple[bytes, int, tuple[float, ...] | None, str | None]:
    """Check an untrusted ``task.result`` payload.

    Returns:
        (task id, round, outputs, error): exactly one of outputs and error is
        None.
    """
    task_id, round_ = _task_id(body), _round(body)
    if isinstance(body.get("error"), str):
        return task_id, round_, None, body["error"][:MAX_ERROR_TEXT]
    return task_id, round_, _floats(body.get("outputs"), "outputs", MAX_OUTPUTS), None


# --- actions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssueTask:
    """Issue a ``task.submit`` vertex, then report its id to `on_task_issued`."""

    ref: int
    spec: TaskSpec


@dataclass(frozen=True, slots=True)
class IssueClaim:
    """Issue a ``task.claim`` vertex with ``claim_conflict_key(task_id, round)``."""

    task_id: bytes
    round: int


@dataclass(frozen=True, slots=True)
class RunInference:
    """Run the model on the inputs, then call `on_inference_done` or `_failed`."""

    task_id: bytes
    round: int
    model_hash: str
    inputs: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class IssueResult:
    """Issue a ``task.result`` vertex carrying outputs or an error."""

    task_id: bytes
    round: int
    outputs: tuple[float, ...] | None
    error: str | None


@dataclass(frozen=True, slots=True)
class TaskCompleted:
    """A request of this node got its result from the provider ``provider``."""

    ref: int
    task_id: bytes
    round: int
    provider: bytes
    outputs: tuple[float, ...]
    submitted_at: float
    completed_at: float


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """A request of this node ended without a result, for ``reason``."""

    ref: int
    task_ids: tuple[bytes, ...]
    reason: str
    failed_at: float


Action = (
    IssueTask | IssueClaim | RunInference | IssueResult | TaskCompleted | TaskFailed
)


@dataclass(frozen=True, slots=True)
class TaskStats:
    """Counters of one `TaskCore`, for ``status`` and metrics."""

    requests_open: int
    requests_completed: int
    requests_failed: int
    claims_issued: int
    claims_won: int
    results_issued: int
    reclaims: int
    recent_failures: tuple[str, ...]


# --- state ----------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    """One request of this node, across its submissions."""

    ref: int
    model: str
    model_hash: str
    inputs: tuple[float, ...]
    requester: str
    first_submitted_at: float
    providers: tuple[str, ...] = ()
    submits: int = 0
    task_ids: list[bytes] = field(default_factory=list)
    deadline: float = math.inf
    state: str = "submitting"  # submitting, waiting-claim, claimed, done, failed
    # What went wrong with each submission, for the failure reason.
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Task:
    """State of one task id as this node has seen it, in either role."""

    task_id: bytes
    seen_at: float
    spec: TaskSpec | None = None
    ref: int | None = None  # set when this node is the requester
    accepted: dict[int, bytes] = field(default_factory=dict)  # round -> claimer
    accepted_at: dict[int, float] = field(default_factory=dict)
    claimed_rounds: set[int] = field(default_factory=set)  # rounds we claimed
    others_claimed: set[int] = field(default_factory=set)  # rounds others claimed
    # Round -> authors of the claims seen, and of those consensus rejected.
    claimants: dict[int, set[bytes]] = field(default_factory=dict)
    rejected: dict[int, set[bytes]] = field(default_factory=dict)
    running: bool = False
    # Results that arrived before their round's claim was accepted here.
    pending: dict[tuple[int, bytes], tuple[tuple[float, ...] | None, str | None]] = (
        field(default_factory=dict)
    )
    # The first result whose author won its round: (round, author, outputs,
    # error).
    result: tuple[int, bytes, tuple[float, ...] | None, str | None] | None = None
    reclaim_at: float = math.inf
    claim_at: float = math.inf  # when this provider claims round 0
    finished_at: float | None = None


class TaskCore:
    """Requester and provider sides of the task protocol for one node.

    Args:
        params: validated `TaskParams`.
        rng: source of nonces and re-claim jitter.
        author: this node's vertex-signing key id, compared with the authors
            of claim and result vertices.
        peer_id: this node's libp2p peer id, looked up in a task's provider
            order.
    """

    def __init__(
        self,
        params: TaskParams,
        rng: random.Random,
        author: bytes,
        peer_id: str = "",
    ) -> None:
        params.validate()
        self.params = params
        self._rng = rng
        self._author = author
        self._peer_id = peer_id
        self._models: set[str] = set()
        self._requests: dict[int, _Request] = {}
        self._tasks: dict[bytes, _Task] = {}
        self._next_ref = 1
        self._completed = 0
        self._failed = 0
        self._claims_issued = 0
        self._claims_won = 0
        self._results_issued = 0
        self._reclaims = 0
        self._recent_failures: list[str] = []

    # --- models ---------------------------------------------------------

    def add_model(self, model_hash: str) -> None:
        """Serve tasks for the model with this content hash from now on."""
        self._models.add(model_hash)

    def remove_model(self, model_hash: str) -> None:
        """Stop claiming tasks for this model."""
        self._models.discard(model_hash)

    # --- requester ------------------------------------------------------

    def submit(
        self,
        model: str,
        model_hash: str,
        inputs: tuple[float, ...],
        now: float,
        requester: str = "",
        providers: tuple[str, ...] = (),
    ) -> list[Action]:
        """Start a request; the returned `IssueTask` carries its ``ref``.

        ``providers`` is the order in which providers should claim (see
        `TaskParams.claim_stagger_s`), at most `MAX_PROVIDERS` of them.
        """
        ref = self._next_ref
        self._next_ref += 1
        request = _Request(
            ref=ref,
            model=model,
            model_hash=model_hash,
            inputs=tuple(float(x) for x in inputs),
            requester=requester,
            first_submitted_at=now,
            providers=tuple(providers[:MAX_PROVIDERS]),
        )
        self._requests[ref] = request
        return [self._issue(request, now)]

    def _issue(self, request: _Request, now: float) -> IssueTask:
        request.submits += 1
        request.state = "submitting"
        request.notes.append("the task vertex was not issued in time")
        # Until the vertex exists the deadline covers signing and gossip too.
        request.deadline = now + self.params.claim_timeout_s
        spec = TaskSpec(
            model=request.model,
            model_hash=request.model_hash,
            inputs=request.inputs,
            nonce=self._rng.getrandbits(63),
            run_timeout_ms=max(1, round(self.params.run_timeout_s * 1000)),
            max_rounds=self.params.max_rounds,
            requester=request.requester,
            providers=request.providers,
        )
        return IssueTask(ref=request.ref, spec=spec)

    def on_task_issued(self, ref: int, task_id: bytes, now: float) -> list[Action]:
        """Record the id of the task vertex issued for request ``ref``."""
        request = self._requests.get(ref)
        if request is None or request.state in ("done", "failed"):
            return []
        request.task_ids.append(task_id)
        request.state = "waiting-claim"
        request.deadline = now + self.params.claim_timeout_s
        request.notes[-1] = "no provider claimed the task"
        task = self._task(task_id, now)
        task.ref = ref
        actions: list[Action] = []
        # A fast provider's claim and result may already be here.
        for round_, claimer in sorted(task.accepted.items()):
            actions += self._requester_claim_accepted(task, round_, claimer, now)
        if task.result is not None:
            actions += self._requester_result(task, *task.result, now)
        return actions

    def on_issue_failed(self, ref: int, reason: str, now: float) -> list[Action]:
        """Fail request ``ref`` because its task vertex could not be issued."""
        request = self._requests.get(ref)
        if request is None or request.state in ("done", "failed"):
            return []
        return [self._fail(request, f"issuing the task vertex failed: {reason}", now)]

    def _requester_claim_accepted(
        self, task: _Task, round_: int, claimer: bytes, now: float
    ) -> list[Action]:
        request = self._requests.get(task.ref) if task.ref is not None else None
        if request is None or request.state in ("done", "failed"):
            return []
        request.state = "claimed"
        request.deadline = now + self.params.run_timeout_s + self.params.claim_timeout_s
        request.notes[-1] = (
            f"provider {claimer.hex()[:16]} claimed round {round_} "
            "and published no result"
        )
        return []

    def _requester_result(
        self,
        task: _Task,
        round_: int,
        author: bytes,
        outputs: tuple[float, ...] | None,
        error: str | None,
        now: float,
    ) -> list[Action]:
        request = self._requests.get(task.ref) if task.ref is not None else None
        if request is None or request.state in ("done", "failed"):
            return []
        if error is not None:
            reason = f"provider {author.hex()[:16]} failed the task: {error}"
            return [self._fail(request, reason, now)]
        request.state = "done"
        request.deadline = math.inf
        self._completed += 1
        self._finish_request_tasks(request, now)
        return [
            TaskCompleted(
                ref=request.ref,
                task_id=task.task_id,
                round=round_,
                provider=author,
                outputs=outputs or (),
                submitted_at=request.first_submitted_at,
                completed_at=now,
            )
        ]

    def _fail(self, request: _Request, reason: str, now: float) -> TaskFailed:
        request.state = "failed"
        request.deadline = math.inf
        self._failed += 1
        self._recent_failures.append(reason)
        del self._recent_failures[:-20]
        self._finish_request_tasks(request, now)
        return TaskFailed(
            ref=request.ref,
            task_ids=tuple(request.task_ids),
            reason=reason,
            failed_at=now,
        )

    def _finish_request_tasks(self, request: _Request, now: float) -> None:
        for task_id in request.task_ids:
            task = self._tasks.get(task_id)
            if task is not None and task.finished_at is None:
                task.finished_at = now
        self._requests.pop(request.ref, None)

    # --- both roles -----------------------------------------------------

    def _task(self, task_id: bytes, now: float) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            task = _Task(task_id=task_id, seen_at=now)
            self._tasks[task_id] = task
            self._evict()
        return task

    def _evict(self) -> None:
        if len(self._tasks) <= self.params.max_tracked:
            return
        # Finished tasks go first, oldest first; an open one only when the
        # table holds nothing else.
        finished = [t for t in self._tasks.values() if t.finished_at is not None]
        victims = finished or list(self._tasks.values())
        victim = min(victims, key=lambda t: t.seen_at)
        del self._tasks[victim.task_id]

    def on_task(
        self, task_id: bytes, author: bytes, spec: TaskSpec, now: float
    ) -> list[Action]:
        """Handle an admitted ``task.submit`` vertex: claim it if we can serve."""
        task = self._task(task_id, now)
        if task.spec is not None:
            return []
        task.spec = spec
        if task.finished_at is not None or spec.model_hash not in self._models:
            return []
        if task.accepted:
            # Claims decided before the task vertex arrived; follow the latest.
            round_ = max(task.accepted)
            return self._after_accept(task, round_, task.accepted[round_], now)
        delay = self._claim_delay(spec)
        if delay <= 0:
            return self._claim(task, 0)
        task.claim_at = now + delay
        return []

    def _claim_delay(self, spec: TaskSpec) -> float:
        if self._peer_id in spec.providers:
            rank = spec.providers.index(self._peer_id)
        else:
            # Unknown to the requester: after every listed provider.
            rank = len(spec.providers)
        return rank * self.params.claim_stagger_s

    def _claim(self, task: _Task, round_: int) -> list[Action]:
        if round_ in task.claimed_rounds:
            return []
        task.claimed_rounds.add(round_)
        self._claims_issued += 1
        return [IssueClaim(task_id=task.task_id, round=round_)]

    def on_claim(
        self,
        task_id: bytes,
        round_: int,
        author: bytes,
        status: VertexStatus,
        now: float,
    ) -> list[Action]:
        """Handle a ``task.claim`` vertex that was admitted, accepted or rejected."""
        task = self._task(task_id, now)
        if status == ADMITTED:
            task.claimants.setdefault(round_, set()).add(author)
            if author != self._author:
                task.others_claimed.add(round_)
            return []
        if status == REJECTED:
            task.rejected.setdefault(round_, set()).add(author)
            return self._after_round_rejected(task, round_)
        if round_ in task.accepted:
            # Consensus accepts one claim per conflict set; a second one would
            # be a consensus bug, so the first decision is kept.
            return []
        task.accepted[round_] = author
        task.accepted_at[round_] = now
        actions = self._requester_claim_accepted(task, round_, author, now)
        for (r, claimer), (outputs, error) in list(task.pending.items()):
            if r == round_ and claimer == author:
                del task.pending[(r, claimer)]
                actions += self.on_result(task_id, r, claimer, outputs, error, now)
        if round_ == max(task.accepted):
            actions += self._after_accept(task, round_, author, now)
        return actions

    def _after_round_rejected(self, task: _Task, round_: int) -> list[Action]:
        # A claim that names a rejected vertex as a parent is rejected with
        # it, whatever its conflict set, so every claim of a round can lose.
        # That round can never run, so the providers move to the next one.
        spec = task.spec
        if (
            round_ in task.accepted
            or task.finished_at is not None
            or spec is None
            or spec.model_hash not in self._models
            or round_ + 1 >= spec.max_rounds
            or round_ + 1 in task.others_claimed
            or not task.claimants.get(round_, set()) <= task.rejected[round_]
        ):
            return []
        return self._claim(task, round_ + 1)

    def on_task_rejected(self, task_id: bytes, now: float) -> list[Action]:
        """Handle a ``task.submit`` vertex that consensus rejected.

        Its claims and result descend from it and are rejected too, so
        providers drop the task and its requester submits it again at once.
        """
        task = self._task(task_id, now)
        task.reclaim_at = math.inf
        if task.finished_at is None:
            task.finished_at = now
        request = self._requests.get(task.ref) if task.ref is not None else None
        if request is None or request.state in ("done", "failed"):
            return []
        if not request.task_ids or request.task_ids[-1] != task_id:
            return []
        request.notes[-1] = "consensus rejected the task vertex"
        request.deadline = now
        return self.on_tick(now)

    def _after_accept(
        self, task: _Task, round_: int, claimer: bytes, now: float
    ) -> list[Action]:
        if task.finished_at is not None or task.spec is None:
            return []
        if claimer == self._author:
            if task.running:
                return []
            task.running = True
            task.reclaim_at = math.inf
            self._claims_won += 1
            return [
                RunInference(
                    task_id=task.task_id,
                    round=round_,
                    model_hash=task.spec.model_hash,
                    inputs=task.spec.inputs,
                )
            ]
        if task.spec.model_hash in self._models and round_ + 1 < task.spec.max_rounds:
            jitter = self._rng.uniform(0.0, self.params.reclaim_jitter_s)
            task.reclaim_at = now + task.spec.run_timeout_ms / 1000.0 + jitter
        else:
            task.reclaim_at = math.inf
        return []

    def on_result(
        self,
        task_id: bytes,
        round_: int,
        author: bytes,
        outputs: tuple[float, ...] | None,
        error: str | None,
        now: float,
    ) -> list[Action]:
        """Handle an admitted ``task.result`` vertex.

        A result counts only when its author won the claim of its round. One
        whose claim is not accepted here yet waits until it is.
        """
        task = self._task(task_id, now)
        if task.accepted.get(round_) != author:
            if len(task.pending) < MAX_ROUNDS_LIMIT:
                task.pending[(round_, author)] = (outputs, error)
            return []
        task.reclaim_at = math.inf
        if task.result is None:
            task.result = (round_, author, outputs, error)
        actions = self._requester_result(task, round_, author, outputs, error, now)
        if task.finished_at is None:
            task.finished_at = now
        return actions

    # --- provider -------------------------------------------------------

    def on_inference_done(
        self, task_id: bytes, round_: int, outputs: tuple[float, ...], now: float
    ) -> list[Action]:
        """Publish the outputs of a task this node won."""
        return self._publish(task_id, round_, tuple(outputs), None, now)

    def on_inference_failed(
        self, task_id: bytes, round_: int, reason: str, now: float
    ) -> list[Action]:
        """Publish why a task this node won could not be run."""
        return self._publish(task_id, round_, None, reason, now)

    def _publish(
        self,
        task_id: bytes,
        round_: int,
        outputs: tuple[float, ...] | None,
        error: str | None,
        now: float,
    ) -> list[Action]:
        task = self._tasks.get(task_id)
        if task is not None:
            task.running = False
        self._results_issued += 1
        return [
            IssueResult(task_id=task_id, round=round_, outputs=outputs, error=error)
        ]

    # --- time -----------------------------------------------------------

    def on_tick(self, now: float) -> list[Action]:
        """Expire claim and request deadlines that have passed by ``now``."""
        actions: list[Action] = []
        for task in list(self._tasks.values()):
            if task.claim_at <= now:
                task.claim_at = math.inf
                if (
                    task.finished_at is None
                    and not task.accepted
                    and 0 not in task.others_claimed
                ):
                    actions += self._claim(task, 0)
            if task.reclaim_at <= now:
                task.reclaim_at = math.inf
                next_round = max(task.accepted, default=-1) + 1
                # A re-claim is recovery, not a race: when another provider
                # already claimed the next round, a second claim would only
                # add a conflict for consensus to resolve.
                if (
                    task.finished_at is None
                    and task.accepted
                    and next_round not in task.others_claimed
                ):
                    self._reclaims += 1
                    actions += self._claim(task, next_round)
            if task.finished_at is not None and now - task.finished_at >= (
                self.params.retain_s
            ):
                del self._tasks[task.task_id]
        for request in list(self._requests.values()):
            if request.deadline > now:
                continue
            actions += self._request_expired(request, now)
        return actions

    def _request_expired(self, request: _Request, now: float) -> list[Action]:
        """Extend, resubmit or fail a request whose deadline passed."""
        elapsed = now - request.first_submitted_at
        if elapsed < self.params.request_timeout_s and self._claims_pending(request):
            # Providers reacted and consensus has not decided yet: a new
            # submission would only add load to a mesh that is already slow.
            request.deadline = now + self.params.claim_timeout_s
            return []
        if (
            elapsed < self.params.request_timeout_s
            and request.submits < self.params.max_submits
        ):
            return [self._issue(request, now)]
        history = "; ".join(
            f"submission {i}: {note}" for i, note in enumerate(request.notes, start=1)
        )
        if elapsed >= self.params.request_timeout_s:
            history += f"; gave up after {elapsed:.1f} s"
        return [self._fail(request, f"model {request.model}: {history}", now)]

    def _claims_pending(self, request: _Request) -> bool:
        if request.state != "waiting-claim" or not request.task_ids:
            return False
        task = self._tasks.get(request.task_ids[-1])
        if task is None:
            return False
        for round_, authors in task.claimants.items():
            if round_ not in task.accepted and not authors <= task.rejected.get(
                round_, set()
            ):
                return True
        return False

    def next_deadline(self) -> float:
        """Return the earliest time at which `on_tick` has work, or inf."""
        deadline = math.inf
        for task in self._tasks.values():
            deadline = min(deadline, task.reclaim_at, task.claim_at)
            if task.finished_at is not None:
                deadline = min(deadline, task.finished_at + self.params.retain_s)
        for request in self._requests.values():
            deadline = min(deadline, request.deadline)
        return deadline

    def stats(self) -> TaskStats:
        """Return the counters of this core."""
        return TaskStats(
            requests_open=len(self._requests),
            requests_completed=self._completed,
            requests_failed=self._failed,
            claims_issued=self._claims_issued,
            claims_won=self._claims_won,
            results_issued=self._results_issued,
            reclaims=self._reclaims,
            recent_failures=tuple(self._recent_failures),
        )
