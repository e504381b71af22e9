"""Simulator tests: determinism, avalanchego-style network checks, safety."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dag import DagError
from dag.consensus import AvalancheParams
from dag.sim import Partition, SimParams, parse_partition, simulate
from node.cli import main

# n = k = 20 with alpha 15: the liveness boundary of avalanchego's defaults.
BOUNDARY = AvalancheParams(k=20, alpha_preference=15, alpha_confidence=15, beta=20)


def test_same_seed_same_result():
    params = SimParams(nodes=30, vertices=20, conflict_rate=0.3, loss=0.02)
    first = simulate(params, 11)
    second = simulate(params, 11)
    assert first == second
    assert first.latencies_ms == second.latencies_ms
    assert first.finished
    other = simulate(params, 12)
    assert other.latencies_ms != first.latencies_ms


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_hundred_nodes_agree_on_one_colour(seed):
    # Ten colours issued at once: every honest node starts out preferring the
    # colour that reached it first, then the network settles on one.
    params = SimParams(nodes=100, vertices=10, conflict_rate=1.0, issue_interval_ms=0.0)
    result = simulate(params, seed)
    assert result.finished
    assert result.disagreements == 0
    assert result.accepted == 1
    assert result.rejected == 9


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stubborn_minority_cannot_block_majority(seed):
    # Vertex 1 reaches everyone before its double-spend 2, so the honest
    # majority prefers 1, while 10% stubborn nodes vote for 2 forever.
    params = SimParams(
        nodes=100,
        vertices=2,
        conflict_rate=1.0,
        issue_interval_ms=20.0,
        byzantine=0.1,
        byzantine_mode="stubborn",
    )
    result = simulate(params, seed)
    assert result.finished
    assert result.disagreements == 0
    assert result.accepted_ids == (1,)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    nodes=st.integers(8, 30),
    vertices=st.integers(2, 12),
    conflict_rate=st.floats(0.2, 1.0),
    byzantine=st.floats(0.0, 0.2),
    mode=st.sampled_from(["silent", "stubborn", "equivocate"]),
    loss=st.floats(0.0, 0.1),
)
def test_finalized_nodes_never_disagree(
    seed, nodes, vertices, conflict_rate, byzantine, mode, loss
):
    params = SimParams(
        nodes=nodes,
        vertices=vertices,
        conflict_rate=conflict_rate,
        byzantine=byzantine,
        byzantine_mode=mode,
        loss=loss,
        max_time=20.0,
        consensus=AvalancheParams.for_network(nodes),
    )
    result = simulate(params, seed)
    assert result.disagreements == 0


def test_liveness_boundary_five_silent_finish_in_beta_polls():
    params = SimParams(
        nodes=20,
        vertices=1,
        byzantine=5 / 20,
        byzantine_mode="silent",
        jitter_ms=0.0,
        consensus=BOUNDARY,
    )
    result = simulate(params, 1)
    assert result.finished
    assert result.polls_to_finality_min == BOUNDARY.beta
    assert result.polls_to_finality_max == BOUNDARY.beta


def test_liveness_boundary_six_silent_never_finish():
    params = SimParams(
        nodes=20,
        vertices=1,
        byzantine=6 / 20,
        byzantine_mode="silent",
        jitter_ms=0.0,
        max_time=120.0,
        consensus=BOUNDARY,
    )
    result = simulate(params, 1)
    assert not result.finished
    assert result.accepted == 0
    assert result.decided_fraction == 0.0
    # Backoff keeps the stuck network quiet: far fewer than 4 polls per RTT.
    assert result.polls_per_vertex < 14 * 120 / 10 * 2


def test_partition_heals_and_finishes():
    params = SimParams(
        nodes=30,
        vertices=20,
        conflict_rate=0.3,
        partitions=(Partition(0.0, 1.0, 0.5),),
        consensus=AvalancheParams.for_network(30),
    )
    result = simulate(params, 5)
    assert result.finished
    assert result.disagreements == 0
    # Nothing can finalize while each side holds only half the nodes.
    assert result.latency_p50_ms > 900


def test_lost_gossip_is_fetched():
    params = SimParams(nodes=30, vertices=30, loss=0.03)
    result = simulate(params, 3)
    assert result.finished
    assert result.accepted == 30


@pytest.mark.parametrize("text", ["1-2", "a-b:0.5", "2-1:0.5", "0-1:1.5"])
def test_parse_partition_rejects_invalid(text):
    with pytest.raises(DagError, match="invalid partition"):
        parse_partition(text)


def test_parse_partition_valid():
    assert parse_partition("0.5-2:0.25") == Partition(0.5, 2.0, 0.25)


def test_sim_params_validation_lists_problems():
    with pytest.raises(DagError) as excinfo:
        SimParams(nodes=10, vertices=0, byzantine_mode="loud").validate()
    text = str(excinfo.value)
    assert "vertices=0 must be at least 1" in text
    assert "byzantine_mode='loud'" in text
    assert "alpha_confidence=15 must be at most nodes=10" in text


SMALL_RUN = [
    "simulate",
    "--nodes",
    "12",
    "--vertices",
    "6",
    "--conflict-rate",
    "0.5",
    "--k",
    "11",
    "--alpha-preference",
    "9",
    "--alpha-confidence",
    "9",
    "--seed",
    "4",
]


def test_cli_json_same_seed_same_output(capsys):
    assert main([*SMALL_RUN, "--json"]) == 0
    first = capsys.readouterr()
    assert main([*SMALL_RUN, "--json"]) == 0
    second = capsys.readouterr()
    assert first.out == second.out
    data = json.loads(first.out)
    assert data["nodes"] == 12
    assert data["disagreements"] == 0
    assert data["finished"] is True


def test_cli_text_report(capsys):
    assert main(SMALL_RUN) == 0
    out = capsys.readouterr().out
    assert "disagreements 0" in out
    assert "finality latency p50" in out


def test_cli_invalid_parameters(capsys):
    assert main(["simulate", "--nodes", "10"]) == 2
    assert "alpha_confidence=15 must be at most nodes=10" in capsys.readouterr().err


def test_cli_plot_without_matplotlib(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main([*SMALL_RUN, "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install 'synaptic-mesh[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "latency.png"
    assert main([*SMALL_RUN, "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--loss", "1"], "loss=1.0 must be in [0, 1)"),
        (["--loss", "nan"], "loss=nan must be in [0, 1)"),
        (["--nodes", "10001"], "nodes=10001 must be at most 10000"),
        (["--vertices", "1000001"], "vertices=1000001 must be at most 1000000"),
    ],
)
def test_cli_rejects_out_of_range_sizes(capsys, args, expected):
    assert main(["simulate", *args]) == 2
    assert expected in capsys.readouterr().err


def test_loss_near_one_cannot_spin():
    import signal

    def too_slow(signum, frame):
        raise AssertionError("the simulation kept redrawing lost messages")

    # Each redraw of a lost vertex costs one random number; at this loss an
    # unbounded redraw loop needs about 10**12 of them for one message.
    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(20)
    try:
        params = SimParams(nodes=20, vertices=2, loss=1 - 1e-12, max_time=60.0)
        result = simulate(params, 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result.vertices == 2
