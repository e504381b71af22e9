"""Network structure, creation and the forward pass."""

from __future__ import annotations

import numpy as np
import pytest

import neural
from neural import NetworkType, NeuralError

RUNS = [
    f"{name}_e{epochs}"
    for name in ("xor", "diabetes", "thyroid", "robot", "mushroom")
    for epochs in (200, 1000)
]


def _test_set(root, run):
    name = run.split("_")[0]
    return neural.read_data(root / ("xor.data" if name == "xor" else f"{name}.test"))


def _reference_outputs(root, run):
    path = root / "reference/out" / f"{run}.test_out.txt"
    with path.open() as handle:
        rows, outputs = map(int, handle.readline().split())
        values = np.loadtxt(handle, ndmin=2)
    assert values.shape == (rows, outputs)
    return values


@pytest.mark.parametrize("run", RUNS)
def test_reference_outputs_within_1e5(fann_datasets, run):
    net = neural.load(fann_datasets / "reference/nets" / f"{run}.net")
    data = _test_set(fann_datasets, run)
    expected = _reference_outputs(fann_datasets, run)
    got = net.run(data.inputs)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-5


@pytest.mark.parametrize("run", RUNS)
def test_float32_run_within_5e5(fann_datasets, run):
    net = neural.load(fann_datasets / "reference/nets" / f"{run}.net")
    data = _test_set(fann_datasets, run)
    expected = _reference_outputs(fann_datasets, run)
    got = net.run(data.inputs, dtype=np.float32)
    assert got.dtype == np.float32
    # Float32 sums in another order than C FANN's: 1.6e-5 on mushroom_e200.
    assert np.max(np.abs(got - expected)) <= 5e-5
    assert net.run(data.inputs[0], dtype=np.float32).dtype == np.float32


def test_run_rejects_other_dtypes():
    net = neural.create_standard((2, 2, 1))
    with pytest.raises(NeuralError, match="float64 or float32"):
        net.run(np.zeros((1, 2)), dtype=np.int32)


@pytest.mark.parametrize("run", ["thyroid_e200", "robot_e200", "xor_e200"])
def test_single_row_equals_batch(fann_datasets, run):
    net = neural.load(fann_datasets / "reference/nets" / f"{run}.net")
    x = _test_set(fann_datasets, run).inputs[:20]
    batch = net.run(x)
    rows = np.array([net.run(row) for row in x])
    np.testing.assert_allclose(rows, batch, rtol=0, atol=1e-12)
    assert net.run(x[0]).shape == (net.num_outputs,)


def test_run_rejects_wrong_width():
    net = neural.create_standard((3, 2, 1), np.random.default_rng(0))
    with pytest.raises(NeuralError, match="expected 3 inputs, got 4"):
        net.run(np.zeros(4))
    with pytest.raises(NeuralError, match=r"shape \(rows, 3\)"):
        net.run(np.zeros((2, 5)))


def test_create_standard_counts_like_fann():
    net = neural.create_standard((2, 3, 1), np.random.default_rng(0))
    assert net.layer_neurons == (3, 4, 2)
    assert net.total_connections == 3 * 3 + 4 * 1
    assert net.num_inputs == 2
    assert net.num_outputs == 1
    assert np.all(np.abs(net.weights) <= 0.1)
    # Bias neurons (0, 0, 0) until a setter touches their layer.
    assert net.activation[2] == 0
    assert net.activation[3] == neural.Activation.SIGMOID_STEPWISE


def test_create_matches_fann_file_layout(fann_datasets):
    reference = neural.load(fann_datasets / "reference/nets/xor_e200.init.net")
    net = neural.create_standard((2, 3, 1), np.random.default_rng(0))
    net.set_activation_function_hidden("sigmoid_symmetric")
    net.set_activation_function_output("sigmoid_symmetric")
    net.set_weights(reference.weights)
    assert neural.dumps(net) == neural.dumps(reference)


def test_create_standard_is_seeded():
    a = neural.create_standard((4, 5, 2), np.random.default_rng(7))
    b = neural.create_standard((4, 5, 2), np.random.default_rng(7))
    np.testing.assert_array_equal(a.weights, b.weights)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_create_sparse_structure(rate):
    sizes = (10, 8, 4)
    net = neural.create_sparse(rate, sizes, np.random.default_rng(3))
    assert net.connection_rate == rate
    assert net.total_connections < neural.create_standard(sizes).total_connections
    bounds = np.cumsum((0, *net.layer_neurons))
    con = 0
    for layer in (1, 2):
        prev = range(bounds[layer - 1], bounds[layer])
        fed = set()
        for neuron in range(bounds[layer], bounds[layer + 1] - 1):
            count = net.num_inputs_per_neuron[neuron]
            sources = net.sources[con : con + count].tolist()
            con += count
            assert sources[0] == prev[-1], "bias first, as C FANN"
            assert len(set(sources)) == len(sources)
            assert set(sources) <= set(prev)
            fed.update(sources)
        assert fed == set(prev), "every neuron of the previous layer feeds one"


def test_sparse_forward_equals_dense_with_zeros():
    sparse = neural.create_sparse(0.4, (6, 5, 3), np.random.default_rng(5))
    dense = neural.create_standard((6, 5, 3), np.random.default_rng(5))
    weights = np.zeros(dense.total_connections)
    bounds = np.cumsum((0, *dense.layer_neurons))
    con = 0
    for neuron in range(bounds[1], bounds[-1]):
        count = sparse.num_inputs_per_neuron[neuron]
        layer = int(np.searchsorted(bounds, neuron, side="right")) - 1
        prev_start, width = bounds[layer - 1], dense.layer_neurons[layer - 1]
        local = neuron - bounds[layer]
        for k in range(count):
            source = sparse.sources[con + k]
            weights[_dense_index(dense, layer, local, source - prev_start)] = (
                sparse.weights[con + k]
            )
        con += count
        assert width > 0
    dense.set_weights(weights)
    x = np.random.default_rng(1).uniform(-1, 1, (7, 6))
    np.testing.assert_allclose(sparse.run(x), dense.run(x), atol=1e-12)


def _dense_index(net, layer, local, column):
    start = sum(
        (net.layer_neurons[i] - 1) * net.layer_neurons[i - 1] for i in range(1, layer)
    )
    return start + local * net.layer_neurons[layer - 1] + column


def test_shortcut_forward_by_hand():
    net = neural.create_shortcut((2, 2, 1), np.random.default_rng(4))
    assert net.network_type == NetworkType.SHORTCUT
    assert net.layer_neurons == (3, 2, 1)
    assert net.total_connections == 2 * 3 + 1 * 5
    net.set_activation_function_hidden("sigmoid_symmetric")
    net.set_activation_function_output("linear")
    net.set_activation_steepness_output(1.0)
    w = net.weights
    x = np.array([0.3, -0.7])
    v = np.array([*x, 1.0])
    hidden = np.tanh(0.5 * (w[:6].reshape(2, 3) @ v))
    out = w[6:] @ np.array([*v, *hidden])
    np.testing.assert_allclose(net.run(x), [out], atol=1e-12)


def test_steepness_must_be_positive():
    net = neural.create_standard((2, 2, 1))
    with pytest.raises(NeuralError, match="steepness"):
        net.set_activation_steepness_hidden(0.0)


def test_sum_clipped_at_150_over_steepness():
    net = neural.create_standard((1, 1), np.random.default_rng(0))
    net.set_activation_function_output("linear")
    net.set_weights(np.array([1e6, 0.0]))
    assert net.run(np.array([1.0]))[0] == pytest.approx(150 / 0.5)


def test_widrow_nguyen_ranges():
    net = neural.create_standard((4, 6, 2), np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(-2, 2, (50, 4))
    net.init_weights(x, np.random.default_rng(2))
    # C FANN's count: all neurons (biases too) - inputs - outputs - layers.
    hidden = 15 - (4 + 2 + 3)
    factor = (0.7 * hidden) ** (1 / 4) / (x.max() - x.min())
    bias = np.isin(net.sources, [4, 11])
    assert np.all(net.weights[~bias] >= 0)
    assert np.all(net.weights[~bias] < factor)
    assert np.all(np.abs(net.weights[bias]) <= factor)
    assert np.any(net.weights[bias] < 0)


def test_scaling_round_trip(fann_datasets):
    data = neural.read_data(fann_datasets / "scaling.data")
    net = neural.create_standard((3, 4, 1), np.random.default_rng(0))
    net.set_scaling_params(data.inputs, data.outputs, (-1, 1), (0, 1))
    scaled = net.scale_input(data.inputs)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(net.descale_input(scaled), data.inputs, rtol=1e-12)
    y = net.scale_output(data.outputs)
    np.testing.assert_allclose(y.mean(axis=0), 0.5, atol=1e-9)
    np.testing.assert_allclose(net.descale_output(y), data.outputs, rtol=1e-12)
    again = neural.loads(neural.dumps(net))
    assert again.scale is not None
    np.testing.assert_allclose(again.scale.mean_in, net.scale.mean_in, atol=1e-6)


def test_test_reports_fann_mse_and_bit_fail(fann_datasets):
    net = neural.load(fann_datasets / "reference/nets/thyroid_e200.net")
    data = neural.read_data(fann_datasets / "thyroid.test")
    mse, bit_fail = net.test(data.inputs, data.outputs)
    # The reference table for this run: test MSE 0.01038, bit fail 174.
    assert mse == pytest.approx(0.01038, rel=1e-3)
    assert bit_fail == 174


@pytest.mark.parametrize("kind", ["standard", "shortcut"])
def test_single_row_run_from_many_threads(kind):
    import threading

    create = neural.create_standard if kind == "standard" else neural.create_shortcut
    net = create((8, 16, 4), np.random.default_rng(0))
    net.set_activation_function_hidden("sigmoid_symmetric")
    rows = np.random.default_rng(1).uniform(-1, 1, (200, 8))
    expected = net.run(rows)
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        order = np.random.default_rng(index).permutation(len(rows))
        got = np.empty_like(expected)
        for _ in range(5):
            for row in order:
                got[row] = net.run(rows[row])
        results[index] = got

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for got in results.values():
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_blas_thread_limit_nests_and_restores():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from neural._threads import single_blas_thread

    def blas_threads():
        infos = threadpoolctl.threadpool_info()
        return [i["num_threads"] for i in infos if i["user_api"] == "blas"]

    before = blas_threads()
    with single_blas_thread():
        assert set(blas_threads()) <= {1}
        with single_blas_thread():
            assert set(blas_threads()) <= {1}
        assert set(blas_threads()) <= {1}
    assert blas_threads() == before
