"""The model and task service of a node: `node.tasks` and `node.models` on trio.

The daemon calls `install(node)` once the node is up. From then on:

* Vertex callbacks decode ``task.*`` and ``model.register`` payloads, feed
  them to the sans-IO `TaskCore` and `NameRegistry`, and queue the returned
  actions. Malformed payloads from peers are logged with the author and
  dropped.
* The ``tasks`` service performs the queued actions and wakes at the core's
  next deadline. Issuing a vertex runs as its own trio task, so one slow
  signature never delays the others.
* Inference runs in worker threads (``trio.to_thread.run_sync``) behind a
  `trio.CapacityLimiter` of ``workers`` tokens, so a flood of tasks queues
  for the pool instead of blocking the event loop that carries gossip and
  consensus.
* The ``models`` service advertises every local model in the DHT under
  ``provider_key(network, name, hash)`` and registers each name on the DAG
  once.

Control API routes (bearer token as for every route)::

    POST /models          {"name", "path" | "text"} -> model info + registration
    GET  /models          {"local": [...], "registered": {...}}
    POST /models/fetch    {"name", "timeout"?} -> model info (transfer by hash)
    POST /infer           {"model", "inputs", "timeout"?} -> outputs, stages
    POST /tasks           {"model", "inputs"} -> {"ref"} without waiting
    GET  /tasks/{ref}     state of one request of this node
    GET  /tasks           counters, recent failures, finality samples
    GET  /dag/accepted-digest   {"count", "digest"} of the accepted vertex ids

Settings come from ``SYNAPTIC_MESH_TASKS_*`` environment variables (see
`params_from_env`), because task timing is tuned per deployment and test.

Public API:
    install(node) -> InferenceService
    params_from_env(env) -> ServiceParams
    ServiceParams(tasks: TaskParams, workers, lookup_timeout_s,
                  advertise_interval_s, inference_delay_s)
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import random
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from dag import DagError
from node import NodeError
from node.api import ApiError, ApiRequest
from node.models import (
    FETCH_PROTOCOL,
    REGISTER_TYPE,
    ModelError,
    ModelInfo,
    ModelStore,
    NameRegistry,
    check_name,
    fetch_model,
    name_conflict_key,
    parse_registration,
    provider_service,
    registration_payload,
    serve_chunk,
)
from node.tasks import (
    ACCEPTED,
    CLAIM_TYPE,
    REJECTED,
    RESULT_TYPE,
    TASK_TYPE,
    IssueClaim,
    IssueResult,
    IssueTask,
    RunInference,
    SettingError,
    TaskCompleted,
    TaskCore,
    TaskFailed,
    TaskParams,
    TaskPayloadError,
    claim_conflict_key,
    claim_payload,
    parse_claim,
    parse_result,
    parse_task,
    result_payload,
    task_payload,
)

if TYPE_CHECKING:
    from node.runtime import Node

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "SYNAPTIC_MESH_TASKS_"
MODELS_DIR: Final = "models"
MAX_WAIT_S: Final = 300.0
# Finality samples kept for `GET /tasks`; older ones are dropped.
MAX_FINALITY_SAMPLES: Final = 10_000
MAX_FINISHED_REQUESTS: Final = 1000
# A lookup that found providers is trusted this long, a third of the DHT's
# provider record lifetime (90 s in p2p.discovery), so a burst of requests
# costs one lookup. A failed request drops the entry.
PROVIDERS_CACHE_S: Final = 30.0
# Background lookups refresh the cache before it expires.
PROVIDERS_REFRESH_S: Final = 20.0
# How long an own vertex reported as not admitted may still turn up.
ADMIT_GRACE_S: Final = 1.0
_NOT_ADMITTED: Final = re.compile(r"vertex ([0-9a-f]{64}) was not admitted")


@dataclass(frozen=True, slots=True)
class ServiceParams:
    """Settings of the task service.

    Attributes:
        tasks: protocol timeouts and bounds for `TaskCore`.
        workers: inference threads. Two keep both cores of a small machine
            busy while trio keeps the event loop for networking.
        lookup_timeout_s: time limit of one DHT provider lookup.
        advertise_interval_s: how often local models are provided again, so
            that records outlive the DHT's expiry and reach new peers.
        inference_delay_s: extra sleep before each inference. Zero in
            production; fault tests raise it to hold a claimed task open long
            enough to kill its provider.
    """

    tasks: TaskParams = field(default_factory=TaskParams)
    workers: int = 2
    lookup_timeout_s: float = 5.0
    advertise_interval_s: float = 30.0
    inference_delay_s: float = 0.0

    def validate(self) -> None:
        """Raise `SettingError` naming the first setting out of range."""
        self.tasks.validate()
        if not 1 <= self.workers <= 64:
            raise SettingError("workers", self.workers, "must be from 1 to 64")
        for name in ("lookup_timeout_s", "advertise_interval_s"):
            if not getattr(self, name) > 0:
                raise SettingError(name, getattr(self, name), "must be above 0")
        if not 0 <= self.inference_delay_s <= 60:
            raise SettingError(
                "inference_delay_s", self.inference_delay_s, "must be from 0 to 60"
            )


_ENV_FIELDS: Final = {
    "CLAIM_TIMEOUT_S": ("tasks", "claim_timeout_s", float),
    "RUN_TIMEOUT_S": ("tasks", "run_timeout_s", float),
    "MAX_ROUNDS": ("tasks", "max_rounds", int),
    "MAX_SUBMITS": ("tasks", "max_submits", int),
    "WORKERS": ("", "workers", int),
    "LOOKUP_TIMEOUT_S": ("", "lookup_timeout_s", float),
    "ADVERTISE_INTERVAL_S": ("", "advertise_interval_s", float),
    "INFERENCE_DELAY_S": ("", "inference_delay_s", float),
    "CLAIM_STAGGER_S": ("tasks", "claim_stagger_s", float),
    "REQUEST_TIMEOUT_S": ("tasks", "request_timeout_s", float),
}


def _parse_setting(raw: str, kind: type) -> int | float:
    if kind is int:
        return int(raw.strip())
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def params_from_env(env: Mapping[str, str] = os.environ) -> ServiceParams:
    """Build `ServiceParams` from ``SYNAPTIC_MESH_TASKS_*`` variables.

    The daemon calls this before it opens any socket, so a bad value stops
    the start as early as a bad ``config.toml`` value does, and in the same
    words.

    Raises:
        ConfigError: a variable is not a number or is out of range; the
            message names the setting, the value and the variable.
    """
    from node.config import ConfigError

    task_values: dict[str, Any] = {}
    values: dict[str, Any] = {}
    variables: dict[str, str] = {}
    for suffix, (section, name, kind) in _ENV_FIELDS.items():
        var = ENV_PREFIX + suffix
        raw = env.get(var)
        if raw is None:
            continue
        variables[name] = var
        try:
            value = _parse_setting(raw, kind)
        except ValueError:
            expected = "an integer" if kind is int else "a finite number"
            raise ConfigError(
                f"invalid setting tasks.{name}={raw!r} "
                f"(from environment variable {var}): expected {expected}"
            ) from None
        (task_values if section == "tasks" else values)[name] = value
    params = ServiceParams(tasks=TaskParams(**task_values), **values)
    try:
        params.validate()
    except SettingError as error:
        source = variables.get(error.name)
        origin = f"environment variable {source}" if source else "default"
        raise ConfigError(
            f"invalid setting tasks.{error.name}={error.value!r} "
            f"(from {origin}): {error.rule}"
        ) from None
    return params


@dataclass(slots=True)
class _Pending:
    """A request of this node, with the stage times the API reports."""

    ref: int
    model: str
    model_hash: str
    started: float
    stages: dict[str, float] = field(default_factory=dict)
    task_ids: list[bytes] = field(default_factory=list)
    claimer: str = ""
    done: trio.Event = field(default_factory=trio.Event)
    outcome: TaskCompleted | TaskFailed | None = None


def _percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


class InferenceService:
    """Glue between one `Node` and the task and model cores."""

    def __init__(self, node: Node, params: ServiceParams) -> None:
        self.node = node
        self.params = params
        self.key_id: bytes = node.signing_key.key_id
        self.store = ModelStore(Path(node.config.data_dir) / MODELS_DIR)
        self.registry = NameRegistry()
        self.rng = random.Random()
        self.core = TaskCore(params.tasks, self.rng, self.key_id, node.peer_id)
        self.limiter = trio.CapacityLimiter(params.workers)
        self._actions: deque[Any] = deque()
        self._wake = trio.Event()
        self._pending: dict[int, _Pending] = {}
        self._finished: deque[int] = deque()
        self._task_refs: dict[bytes, int] = {}
        self._result_peers: dict[bytes, str] = {}
        self._finality: deque[float] = deque(maxlen=MAX_FINALITY_SAMPLES)
        self._advertised: set[tuple[str, str]] = set()
        # Model hash -> time until which a past lookup vouches for providers.
        self._providers_known: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lookup_failures: deque[str] = deque(maxlen=20)
        self._lookup_s: deque[float] = deque(maxlen=MAX_FINALITY_SAMPLES)
        self._names_changed = trio.Event()
        self._registering: set[str] = set()
        self._rejected_payloads = 0
        for info in self.store.list():
            self.core.add_model(info.model_hash)
        self._load_registrations()

    def _load_registrations(self) -> None:
        # Callbacks fire only when a vertex is decided, and the accepted
        # registrations of an earlier run were decided then, so the registry
        # starts from the store. Without this a restarted node would issue a
        # second registration whose conflict key is already decided.
        count = 0
        for vertex_id in self.node.store.accepted_ids():
            vertex = self.node.store.get(vertex_id)
            if vertex is None or vertex.payload_type != REGISTER_TYPE:
                continue
            try:
                info = parse_registration(self._payload(vertex))
            except (ModelError, DagError) as error:
                log.warning(
                    "stored registration unreadable vertex=%s reason=%s",
                    vertex_id.hex(),
                    error,
                )
                continue
            self.registry.on_registration(vertex_id, info, ACCEPTED)
            count += 1
        if count:
            log.info("model registrations loaded count=%d", count)

    # --- vertex callbacks -------------------------------------------------

    def _payload(self, vertex: Any) -> Any:
        from dag.codec import decode_payload

        return decode_payload(vertex.payload)

    def _reject(self, vertex: Any, error: Exception) -> None:
        self._rejected_payloads += 1
        log.warning(
            "task payload rejected vertex=%s author=%s type=%s reason=%s",
            vertex.id.hex(),
            vertex.author.hex(),
            vertex.payload_type,
            error,
        )

    def _record_finality(self, vertex: Any, status: str) -> None:
        # Only vertices this node signed: their timestamp comes from this
        # node's clock, so the difference is not skewed by another machine.
        if status == ACCEPTED and vertex.author == self.key_id:
            seconds = time.time() - vertex.timestamp_ms / 1000.0
            self._finality.append(max(0.0, seconds))

    def on_task_vertex(self, vertex: Any, status: str) -> None:
        self._record_finality(vertex, status)
        if status == REJECTED:
            log.info("task vertex rejected task=%s", vertex.id.hex())
            self._queue(self.core.on_task_rejected(vertex.id, trio.current_time()))
            return
        if status != "admitted":
            return
        try:
            spec = parse_task(self._payload(vertex))
        except (TaskPayloadError, DagError) as error:
            self._reject(vertex, error)
            return
        now = trio.current_time()
        self._queue(self.core.on_task(vertex.id, vertex.author, spec, now))

    def on_claim_vertex(self, vertex: Any, status: str) -> None:
        self._record_finality(vertex, status)
        try:
            task_id, round_ = parse_claim(self._payload(vertex))
        except (TaskPayloadError, DagError) as error:
            if status == "admitted":
                self._reject(vertex, error)
            return
        now = trio.current_time()
        if status == ACCEPTED:
            pending = self._pending.get(self._task_refs.get(task_id, 0))
            if pending is not None:
                pending.stages.setdefault("claim_accepted", now)
                pending.claimer = vertex.author.hex()
            log.log(
                logging.INFO if round_ else logging.DEBUG,
                "claim accepted task=%s round=%d provider=%s",
                task_id.hex(),
                round_,
                vertex.author.hex(),
            )
        self._queue(self.core.on_claim(task_id, round_, vertex.author, status, now))

    def on_result_vertex(self, vertex: Any, status: str) -> None:
        self._record_finality(vertex, status)
        if status != "admitted":
            return
        try:
            body = self._payload(vertex)
            task_id, round_, outputs, error = parse_result(body)
        except (TaskPayloadError, DagError) as error:
            self._reject(vertex, error)
            return
        peer = body.get("peer")
        if isinstance(peer, str) and len(peer) <= 128:
            self._result_peers[task_id] = peer
        now = trio.current_time()
        self._queue(
            self.core.on_result(task_id, round_, vertex.author, outputs, error, now)
        )

    def on_register_vertex(self, vertex: Any, status: str) -> None:
        self._record_finality(vertex, status)
        try:
            info = parse_registration(self._payload(vertex))
        except (ModelError, DagError) as error:
            if status == "admitted":
                self._reject(vertex, error)
            return
        self.registry.on_registration(vertex.id, info, status)
        if status == ACCEPTED:
            self._names_changed.set()
            log.info(
                "model name registered name=%s hash=%s author=%s",
                info.name,
                info.model_hash,
                vertex.author.hex(),
            )

    # --- action loop ------------------------------------------------------

    def _queue(self, actions: list[Any]) -> None:
        # Wake the loop even without actions, because the event may have
        # moved the core's next deadline earlier (a claim accepted by another
        # provider starts its run timer).
        self._actions.extend(actions)
        self._wake.set()

    async def run(self) -> None:
        """Perform queued actions and expire deadlines until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                while self._actions:
                    self._perform(nursery, self._actions.popleft())
                self._wake = trio.Event()
                deadline = self.core.next_deadline()
                with trio.move_on_at(deadline):
                    await self._wake.wait()
                now = trio.current_time()
                if now >= deadline:
                    self._queue(self.core.on_tick(now))

    def _perform(self, nursery: trio.Nursery, action: Any) -> None:
        if isinstance(action, IssueTask):
            nursery.start_soon(self._issue_task, action)
        elif isinstance(action, IssueClaim):
            # Round 0 is the usual race; a later round means a provider
            # missed its run deadline, which operators want to see.
            log.log(
                logging.INFO if action.round else logging.DEBUG,
                "task claimed task=%s round=%d",
                action.task_id.hex(),
                action.round,
            )
            key = claim_conflict_key(action.task_id, action.round)
            body = claim_payload(action.task_id, action.round)
            nursery.start_soon(self._issue, CLAIM_TYPE, body, (key,))
        elif isinstance(action, RunInference):
            nursery.start_soon(self._run_inference, action)
        elif isinstance(action, IssueResult):
            body = result_payload(
                action.task_id, action.round, action.outputs, action.error
            )
            body["peer"] = self.node.peer_id
            nursery.start_soon(self._issue, RESULT_TYPE, body, ())
        elif isinstance(action, TaskCompleted | TaskFailed):
            self._finish(action)

    async def _issue(
        self, payload_type: str, body: dict[str, Any], keys: tuple[bytes, ...]
    ) -> bytes | None:
        try:
            return await self.node.issue_vertex(payload_type, body, keys)
        except NodeError as error:
            log.warning("vertex issue failed type=%s error=%s", payload_type, error)
            late = _NOT_ADMITTED.search(str(error))
            if late is None:
                return None
            return await self._admitted_late(bytes.fromhex(late.group(1)))

    async def _admitted_late(self, vertex_id: bytes) -> bytes | None:
        # Right after a restart the DAG layer reports an own vertex as not
        # admitted while it still looks up the stored parents it picked, and
        # admits the vertex a moment later. Following that vertex keeps the
        # request alive; issuing a second one would have it served twice.
        with trio.move_on_after(ADMIT_GRACE_S):
            while self.node.vertex_status(vertex_id) == "unknown":
                await trio.sleep(0.05)
            log.info("own vertex admitted late vertex=%s", vertex_id.hex())
            return vertex_id
        return None

    async def _issue_task(self, action: IssueTask) -> None:
        pending = self._pending.get(action.ref)
        vertex_id = await self._issue(TASK_TYPE, task_payload(action.spec), ())
        now = trio.current_time()
        if vertex_id is None:
            self._queue(self.core.on_issue_failed(action.ref, "see the node log", now))
            return
        self._task_refs[vertex_id] = action.ref
        if pending is not None:
            pending.task_ids.append(vertex_id)
            pending.stages.setdefault("task_issued", now)
        log.info("task submitted task=%s ref=%d", vertex_id.hex(), action.ref)
        self._queue(self.core.on_task_issued(action.ref, vertex_id, now))

    async def _run_inference(self, action: RunInference) -> None:
        started = trio.current_time()
        try:
            outputs = await trio.to_thread.run_sync(
                self._infer, action, limiter=self.limiter
            )
        except (ModelError, ValueError, ArithmeticError) as error:
            reason = str(error)
            log.warning(
                "inference failed task=%s reason=%s", action.task_id.hex(), reason
            )
            self.node.metrics.tasks_served.labels(outcome="failed").inc()
            now = trio.current_time()
            self._queue(
                self.core.on_inference_failed(action.task_id, action.round, reason, now)
            )
            return
        now = trio.current_time()
        self.node.metrics.inference_seconds.observe(now - started)
        self.node.metrics.tasks_served.labels(outcome="ok").inc()
        log.info(
            "task served task=%s round=%d seconds=%.4f",
            action.task_id.hex(),
            action.round,
            now - started,
        )
        self._queue(
            self.core.on_inference_done(action.task_id, action.round, outputs, now)
        )

    def _infer(self, action: RunInference) -> tuple[float, ...]:
        """Run one forward pass; called in a worker thread."""
        import numpy as np

        if self.params.inference_delay_s:
            time.sleep(self.params.inference_delay_s)
        network = self.store.network(action.model_hash)
        if len(action.inputs) != network.num_inputs:
            raise ValueError(
                f"model {action.model_hash[:16]} expects {network.num_inputs} "
                f"inputs, the task has {len(action.inputs)}"
            )
        outputs = network.run(np.asarray(action.inputs, dtype=np.float64))
        return tuple(float(x) for x in outputs)

    def _finish(self, outcome: TaskCompleted | TaskFailed) -> None:
        pending = self._pending.get(outcome.ref)
        if isinstance(outcome, TaskFailed):
            log.warning("task failed ref=%d reason=%s", outcome.ref, outcome.reason)
        if pending is None:
            return
        if isinstance(outcome, TaskFailed):
            self._providers_known.pop(pending.model_hash, None)
        pending.outcome = outcome
        pending.stages["finished"] = trio.current_time()
        pending.done.set()
        self._finished.append(outcome.ref)
        while len(self._finished) > MAX_FINISHED_REQUESTS:
            old = self._pending.pop(self._finished.popleft(), None)
            for task_id in old.task_ids if old else ():
                self._task_refs.pop(task_id, None)
                self._result_peers.pop(task_id, None)

    # --- requests -------------------------------------------------------

    def resolve(self, name: str) -> str:
        """Return the content hash that `name` stands for, on the DAG or here."""
        check_name(name)
        registered = self.registry.resolve(name)
        if registered is not None:
            return registered.model_hash
        local = self.store.resolve_local(name)
        if local is not None:
            return local
        raise ApiError(404, f"model {name!r} is not registered on the mesh")

    async def find_providers(self, name: str, model_hash: str) -> list[Any]:
        """Return providers of the model from the DHT and cache their peer ids."""
        started = trio.current_time()
        service = provider_service(name, model_hash)
        providers = list(
            await self.node.p2p.discovery.find_providers(
                service, self.params.lookup_timeout_s
            )
        )
        now = trio.current_time()
        self._lookup_s.append(now - started)
        if providers:
            peers = tuple(_peer_id_of(p) for p in providers)
            self._providers_known[model_hash] = (now + PROVIDERS_CACHE_S, peers)
        return providers

    async def lookup_loop(self) -> None:
        """Keep the providers of every registered model looked up.

        A request then finds its providers in the cache instead of waiting
        for a DHT walk, which takes seconds on a loaded 10-node mesh.
        """
        while True:
            for name, info in sorted(self.registry.names().items()):
                try:
                    await self.find_providers(name, info.model_hash)
                except trio.Cancelled:
                    raise
                except Exception as error:
                    log.warning("provider lookup failed name=%s error=%s", name, error)
            with trio.move_on_after(PROVIDERS_REFRESH_S):
                await self._names_changed.wait()
            self._names_changed = trio.Event()

    async def submit(
        self, name: str, inputs: list[Any], started: float | None = None
    ) -> _Pending:
        """Start a request for `inputs` on model `name`; return its record.

        `started` is when the API received the request (default: now); the
        stages of the request are counted from it.
        """
        if started is None:
            started = trio.current_time()
        model_hash = self.resolve(name)
        values = _inputs(inputs)
        expected = self._num_inputs(name, model_hash)
        if expected is not None and len(values) != expected:
            raise ApiError(
                400, f"model {name} expects {expected} inputs, got {len(values)}"
            )
        pending_stages: dict[str, float] = {}
        known_until, peers = self._providers_known.get(model_hash, (-math.inf, ()))
        local = self.store.has(model_hash)
        if known_until < started:
            peers = await self._lookup_peers(name, model_hash, local)
            pending_stages["lookup"] = trio.current_time()
        if local and self.node.peer_id not in peers:
            # A node that serves the model races like any other provider,
            # even when its own record has not reached the DHT yet.
            peers = (*peers, self.node.peer_id)
            self._providers_known[model_hash] = (started + PROVIDERS_CACHE_S, peers)
        if not peers:
            reason = (
                f"no provider advertises model {name} ({model_hash[:16]}) in the DHT"
            )
            self._lookup_failures.append(reason)
            log.warning("task not submitted model=%s reason=%s", name, reason)
            raise ApiError(503, reason)
        # A random order spreads the tasks over the providers; the first one
        # listed claims at once and the others stand by.
        order = list(peers)
        self.rng.shuffle(order)
        now = trio.current_time()
        actions = self.core.submit(
            name, model_hash, values, now, self.node.peer_id, tuple(order)
        )
        ref = actions[0].ref
        pending = _Pending(ref=ref, model=name, model_hash=model_hash, started=started)
        pending.stages.update(pending_stages)
        self._pending[ref] = pending
        self._queue(actions)
        return pending

    async def _lookup_peers(
        self, name: str, model_hash: str, local: bool
    ) -> tuple[str, ...]:
        try:
            providers = await self.find_providers(name, model_hash)
        except trio.Cancelled:
            raise
        except Exception as error:
            # A node that holds the model can still serve the request itself.
            if not local:
                raise
            log.warning("provider lookup failed name=%s error=%s", name, error)
            return ()
        return tuple(_peer_id_of(p) for p in providers)

    def _num_inputs(self, name: str, model_hash: str) -> int | None:
        registered = self.registry.resolve(name)
        if registered is not None and registered.model_hash == model_hash:
            return registered.num_inputs
        if self.store.has(model_hash):
            return self.store.info(model_hash).num_inputs
        return None

    def describe(self, pending: _Pending) -> dict[str, Any]:
        """Return the JSON document of one request."""
        doc: dict[str, Any] = {
            "ref": pending.ref,
            "model": pending.model,
            "model_hash": pending.model_hash,
            "task_ids": [t.hex() for t in pending.task_ids],
            "claimer": pending.claimer,
            "stages": _stages(pending),
        }
        outcome = pending.outcome
        if outcome is None:
            doc["state"] = "claimed" if pending.claimer else "submitted"
        elif isinstance(outcome, TaskCompleted):
            doc["state"] = "completed"
            doc["outputs"] = list(outcome.outputs)
            doc["task_id"] = outcome.task_id.hex()
            doc["round"] = outcome.round
            doc["provider_key_id"] = outcome.provider.hex()
            doc["provider_peer"] = self._result_peers.get(outcome.task_id, "")
        else:
            doc["state"] = "failed"
            doc["reason"] = outcome.reason
        return doc

    def stats(self) -> dict[str, Any]:
        """Return counters and finality figures for ``GET /tasks``."""
        core = self.core.stats()
        samples = list(self._finality)
        return {
            "key_id": self.key_id.hex(),
            "peer_id": self.node.peer_id,
            "requests_open": core.requests_open,
            "requests_completed": core.requests_completed,
            "requests_failed": core.requests_failed,
            "claims_issued": core.claims_issued,
            "claims_won": core.claims_won,
            "results_issued": core.results_issued,
            "reclaims": core.reclaims,
            "recent_failures": list(core.recent_failures),
            "rejected_payloads": self._rejected_payloads,
            "workers": self.params.workers,
            "finality_samples": len(samples),
            "finality_p50_s": _percentile(samples, 0.50),
            "finality_p99_s": _percentile(samples, 0.99),
            "finality_s": [round(s, 6) for s in samples[-2000:]],
            "lookup_s": [round(s, 6) for s in self._lookup_s],
        }

    # --- models -----------------------------------------------------------

    async def add_model(self, info: ModelInfo) -> dict[str, Any]:
        """Bind, serve, advertise and register a model just stored.

        The name is bound locally only when the mesh has not given it to
        other content, so a rejected name leaves no entry in ``names.json``.
        """
        self._reject_taken_name(info)
        self.store.bind(info.name, info.model_hash)
        self.core.add_model(info.model_hash)
        registration = await self._register(info)
        if registration.startswith("rejected"):
            self.store.unbind(info.name)
            self._reject_taken_name(info)
            raise ApiError(409, f"model name {info.name!r} {registration}")
        await self._advertise(info)
        return {**info.to_json(), "registration": registration}

    def _reject_taken_name(self, info: ModelInfo) -> None:
        registered = self.registry.resolve(info.name)
        if registered is not None and registered.model_hash != info.model_hash:
            raise ApiError(
                409,
                f"model name {info.name!r} is registered on the mesh for hash "
                f"{registered.model_hash}; the file has hash {info.model_hash}. "
                "Choose another name.",
            )

    async def _register(self, info: ModelInfo) -> str:
        registered = self.registry.resolve(info.name)
        if registered is not None:
            return "already registered"
        if info.name in self._registering or self.registry.pending(info.name):
            return "pending"
        self._registering.add(info.name)
        try:
            vertex_id = await self._issue(
                REGISTER_TYPE,
                registration_payload(info),
                (name_conflict_key(info.name),),
            )
            if vertex_id is None:
                return "failed"
            status = await self.node.wait_decided(
                vertex_id, self.params.tasks.claim_timeout_s
            )
        finally:
            self._registering.discard(info.name)
        winner = self.registry.resolve(info.name)
        if status == "rejected" and winner is not None:
            if winner.model_hash == info.model_hash:
                return "registered by another node"
            return f"rejected: name taken by hash {winner.model_hash}"
        return status

    async def _advertise(self, info: ModelInfo) -> None:
        service = provider_service(info.name, info.model_hash)
        try:
            await self.node.p2p.discovery.provide(service)
        except trio.Cancelled:
            raise
        except Exception as error:
            log.warning("model advertise failed name=%s error=%s", info.name, error)
            return
        if (info.name, info.model_hash) not in self._advertised:
            log.info("model advertised name=%s hash=%s", info.name, info.model_hash)
        self._advertised.add((info.name, info.model_hash))

    async def advertise_loop(self) -> None:
        """Provide every local model now and then again every interval."""
        while True:
            for info in self.store.list():
                registered = self.registry.resolve(info.name)
                if registered is not None and registered.model_hash != info.model_hash:
                    self._drop_name(info, registered.model_hash)
                    continue
                await self._advertise(info)
                if registered is None:
                    outcome = await self._register(info)
                    if outcome.startswith("rejected"):
                        winner = self.registry.resolve(info.name)
                        self._drop_name(info, winner.model_hash if winner else "?")
            await trio.sleep(self.params.advertise_interval_s)

    def _drop_name(self, info: ModelInfo, registered_hash: str) -> None:
        # The mesh gave the name to other content; a local binding would
        # only make `infer` on this node disagree with every other node.
        log.warning(
            "local model name taken on the mesh name=%s hash=%s registered=%s",
            info.name,
            info.model_hash,
            registered_hash,
        )
        self.store.unbind(info.name)

    async def fetch(self, name: str, timeout: float) -> dict[str, Any]:
        """Fetch model `name` from a provider by content hash and serve it."""
        model_hash = self.resolve(name)
        if not self.store.has(model_hash):
            providers = await self.find_providers(name, model_hash)
            if not providers:
                raise ApiError(503, f"no provider advertises model {name} in the DHT")
            errors = []
            for provider in providers:
                peer_id = _peer_id_of(provider)
                if peer_id == self.node.peer_id:
                    continue
                try:
                    await _ensure_connected(self.node, provider)
                    text = await fetch_model(
                        self.node.p2p.reqresp, peer_id, model_hash, timeout
                    )
                except trio.Cancelled:
                    raise
                except Exception as error:
                    log.warning(
                        "model fetch failed peer_id=%s hash=%s error=%s",
                        peer_id,
                        model_hash,
                        error,
                    )
                    errors.append(f"{peer_id}: {error}")
                    continue
                info = await trio.to_thread.run_sync(
                    functools.partial(
                        self.store.add_text,
                        name,
                        text,
                        f"<{name} from {peer_id}>",
                        bind=False,
                    )
                )
                log.info(
                    "model fetched name=%s hash=%s peer_id=%s",
                    name,
                    model_hash,
                    peer_id,
                )
                break
            else:
                raise ApiError(502, "model fetch failed: " + "; ".join(errors))
        else:
            info = self.store.info(model_hash)
            info = ModelInfo(**{**info.to_json(), "name": name})
        return await self.add_model(info)


def _inputs(values: Any) -> tuple[float, ...]:
    if not isinstance(values, list) or not values:
        raise ApiError(400, "inputs must be a non-empty list of numbers")
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ApiError(400, "inputs must be a non-empty list of numbers") from None
    if not all(math.isfinite(v) for v in numbers):
        raise ApiError(400, "inputs must be finite numbers")
    return numbers


def _stages(pending: _Pending) -> dict[str, float]:
    """Return the seconds each stage of a request took."""
    order = ("lookup", "task_issued", "claim_accepted", "finished")
    stages: dict[str, float] = {}
    previous = pending.started
    for name in order:
        at = pending.stages.get(name)
        if at is None:
            continue
        stages[name + "_s"] = round(at - previous, 6)
        previous = at
    if "finished" in pending.stages:
        stages["total_s"] = round(pending.stages["finished"] - pending.started, 6)
    return stages


def _peer_id_of(provider: Any) -> str:
    if isinstance(provider, str):
        return provider
    if isinstance(provider, dict):
        return str(provider.get("peer_id"))
    peer_id = getattr(provider, "peer_id", provider)
    return str(peer_id)


async def _ensure_connected(node: Node, provider: Any) -> None:
    peer_id = _peer_id_of(provider)
    if peer_id in node.p2p.connected_peers():
        return
    addrs = (
        provider.get("addrs")
        if isinstance(provider, dict)
        else getattr(provider, "addrs", ())
    )
    for addr in addrs or ():
        address = str(addr)
        if "/p2p/" not in address:
            address = f"{address}/p2p/{peer_id}"
        try:
            await node.p2p.connect(address)
            return
        except trio.Cancelled:
            raise
        except Exception as error:
            log.debug("provider dial failed peer_id=%s error=%s", peer_id, error)


def _accepted_digest(node: Node) -> dict[str, Any]:
    ids = sorted(node.store.accepted_ids())
    digest = hashlib.sha256(b"".join(ids)).hexdigest()
    return {"count": len(ids), "digest": digest}


def install(node: Node, params: ServiceParams | None = None) -> InferenceService:
    """Add the task and model service, its callbacks and its routes to `node`."""
    service = InferenceService(node, params or params_from_env())
    node.inference = service
    node.on_vertex(TASK_TYPE, service.on_task_vertex)
    node.on_vertex(CLAIM_TYPE, service.on_claim_vertex)
    node.on_vertex(RESULT_TYPE, service.on_result_vertex)
    node.on_vertex(REGISTER_TYPE, service.on_register_vertex)
    reqresp = getattr(node.p2p, "reqresp", None)
    if reqresp is not None:
        reqresp.set_handler(
            FETCH_PROTOCOL, lambda peer_id, request: serve_chunk(service.store, request)
        )
    else:
        log.warning("request/response unavailable; models cannot be sent to peers")
    node.start_service("tasks", service.run)
    node.start_service("models", service.advertise_loop)
    node.start_service("provider-lookups", service.lookup_loop)
    _install_routes(node, service)
    _extend_status(node, service)
    return service


def _extend_status(node: Node, service: InferenceService) -> None:
    """Add a ``tasks`` section to the node's ``GET /status`` document."""
    base_status = node.status

    def status() -> dict[str, Any]:
        doc = base_status()
        stats = service.core.stats()
        doc["tasks"] = {
            "open": stats.requests_open,
            "completed": stats.requests_completed,
            "failed": stats.requests_failed,
            "failed_lookups": len(service._lookup_failures),
            "recent_lookup_failures": list(service._lookup_failures)[-5:],
            "claims_won": stats.claims_won,
            "results_issued": stats.results_issued,
            "recent_failures": list(stats.recent_failures[-5:]),
            "models": [info.name for info in service.store.list()],
        }
        return doc

    # The status route calls node.status() at request time, so replacing the
    # bound method on this instance is enough for the section to appear.
    node.status = status


def _install_routes(node: Node, service: InferenceService) -> None:
    async def add_model(request: ApiRequest) -> Any:
        body = request.body if isinstance(request.body, dict) else {}
        name = body.get("name")
        try:
            check_name(name)
            if isinstance(body.get("text"), str):
                info = await trio.to_thread.run_sync(
                    functools.partial(
                        service.store.add_text,
                        name,
                        body["text"],
                        f"<{name}>",
                        bind=False,
                    )
                )
            elif isinstance(body.get("path"), str):
                info = await trio.to_thread.run_sync(
                    functools.partial(
                        service.store.add_file, Path(body["path"]), name, bind=False
                    )
                )
            else:
                raise ApiError(400, "request needs 'name' and 'path' or 'text'")
        except ModelError as error:
            raise ApiError(400, str(error)) from None
        log.info("model added name=%s hash=%s", info.name, info.model_hash)
        return await service.add_model(info)

    async def list_models(request: ApiRequest) -> Any:
        return {
            "local": [info.to_json() for info in service.store.list()],
            "registered": {
                name: info.to_json() for name, info in service.registry.names().items()
            },
        }

    async def fetch(request: ApiRequest) -> Any:
        body = request.body if isinstance(request.body, dict) else {}
        timeout = _timeout(body, 30.0)
        try:
            return await service.fetch(body.get("name"), timeout)
        except ModelError as error:
            raise ApiError(400, str(error)) from None

    async def infer(request: ApiRequest) -> Any:
        received = trio.current_time()
        body = request.body if isinstance(request.body, dict) else {}
        timeout = _timeout(body, 60.0)
        try:
            pending = await service.submit(
                body.get("model"), body.get("inputs"), received
            )
        except ModelError as error:
            raise ApiError(400, str(error)) from None
        with trio.move_on_after(timeout):
            await pending.done.wait()
        doc = service.describe(pending)
        if pending.outcome is None:
            doc["state"] = "timed out"
            doc["reason"] = f"no result within {timeout} s; the task is still open"
        return doc

    async def submit_task(request: ApiRequest) -> Any:
        received = trio.current_time()
        body = request.body if isinstance(request.body, dict) else {}
        try:
            pending = await service.submit(
                body.get("model"), body.get("inputs"), received
            )
        except ModelError as error:
            raise ApiError(400, str(error)) from None
        return {"ref": pending.ref}

    async def task_state(request: ApiRequest) -> Any:
        try:
            ref = int(request.params["ref"])
        except ValueError:
            raise ApiError(400, "task ref must be an integer") from None
        pending = service._pending.get(ref)
        if pending is None:
            raise ApiError(404, f"no request with ref {ref} on this node")
        return service.describe(pending)

    async def task_stats(request: ApiRequest) -> Any:
        return service.stats()

    async def accepted_digest(request: ApiRequest) -> Any:
        return _accepted_digest(node)

    node.api.add_route("POST", "/models", add_model)
    node.api.add_route("GET", "/models", list_models)
    node.api.add_route("POST", "/models/fetch", fetch)
    node.api.add_route("POST", "/infer", infer)
    node.api.add_route("POST", "/tasks", submit_task)
    node.api.add_route("GET", "/tasks/{ref}", task_state)
    node.api.add_route("GET", "/tasks", task_stats)
    node.api.add_route("GET", "/dag/accepted-digest", accepted_digest)


def _timeout(body: dict[str, Any], default: float) -> float:
    value = body.get("timeout", default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, "timeout must be a number of seconds")
    if not 0 < value <= MAX_WAIT_S:
        raise ApiError(400, f"timeout={value} must be in (0, {MAX_WAIT_S}]")
    return float(value)
