"""Activation functions, their derivatives and whole-network gradients."""

from __future__ import annotations

import numpy as np
import pytest

import neural
from neural.activations import (
    SYMMETRIC,
    Activation,
    activate,
    derivative,
    parse_activation,
)
from neural.params import ErrorFunction
from neural.training import gradient

A = Activation
S = np.linspace(-3.0, 3.0, 61)

# Independent statements of each function of the clipped sum s.
EXPECTED = {
    A.LINEAR: lambda s: s,
    A.THRESHOLD: lambda s: (s >= 0).astype(float),
    A.THRESHOLD_SYMMETRIC: lambda s: np.where(s >= 0, 1.0, -1.0),
    A.SIGMOID: lambda s: 1.0 / (1.0 + np.exp(-2.0 * s)),
    A.SIGMOID_SYMMETRIC: lambda s: 2.0 / (1.0 + np.exp(-2.0 * s)) - 1.0,
    A.GAUSSIAN: lambda s: np.exp(-s * s),
    A.GAUSSIAN_SYMMETRIC: lambda s: 2.0 * np.exp(-s * s) - 1.0,
    A.GAUSSIAN_STEPWISE: lambda s: np.zeros_like(s),
    A.ELLIOT: lambda s: 0.5 * s / (1.0 + np.abs(s)) + 0.5,
    A.ELLIOT_SYMMETRIC: lambda s: s / (1.0 + np.abs(s)),
    A.LINEAR_PIECE: lambda s: np.minimum(np.maximum(s, 0.0), 1.0),
    A.LINEAR_PIECE_SYMMETRIC: lambda s: np.minimum(np.maximum(s, -1.0), 1.0),
    A.SIN_SYMMETRIC: np.sin,
    A.COS_SYMMETRIC: np.cos,
    A.SIN: lambda s: 0.5 * np.sin(s) + 0.5,
    A.COS: lambda s: 0.5 * np.cos(s) + 0.5,
    A.LINEAR_PIECE_RECT: lambda s: np.maximum(s, 0.0),
    A.LINEAR_PIECE_RECT_LEAKY: lambda s: np.where(s < 0, 0.01 * s, s),
}


@pytest.mark.parametrize("act", sorted(EXPECTED))
def test_activation_matches_formula(act):
    np.testing.assert_allclose(activate(act, S.copy()), EXPECTED[act](S), atol=1e-12)


@pytest.mark.parametrize(
    "act, low, high",
    [(A.SIGMOID_STEPWISE, 0.0, 1.0), (A.SIGMOID_SYMMETRIC_STEPWISE, -1.0, 1.0)],
)
def test_stepwise_sigmoid_tracks_sigmoid(act, low, high):
    smooth = A.SIGMOID if act == A.SIGMOID_STEPWISE else A.SIGMOID_SYMMETRIC
    values = activate(act, S.copy())
    span = high - low
    np.testing.assert_allclose(values, activate(smooth, S.copy()), atol=0.04 * span)
    assert activate(act, np.array([-10.0]))[0] == low
    assert activate(act, np.array([10.0]))[0] == high
    # The breakpoints themselves are C FANN's, so sum 0 lands mid-range.
    assert activate(act, np.array([0.0]))[0] == pytest.approx((low + high) / 2)


def test_all_twenty_have_fann_ids():
    assert len(Activation) == 20
    assert parse_activation("FANN_SIGMOID_SYMMETRIC") == 5
    assert parse_activation("elliot") == 10
    assert parse_activation(19) == A.LINEAR_PIECE_RECT_LEAKY
    with pytest.raises(neural.NeuralError, match="unknown"):
        parse_activation("softmax")


def test_symmetric_set_is_minus_one_to_one():
    for act in Activation:
        values = activate(act, np.linspace(-5, 5, 101))
        if act in SYMMETRIC:
            assert values.min() < -0.5, act.name
        elif act not in (A.LINEAR, A.LINEAR_PIECE_RECT_LEAKY):
            assert values.min() >= 0.0, act.name


def _numeric_derivative(act, k, x, h=1e-6):
    def f(raw):
        return activate(act, np.clip(k * raw, -150 / k, 150 / k))

    return (f(x + h) - f(x - h)) / (2 * h)


def _fann_derivative(act, k, x):
    s = k * x
    return derivative(act, k, activate(act, s.copy()), s)


# Differentiable activations and the raw sums where C FANN's derivative is
# the true one: away from the kinks, and inside the sigmoid clip range.
SMOOTH = {
    A.LINEAR: np.linspace(-2, 2, 9),
    A.SIGMOID: np.linspace(-2, 2, 9),
    A.SIGMOID_SYMMETRIC: np.linspace(-2, 2, 9),
    A.GAUSSIAN: np.linspace(-2, 2, 9),
    A.GAUSSIAN_SYMMETRIC: np.linspace(-2, 2, 9),
    A.ELLIOT: np.linspace(-2, 2, 8),
    A.ELLIOT_SYMMETRIC: np.linspace(-2, 2, 8),
    A.LINEAR_PIECE: np.linspace(0.1, 0.9, 5),
    A.LINEAR_PIECE_SYMMETRIC: np.linspace(-0.9, 0.9, 5),
    A.SIN_SYMMETRIC: np.linspace(-2, 2, 9),
    A.COS_SYMMETRIC: np.linspace(-2, 2, 9),
    A.SIN: np.linspace(-2, 2, 9),
    A.COS: np.linspace(-2, 2, 9),
    A.LINEAR_PIECE_RECT: np.linspace(0.1, 2, 5),
    A.LINEAR_PIECE_RECT_LEAKY: np.array([-2.0, -0.5, 0.5, 2.0]),
}
# C FANN scales these by the steepness twice; exact only at steepness 1.
DOUBLE_STEEPNESS = {
    A.GAUSSIAN,
    A.GAUSSIAN_SYMMETRIC,
    A.SIN_SYMMETRIC,
    A.COS_SYMMETRIC,
    A.SIN,
    A.COS,
}


@pytest.mark.parametrize("act", sorted(SMOOTH))
def test_derivative_matches_finite_difference(act):
    x = SMOOTH[act]
    for k in (1.0, 0.7):
        if k != 1.0 and act in DOUBLE_STEEPNESS:
            continue
        expected = _numeric_derivative(act, k, x / k)
        np.testing.assert_allclose(
            _fann_derivative(act, k, x / k), expected, rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize("act", sorted(DOUBLE_STEEPNESS))
def test_derivative_keeps_fann_double_steepness(act):
    k = 0.7
    x = SMOOTH[act] / k
    fann = _fann_derivative(act, k, x)
    if act in (A.GAUSSIAN, A.GAUSSIAN_SYMMETRIC):
        expected = k * _numeric_derivative(act, k, x)
    else:
        # sin/cos: C FANN evaluates the true derivative at k * x.
        expected = _numeric_derivative(act, k, k * x)
    np.testing.assert_allclose(fann, expected, rtol=1e-5, atol=1e-7)


def test_sigmoid_derivative_clips_output():
    value = np.array([0.0, 1.0])
    d = derivative(A.SIGMOID, 0.5, value, np.zeros(2))
    np.testing.assert_allclose(d, 2 * 0.5 * 0.01 * 0.99)


def test_threshold_cannot_be_trained():
    net = neural.create_standard((2, 2, 1), np.random.default_rng(0))
    net.set_activation_function_hidden("threshold")
    with pytest.raises(neural.NeuralError, match="THRESHOLD"):
        neural.train(net, np.zeros((1, 2)), np.zeros((1, 1)), 1)


def _loss(net, x, t):
    diff = t - net.run(x)
    symmetric = net.output_symmetric()
    diff[:, symmetric] /= 2
    weight = np.where(symmetric, 1.0, 0.5)
    return float(np.sum(diff * diff * weight))


def _check_gradient(net, seed):
    rng = np.random.default_rng(seed)
    net.set_params(train_error_function=ErrorFunction.LINEAR)
    x = rng.uniform(-1, 1, (5, net.num_inputs))
    t = rng.uniform(-0.5, 0.5, (5, net.num_outputs))
    net.set_weights(rng.uniform(-0.5, 0.5, net.total_connections))
    slopes, _, _ = gradient(net, x, t)
    numeric = np.empty_like(slopes)
    base = net.weights.copy()
    h = 1e-6
    for index in range(base.size):
        w = base.copy()
        w[index] += h
        net.set_weights(w)
        up = _loss(net, x, t)
        w[index] -= 2 * h
        net.set_weights(w)
        numeric[index] = (up - _loss(net, x, t)) / (2 * h)
    net.set_weights(base)
    # Slopes are the negative gradient of the loss.
    np.testing.assert_allclose(slopes, -numeric, rtol=1e-4, atol=1e-7)


HIDDEN = [
    A.SIGMOID_SYMMETRIC,
    A.SIGMOID,
    A.GAUSSIAN,
    A.ELLIOT_SYMMETRIC,
    A.SIN,
    A.COS_SYMMETRIC,
    A.LINEAR,
]


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output", [A.LINEAR, A.SIGMOID_SYMMETRIC, A.ELLIOT])
def test_layered_gradient_matches_finite_difference(hidden, output):
    net = neural.create_standard((3, 4, 3, 2), np.random.default_rng(1))
    net.set_activation_function_hidden(hidden)
    net.set_activation_function_output(output)
    net.set_activation_steepness_hidden(1.0)
    net.set_activation_steepness_output(1.0 if output == A.LINEAR else 0.5)
    _check_gradient(net, seed=int(hidden) * 10 + int(output))


@pytest.mark.parametrize("hidden", [A.SIGMOID_SYMMETRIC, A.GAUSSIAN_SYMMETRIC])
def test_shortcut_gradient_matches_finite_difference(hidden):
    net = neural.create_shortcut((3, 3, 2, 2), np.random.default_rng(2))
    net.set_activation_function_hidden(hidden)
    net.set_activation_function_output(A.SIGMOID)
    net.set_activation_steepness_hidden(1.0)
    _check_gradient(net, seed=3)


def test_sparse_gradient_matches_finite_difference():
    net = neural.create_sparse(0.5, (5, 6, 3), np.random.default_rng(4))
    net.set_activation_function_hidden(A.SIGMOID_SYMMETRIC)
    net.set_activation_function_output(A.LINEAR)
    _check_gradient(net, seed=5)


def test_mixed_activations_in_one_layer_gradient():
    net = neural.create_standard((3, 4, 2), np.random.default_rng(6))
    net.set_activation_function_output(A.LINEAR)
    net.activation[4:8] = [A.SIGMOID_SYMMETRIC, A.ELLIOT, A.SIN_SYMMETRIC, A.LINEAR]
    net.steepness[4:8] = 1.0
    net._build()
    _check_gradient(net, seed=7)
