"""FANN's 20 activation functions and the derivatives its training uses.

Public API:
    ``Activation`` (IntEnum with FANN's ids), ``parse_activation(name) ->
    Activation``, ``activate(act_id, s, out=None)``,
    ``derivative(act_id, steepness, value, s)``, ``SYMMETRIC`` (frozenset of
    ids whose output range is [-1, 1]), ``TRAINABLE`` (ids that training
    accepts).

A neuron computes ``s = steepness * sum(w * x)``, clips ``s`` to
``+-150 / steepness`` and then applies the function to ``s`` (C FANN 2.2.0,
``fann_run``). Training derives from the output value (and ``s``), exactly
as C FANN does, including two of its quirks that are kept on purpose so
that training follows C FANN's trajectory:

* the sigmoid derivatives clip the output to [0.01, 0.99] (symmetric:
  [-0.98, 0.98]) first, so they never reach zero;
* GAUSSIAN, GAUSSIAN_SYMMETRIC, SIN*, COS* multiply by the steepness once
  more than the true derivative does (C FANN passes the already-scaled sum
  to a formula that scales it again). With steepness 1 they are exact.

Stepwise sigmoids use the sigmoid's derivative, the linear pieces return the
steepness even where they are flat, and GAUSSIAN_STEPWISE outputs 0 in the
float build of C FANN 2.2.0; all three are reproduced as they are.
"""

from __future__ import annotations

import enum
from typing import Final

import numpy as np

from neural import NeuralError


class Activation(enum.IntEnum):
    """Activation function ids as C FANN numbers them in files."""

    LINEAR = 0
    THRESHOLD = 1
    THRESHOLD_SYMMETRIC = 2
    SIGMOID = 3
    SIGMOID_STEPWISE = 4
    SIGMOID_SYMMETRIC = 5
    SIGMOID_SYMMETRIC_STEPWISE = 6
    GAUSSIAN = 7
    GAUSSIAN_SYMMETRIC = 8
    GAUSSIAN_STEPWISE = 9
    ELLIOT = 10
    ELLIOT_SYMMETRIC = 11
    LINEAR_PIECE = 12
    LINEAR_PIECE_SYMMETRIC = 13
    SIN_SYMMETRIC = 14
    COS_SYMMETRIC = 15
    SIN = 16
    COS = 17
    LINEAR_PIECE_RECT = 18
    LINEAR_PIECE_RECT_LEAKY = 19


NUM_ACTIVATIONS: Final = len(Activation)

# Outputs in [-1, 1]: C FANN halves target - output for these before it
# squares, counts or backpropagates the difference (fann_update_MSE).
SYMMETRIC: Final = frozenset(
    {
        Activation.THRESHOLD_SYMMETRIC,
        Activation.SIGMOID_SYMMETRIC,
        Activation.SIGMOID_SYMMETRIC_STEPWISE,
        Activation.GAUSSIAN_SYMMETRIC,
        Activation.ELLIOT_SYMMETRIC,
        Activation.LINEAR_PIECE_SYMMETRIC,
        Activation.SIN_SYMMETRIC,
        Activation.COS_SYMMETRIC,
    }
)

# C FANN refuses to train through a threshold; its symmetric twin silently
# gets a zero derivative there, which we reject as well.
TRAINABLE: Final = frozenset(Activation) - {
    Activation.THRESHOLD,
    Activation.THRESHOLD_SYMMETRIC,
}

# Breakpoints of the stepwise sigmoids, the float32 constants of C FANN 2.2.0
# written out as doubles. Below the first breakpoint the output is the
# function's minimum and from the last one on its maximum.
_STEP_SUMS: Final = np.array(
    [
        -2.64665246009826660156e00,
        -1.47221946716308593750e00,
        -5.49306154251098632812e-01,
        5.49306154251098632812e-01,
        1.47221934795379638672e00,
        2.64665293693542480469e00,
    ]
)
_STEP_SUMS_SYM: Final = np.array(
    [
        -2.64665293693542480469e00,
        -1.47221934795379638672e00,
        -5.49306154251098632812e-01,
        5.49306154251098632812e-01,
        1.47221934795379638672e00,
        2.64665293693542480469e00,
    ]
)
_STEP_OUT: Final = np.array(
    [
        4.99999988824129104614e-03,
        5.00000007450580596924e-02,
        2.50000000000000000000e-01,
        7.50000000000000000000e-01,
        9.49999988079071044922e-01,
        9.95000004768371582031e-01,
    ]
)
_STEP_OUT_SYM: Final = np.array(
    [
        -9.90000009536743164062e-01,
        -8.99999976158142089844e-01,
        -5.00000000000000000000e-01,
        5.00000000000000000000e-01,
        8.99999976158142089844e-01,
        9.90000009536743164062e-01,
    ]
)


def parse_activation(name: str | int) -> Activation:
    """Return the activation for a FANN name or id.

    Accepts ``"SIGMOID_SYMMETRIC"``, ``"sigmoid_symmetric"``,
    ``"FANN_SIGMOID_SYMMETRIC"`` or the number ``5``.

    Raises:
        NeuralError: the name or id is not one of FANN's 20 functions.
    """
    if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
        try:
            return Activation(int(name))
        except ValueError:
            raise NeuralError(
                f"activation id {name} is invalid: expected 0..{NUM_ACTIVATIONS - 1}"
            ) from None
    key = name.strip().upper().replace("-", "_")
    key = key.removeprefix("FANN_")
    try:
        return Activation[key]
    except KeyError:
        names = ", ".join(a.name for a in Activation)
        raise NeuralError(
            f"activation {name!r} is unknown: expected one of {names}"
        ) from None


def _stepwise(s: np.ndarray, sums, outs, low: float, high: float, out):
    result = np.interp(s, sums, outs)
    result[s < sums[0]] = low
    result[s >= sums[-1]] = high
    if out is None:
        return result
    out[...] = result
    return out


def activate(act: int, s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Apply activation `act` to the clipped, steepness-scaled sums `s`.

    Writes into `out` when given (it may be `s` itself) and returns it.
    """
    if out is None:
        out = np.empty_like(s)
    if act == Activation.SIGMOID_SYMMETRIC:
        return np.tanh(s, out=out)
    if act == Activation.SIGMOID:
        # exp overflows to inf for s < -355 (possible with a steepness below
        # 0.42), which correctly gives 0.
        with np.errstate(over="ignore"):
            np.multiply(s, -2.0, out=out)
            np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
        return out
    if act == Activation.LINEAR:
        if out is not s:
            out[...] = s
        return out
    if act == Activation.SIGMOID_STEPWISE:
        return _stepwise(s, _STEP_SUMS, _STEP_OUT, 0.0, 1.0, out)
    if act == Activation.SIGMOID_SYMMETRIC_STEPWISE:
        return _stepwise(s, _STEP_SUMS_SYM, _STEP_OUT_SYM, -1.0, 1.0, out)
    return _activate_other(act, s, out)


def _activate_other(act: int, s: np.ndarray, out: np.ndarray) -> np.ndarray:
    if act == Activation.THRESHOLD:
        out[...] = np.where(s < 0, 0.0, 1.0)
    elif act == Activation.THRESHOLD_SYMMETRIC:
        out[...] = np.where(s < 0, -1.0, 1.0)
    elif act == Activation.GAUSSIAN:
        out[...] = np.exp(-s * s)
    elif act == Activation.GAUSSIAN_SYMMETRIC:
        out[...] = np.exp(-s * s) * 2.0 - 1.0
    elif act == Activation.GAUSSIAN_STEPWISE:
        out[...] = 0.0
    elif act == Activation.ELLIOT:
        out[...] = s / 2.0 / (1.0 + np.abs(s)) + 0.5
    elif act == Activation.ELLIOT_SYMMETRIC:
        out[...] = s / (1.0 + np.abs(s))
    elif act == Activation.LINEAR_PIECE:
        np.clip(s, 0.0, 1.0, out=out)
    elif act == Activation.LINEAR_PIECE_SYMMETRIC:
        np.clip(s, -1.0, 1.0, out=out)
    elif act == Activation.SIN_SYMMETRIC:
        np.sin(s, out=out)
    elif act == Activation.COS_SYMMETRIC:
        np.cos(s, out=out)
    elif act == Activation.SIN:
        out[...] = np.sin(s) / 2.0 + 0.5
    elif act == Activation.COS:
        out[...] = np.cos(s) / 2.0 + 0.5
    elif act == Activation.LINEAR_PIECE_RECT:
        np.maximum(s, 0.0, out=out)
    elif act == Activation.LINEAR_PIECE_RECT_LEAKY:
        out[...] = np.where(s < 0, 0.01 * s, s)
    else:
        raise NeuralError(f"activation id {act} is invalid")
    return out


def derivative(
    act: int, steepness: np.ndarray | float, value: np.ndarray, s: np.ndarray
) -> np.ndarray:
    """Return d(output)/d(raw sum) the way C FANN's training computes it.

    Args:
        act: activation id.
        steepness: the neurons' steepness, broadcastable to `value`.
        value: the neurons' outputs, shape (rows, neurons).
        s: the clipped, steepness-scaled sums that produced `value`.
    """
    k = steepness
    # The two sigmoid cases run every epoch, so they work in place.
    if act in (Activation.SIGMOID_SYMMETRIC, Activation.SIGMOID_SYMMETRIC_STEPWISE):
        v = np.minimum(value, 0.98)
        np.maximum(v, -0.98, out=v)
        np.multiply(v, v, out=v)
        np.subtract(1.0, v, out=v)
        v *= k
        return v
    if act in (Activation.SIGMOID, Activation.SIGMOID_STEPWISE):
        v = np.minimum(value, 0.99)
        np.maximum(v, 0.01, out=v)
        d = np.subtract(1.0, v)
        d *= v
        d *= 2.0 * k
        return d
    if act in (
        Activation.LINEAR,
        Activation.LINEAR_PIECE,
        Activation.LINEAR_PIECE_SYMMETRIC,
    ):
        return np.broadcast_to(np.asarray(k, dtype=float), value.shape).copy()
    if act == Activation.LINEAR_PIECE_RECT:
        return np.where(value < 0, 0.0, k * np.ones_like(value))
    if act == Activation.LINEAR_PIECE_RECT_LEAKY:
        return np.where(value < 0, 0.01 * k * np.ones_like(value), k)
    if act == Activation.GAUSSIAN:
        return -2.0 * s * value * k * k
    if act == Activation.GAUSSIAN_SYMMETRIC:
        return -2.0 * s * (value + 1.0) * k * k
    if act == Activation.ELLIOT:
        d = 1.0 + np.abs(s)
        return k / (2.0 * d * d)
    if act == Activation.ELLIOT_SYMMETRIC:
        d = 1.0 + np.abs(s)
        return k / (d * d)
    if act == Activation.SIN_SYMMETRIC:
        return k * np.cos(k * s)
    if act == Activation.COS_SYMMETRIC:
        return -k * np.sin(k * s)
    if act == Activation.SIN:
        return k * np.cos(k * s) / 2.0
    if act == Activation.COS:
        return -k * np.sin(k * s) / 2.0
    if act == Activation.GAUSSIAN_STEPWISE:
        return np.zeros_like(value)
    raise NeuralError(
        f"activation {Activation(act).name} cannot be trained: it has no derivative"
    )
