"""The testnet orchestration: figures, checks, data, and a small real run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from node.testnet import (
    TestnetParams,
    TestnetReport,
    load_dataset,
    percentile,
    run_testnet,
    train_model,
)


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"nodes": 0}, "nodes"),
        ({"tasks": 0}, "tasks"),
        ({"providers": 6}, "providers"),
        ({"concurrency": 0}, "concurrency"),
        ({"train": "a.data"}, "train and test"),
    ],
)
def test_params_validate_names_setting(change, name):
    with pytest.raises(ValueError, match=name):
        TestnetParams(**change).validate()


def test_report_ok_needs_every_check():
    report = TestnetReport(nodes=2, network="n", base_dir="/tmp/x")
    assert not report.ok
    report.checks = {"a": True, "b": True}
    assert report.ok
    report.checks["c"] = False
    assert not report.ok
    report.checks["c"] = True
    report.error = "boom"
    assert not report.ok


def test_report_text_and_json():
    report = TestnetReport(nodes=2, network="n", base_dir="/tmp/x")
    report.tasks_submitted = 4
    report.tasks_completed = 4
    report.correct = 3
    report.equal_to_local = 4
    report.task_latency_s = [0.1, 0.2, 0.3, 0.4]
    report.task_phase_s = 2.0
    report.checks = {"every task answered": True}
    text = report.format_text()
    assert "p50 200 ms" in text
    assert "75.0%" in text
    assert "[ok] every task answered" in text
    assert text.endswith("PASS")
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["ok"] is True
    assert doc["figures"]["tasks_per_s"] == 2.0


def test_digits_dataset_scaled_one_hot():
    data = load_dataset(TestnetParams())
    assert data.train_inputs.shape[1] == 64
    assert data.train_inputs.min() >= 0.0
    assert data.train_inputs.max() <= 1.0
    assert set(np.unique(data.train_outputs)) == {0.0, 1.0}
    assert (data.train_outputs.sum(axis=1) == 1).all()
    assert len(data.test_inputs) == len(data.test_labels) > 400


def test_fann_files_dataset(tmp_path):
    import neural

    rows = neural.TrainingData(
        np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    )
    neural.write_data(rows, tmp_path / "a.data")
    params = TestnetParams(train=tmp_path / "a.data", test=tmp_path / "a.data")
    data = load_dataset(params)
    assert data.test_labels.tolist() == [0, 1]


def test_trained_digits_model_above_floor():
    params = TestnetParams()
    messages = []
    text, summary = train_model(load_dataset(params), params, messages.append)
    assert summary["local_accuracy"] > 0.9
    assert text.startswith("FANN_FLO_2.1")
    assert any("training epoch" in m for m in messages)


@pytest.mark.slow
def test_testnet_three_nodes_end_to_end(tmp_path):
    params = TestnetParams(nodes=3, tasks=12, base_dir=tmp_path / "net", seed=3)
    messages = []
    report = run_testnet(params, messages.append)
    assert report.error == ""
    assert report.checks, messages
    for name, passed in report.checks.items():
        assert passed, f"{name} failed:\n" + "\n".join(messages)
    assert report.tasks_completed == 12
    assert report.equal_to_local == 12
    assert report.exit_codes == [0, 0, 0]
    assert len(set(report.accepted_vertices)) == 1
    assert sum(report.served_by.values()) == 12
    assert any("mesh formed" in m for m in messages)
