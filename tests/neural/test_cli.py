"""The ``synaptic-mesh neural`` command group."""

from __future__ import annotations

import json

import numpy as np
import pytest

import neural
from node.commands import neural as command


@pytest.fixture
def cli():
    import argparse

    parser = argparse.ArgumentParser(prog="synaptic-mesh")
    command.register(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(["neural", *argv])
        return args.func(args)

    return run


@pytest.fixture
def xor_file(tmp_path):
    x = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=float)
    y = np.array([[-1], [1], [1], [-1]], dtype=float)
    path = tmp_path / "xor.data"
    neural.write_data(neural.TrainingData(x, y), path)
    return path


def test_train_test_run_round(cli, xor_file, tmp_path, capsys):
    out = tmp_path / "xor.net"
    code = cli(
        "train",
        str(xor_file),
        "--test",
        str(xor_file),
        "--layers",
        "2,4,1",
        "--hidden-activation",
        "sigmoid_symmetric",
        "--output-activation",
        "sigmoid_symmetric",
        "--steepness",
        "1",
        "--epochs",
        "500",
        "--desired-error",
        "0.001",
        "--seed",
        "3",
        "-o",
        str(out),
        "--json",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["desired_error_reached"] is True
    assert summary["test"]["classification_error"] == 0.0
    assert summary["content_hash"] == neural.content_hash(neural.load(out))
    assert "MSE" in captured.err, "progress shows the MSE"

    assert cli("test", str(out), str(xor_file), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 4
    assert report["mse"] <= 0.001

    assert cli("run", str(out), "--input", "1 -1") == 0
    assert float(capsys.readouterr().out) > 0.5

    assert cli("run", str(out), "--data", str(xor_file), "--json") == 0
    outputs = np.array(json.loads(capsys.readouterr().out)["outputs"])
    np.testing.assert_array_equal(np.sign(outputs), [[-1], [1], [1], [-1]])


def test_train_seed_is_reproducible(cli, xor_file, tmp_path, capsys):
    hashes = []
    for name in ("a.net", "b.net"):
        code = cli(
            "train",
            str(xor_file),
            "--layers",
            "2,3,1",
            "--epochs",
            "20",
            "--seed",
            "9",
            "-o",
            str(tmp_path / name),
            "--json",
            "--quiet",
        )
        assert code == 0
        hashes.append(json.loads(capsys.readouterr().out)["content_hash"])
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize("algorithm", ["incremental", "batch", "quickprop", "sarprop"])
def test_train_each_algorithm_and_shape(cli, xor_file, tmp_path, capsys, algorithm):
    code = cli(
        "train",
        str(xor_file),
        "--layers",
        "2,5,3,1",
        "--algorithm",
        algorithm,
        "--epochs",
        "5",
        "--seed",
        "1",
        "--quiet",
        "--shortcut",
        "-o",
        str(tmp_path / "n.net"),
    )
    assert code == 0, capsys.readouterr().err
    net = neural.load(tmp_path / "n.net")
    assert int(net.params.training_algorithm) == command.ALGORITHMS.index(algorithm)
    assert net.network_type == neural.NetworkType.SHORTCUT


def test_train_scaled_keeps_scaling(cli, fann_datasets, tmp_path, capsys):
    out = tmp_path / "scaled.net"
    code = cli(
        "train",
        str(fann_datasets / "scaling.data"),
        "--layers",
        "3,5,1",
        "--output-activation",
        "linear",
        "--scale",
        "--epochs",
        "30",
        "--seed",
        "2",
        "--quiet",
        "-o",
        str(out),
    )
    assert code == 0, capsys.readouterr().err
    assert neural.load(out).scale is not None
    assert cli("run", str(out), "--input", "1000 1 0") == 0


def test_errors_are_one_line_with_exit_1(cli, xor_file, tmp_path, capsys):
    bad = tmp_path / "bad.data"
    bad.write_text("1 2 1\n0,5 1\n0\n")
    assert cli("train", str(bad), "--layers", "2,1", "-o", str(tmp_path / "x")) == 1
    err = capsys.readouterr().err
    assert "bad.data:2:" in err
    assert "decimal comma" in err

    assert (
        cli("train", str(xor_file), "--layers", "3,1", "-o", str(tmp_path / "x")) == 1
    )
    assert "3 inputs" in capsys.readouterr().err

    net = tmp_path / "n.net"
    neural.save(neural.create_standard((2, 1)), net)
    assert cli("run", str(net), "--input", "1 2 3") == 1
    assert "takes 2" in capsys.readouterr().err
    assert cli("test", str(tmp_path / "missing.net"), str(xor_file)) == 1
    assert "cannot read network file" in capsys.readouterr().err


def test_neural_group_in_main_help(capsys):
    from node.cli import main

    with pytest.raises(SystemExit):
        main(["neural", "train", "--help"])
    text = capsys.readouterr().out
    assert "--hidden-activation" in text
    assert "--desired-error" in text


def test_progress_shows_last_epoch_when_stopping_early(cli, xor_file, tmp_path, capsys):
    code = cli(
        "train",
        str(xor_file),
        "--layers",
        "2,4,1",
        "--steepness",
        "1",
        "--hidden-activation",
        "sigmoid_symmetric",
        "--output-activation",
        "sigmoid_symmetric",
        "--epochs",
        "5000",
        "--desired-error",
        "0.01",
        "--seed",
        "3",
        "-o",
        str(tmp_path / "x.net"),
        "--json",
    )
    captured = capsys.readouterr()
    assert code == 0
    epochs = json.loads(captured.out)["epochs"]
    assert epochs < 5000
    # Log records share stderr when an earlier test configured logging, so
    # only the progress lines are checked.
    lines = [line for line in captured.err.splitlines() if line.startswith("epoch ")]
    assert lines[-1].startswith(f"epoch {epochs}/5000 MSE ")
    assert len([line for line in lines if line.startswith(f"epoch {epochs}/")]) == 1
