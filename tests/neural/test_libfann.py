"""Files written here load in C FANN 2.2.0 and give the same outputs.

Needs Debian's libfann-dev (``bench/setup`` installs it); skips otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

import neural
from neural import cfann

RUNS = [
    f"{name}_e{epochs}"
    for name in ("xor", "diabetes", "thyroid", "robot", "mushroom")
    for epochs in (200, 1000)
]


@pytest.fixture(scope="module")
def lib():
    if cfann.find_library() is None:
        pytest.skip(
            "C FANN (libfloatfann from libfann-dev) is not installed; run bench/setup"
        )
    return cfann.CFann()


def _test_inputs(root, run):
    name = run.split("_")[0]
    data = neural.read_data(root / ("xor.data" if name == "xor" else f"{name}.test"))
    return data.inputs[:300]


@pytest.mark.parametrize("run", RUNS)
def test_load_then_save_loads_in_c_fann(lib, fann_datasets, tmp_path, run):
    source = fann_datasets / "reference/nets" / f"{run}.net"
    ours = neural.load(source)
    path = tmp_path / "saved.net"
    neural.save(ours, path)
    x = _test_inputs(fann_datasets, run)
    with cfann.CNet(lib, path) as theirs:
        np.testing.assert_allclose(theirs.run(x), ours.run(x), rtol=0, atol=1e-5)
        resaved = tmp_path / "resaved.net"
        theirs.save(resaved)
    assert resaved.read_text() == path.read_text()


def _trained_nets():
    rng = np.random.default_rng(21)
    x = rng.uniform(-1, 1, (40, 5))
    y = np.tanh(x[:, :2] * x[:, 2:4])
    sparse = neural.create_sparse(0.6, (5, 7, 2), rng)
    shortcut = neural.create_shortcut((5, 4, 3, 2), rng)
    wide = neural.create_standard((5, 6, 2), rng)
    wide.set_activation_function_hidden("elliot_symmetric")
    wide.set_activation_function_output("linear")
    wide.set_activation_steepness_output(1.0)
    scaled = neural.create_standard((5, 3, 2), rng)
    scaled.set_scaling_params(x, y)
    nets = {"sparse": sparse, "shortcut": shortcut, "wide": wide, "scaled": scaled}
    for net in nets.values():
        if net is not wide:
            net.set_activation_function_hidden("sigmoid_symmetric")
            net.set_activation_function_output("sigmoid_symmetric")
        neural.train(net, x, y, 30)
    return nets, x


def test_created_and_trained_nets_load_in_c_fann(lib, tmp_path):
    nets, x = _trained_nets()
    for name, net in nets.items():
        path = tmp_path / f"{name}.net"
        neural.save(net, path)
        with cfann.CNet(lib, path) as theirs:
            assert theirs.total_connections == net.total_connections, name
            # C FANN keeps weights in float32, hence the looser tolerance.
            np.testing.assert_allclose(
                theirs.run(x), net.run(x), rtol=0, atol=1e-5, err_msg=name
            )


@pytest.mark.parametrize(
    "algorithm, epochs",
    [
        (neural.TrainingAlgorithm.INCREMENTAL, 5),
        (neural.TrainingAlgorithm.BATCH, 15),
        (neural.TrainingAlgorithm.QUICKPROP, 15),
        (neural.TrainingAlgorithm.SARPROP, 10),
    ],
)
@pytest.mark.parametrize("run", ["diabetes_e200", "robot_e200"])
def test_algorithms_follow_c_fann_epoch_by_epoch(
    lib, fann_datasets, tmp_path, algorithm, epochs, run
):
    name = run.split("_")[0]
    text = (fann_datasets / "reference/nets" / f"{run}.init.net").read_text()
    text = text.replace("training_algorithm=2", f"training_algorithm={int(algorithm)}")
    path = tmp_path / "start.net"
    path.write_text(text)
    train_path = fann_datasets / f"{name}.train"
    with cfann.CNet(lib, path) as theirs, cfann.CData(lib, train_path) as data:
        expected = np.array([theirs.train_epoch(data) for _ in range(epochs)])
    net = neural.loads(text)
    train = neural.read_data(train_path)
    result = neural.train(
        net,
        train.inputs.astype(np.float32),
        train.outputs.astype(np.float32),
        epochs,
        desired_error=-1,
    )
    got = np.array([h.mse for h in result.history])
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("kind", ["sparse", "shortcut"])
def test_sparse_and_shortcut_training_follow_c_fann(lib, fann_datasets, tmp_path, kind):
    rng = np.random.default_rng(5)
    if kind == "sparse":
        net = neural.create_sparse(0.5, (8, 10, 2), rng)
    else:
        net = neural.create_shortcut((8, 5, 3, 2), rng)
    net.set_activation_function_hidden("sigmoid_symmetric")
    net.set_activation_function_output("sigmoid")
    path = tmp_path / "start.net"
    neural.save(net, path)
    train_path = fann_datasets / "diabetes.train"
    with cfann.CNet(lib, path) as theirs, cfann.CData(lib, train_path) as data:
        expected = np.array([theirs.train_epoch(data) for _ in range(15)])
    train = neural.read_data(train_path)
    result = neural.train(
        neural.load(path),
        train.inputs.astype(np.float32),
        train.outputs.astype(np.float32),
        15,
        desired_error=-1,
    )
    got = np.array([h.mse for h in result.history])
    np.testing.assert_allclose(got, expected, rtol=1e-4)
