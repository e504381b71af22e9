"""Inference tasks between real daemons: processes, libp2p on loopback, SQLite.

Each test starts its own small mesh with `tests.node.daemons`, adds a real
FANN network and drives the nodes through their control API.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import neural
from node.client import ApiCallError, ApiClient
from tests.node.daemons import Daemon, wait_for

pytestmark = pytest.mark.slow

INPUT = [0.25, 0.5, 0.75]
# Short deadlines so that the re-claim after a killed provider happens within
# a few seconds. The delay keeps a claimed task open long enough to kill its
# provider before it publishes a result.
FAULT_ENV = {
    "SYNAPTIC_MESH_TASKS_RUN_TIMEOUT_S": "2.0",
    "SYNAPTIC_MESH_TASKS_CLAIM_TIMEOUT_S": "8.0",
    "SYNAPTIC_MESH_TASKS_INFERENCE_DELAY_S": "1.0",
}


@pytest.fixture
def mesh_of(tmp_path):
    started = []

    def start(count, env=None):
        # The first daemon is the bootstrap peer; the others start together,
        # which saves a few seconds per daemon over starting them in turn.
        daemons = [Daemon(tmp_path / f"node{i}", env=env) for i in range(count)]
        for daemon in daemons:
            daemon.init()
        started.extend(daemons)
        daemons[0].start()
        bootstrap = daemons[0].wait_ready()["listen_addrs"][0]
        for daemon in daemons[1:]:
            daemon.start("--bootstrap", bootstrap)
        for daemon in daemons[1:]:
            daemon.wait_ready()
        for daemon in daemons:
            wait_for(
                lambda d=daemon: len(d.status()["peers"]) >= 1,
                90,
                f"{daemon.data_dir.name} to connect",
            )
        return daemons

    yield start
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.send_signal(signal.SIGTERM)
    for daemon in started:
        try:
            daemon.stop(timeout=15)
        except Exception:
            daemon.kill()


def _client(daemon, timeout=150.0) -> ApiClient:
    return ApiClient.from_data_dir(daemon.data_dir, timeout=timeout)


def _model(tmp_path):
    net = neural.create_standard((3, 4, 2), rng=np.random.default_rng(5))
    path = tmp_path / "tiny.net"
    neural.save(net, path)
    expected = neural.load(path).run(np.asarray(INPUT, dtype=np.float64))
    return path, [float(x) for x in expected]


def _wait_registered(daemons, name):
    for daemon in daemons:
        wait_for(
            lambda d=daemon: name in _client(d).get("/models")["registered"],
            90,
            f"{daemon.data_dir.name} to see the registration of {name}",
        )


def _dag_counts(daemon, task_id):
    """Return claims and results for `task_id` in the daemon's DAG, by status."""
    client = _client(daemon)
    counts = Counter()
    for entry in client.get("/dag/tail", n=1000):
        if entry["payload_type"] not in ("task.claim", "task.result"):
            continue
        vertex = client.get(f"/dag/vertex/{entry['id']}")
        if vertex["payload"].get("task") == task_id:
            counts[(vertex["payload_type"], vertex["status"])] += 1
    return counts


def test_model_found_through_dht(tmp_path, mesh_of):
    provider, requester = mesh_of(2)
    path, expected = _model(tmp_path)
    info = _client(provider).post("/models", {"name": "tiny", "path": str(path)})
    assert info["registration"] in ("accepted", "already registered")
    _wait_registered([requester], "tiny")

    reply = _client(requester).post(
        "/infer", {"model": "tiny", "inputs": INPUT, "timeout": 90}
    )
    assert reply["state"] == "completed", reply
    assert reply["outputs"] == expected
    assert reply["provider_peer"] == provider.runtime()["peer_id"]
    # The requester looked the providers up in the DHT, either for this
    # request or in the background once the name was registered.
    assert _client(requester).get("/tasks")["lookup_s"]

    fetched = _client(requester).post("/models/fetch", {"name": "tiny"})
    assert fetched["model_hash"] == info["model_hash"]
    listed = _client(requester).get("/models")["local"]
    assert [m["model_hash"] for m in listed] == [info["model_hash"]]


def test_three_providers_race_served_once(tmp_path, mesh_of):
    # Without the stagger every provider claims at once, so the claims of
    # each task conflict and consensus must pick one.
    daemons = mesh_of(4, env={"SYNAPTIC_MESH_TASKS_CLAIM_STAGGER_S": "0"})
    requester, providers = daemons[0], daemons[1:]
    path, expected = _model(tmp_path)
    _client(providers[0]).post("/models", {"name": "tiny", "path": str(path)})
    _wait_registered(daemons, "tiny")
    for provider in providers[1:]:
        _client(provider).post("/models/fetch", {"name": "tiny"})

    with ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(
                lambda _: _client(requester).post(
                    "/infer", {"model": "tiny", "inputs": INPUT, "timeout": 90}
                ),
                range(4),
            )
        )
    stats = [_client(p).get("/tasks") for p in providers]
    for reply in replies:
        assert reply["state"] == "completed", reply
        assert reply["outputs"] == expected
        task_id = reply["task_id"]

        def settled(task_id=task_id):
            counts = _dag_counts(requester, task_id)
            claims = {k: v for k, v in counts.items() if k[0] == "task.claim"}
            decided = (
                counts[("task.claim", "accepted")] + counts[("task.claim", "rejected")]
            )
            return counts if decided == sum(claims.values()) >= 2 else None

        # Every provider claims, so the claims race; all but one lose.
        counts = wait_for(settled, 90, "every claim to be decided")
        assert counts[("task.claim", "accepted")] == 1, counts
        assert counts[("task.claim", "rejected")] >= 1, counts
        results = {k: v for k, v in counts.items() if k[0] == "task.result"}
        assert sum(results.values()) == 1, counts
        assert ("task.result", "rejected") not in results
    # A task names the providers the requester's DHT lookup has found so far,
    # and the two fetched copies may not be advertised yet, so at least two
    # providers claim each task (checked per task above).
    assert sum(s["claims_issued"] for s in stats) >= 2 * len(replies)
    assert sum(s["claims_won"] for s in stats) == len(replies)
    assert sum(s["results_issued"] for s in stats) == len(replies)


def test_provider_killed_after_claim_task_answered(tmp_path, mesh_of):
    daemons = mesh_of(4, env=FAULT_ENV)
    requester, providers = daemons[0], daemons[1:]
    path, expected = _model(tmp_path)
    _client(providers[0]).post("/models", {"name": "tiny", "path": str(path)})
    _wait_registered(daemons, "tiny")
    for provider in providers[1:]:
        _client(provider).post("/models/fetch", {"name": "tiny"})
    keys = {_client(p).get("/tasks")["key_id"]: p for p in providers}

    ref = _client(requester).post("/tasks", {"model": "tiny", "inputs": INPUT})["ref"]
    claimed = wait_for(
        lambda: _client(requester).get(f"/tasks/{ref}")["claimer"],
        60,
        "a claim to be accepted",
        interval=0.01,
    )
    victim = keys[claimed]
    victim.kill()

    final = wait_for(
        lambda: (
            (state := _client(requester).get(f"/tasks/{ref}"))["state"]
            in ("completed", "failed")
            and state
        ),
        120,
        "the task to end",
    )
    assert final["state"] == "completed", final
    assert final["outputs"] == expected
    assert final["provider_key_id"] != claimed
    assert final["round"] >= 1


def test_unservable_task_fails_with_reason(tmp_path, mesh_of):
    env = {
        "SYNAPTIC_MESH_TASKS_CLAIM_TIMEOUT_S": "1.5",
        "SYNAPTIC_MESH_TASKS_MAX_SUBMITS": "2",
    }
    requester, provider, _ = mesh_of(3, env=env)
    path, _ = _model(tmp_path)
    _client(provider).post("/models", {"name": "tiny", "path": str(path)})
    _wait_registered([requester], "tiny")
    provider.kill()

    # The DHT may still list the dead provider (then the task is submitted
    # and no provider claims it) or no longer list it (then nothing is submitted).
    try:
        reply = _client(requester).post(
            "/infer", {"model": "tiny", "inputs": INPUT, "timeout": 90}
        )
    except ApiCallError as error:
        assert error.status == 503
        assert "no provider advertises model tiny" in str(error)
        tasks = requester.status()["tasks"]
        assert tasks["failed_lookups"] == 1
        assert "no provider advertises" in tasks["recent_lookup_failures"][0]
        return
    assert reply["state"] == "failed"
    assert reply["reason"] == (
        "model tiny: submission 1: no provider claimed the task; "
        "submission 2: no provider claimed the task"
    )
    tasks = requester.status()["tasks"]
    assert tasks["failed"] == 1
    assert tasks["recent_failures"] == [reply["reason"]]


def _other_model(tmp_path):
    net = neural.create_standard((3, 5, 2), rng=np.random.default_rng(9))
    path = tmp_path / "other.net"
    neural.save(net, path)
    return path


def test_restarted_node_keeps_its_registration(tmp_path, mesh_of):
    alice, bob = mesh_of(2)
    path, expected = _model(tmp_path)
    _client(alice).post("/models", {"name": "tiny", "path": str(path)})
    _wait_registered([alice, bob], "tiny")

    code, _ = alice.stop()
    assert code == 0
    alice.start("--bootstrap", bob.runtime()["listen_addrs"][0])
    alice.wait_ready()
    # The registry comes from the store before the node reports itself ready.
    assert "tiny" in _client(alice).get("/models")["registered"]
    wait_for(lambda: alice.status()["peers"], 30, "alice to reconnect")

    started = time.monotonic()
    reply = _client(alice).post(
        "/infer", {"model": "tiny", "inputs": INPUT, "timeout": 30}
    )
    wall = time.monotonic() - started
    assert reply["state"] == "completed", reply
    assert reply["outputs"] == expected
    assert reply["round"] == 0, reply
    # The stages cover the request: what is left is HTTP on loopback.
    assert wall - reply["stages"]["total_s"] < 1.0, (wall, reply["stages"])
    wait_for(
        lambda: "model advertised name=tiny" in alice.stderr(),
        15,
        "alice to advertise her model again",
    )
    assert "vertex issue failed type=model.register" not in alice.stderr()


def test_rejected_name_leaves_no_binding(tmp_path, mesh_of):
    alice, bob = mesh_of(2)
    path, _ = _model(tmp_path)
    _client(alice).post("/models", {"name": "tiny", "path": str(path)})
    _wait_registered([bob], "tiny")

    with pytest.raises(ApiCallError) as rejected:
        _client(bob).post(
            "/models", {"name": "tiny", "path": str(_other_model(tmp_path))}
        )
    assert rejected.value.status == 409
    assert "Choose another name" in str(rejected.value)
    names = bob.data_dir / "models" / "names.json"
    assert "tiny" not in (json.loads(names.read_text()) if names.exists() else {})
    assert _client(bob).get("/models")["local"] == []
    # The name still resolves to the registered model, which alice serves.
    reply = _client(bob).post(
        "/infer", {"model": "tiny", "inputs": INPUT, "timeout": 30}
    )
    assert reply["state"] == "completed", reply


def test_local_provider_races_with_dht_providers(tmp_path, mesh_of):
    alice, bob = mesh_of(2)
    path, expected = _model(tmp_path)
    _client(alice).post("/models", {"name": "tiny", "path": str(path)})
    _wait_registered([bob], "tiny")
    _client(bob).post("/models/fetch", {"name": "tiny"})
    peers = {alice.runtime()["peer_id"], bob.runtime()["peer_id"]}

    # Alice holds the model; the providers her tasks name must still be
    # every provider the DHT knows, not only herself.
    def both_listed():
        reply = _client(alice).post(
            "/infer", {"model": "tiny", "inputs": INPUT, "timeout": 30}
        )
        assert reply["state"] == "completed", reply
        assert reply["outputs"] == expected
        vertex = _client(alice).get(f"/dag/vertex/{reply['task_id']}")
        return set(vertex["payload"]["providers"]) == peers

    wait_for(both_listed, 25, "a task that names both providers", interval=0.5)


def test_bad_task_setting_stops_start_before_networking(tmp_path):
    daemon = Daemon(tmp_path / "node", env={"SYNAPTIC_MESH_TASKS_WORKERS": "0"})
    daemon.init()
    daemon.start()
    assert daemon.process.wait(timeout=30) == 1
    stderr = daemon.stderr()
    assert (
        "invalid setting tasks.workers=0 (from environment variable "
        "SYNAPTIC_MESH_TASKS_WORKERS): must be from 1 to 64"
    ) in stderr
    assert "p2p service started" not in stderr
    assert not (daemon.data_dir / "runtime.json").exists()
