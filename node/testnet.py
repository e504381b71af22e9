"""A local testnet: N daemons as OS processes doing real inference end to end.

`run_testnet` walks through the whole product on one machine:

1. initialises N data directories under one folder, with a network name of
   its own so that two testnets on one machine never mix;
2. starts N ``synaptic-mesh start`` processes on 127.0.0.1, each one
   bootstrapping from the first, and waits until every node has a peer and
   a first vertex is accepted on all of them;
3. meanwhile trains a FANN-style network with the ``neural`` engine, on
   scikit-learn's bundled handwritten digits (offline; inputs scaled to
   [0, 1], one-hot outputs) or on ``--train``/``--test`` FANN ``.data`` files;
4. adds the model to the first provider from the file, and lets the other
   providers fetch it from the mesh by content hash;
5. submits test rows as tasks from nodes picked by a seeded generator and
   collects the answers;
6. checks the answers: accuracy against the labels, and bit-for-bit equality
   with local inference of the same model file (the same single-row path
   the providers run);
7. checks that every node holds the same accepted vertices, stops the
   daemons with SIGTERM and reports whether each of them exited cleanly.

Public API:
    TestnetParams(nodes, tasks, providers, seed, base_dir, keep, train, test,
                  hidden, max_epochs, desired_error, concurrency, ...)
    run_testnet(params, progress) -> TestnetReport
    TestnetReport.ok, .checks, .to_json(), .format_text()
    Daemon (one node process), percentile(values, q)
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from dag import DagError
from neural import NeuralError
from node import NodeError
from node.client import ApiCallError, ApiClient, DaemonNotRunning, read_runtime

MODEL_NAME: Final = "digits"
ACCURACY_FLOOR: Final = 0.90
# Time for every node to decide its backlog before the accepted sets are
# compared.
CONSISTENCY_TIMEOUT_S: Final = 120.0
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class TestnetParams:
    """Settings of one testnet run.

    Attributes:
        nodes: daemons to start.
        tasks: test rows to submit as tasks (capped by the test set size).
        providers: nodes that serve the model; at least two when the testnet
            has more than one node, so that providers race for claims.
        seed: picks the test rows, the submitting nodes and initial weights.
        base_dir: folder for the data directories; a temporary one if None.
        keep: keep the data directories and logs after the run.
        train, test: FANN ``.data`` files; the digits data set if None.
        hidden: neurons in the hidden layer.
        max_epochs, desired_error: RPROP training stop conditions.
        concurrency: tasks in flight at once.
        join_timeout_s: time limit for every node to start and join.
        task_timeout_s: time limit for one task.
        stop_timeout_s: time a daemon gets to exit after SIGTERM.
        saturation_tasks: tasks of an extra phase that keeps
            ``saturation_concurrency`` requests in flight to measure tasks/s
            at saturation; 0 skips it.
        env: extra environment variables for the daemons.
    """

    __test__ = False  # not a pytest test class, despite the name

    nodes: int = 5
    tasks: int = 50
    providers: int = 2
    seed: int = 1
    base_dir: Path | None = None
    keep: bool = False
    train: Path | None = None
    test: Path | None = None
    hidden: int = 32
    max_epochs: int = 300
    desired_error: float = 0.0005
    concurrency: int = 4
    join_timeout_s: float = 60.0
    task_timeout_s: float = 30.0
    stop_timeout_s: float = 15.0
    saturation_tasks: int = 0
    saturation_concurrency: int = 16
    env: tuple[tuple[str, str], ...] = ()

    def validate(self) -> None:
        """Raise `ValueError` naming the first setting out of range."""
        if not 1 <= self.nodes <= 64:
            raise ValueError(f"nodes={self.nodes} must be in 1..64")
        if not 1 <= self.tasks <= 100_000:
            raise ValueError(f"tasks={self.tasks} must be in 1..100000")
        if not 1 <= self.providers <= self.nodes:
            raise ValueError(f"providers={self.providers} must be in 1..{self.nodes}")
        if not 1 <= self.concurrency <= 64:
            raise ValueError(f"concurrency={self.concurrency} must be in 1..64")
        if (self.train is None) != (self.test is None):
            raise ValueError("train and test data files go together")
        if self.hidden < 1 or self.max_epochs < 1:
            raise ValueError("hidden and max_epochs must be >= 1")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the nearest-rank `q` quantile of `values` (0 < q <= 1), or None."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# --- one daemon -------------------------------------------------------------


class Daemon:
    """One ``synaptic-mesh start`` process and its data directory."""

    def __init__(self, index: int, data_dir: Path) -> None:
        self.index = index
        self.data_dir = data_dir
        self.log_path = data_dir / "daemon.log"
        self.process: subprocess.Popen | None = None
        self.runtime: dict[str, Any] = {}
        self.client: ApiClient | None = None
        self.exit_code: int | None = None

    def launch(self, bootstrap: Sequence[str], env: dict[str, str]) -> None:
        """Start the process; `wait_started` waits until its API responds."""
        command = [
            sys.executable,
            "-m",
            "node.cli",
            "start",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ]
        for address in bootstrap:
            command += ["--bootstrap", address]
        stale = self.data_dir / "runtime.json"
        stale.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_started(self, deadline: float) -> None:
        """Wait until the daemon wrote ``runtime.json`` and its API responds.

        Raises:
            NodeError: the process exited, or `deadline` (monotonic) passed.
        """
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise NodeError(
                    f"node {self.index} exited with code {self.process.returncode} "
                    f"while starting; see {self.log_path}"
                )
            try:
                runtime = read_runtime(self.data_dir)
                if runtime.get("pid") in (None, self.process.pid):
                    client = ApiClient.from_data_dir(self.data_dir, timeout=30.0)
                    client.get("/status")
                    self.runtime, self.client = runtime, client
                    return
            except (DaemonNotRunning, ApiCallError):
                pass
            if time.monotonic() > deadline:
                raise NodeError(
                    f"node {self.index} did not start in time; see {self.log_path}"
                )
            time.sleep(0.1)

    @property
    def api(self) -> ApiClient:
        assert self.client is not None
        return self.client

    def rss_bytes(self) -> int | None:
        """Return the resident set size of the process, from /proc."""
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) * 1024 if match else None

    def metric(self, name: str) -> float:
        """Return the sum of Prometheus samples called `name` on this node."""
        address = self.runtime.get("metrics")
        if not address:
            return 0.0
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, timeout: float) -> int | None:
        """Send SIGTERM and wait; SIGKILL after `timeout`. Return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self.exit_code = None
                return None
        self.exit_code = self.process.returncode
        return self.exit_code

    def kill(self) -> None:
        """Kill the process at once (SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# --- data and model -------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """Training and test rows with the label of each test row."""

    name: str
    train_inputs: Any
    train_outputs: Any
    test_inputs: Any
    test_outputs: Any
    test_labels: Any


def load_dataset(params: TestnetParams) -> Dataset:
    """Load the digits or the given FANN files as a `Dataset`."""
    import numpy as np

    if params.train is not None and params.test is not None:
        import neural

        train = neural.read_data(params.train)
        test = neural.read_data(params.test)
        return Dataset(
            name=f"{params.train.name} / {params.test.name}",
            train_inputs=train.inputs,
            train_outputs=train.outputs,
            test_inputs=test.inputs,
            test_outputs=test.outputs,
            test_labels=test.outputs.argmax(axis=1),
        )
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise NodeError(
            "scikit-learn is not installed; install the digits extra "
            "(pip install -e '.[digits]') or pass --train and --test"
        ) from None
    digits = load_digits()
    inputs = digits.data / 16.0
    labels = digits.target
    order = np.random.default_rng(params.seed).permutation(len(inputs))
    inputs, labels = inputs[order], labels[order]
    split = int(len(inputs) * 0.75)
    outputs = np.eye(10)[labels]
    return Dataset(
        name="scikit-learn digits (8x8, 10 classes)",
        train_inputs=inputs[:split],
        train_outputs=outputs[:split],
        test_inputs=inputs[split:],
        test_outputs=outputs[split:],
        test_labels=labels[split:],
    )


def train_model(
    data: Dataset, params: TestnetParams, progress: Progress
) -> tuple[str, dict[str, Any]]:
    """Train a 3-layer sigmoid network with RPROP; return its ``.net`` text."""
    import numpy as np

    import neural

    sizes = (data.train_inputs.shape[1], params.hidden, data.train_outputs.shape[1])
    net = neural.create_standard(sizes, rng=np.random.default_rng(params.seed))
    net.set_activation_function_hidden("SIGMOID")
    net.set_activation_function_output("SIGMOID")
    started = time.monotonic()

    def on_epoch(epoch: int, mse: float, bit_fail: int) -> bool:
        if epoch % 25 == 0 or epoch == 1:
            progress(f"training epoch {epoch}/{params.max_epochs} mse={mse:.5f}")
        return True

    result = neural.train(
        net,
        data.train_inputs,
        data.train_outputs,
        params.max_epochs,
        params.desired_error,
        on_epoch=on_epoch,
    )
    seconds = time.monotonic() - started
    outputs = net.run(data.test_inputs)
    accuracy = float((outputs.argmax(axis=1) == data.test_labels).mean())
    summary = {
        "layers": list(sizes),
        "epochs": result.epochs,
        "mse": result.mse,
        "seconds": round(seconds, 3),
        "local_accuracy": accuracy,
    }
    progress(
        f"trained {sizes} in {result.epochs} epochs ({seconds:.1f} s), "
        f"mse={result.mse:.5f}, local test accuracy {accuracy:.1%}"
    )
    return neural.dumps(net), summary


# --- report -------------------------------------------------------------------


@dataclass
class TestnetReport:
    """Figures and checks of one testnet run."""

    __test__ = False  # not a pytest test class, despite the name

    nodes: int
    network: str
    base_dir: str
    dataset: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    mesh_formed_s: float | None = None
    first_final_s: float | None = None
    lookup_s: list[float] = field(default_factory=list)
    task_latency_s: list[float] = field(default_factory=list)
    finality_s: list[float] = field(default_factory=list)
    tasks_submitted: int = 0
    tasks_completed: int = 0
    tasks_failed: list[str] = field(default_factory=list)
    correct: int = 0
    equal_to_local: int = 0
    served_by: dict[str, int] = field(default_factory=dict)
    task_phase_s: float = 0.0
    saturation_tasks: int = 0
    saturation_completed: int = 0
    saturation_s: float = 0.0
    gossip_messages: float = 0.0
    rss_idle_mb: list[float] = field(default_factory=list)
    rss_busy_mb: list[float] = field(default_factory=list)
    accepted_vertices: list[int] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        """Return whether every check held and nothing failed on the way."""
        return bool(self.checks) and all(self.checks.values()) and not self.error

    @property
    def accuracy(self) -> float:
        return self.correct / self.tasks_submitted if self.tasks_submitted else 0.0

    def figures(self) -> dict[str, Any]:
        """Return the summary figures (quantiles in seconds)."""
        rate = self.gossip_messages / self.task_phase_s if self.task_phase_s else 0.0
        return {
            "mesh_formed_s": self.mesh_formed_s,
            "first_vertex_final_s": self.first_final_s,
            "dht_lookup_p50_s": percentile(self.lookup_s, 0.5),
            "dht_lookup_p99_s": percentile(self.lookup_s, 0.99),
            "task_latency_p50_s": percentile(self.task_latency_s, 0.5),
            "task_latency_p99_s": percentile(self.task_latency_s, 0.99),
            "finality_p50_s": percentile(self.finality_s, 0.5),
            "finality_p99_s": percentile(self.finality_s, 0.99),
            "tasks_per_s": (
                self.tasks_completed / self.task_phase_s if self.task_phase_s else 0.0
            ),
            "saturation_tasks_per_s": (
                self.saturation_completed / self.saturation_s
                if self.saturation_s
                else None
            ),
            "accuracy": self.accuracy,
            "messages_per_s": rate,
            "rss_idle_mb_max": max(self.rss_idle_mb, default=None),
            "rss_busy_mb_max": max(self.rss_busy_mb, default=None),
        }

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        doc = asdict(self)
        doc["ok"] = self.ok
        doc["figures"] = self.figures()
        return doc

    def format_text(self) -> str:
        """Return the summary for people."""
        f = self.figures()

        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value * 1000:.0f} ms"

        def sec(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f} s"

        rss_idle = ", ".join(f"{v:.0f}" for v in self.rss_idle_mb)
        rss_busy = ", ".join(f"{v:.0f}" for v in self.rss_busy_mb)
        served = ", ".join(f"node {k}: {v}" for k, v in sorted(self.served_by.items()))
        model = self.model
        rows = [
            ("data", self.dataset),
            (
                "model",
                (
                    f"{model.get('layers')} {model.get('hash', '')[:16]}, "
                    f"local accuracy {model.get('local_accuracy', 0):.1%}"
                ),
            ),
            (
                "mesh formed",
                (
                    f"{sec(f['mesh_formed_s'])} (first vertex final on all nodes "
                    f"at {sec(f['first_vertex_final_s'])})"
                ),
            ),
            (
                "DHT lookup",
                (
                    f"p50 {ms(f['dht_lookup_p50_s'])}  p99 {ms(f['dht_lookup_p99_s'])}"
                    f"  ({len(self.lookup_s)} lookups)"
                ),
            ),
            (
                "task latency",
                f"p50 {ms(f['task_latency_p50_s'])}  p99 {ms(f['task_latency_p99_s'])}",
            ),
            (
                "vertex finality",
                (
                    f"p50 {ms(f['finality_p50_s'])}  p99 {ms(f['finality_p99_s'])}"
                    f"  ({len(self.finality_s)} vertices)"
                ),
            ),
            (
                "tasks",
                (
                    f"{self.tasks_completed}/{self.tasks_submitted} answered, "
                    f"{f['tasks_per_s']:.1f} tasks/s, served by {served}"
                ),
            ),
            (
                "accuracy",
                (
                    f"{self.accuracy:.1%} ({self.correct}/{self.tasks_submitted} "
                    "against the labels)"
                ),
            ),
            (
                "equal to local",
                f"{self.equal_to_local}/{self.tasks_completed} answers bit for bit",
            ),
            (
                "messages",
                f"{f['messages_per_s']:.0f}/s gossip received during tasks, all nodes",
            ),
            (
                "resident memory MB",
                f"idle [{rss_idle}]  after tasks [{rss_busy}]",
            ),
            ("accepted vertices", str(self.accepted_vertices)),
            ("exit codes", str(self.exit_codes)),
        ]
        if self.saturation_tasks:
            rows.append(
                (
                    "saturation",
                    (
                        f"{f['saturation_tasks_per_s']:.1f} tasks/s "
                        f"({self.saturation_completed}/{self.saturation_tasks} "
                        "answered)"
                    ),
                )
            )
        lines = [f"testnet {self.network}: {self.nodes} nodes in {self.base_dir}"]
        lines += [f"  {name:<20} {value}" for name, value in rows]
        for reason in self.tasks_failed[:5]:
            lines.append(f"  failed task: {reason}")
        if self.error:
            lines.append(f"  error: {self.error}")
        lines.append("checks")
        for name, passed in self.checks.items():
            lines.append(f"  [{'ok' if passed else 'FAILED'}] {name}")
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


# --- the run ------------------------------------------------------------------


def run_testnet(params: TestnetParams, progress: Progress) -> TestnetReport:
    """Run the testnet described by `params`; see the module docstring."""
    params.validate()
    created = params.base_dir is None
    base = Path(params.base_dir or tempfile.mkdtemp(prefix="synaptic-testnet-"))
    base.mkdir(parents=True, exist_ok=True)
    network = f"testnet-{os.getpid()}-{params.seed}"
    report = TestnetReport(nodes=params.nodes, network=network, base_dir=str(base))
    daemons = [Daemon(i, base / f"node{i}") for i in range(params.nodes)]
    try:
        _run(params, base, network, daemons, report, progress)
    except (NodeError, DagError, NeuralError, OSError, ValueError) as error:
        report.error = f"{type(error).__name__}: {error}"
    except KeyboardInterrupt:
        report.error = "interrupted"
        raise
    finally:
        progress("stopping daemons with SIGTERM")
        report.exit_codes = [d.stop(params.stop_timeout_s) for d in daemons]
        report.checks["every daemon exited 0 after SIGTERM"] = all(
            code == 0 for code in report.exit_codes
        )
        if params.keep or not report.ok:
            progress(f"data directories and logs kept in {base}")
        elif created:
            shutil.rmtree(base, ignore_errors=True)
        else:
            for daemon in daemons:
                shutil.rmtree(daemon.data_dir, ignore_errors=True)
    return report


def _run(
    params: TestnetParams,
    base: Path,
    network: str,
    daemons: list[Daemon],
    report: TestnetReport,
    progress: Progress,
) -> None:
    from node.commands.init import init_data_dir

    for daemon in daemons:
        init_data_dir(daemon.data_dir, network=network, force=False)
    progress(f"initialised {len(daemons)} data directories in {base}")

    env = {**os.environ, **dict(params.env)}
    started = time.monotonic()
    _start_mesh(daemons, env, started, params, progress)
    data = load_dataset(params)
    report.dataset = data.name
    text, report.model = train_model(data, params, progress)
    _wait_formed(daemons, started, params, report, progress)
    report.rss_idle_mb = [round((d.rss_bytes() or 0) / 2**20, 1) for d in daemons]

    model_path = base / f"{MODEL_NAME}.net"
    model_path.write_text(text, encoding="utf-8")
    providers = _provider_indexes(params)
    _add_model(daemons, providers, model_path, params, report, progress)

    _run_tasks(daemons, data, text, params, report, progress)
    # Finality is sampled before the saturation phase, whose queues would
    # measure the backlog rather than consensus.
    for daemon in daemons:
        stats = daemon.api.get("/tasks")
        report.finality_s += stats.get("finality_s", [])
        report.lookup_s += stats.get("lookup_s", [])
    if params.saturation_tasks:
        _saturate(daemons, data, params, report, progress)
    report.rss_busy_mb = [round((d.rss_bytes() or 0) / 2**20, 1) for d in daemons]
    _check_consistency(daemons, report, progress)


def _start_mesh(
    daemons: list[Daemon],
    env: dict[str, str],
    started: float,
    params: TestnetParams,
    progress: Progress,
) -> None:
    deadline = started + params.join_timeout_s
    first = daemons[0]
    first.launch((), env)
    first.wait_started(deadline)
    bootstrap = [a for a in first.runtime.get("listen_addrs", []) if "/p2p/" in a]
    if not bootstrap:
        raise NodeError(f"node 0 reported no listen address; see {first.log_path}")
    progress(f"node 0 started: {bootstrap[0]}")
    for daemon in daemons[1:]:
        daemon.launch(bootstrap[:1], env)
    for daemon in daemons[1:]:
        daemon.wait_started(deadline)
        progress(
            f"node {daemon.index} started ({time.monotonic() - started:.1f} s) "
            f"peer {daemon.runtime.get('peer_id', '?')}"
        )


def _wait_formed(
    daemons: list[Daemon],
    started: float,
    params: TestnetParams,
    report: TestnetReport,
    progress: Progress,
) -> None:
    deadline = started + params.join_timeout_s
    want = min(len(daemons) - 1, 1)
    last = ""
    while True:
        counts = [len(d.api.get("/status").get("peers", [])) for d in daemons]
        line = f"peers per node {counts}"
        if line != last:
            progress(line)
            last = line
        if all(c >= want for c in counts) and counts[0] >= len(daemons) - 1:
            break
        if time.monotonic() > deadline:
            report.checks["mesh formed"] = False
            raise NodeError(f"mesh did not form within {params.join_timeout_s} s")
        time.sleep(0.2)
    report.mesh_formed_s = round(time.monotonic() - started, 3)
    progress(f"mesh formed in {report.mesh_formed_s:.2f} s")

    # A vertex accepted on every node shows that gossip and consensus run.
    reply = daemons[0].api.post(
        "/publish", {"topic": "testnet", "message": "hello", "timeout": 30}
    )
    vertex_id = reply.get("vertex_id")
    while True:
        statuses = [
            d.api.get(f"/dag/vertex/{vertex_id}").get("status")
            if _has_vertex(d, vertex_id)
            else "unknown"
            for d in daemons
        ]
        if all(s == "accepted" for s in statuses):
            break
        if time.monotonic() > deadline + 30:
            report.checks["mesh formed"] = False
            raise NodeError(f"first vertex not accepted on every node: {statuses}")
        time.sleep(0.1)
    report.first_final_s = round(time.monotonic() - started, 3)
    report.checks["mesh formed"] = True
    progress(f"first vertex accepted on all nodes at {report.first_final_s:.2f} s")


def _has_vertex(daemon: Daemon, vertex_id: str) -> bool:
    try:
        daemon.api.get(f"/dag/vertex/{vertex_id}")
    except ApiCallError as error:
        if error.status == 404:
            return False
        raise
    return True


def _provider_indexes(params: TestnetParams) -> list[int]:
    if params.nodes == 1:
        return [0]
    # Node 0 bootstraps everyone, so providers start at node 1 and the
    # requests from node 0 always cross the network.
    count = min(max(params.providers, 2), params.nodes - 1)
    return list(range(1, count + 1))


def _add_model(
    daemons: list[Daemon],
    providers: list[int],
    model_path: Path,
    params: TestnetParams,
    report: TestnetReport,
    progress: Progress,
) -> None:
    first = daemons[providers[0]]
    info = first.api.post("/models", {"name": MODEL_NAME, "path": str(model_path)})
    report.model["hash"] = info["model_hash"]
    progress(
        f"model {MODEL_NAME} added on node {providers[0]}: "
        f"hash {info['model_hash'][:16]}, registration {info['registration']}"
    )
    deadline = time.monotonic() + params.join_timeout_s
    for daemon in daemons:
        while MODEL_NAME not in daemon.api.get("/models").get("registered", {}):
            if time.monotonic() > deadline:
                raise NodeError(f"node {daemon.index} never saw the model registration")
            time.sleep(0.1)
    for index in providers[1:]:
        fetched = daemons[index].api.post(
            "/models/fetch", {"name": MODEL_NAME, "timeout": 30}
        )
        if fetched["model_hash"] != info["model_hash"]:
            raise NodeError(f"node {index} fetched a different model hash")
        progress(f"node {index} fetched the model by content hash from the mesh")


def _submit(daemon: Daemon, row: list[float], timeout: float) -> tuple[dict, float]:
    started = time.monotonic()
    client = ApiClient.from_data_dir(daemon.data_dir, timeout=timeout + 10)
    reply = None
    # A provider's DHT record can lag its registration by a moment, so a
    # lookup that finds no provider is retried a bounded number of times.
    for attempt in range(5):
        try:
            reply = client.post(
                "/infer", {"model": MODEL_NAME, "inputs": row, "timeout": timeout}
            )
            break
        except ApiCallError as error:
            if error.status != 503 or attempt == 4:
                reply = {"state": "failed", "reason": str(error)}
                break
            time.sleep(0.5)
    return reply or {}, time.monotonic() - started


def _run_tasks(
    daemons: list[Daemon],
    data: Dataset,
    text: str,
    params: TestnetParams,
    report: TestnetReport,
    progress: Progress,
) -> None:
    import numpy as np

    import neural

    rng = random.Random(params.seed)
    count = min(params.tasks, len(data.test_inputs))
    rows = rng.sample(range(len(data.test_inputs)), count)
    senders = [rng.randrange(len(daemons)) for _ in rows]
    report.tasks_submitted = count
    local_net = neural.loads(text, source=f"{MODEL_NAME}.net")
    key_to_node = {d.api.get("/tasks")["key_id"]: d.index for d in daemons}
    messages_before = sum(
        d.metric("synaptic_mesh_gossip_messages_total") for d in daemons
    )

    started = time.monotonic()
    done = 0
    with ThreadPoolExecutor(max_workers=params.concurrency) as pool:
        futures = [
            pool.submit(
                _submit,
                daemons[sender],
                [float(x) for x in data.test_inputs[row]],
                params.task_timeout_s,
            )
            for row, sender in zip(rows, senders, strict=True)
        ]
        for row, future in zip(rows, futures, strict=True):
            reply, latency = future.result()
            done += 1
            if done % 10 == 0 or done == count:
                progress(f"tasks {done}/{count}")
            if reply.get("state") != "completed":
                report.tasks_failed.append(str(reply.get("reason", reply.get("state"))))
                continue
            report.tasks_completed += 1
            report.task_latency_s.append(latency)
            outputs = reply["outputs"]
            expected = local_net.run(
                np.asarray(data.test_inputs[row], dtype=np.float64)
            )
            if outputs == [float(x) for x in expected]:
                report.equal_to_local += 1
            if int(np.argmax(outputs)) == int(data.test_labels[row]):
                report.correct += 1
            server = key_to_node.get(reply.get("provider_key_id"), "?")
            report.served_by[str(server)] = report.served_by.get(str(server), 0) + 1
    report.task_phase_s = round(time.monotonic() - started, 3)
    messages_after = sum(
        d.metric("synaptic_mesh_gossip_messages_total") for d in daemons
    )
    report.gossip_messages = messages_after - messages_before

    report.checks["every task answered"] = report.tasks_completed == count
    report.checks[f"accuracy above {ACCURACY_FLOOR:.0%}"] = (
        report.accuracy > ACCURACY_FLOOR
    )
    report.checks["answers equal local inference"] = (
        report.equal_to_local == report.tasks_completed > 0
    )


def _saturate(
    daemons: list[Daemon],
    data: Dataset,
    params: TestnetParams,
    report: TestnetReport,
    progress: Progress,
) -> None:
    rng = random.Random(params.seed + 1)
    count = params.saturation_tasks
    rows = [rng.randrange(len(data.test_inputs)) for _ in range(count)]
    senders = [rng.randrange(len(daemons)) for _ in range(count)]
    progress(f"saturation: {count} tasks, {params.saturation_concurrency} in flight")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=params.saturation_concurrency) as pool:
        futures = [
            pool.submit(
                _submit,
                daemons[sender],
                [float(x) for x in data.test_inputs[row]],
                params.task_timeout_s,
            )
            for row, sender in zip(rows, senders, strict=True)
        ]
        for future in futures:
            reply, _ = future.result()
            if reply.get("state") == "completed":
                report.saturation_completed += 1
    report.saturation_tasks = count
    report.saturation_s = round(time.monotonic() - started, 3)
    progress(
        f"saturation: {report.saturation_completed}/{count} answered in "
        f"{report.saturation_s:.1f} s"
    )


def _check_consistency(
    daemons: list[Daemon], report: TestnetReport, progress: Progress
) -> None:
    # Decisions reach the nodes a moment apart, and a loaded mesh may still be
    # deciding, so the digests are compared once no node has undecided
    # vertices, or when the time limit passes.
    deadline = time.monotonic() + CONSISTENCY_TIMEOUT_S
    while True:
        processing = [
            d.api.get("/status").get("dag", {}).get("processing", 0) for d in daemons
        ]
        digests = [d.api.get("/dag/accepted-digest") for d in daemons]
        report.accepted_vertices = [doc["count"] for doc in digests]
        same = len({doc["digest"] for doc in digests}) == 1
        if (same and not any(processing)) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    report.checks["every node holds the same accepted vertices"] = same
    progress(
        f"accepted vertices per node {report.accepted_vertices}, "
        f"{'identical' if same else 'DIFFERENT'}; undecided {processing}"
    )


def main_json(report: TestnetReport) -> str:
    """Return the report as indented JSON text."""
    return json.dumps(report.to_json(), indent=2, sort_keys=True)
