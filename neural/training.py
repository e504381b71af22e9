"""Training: C FANN's five algorithms over whole-epoch matrix products.

Public API:
    ``train(net, inputs, outputs, max_epochs, desired_error=0.0,
    on_epoch=None, trainer=None, rng=None) -> TrainResult`` where
    ``on_epoch(epoch, mse, bit_fail)`` may return False to stop;
    ``make_trainer(net, rng=None) -> Trainer``; trainer classes
    ``IncrementalTrainer``, ``BatchTrainer``, ``RpropTrainer``,
    ``QuickpropTrainer``, ``SarpropTrainer``, each with
    ``epoch(net, inputs, outputs) -> EpochStats``;
    ``gradient(net, inputs, outputs) -> (slopes, mse_sum, bit_fail)``;
    ``output_errors(net, y, t)``; ``TrainingDiverged``.

Every algorithm follows C FANN 2.2.0 (``fann_train_epoch_*``): one pass
over the rows in order computes the MSE and bit-fail count with the weights
as they were before the pass, and the summed slopes; then the update rule
runs once (incremental training instead updates after every row). Slopes
are ``sum(delta * input)``, the negative gradient of the error.

Errors (``fann_compute_MSE``): ``d = target - output``, halved for
symmetric output activations; MSE adds ``d**2`` and bit fail counts
``|d| >= bit_fail_limit``; with the TANH error function the backpropagated
error is ``log((1 + d) / (1 - d))``, +-17 beyond +-0.9999999.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neural import NeuralError
from neural._threads import single_blas_thread
from neural.activations import TRAINABLE, Activation, derivative
from neural.network import Network
from neural.params import ErrorFunction, NetworkType, StopFunction, TrainingAlgorithm

# Weights are clamped to +-1500 by RPROP and Quickprop (C FANN 2.2.0).
WEIGHT_LIMIT = 1500.0


class TrainingDiverged(NeuralError):
    """Training produced a non-finite value; the last finite weights stay."""


@dataclass(frozen=True, slots=True)
class EpochStats:
    """MSE and bit fail measured during one epoch, before its update."""

    mse: float
    bit_fail: int


@dataclass(frozen=True, slots=True)
class TrainResult:
    """Outcome of ``train``."""

    epochs: int
    mse: float
    bit_fail: int
    reached: bool
    history: tuple[EpochStats, ...]


def output_errors(net: Network, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Return target - output, halved where the output is symmetric."""
    diff = t - y
    symmetric = net.output_symmetric()
    if symmetric.all():
        diff *= 0.5
    elif symmetric.any():
        diff[:, symmetric] *= 0.5
    return diff


def _tanh_error(diff: np.ndarray) -> np.ndarray:
    # C FANN stores d in float32 when it tests it against +-0.9999999, so
    # a d of 0.99999995 already counts as saturated there. Testing the
    # float32-rounded value keeps a saturated output's error at 17 as in C.
    rounded = diff.astype(np.float32)
    inside = np.clip(diff, -0.9999999, 0.9999999)
    err = np.log((1.0 + inside) / (1.0 - inside))
    err[rounded < -0.9999999] = -17.0
    err[rounded > 0.9999999] = 17.0
    return err


def _layer_derivative(net: Network, layer, s: np.ndarray, v: np.ndarray):
    if len(layer.groups) == 1:
        return derivative(layer.groups[0][0], layer.steepness, v, s)
    steep = np.broadcast_to(layer.steepness, (layer.count,))
    out = np.empty_like(v)
    for act, cols in layer.groups:
        out[:, cols] = derivative(act, steep[cols], v[:, cols], s[:, cols])
    return out


def check_trainable(net: Network) -> None:
    """Raise NeuralError if a neuron's activation has no derivative."""
    for layer in net._layers:
        for act, _ in layer.groups:
            if act not in TRAINABLE:
                raise NeuralError(
                    f"activation {Activation(act).name} in the layer starting at "
                    f"neuron {layer.first} cannot be trained"
                )


def gradient(
    net: Network, inputs: np.ndarray, outputs: np.ndarray
) -> tuple[np.ndarray, float, int]:
    """Return (slopes summed over rows, sum of squared errors, bit fail).

    `slopes` is in the flat weight order of ``net.weights``.
    """
    trace = net.forward(inputs)
    y = trace[-1][1]
    diff = output_errors(net, y, outputs)
    sq_sum = float(np.einsum("ij,ij->", diff, diff))
    bit_fail = int(np.count_nonzero(np.abs(diff) >= net.params.bit_fail_limit))
    if net.params.train_error_function == ErrorFunction.TANH:
        diff = _tanh_error(diff)
    layers = net._layers
    slopes = np.empty(net.total_connections)
    s, v = trace[-1]
    delta = diff * _layer_derivative(net, layers[-1], s, v)
    if net.network_type == NetworkType.LAYER:
        _backprop_layered(net, inputs, trace, delta, slopes)
    else:
        _backprop_shortcut(net, trace, delta, slopes)
    return slopes, sq_sum, bit_fail


def _store(layer, grad: np.ndarray, slopes: np.ndarray) -> None:
    if layer.positions is None:
        slopes[layer.con] = grad.ravel()
    else:
        slopes[layer.con] = grad.ravel()[layer.positions]


def _backprop_layered(net, inputs, trace, delta, slopes) -> None:
    layers = net._layers
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        prev = inputs if index == 0 else trace[index - 1][1]
        grad = np.empty((layer.count, layer.width))
        np.matmul(delta.T, prev, out=grad[:, :-1])
        grad[:, -1] = delta.sum(axis=0)
        _store(layer, grad, slopes)
        if index == 0:
            break
        # The error does not flow into the input layer, as in C FANN.
        below = layers[index - 1]
        s, v = trace[index - 1]
        err = delta @ layer.matrix[:, :-1]
        err *= _layer_derivative(net, below, s, v)
        delta = err


def _backprop_shortcut(net, trace, delta, slopes) -> None:
    layers = net._layers
    values = net._shortcut_values
    hidden_start = net.num_inputs + 1
    errors = np.zeros((values.shape[0], net.total_neurons))
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if index < len(layers) - 1:
            s, v = trace[index]
            cols = slice(layer.first, layer.first + layer.count)
            delta = errors[:, cols] * _layer_derivative(net, layer, s, v)
        grad = delta.T @ values[:, : layer.width]
        _store(layer, grad, slopes)
        if layer.width > hidden_start:
            errors[:, hidden_start : layer.width] += (
                delta @ layer.matrix[:, hidden_start:]
            )


def _to_float32(values: np.ndarray) -> np.ndarray:
    # A value past float32's range becomes inf, which _apply then rejects.
    with np.errstate(over="ignore"):
        return values.astype(np.float32).astype(np.float64)


class Trainer:
    """One training algorithm with its state across epochs.

    C FANN keeps weights, slopes and steps in float32. With
    `float32_state` (the default) the trainer rounds them to float32 after
    every update too, while the matrix products stay in float64. A run then
    follows C FANN's numbers as closely as float64 sums allow, and its
    chaotic later epochs stay statistically alike.
    """

    def __init__(self, net: Network, float32_state: bool = True) -> None:
        check_trainable(net)
        self.size = net.total_connections
        self.params = net.params
        self.float32_state = float32_state

    def epoch(
        self, net: Network, inputs: np.ndarray, outputs: np.ndarray
    ) -> EpochStats:
        """Train one epoch and return the MSE and bit fail measured in it."""
        slopes, sq_sum, bit_fail = gradient(net, inputs, outputs)
        stats = EpochStats(sq_sum / outputs.size, bit_fail)
        if self.float32_state:
            slopes = _to_float32(slopes)
        new = self.update(net.weights, slopes, len(inputs), stats)
        if self.float32_state:
            new = _to_float32(new)
            for name in ("steps", "prev_slopes"):
                if hasattr(self, name):
                    setattr(self, name, _to_float32(getattr(self, name)))
        _apply(net, new)
        return stats

    def update(self, w, slopes, rows, stats) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def _apply(net: Network, new: np.ndarray) -> None:
    if not np.all(np.isfinite(new)):
        bad = int(np.argmax(~np.isfinite(new)))
        raise TrainingDiverged(
            f"training produced a non-finite weight (connection {bad}); "
            "the weights from before this epoch were kept"
        )
    net._weights[...] = new
    net._sync()


class BatchTrainer(Trainer):
    """Batch backpropagation: ``w += slopes * learning_rate / rows``."""

    def update(self, w, slopes, rows, stats):
        return w + slopes * (self.params.learning_rate / rows)


class RpropTrainer(Trainer):
    """iRPROP- exactly as ``fann_update_weights_irpropm``."""

    def __init__(self, net: Network, float32_state: bool = True) -> None:
        super().__init__(net, float32_state)
        self.steps = np.full(self.size, self.params.rprop_delta_zero)
        self.prev_slopes = np.zeros(self.size)

    def update(self, w, slopes, rows, stats):
        p = self.params
        # A step never drops below 0.0001, or training would stall.
        prev = np.maximum(self.steps, 0.0001)
        grow = self.prev_slopes * slopes >= 0.0
        steps = np.where(
            grow,
            np.minimum(prev * p.rprop_increase_factor, p.rprop_delta_max),
            np.maximum(prev * p.rprop_decrease_factor, p.rprop_delta_min),
        )
        slopes = np.where(grow, slopes, 0.0)
        # A zero slope still moves the weight up by the step, as in C FANN.
        down = slopes < 0
        new = np.where(
            down,
            np.maximum(w - steps, -WEIGHT_LIMIT),
            np.minimum(w + steps, WEIGHT_LIMIT),
        )
        self.steps = steps
        self.prev_slopes = slopes
        return new


class QuickpropTrainer(Trainer):
    """Quickprop as ``fann_update_weights_quickprop``."""

    def __init__(self, net: Network, float32_state: bool = True) -> None:
        super().__init__(net, float32_state)
        self.steps = np.zeros(self.size)
        self.prev_slopes = np.zeros(self.size)

    def update(self, w, slopes, rows, stats):
        p = self.params
        epsilon = p.learning_rate / rows
        mu = p.quickprop_mu
        shrink = mu / (1.0 + mu)
        slope = slopes + p.quickprop_decay * w
        prev_step, prev_slope = self.steps, self.prev_slopes
        with np.errstate(divide="ignore", invalid="ignore"):
            quad = prev_step * slope / (prev_slope - slope)
        up = prev_step > 0.001
        down = prev_step < -0.001
        linear_up = np.where(slope > 0.0, epsilon * slope, 0.0)
        linear_down = np.where(slope < 0.0, epsilon * slope, 0.0)
        max_step = mu * prev_step
        step_up = linear_up + np.where(slope > shrink * prev_slope, max_step, quad)
        step_down = linear_down + np.where(slope < shrink * prev_slope, max_step, quad)
        steps = np.where(up, step_up, np.where(down, step_down, epsilon * slope))
        self.steps = steps
        self.prev_slopes = slope
        return np.clip(w + steps, -WEIGHT_LIMIT, WEIGHT_LIMIT)


class SarpropTrainer(Trainer):
    """SARPROP as ``fann_update_weights_sarprop``, noise from `rng`."""

    def __init__(
        self, net: Network, rng: np.random.Generator, float32_state: bool = True
    ) -> None:
        super().__init__(net, float32_state)
        self.rng = rng
        # C FANN clears the steps to 0 for every algorithm but RPROP.
        self.steps = np.zeros(self.size)
        self.prev_slopes = np.zeros(self.size)
        self.epoch_count = 0

    def update(self, w, slopes, rows, stats):
        p = self.params
        t = self.epoch_count
        prev = np.maximum(self.steps, 0.000001)
        slope = -slopes - w * 2.0 ** (
            -p.sarprop_temperature * t + p.sarprop_weight_decay_shift
        )
        same = self.prev_slopes * slope
        grow, shrink = same > 0.0, same < 0.0
        noise = (
            self.rng.random(self.size)
            * np.sqrt(stats.mse)
            * 2.0 ** (-p.sarprop_temperature * t + p.sarprop_step_error_shift)
        )
        grown = np.minimum(prev * p.rprop_increase_factor, p.rprop_delta_max)
        shrunk = np.where(
            prev < p.sarprop_step_error_threshold_factor * stats.mse,
            prev * p.rprop_decrease_factor + noise,
            np.maximum(prev * p.rprop_decrease_factor, 0.000001),
        )
        move = np.where(grow, grown, np.where(shrink, 0.0, prev))
        new = w + np.where(slope < 0.0, move, -move)
        steps = np.where(grow, grown, np.where(shrink, shrunk, 0.0))
        # C FANN leaves next_step unset when the sign product is zero, so
        # such a weight inherits the step of the previous weight in the loop
        # (0 at the start). We reproduce that to follow its trajectory.
        assigned = grow | shrink
        last = np.where(assigned, np.arange(self.size), -1)
        np.maximum.accumulate(last, out=last)
        steps = np.where(last >= 0, steps[np.maximum(last, 0)], 0.0)
        self.steps = steps
        self.prev_slopes = np.where(shrink, 0.0, slope)
        self.epoch_count += 1
        return new


class IncrementalTrainer(Trainer):
    """Per-row backpropagation with momentum (``fann_train`` per row)."""

    def __init__(self, net: Network, float32_state: bool = True) -> None:
        super().__init__(net, float32_state)
        self.deltas = np.zeros(self.size)

    def epoch(self, net, inputs, outputs) -> EpochStats:
        p = self.params
        total, fails = 0.0, 0
        for row in range(len(inputs)):
            slopes, sq_sum, bit_fail = gradient(
                net, inputs[row : row + 1], outputs[row : row + 1]
            )
            total += sq_sum
            fails += bit_fail
            self.deltas = p.learning_rate * slopes + p.learning_momentum * self.deltas
            new = net.weights + self.deltas
            _apply(net, _to_float32(new) if self.float32_state else new)
        return EpochStats(total / outputs.size, fails)


def make_trainer(net: Network, rng: np.random.Generator | None = None) -> Trainer:
    """Return the trainer for ``net.params.training_algorithm``."""
    algorithm = net.params.training_algorithm
    if algorithm == TrainingAlgorithm.RPROP:
        return RpropTrainer(net)
    if algorithm == TrainingAlgorithm.QUICKPROP:
        return QuickpropTrainer(net)
    if algorithm == TrainingAlgorithm.BATCH:
        return BatchTrainer(net)
    if algorithm == TrainingAlgorithm.INCREMENTAL:
        return IncrementalTrainer(net)
    if algorithm == TrainingAlgorithm.SARPROP:
        return SarpropTrainer(net, rng if rng is not None else np.random.default_rng())
    raise NeuralError(f"training_algorithm={int(algorithm)} is invalid: expected 0..4")


EpochCallback = Callable[[int, float, int], "bool | None"]


def train(
    net: Network,
    inputs: np.ndarray,
    outputs: np.ndarray,
    max_epochs: int,
    desired_error: float = 0.0,
    on_epoch: EpochCallback | None = None,
    trainer: Trainer | None = None,
    rng: np.random.Generator | None = None,
) -> TrainResult:
    """Train like ``fann_train_on_data``, with no shuffling.

    Stops after `max_epochs`, when the epoch's MSE (or bit fail count, with
    the BIT stop function) is <= `desired_error`, or when `on_epoch(epoch,
    mse, bit_fail)` returns False.

    Raises:
        TrainingDiverged: a non-finite MSE or weight appeared; the network
            keeps the last finite weights.
        NeuralError: data of the wrong shape or an untrainable network.
    """
    inputs = np.ascontiguousarray(inputs, dtype=np.float64)
    outputs = np.ascontiguousarray(outputs, dtype=np.float64)
    if inputs.ndim != 2 or inputs.shape[1] != net.num_inputs:
        raise NeuralError(
            f"training inputs must be rows x {net.num_inputs}, got {inputs.shape}"
        )
    if outputs.shape != (inputs.shape[0], net.num_outputs):
        raise NeuralError(
            f"training outputs must be {inputs.shape[0]} x {net.num_outputs}, "
            f"got {outputs.shape}"
        )
    if len(inputs) == 0:
        raise NeuralError("training data has no rows")
    if not (np.all(np.isfinite(inputs)) and np.all(np.isfinite(outputs))):
        raise NeuralError("training data must be finite (no NaN or inf)")
    if max_epochs < 0:
        raise NeuralError(f"max_epochs={max_epochs} must be >= 0")
    trainer = trainer or make_trainer(net, rng)
    with single_blas_thread():
        return _train_loop(
            net, inputs, outputs, max_epochs, desired_error, on_epoch, trainer
        )


def _train_loop(net, inputs, outputs, max_epochs, desired_error, on_epoch, trainer):
    by_bits = net.params.train_stop_function == StopFunction.BIT
    history: list[EpochStats] = []
    reached = False
    for epoch in range(1, max_epochs + 1):
        stats = trainer.epoch(net, inputs, outputs)
        if not np.isfinite(stats.mse):
            raise TrainingDiverged(f"MSE became {stats.mse} in epoch {epoch}")
        history.append(stats)
        error = stats.bit_fail if by_bits else stats.mse
        reached = error <= desired_error
        if on_epoch is not None and on_epoch(epoch, stats.mse, stats.bit_fail) is False:
            break
        if reached:
            break
    last = history[-1] if history else EpochStats(float("nan"), 0)
    return TrainResult(len(history), last.mse, last.bit_fail, reached, tuple(history))
