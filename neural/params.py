"""Parameters a FANN network carries in its file.

Public API: ``TrainingParams``, ``CascadeParams``, ``ScaleParams``,
``TrainingAlgorithm``, ``ErrorFunction``, ``StopFunction``, ``NetworkType``.

C FANN keeps its training parameters on the network and saves them in the
`.net` file; so does this engine, so a file survives load-then-save. Every
default is C FANN 2.2.0's (``fann_allocate_structure``). Parameters that C
FANN stores as float32 use the float32 value written out as a double, which
is what C FANN prints with ``%.20e``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from neural import NeuralError


def f32(value: float) -> float:
    """Return `value` rounded to float32, as C FANN stores it."""
    return float(np.float32(value))


class NetworkType(enum.IntEnum):
    """Layered (one bias per layer) or shortcut (every earlier neuron)."""

    LAYER = 0
    SHORTCUT = 1


class TrainingAlgorithm(enum.IntEnum):
    """FANN's training algorithm ids (``fann_train_enum``)."""

    INCREMENTAL = 0
    BATCH = 1
    RPROP = 2
    QUICKPROP = 3
    SARPROP = 4


class ErrorFunction(enum.IntEnum):
    """Error backpropagated from the outputs (``fann_errorfunc_enum``)."""

    LINEAR = 0
    TANH = 1


class StopFunction(enum.IntEnum):
    """Quantity compared with ``desired_error`` (``fann_stopfunc_enum``)."""

    MSE = 0
    BIT = 1


@dataclass(frozen=True, slots=True)
class TrainingParams:
    """Training parameters stored in a `.net` file, C FANN's defaults."""

    learning_rate: float = f32(0.7)
    learning_momentum: float = 0.0
    training_algorithm: TrainingAlgorithm = TrainingAlgorithm.RPROP
    train_error_function: ErrorFunction = ErrorFunction.TANH
    train_stop_function: StopFunction = StopFunction.MSE
    quickprop_decay: float = f32(-0.0001)
    quickprop_mu: float = 1.75
    rprop_increase_factor: float = f32(1.2)
    rprop_decrease_factor: float = 0.5
    rprop_delta_min: float = 0.0
    rprop_delta_max: float = 50.0
    rprop_delta_zero: float = f32(0.1)
    bit_fail_limit: float = f32(0.35)
    # SARPROP's four parameters are not saved in the file (C FANN 2.2.0).
    sarprop_weight_decay_shift: float = f32(-6.644)
    sarprop_step_error_threshold_factor: float = f32(0.1)
    sarprop_step_error_shift: float = f32(1.385)
    sarprop_temperature: float = f32(0.015)

    def validate(self) -> None:
        """Raise NeuralError naming the first parameter out of range."""
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise NeuralError(f"{name}={value} must be finite")
        if self.learning_rate < 0:
            raise NeuralError(f"learning_rate={self.learning_rate} must be >= 0")
        if self.bit_fail_limit <= 0:
            raise NeuralError(f"bit_fail_limit={self.bit_fail_limit} must be > 0")
        if not self.rprop_increase_factor > 1.0:
            raise NeuralError(
                f"rprop_increase_factor={self.rprop_increase_factor} must be > 1"
            )
        if not 0.0 < self.rprop_decrease_factor < 1.0:
            raise NeuralError(
                f"rprop_decrease_factor={self.rprop_decrease_factor} must be in (0, 1)"
            )
        if self.rprop_delta_min > self.rprop_delta_max:
            raise NeuralError(
                f"rprop_delta_min={self.rprop_delta_min} must not exceed "
                f"rprop_delta_max={self.rprop_delta_max}"
            )
        if self.quickprop_mu <= 0:
            raise NeuralError(f"quickprop_mu={self.quickprop_mu} must be > 0")


@dataclass(frozen=True, slots=True)
class CascadeParams:
    """Cascade-correlation settings, kept only so a file saves unchanged.

    This engine does not do cascade training; the values pass through.
    """

    output_change_fraction: float = f32(0.01)
    output_stagnation_epochs: int = 12
    candidate_change_fraction: float = f32(0.01)
    candidate_stagnation_epochs: int = 12
    max_out_epochs: int = 150
    min_out_epochs: int = 50
    max_cand_epochs: int = 150
    min_cand_epochs: int = 50
    num_candidate_groups: int = 2
    candidate_limit: float = 1000.0
    weight_multiplier: float = f32(0.4)
    activation_functions: tuple[int, ...] = (3, 5, 7, 8, 10, 11, 14, 15, 16, 17)
    activation_steepnesses: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True, slots=True)
class ScaleParams:
    """Input and output scaling as ``fann_set_scaling_params`` computes it.

    ``scaled = ((x - mean) / deviation + 1) * factor + new_min``; each array
    has one entry per input (``*_in``) or output (``*_out``).
    """

    mean_in: np.ndarray
    deviation_in: np.ndarray
    new_min_in: np.ndarray
    factor_in: np.ndarray
    mean_out: np.ndarray
    deviation_out: np.ndarray
    new_min_out: np.ndarray
    factor_out: np.ndarray

    FIELDS = (
        "mean_in",
        "deviation_in",
        "new_min_in",
        "factor_in",
        "mean_out",
        "deviation_out",
        "new_min_out",
        "factor_out",
    )

    @classmethod
    def identity(cls, num_input: int, num_output: int) -> ScaleParams:
        """Return C FANN's cleared scaling (mean 0, deviation 1, min -1)."""
        ones_in, ones_out = np.ones(num_input), np.ones(num_output)
        return cls(
            np.zeros(num_input),
            ones_in,
            -ones_in,
            ones_in.copy(),
            np.zeros(num_output),
            ones_out,
            -ones_out,
            ones_out.copy(),
        )

    @staticmethod
    def _fit(values: np.ndarray, new_min: float, new_max: float):
        mean = values.mean(axis=0)
        deviation = np.sqrt(((values - mean) ** 2).mean(axis=0))
        # C FANN divides by a zero deviation and produces NaN for a constant
        # column; we scale such a column by 1 instead.
        deviation[deviation == 0] = 1.0
        count = values.shape[1]
        factor = np.full(count, (new_max - new_min) / 2.0)
        return mean, deviation, np.full(count, float(new_min)), factor

    @classmethod
    def fit(
        cls,
        inputs: np.ndarray,
        outputs: np.ndarray,
        input_range: tuple[float, float] = (-1.0, 1.0),
        output_range: tuple[float, float] = (-1.0, 1.0),
    ) -> ScaleParams:
        """Compute scaling from data (``fann_set_scaling_params``)."""
        if len(inputs) == 0:
            raise NeuralError("scaling needs at least one row of data")
        return cls(*cls._fit(inputs, *input_range), *cls._fit(outputs, *output_range))
