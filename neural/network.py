"""FANN networks: structure, creation, weight init and the forward pass.

Public API:
    ``Network`` with ``run(inputs)``,
    ``test(inputs, outputs) -> (mse, bit_fail)``, ``num_inputs``,
    ``num_outputs``, ``layer_sizes``, ``weights`` (read-only view),
    ``set_weights(w)``, activation and steepness setters,
    ``randomize_weights(low, high, rng)``, ``init_weights(inputs, rng)``,
    ``set_scaling_params(...)``, ``scale_input``/``descale_output`` and
    friends, ``set_params(**training_params)``, ``copy()``;
    ``create_standard(layer_sizes, rng)``,
    ``create_sparse(connection_rate, layer_sizes, rng)``,
    ``create_shortcut(layer_sizes, rng)``.

Neurons have global indices in C FANN's order, layer by layer. A layered
network has one bias neuron at the end of every layer (the output layer's
is unused); a shortcut network has one bias neuron, at the end of the input
layer, and every neuron is connected to all neurons of all earlier layers. Each
connection is stored, as in the file, as (source neuron, weight) in C
FANN's order: neuron by neuron, and for a fully connected layered network
by source index with the bias last.

For speed each non-input layer also holds a dense matrix ``M`` of shape
(neurons, layer inputs): for a fully connected network a view into the flat
weight vector, for a sparse one a copy with zeros where no connection
exists, refreshed from the flat weights by ``_sync``. The forward pass is
then one matrix product per layer over all rows, in float64, with the
steepness folded into a cached copy of the matrix.
"""

from __future__ import annotations

import copy as _copy
import threading
from dataclasses import dataclass, replace

import numpy as np

from neural import NeuralError
from neural._threads import single_blas_thread
from neural.activations import (
    SYMMETRIC,
    Activation,
    activate,
    parse_activation,
)
from neural.params import (
    CascadeParams,
    NetworkType,
    ScaleParams,
    TrainingParams,
)

# Activations whose output no longer changes (to float64 precision, or to
# within 1e-260 for SIGMOID's lower tail) long before the sum reaches C FANN's
# clip at +-150 / steepness, so the clip pass can be skipped for them.
SATURATING = frozenset(
    {
        Activation.SIGMOID,
        Activation.SIGMOID_SYMMETRIC,
        Activation.SIGMOID_STEPWISE,
        Activation.SIGMOID_SYMMETRIC_STEPWISE,
        Activation.THRESHOLD,
        Activation.THRESHOLD_SYMMETRIC,
        Activation.GAUSSIAN,
        Activation.GAUSSIAN_SYMMETRIC,
        Activation.GAUSSIAN_STEPWISE,
    }
)

# A sparse layer is run as a dense matrix with zeros. A file of a few MB
# could declare a sparse layer needing terabytes, so the matrix is capped at
# 2**24 entries (128 MiB).
MAX_SPARSE_MATRIX = 2**24

# Below this many rows the thread-limit switch costs more than it saves.
_THREAD_LIMIT_ROWS = 64

# Weights are drawn from U[-0.1, 0.1) when a network is created
# (fann_create_sparse_array, fann_create_shortcut_array).
INIT_WEIGHT = 0.1


@dataclass(slots=True)
class _Layer:
    """Derived per-layer data; rebuilt from the flat arrays by _build()."""

    first: int  # global index of the first neuron
    count: int  # neurons that have connections (bias excluded)
    in_start: int  # global index of the first input column
    width: int  # number of input columns, bias included
    con: slice  # this layer's part of the flat weight vector
    matrix: np.ndarray  # (count, width)
    positions: np.ndarray | None  # flat positions in matrix, None for a view
    groups: list[tuple[int, slice | np.ndarray]]
    clip: bool  # False when every activation saturates long before the clip
    steepness: np.ndarray | float
    max_sum: np.ndarray | float
    sources: np.ndarray  # global source index per connection of the layer
    targets: np.ndarray  # layer-local target index per connection


class Network:
    """A FANN network. Create with ``create_*`` or ``neural.load``.

    ``run`` may be called from several threads at once. Training, the
    setters and ``set_weights`` change shared state: do not overlap them
    with any other use of the same network.
    """

    def __init__(
        self,
        *,
        network_type: NetworkType,
        connection_rate: float,
        layer_neurons: tuple[int, ...],
        activation: np.ndarray,
        steepness: np.ndarray,
        num_inputs: np.ndarray,
        sources: np.ndarray,
        weights: np.ndarray,
        params: TrainingParams | None = None,
        cascade: CascadeParams | None = None,
        scale: ScaleParams | None = None,
    ) -> None:
        """Build a network from C FANN's flat description (see module doc).

        `layer_neurons` counts every neuron of each layer, biases included,
        exactly as the file's ``layer_sizes`` line does.

        Raises:
            NeuralError: the description is inconsistent.
        """
        self.network_type = NetworkType(network_type)
        self.connection_rate = float(connection_rate)
        self.layer_neurons = tuple(int(n) for n in layer_neurons)
        self.activation = np.asarray(activation, dtype=np.int64).copy()
        self.steepness = np.asarray(steepness, dtype=np.float64).copy()
        self.num_inputs_per_neuron = np.asarray(num_inputs, dtype=np.int64).copy()
        self.sources = np.asarray(sources, dtype=np.int64).copy()
        self._weights = np.asarray(weights, dtype=np.float64).copy()
        self.params = params or TrainingParams()
        self.cascade = cascade or CascadeParams()
        self.scale = scale
        self._build()

    # -- structure ---------------------------------------------------------

    @property
    def num_inputs(self) -> int:
        return self.layer_neurons[0] - 1

    @property
    def num_outputs(self) -> int:
        last = self.layer_neurons[-1]
        return last - 1 if self.network_type == NetworkType.LAYER else last

    @property
    def num_layers(self) -> int:
        return len(self.layer_neurons)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Neurons per layer without bias neurons (``fann_get_layer_array``)."""
        if self.network_type == NetworkType.LAYER:
            return tuple(n - 1 for n in self.layer_neurons)
        return (self.layer_neurons[0] - 1, *self.layer_neurons[1:])

    @property
    def total_neurons(self) -> int:
        return int(sum(self.layer_neurons))

    @property
    def total_connections(self) -> int:
        return int(self._weights.size)

    @property
    def weights(self) -> np.ndarray:
        """Connection weights in C FANN's order (read-only view)."""
        view = self._weights.view()
        view.flags.writeable = False
        return view

    def set_weights(self, weights: np.ndarray) -> None:
        """Replace all connection weights (C FANN order)."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != self._weights.shape:
            raise NeuralError(
                f"expected {self._weights.size} weights, got shape {weights.shape}"
            )
        if not np.all(np.isfinite(weights)):
            raise NeuralError("weights must be finite")
        self._weights[...] = weights
        self._sync()

    def copy(self) -> Network:
        """Return an independent deep copy."""
        return Network(
            network_type=self.network_type,
            connection_rate=self.connection_rate,
            layer_neurons=self.layer_neurons,
            activation=self.activation,
            steepness=self.steepness,
            num_inputs=self.num_inputs_per_neuron,
            sources=self.sources,
            weights=self._weights,
            params=self.params,
            cascade=self.cascade,
            scale=_copy.deepcopy(self.scale),
        )

    def _layer_bounds(self) -> list[int]:
        return [0, *np.cumsum(self.layer_neurons).tolist()]

    def _check_flat(self) -> None:
        total = self.total_neurons
        if len(self.layer_neurons) < 2:
            raise NeuralError(f"a network needs >= 2 layers, got {self.num_layers}")
        minimum = 2 if self.network_type == NetworkType.LAYER else 1
        for index, n in enumerate(self.layer_neurons):
            if n < minimum or (index == 0 and n < 2):
                raise NeuralError(f"layer {index} has {n} neurons, too few")
        for name in ("activation", "steepness", "num_inputs_per_neuron"):
            if getattr(self, name).shape != (total,):
                raise NeuralError(f"{name} must have one entry per neuron ({total})")
        if self.sources.shape != self._weights.shape or self._weights.ndim != 1:
            raise NeuralError("sources and weights must be 1-D of equal length")
        if int(self.num_inputs_per_neuron.sum()) != self._weights.size:
            raise NeuralError(
                f"neurons list {int(self.num_inputs_per_neuron.sum())} inputs "
                f"but there are {self._weights.size} connections"
            )
        if np.any((self.activation < 0) | (self.activation >= len(Activation))):
            raise NeuralError("activation ids must be in 0..19")

    def _build(self) -> None:
        """Derive the per-layer matrices and activation groups."""
        self._check_flat()
        bounds = self._layer_bounds()
        first_con = np.concatenate(([0], np.cumsum(self.num_inputs_per_neuron)))
        layered = self.network_type == NetworkType.LAYER
        if np.any(self.num_inputs_per_neuron[: bounds[1]] != 0):
            raise NeuralError("input neurons must have 0 inputs")
        self._layers = []
        for index in range(1, self.num_layers):
            first = bounds[index]
            count = self.layer_neurons[index] - (1 if layered else 0)
            if layered and self.num_inputs_per_neuron[first + count] != 0:
                raise NeuralError(
                    f"bias neuron {first + count} of layer {index} must have 0 inputs"
                )
            in_start = bounds[index - 1] if layered else 0
            width = bounds[index] - in_start
            self._layers.append(
                self._make_layer(index, first, count, in_start, width, first_con)
            )
        self._scaled: dict[str, list] = {}
        self._generation = getattr(self, "_generation", 0) + 1
        self._local = threading.local()

    def _make_layer(self, index, first, count, in_start, width, first_con) -> _Layer:
        start, stop = int(first_con[first]), int(first_con[first + count])
        per_neuron = self.num_inputs_per_neuron[first : first + count]
        if np.any(per_neuron == 0):
            bad = first + int(np.argmax(per_neuron == 0))
            raise NeuralError(f"neuron {bad} of layer {index} has no inputs")
        if np.any(per_neuron > width):
            bad = first + int(np.argmax(per_neuron > width))
            raise NeuralError(
                f"neuron {bad} has {int(self.num_inputs_per_neuron[bad])} inputs "
                f"but only {width} neurons feed layer {index}"
            )
        cols = self.sources[start:stop] - in_start
        if np.any((cols < 0) | (cols >= width)):
            bad = start + int(np.argmax((cols < 0) | (cols >= width)))
            raise NeuralError(
                f"connection {bad} comes from neuron {int(self.sources[bad])}, "
                f"which does not feed layer {index} (neurons {in_start}.."
                f"{in_start + width - 1})"
            )
        targets = np.repeat(np.arange(count), per_neuron)
        positions = targets * width + cols
        dense = stop - start == count * width and np.array_equal(
            cols, np.tile(np.arange(width), count)
        )
        # A fully connected layout has no repeats by construction.
        if not dense and np.unique(positions).size != positions.size:
            raise NeuralError(f"layer {index} connects a pair of neurons twice")
        if self.connection_rate >= 1 and not dense:
            raise NeuralError(
                f"connection_rate={self.connection_rate:g} means fully connected, "
                f"but layer {index} is not"
            )
        if dense:
            matrix = self._weights[start:stop].reshape(count, width)
            positions = None
        else:
            if count * width > MAX_SPARSE_MATRIX:
                raise NeuralError(
                    f"sparse layer {index} has {count} x {width} possible "
                    f"connections; at most {MAX_SPARSE_MATRIX} are supported"
                )
            matrix = np.zeros((count, width))
            matrix.flat[positions] = self._weights[start:stop]
        steep = self.steepness[first : first + count]
        return _Layer(
            first=first,
            count=count,
            in_start=in_start,
            width=width,
            con=slice(start, stop),
            matrix=matrix,
            positions=positions,
            groups=self._groups(self.activation[first : first + count]),
            clip=not set(np.unique(self.activation[first : first + count]))
            <= SATURATING,
            steepness=self._uniform(steep),
            max_sum=self._uniform(150.0 / np.where(steep > 0, steep, 1.0)),
            sources=self.sources[start:stop],
            targets=targets,
        )

    @staticmethod
    def _uniform(values: np.ndarray) -> np.ndarray | float:
        # A scalar multiplies faster than a broadcast row, and most layers
        # share one steepness.
        if values.size and np.all(values == values[0]):
            return float(values[0])
        return values.copy()

    @staticmethod
    def _groups(acts: np.ndarray) -> list[tuple[int, slice | np.ndarray]]:
        unique = np.unique(acts)
        if unique.size == 1:
            return [(int(unique[0]), slice(None))]
        return [(int(a), np.flatnonzero(acts == a)) for a in unique]

    def _sync(self) -> None:
        """Refresh sparse matrices and caches after the flat weights changed."""
        for layer in self._layers:
            if layer.positions is not None:
                layer.matrix.flat[layer.positions] = self._weights[layer.con]
        self._scaled = {}

    # -- activations ---------------------------------------------------------

    def _layer_range(self, layer: int) -> range:
        bounds = self._layer_bounds()
        return range(bounds[layer], bounds[layer + 1])

    def set_activation_function_layer(self, act: str | int, layer: int) -> None:
        """Set the activation of every neuron in `layer` (1 = first hidden)."""
        if not 1 <= layer < self.num_layers:
            raise NeuralError(
                f"layer {layer} is invalid: expected 1..{self.num_layers - 1}"
            )
        span = self._layer_range(layer)
        self.activation[span.start : span.stop] = parse_activation(act)
        self._build()

    def set_activation_function_hidden(self, act: str | int) -> None:
        """Set the activation of all hidden neurons (their biases too, as C FANN)."""
        for layer in range(1, self.num_layers - 1):
            self.set_activation_function_layer(act, layer)

    def set_activation_function_output(self, act: str | int) -> None:
        """Set the activation of the output layer."""
        self.set_activation_function_layer(act, self.num_layers - 1)

    def set_activation_steepness_layer(self, steepness: float, layer: int) -> None:
        """Set the steepness of every neuron in `layer`; must be > 0."""
        if not (steepness > 0 and np.isfinite(steepness)):
            raise NeuralError(f"steepness={steepness} must be a finite number > 0")
        if not 1 <= layer < self.num_layers:
            raise NeuralError(
                f"layer {layer} is invalid: expected 1..{self.num_layers - 1}"
            )
        span = self._layer_range(layer)
        self.steepness[span.start : span.stop] = steepness
        self._build()

    def set_activation_steepness_hidden(self, steepness: float) -> None:
        """Set the steepness of all hidden neurons."""
        for layer in range(1, self.num_layers - 1):
            self.set_activation_steepness_layer(steepness, layer)

    def set_activation_steepness_output(self, steepness: float) -> None:
        """Set the steepness of the output layer."""
        self.set_activation_steepness_layer(steepness, self.num_layers - 1)

    def output_activations(self) -> np.ndarray:
        """Return the activation id of each output neuron."""
        layer = self._layers[-1]
        return self.activation[layer.first : layer.first + layer.count]

    def output_symmetric(self) -> np.ndarray:
        """Return a bool per output: True where C FANN halves the error."""
        return np.array([int(a) in SYMMETRIC for a in self.output_activations()])

    # -- weights -------------------------------------------------------------

    def randomize_weights(
        self, low: float, high: float, rng: np.random.Generator
    ) -> None:
        """Draw every weight from U[low, high) (``fann_randomize_weights``)."""
        self._weights[...] = rng.uniform(low, high, self._weights.size)
        self._sync()

    def init_weights(self, inputs: np.ndarray, rng: np.random.Generator) -> None:
        """Widrow-Nguyen initialisation as C FANN's ``fann_init_weights``.

        Bias weights come from U[-f, f) and all other weights from U[0, f)
        (never negative, as in C FANN), with
        ``f = (0.7 * hidden_neurons) ** (1 / num_inputs) / (max(x) - min(x))``.
        """
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.ndim != 2 or inputs.shape[1] != self.num_inputs or not len(inputs):
            raise NeuralError(
                f"init_weights needs rows x {self.num_inputs} inputs, got "
                f"shape {inputs.shape}"
            )
        span = float(inputs.max() - inputs.min())
        if span == 0:
            raise NeuralError("init_weights needs inputs that are not all equal")
        hidden = self.total_neurons - (
            self.num_inputs + self.num_outputs + self.num_layers
        )
        factor = (0.7 * hidden) ** (1.0 / self.num_inputs) / span
        is_bias = np.zeros(self.total_neurons, dtype=bool)
        bounds = self._layer_bounds()
        if self.network_type == NetworkType.LAYER:
            is_bias[np.asarray(bounds[1:-1]) - 1] = True
        else:
            is_bias[self.num_inputs] = True
        bias_con = is_bias[self.sources]
        draws = rng.uniform(0.0, factor, self._weights.size)
        bias_draws = rng.uniform(-factor, factor, self._weights.size)
        self._weights[...] = np.where(bias_con, bias_draws, draws)
        self._sync()

    # -- scaling ---------------------------------------------------------------

    def set_scaling_params(
        self,
        inputs: np.ndarray,
        outputs: np.ndarray,
        input_range: tuple[float, float] = (-1.0, 1.0),
        output_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        """Compute and keep input/output scaling from data."""
        self.scale = ScaleParams.fit(
            np.asarray(inputs, float),
            np.asarray(outputs, float),
            input_range,
            output_range,
        )

    def _need_scale(self) -> ScaleParams:
        if self.scale is None:
            raise NeuralError("the network has no scaling parameters")
        return self.scale

    def scale_input(self, x: np.ndarray) -> np.ndarray:
        s = self._need_scale()
        return ((x - s.mean_in) / s.deviation_in + 1.0) * s.factor_in + s.new_min_in

    def scale_output(self, y: np.ndarray) -> np.ndarray:
        s = self._need_scale()
        return ((y - s.mean_out) / s.deviation_out + 1.0) * s.factor_out + s.new_min_out

    def descale_input(self, x: np.ndarray) -> np.ndarray:
        s = self._need_scale()
        return ((x - s.new_min_in) / s.factor_in - 1.0) * s.deviation_in + s.mean_in

    def descale_output(self, y: np.ndarray) -> np.ndarray:
        s = self._need_scale()
        return ((y - s.new_min_out) / s.factor_out - 1.0) * s.deviation_out + s.mean_out

    # -- forward pass ------------------------------------------------------------

    def run(self, inputs: np.ndarray, dtype=np.float64) -> np.ndarray:
        """Run the network like ``fann_run`` (no scaling applied).

        Args:
            inputs: shape (num_inputs,) for one row, or (rows, num_inputs).
            dtype: ``np.float64`` (default) or ``np.float32``. Float32 runs
                the batched pass in single precision, as C FANN computes. It
                is up to about twice as fast, and its outputs differed from C
                FANN's by up to 1.6e-5 on the reference networks (float64:
                5.6e-6).

        Returns:
            shape (num_outputs,) or (rows, num_outputs), of `dtype`.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float64, np.float32):
            raise NeuralError(f"dtype {dtype} is invalid: expected float64 or float32")
        x = np.asarray(inputs, dtype=dtype)
        if x.ndim == 1:
            if x.shape[0] != self.num_inputs:
                raise NeuralError(
                    f"expected {self.num_inputs} inputs, got {x.shape[0]}"
                )
            return self._run_row(x.astype(np.float64, copy=False)).astype(dtype)
        if x.ndim != 2 or x.shape[1] != self.num_inputs:
            raise NeuralError(
                f"expected inputs of shape (rows, {self.num_inputs}), got {x.shape}"
            )
        if x.shape[0] < _THREAD_LIMIT_ROWS:
            return self.forward(x, keep_sums=False)[-1][1]
        with single_blas_thread():
            return self.forward(x, keep_sums=False)[-1][1]

    def forward(
        self, x: np.ndarray, keep_sums: bool = True
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return (sums, values) of every non-input layer for all rows.

        `sums` are the clipped, steepness-scaled sums the activation saw;
        with ``keep_sums=False`` the activation overwrites them, and
        ``sums is values``. For a shortcut network, values of earlier layers
        feed later ones.
        """
        scaled = self._scaled_weights(x.dtype)
        trace = []
        if self.network_type == NetworkType.LAYER:
            prev = x
            for layer, (weights, bias) in zip(self._layers, scaled):
                s = prev @ weights.T
                s += bias
                v = self._activate_layer(layer, s, keep_sums)
                trace.append((s, v))
                prev = v
            return trace
        values = np.empty((x.shape[0], self.total_neurons), dtype=x.dtype)
        values[:, : self.num_inputs] = x
        values[:, self.num_inputs] = 1.0
        for layer, (weights, _) in zip(self._layers, scaled):
            s = values[:, : layer.width] @ weights.T
            v = self._activate_layer(layer, s, keep_sums)
            values[:, layer.first : layer.first + layer.count] = v
            trace.append((s, v))
        self._shortcut_values = values
        return trace

    def _scaled_weights(
        self, dtype=np.float64
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Return per layer the weights times the steepness, and the bias.

        Folding the steepness into a cached copy saves a pass over every
        row: ``x @ (k * W).T + k * b`` is the scaled sum C FANN computes.
        For a layered network the bias column is split off; a shortcut
        network keeps it inside (its bias is an input column).
        """
        key = np.dtype(dtype).char
        cached = self._scaled.get(key)
        if cached is not None:
            return cached
        scaled = []
        for layer in self._layers:
            k = layer.steepness
            k_col = k if np.isscalar(k) else np.asarray(k)[:, None]
            full = (layer.matrix * k_col).astype(dtype)
            if self.network_type == NetworkType.LAYER:
                weights = np.ascontiguousarray(full[:, :-1])
                scaled.append((weights, full[:, -1].copy()))
            else:
                scaled.append((full, None))
        self._scaled[key] = scaled
        return scaled

    @staticmethod
    def _activate_layer(layer: _Layer, s: np.ndarray, keep_sums: bool) -> np.ndarray:
        if layer.clip:
            np.clip(s, -layer.max_sum, layer.max_sum, out=s)
        if len(layer.groups) == 1:
            return activate(layer.groups[0][0], s, out=None if keep_sums else s)
        v = np.empty_like(s)
        for act, cols in layer.groups:
            v[..., cols] = activate(act, s[..., cols])
        return v

    def _run_row(self, x: np.ndarray) -> np.ndarray:
        scaled = self._scaled_weights()
        # Buffers are per thread: the daemon runs one network from several
        # worker threads at once.
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.buffers = [np.empty(layer.count) for layer in self._layers]
            local.values = np.empty(self.total_neurons)
            local.generation = self._generation
        if self.network_type != NetworkType.LAYER:
            return self._run_row_shortcut(x, scaled, local)
        prev = x
        for layer, (weights, bias), buf in zip(self._layers, scaled, local.buffers):
            np.dot(weights, prev, out=buf)
            buf += bias
            self._activate_row(layer, buf)
            prev = buf
        return prev.copy()

    def _run_row_shortcut(self, x: np.ndarray, scaled, local) -> np.ndarray:
        values = local.values
        values[: self.num_inputs] = x
        values[self.num_inputs] = 1.0
        for layer, (weights, _), buf in zip(self._layers, scaled, local.buffers):
            np.dot(weights, values[: layer.width], out=buf)
            self._activate_row(layer, buf)
            values[layer.first : layer.first + layer.count] = buf
        return local.buffers[-1].copy()

    @staticmethod
    def _activate_row(layer: _Layer, buf: np.ndarray) -> None:
        if layer.clip:
            np.clip(buf, -layer.max_sum, layer.max_sum, out=buf)
        if len(layer.groups) == 1:
            activate(layer.groups[0][0], buf, out=buf)
        else:
            for act, cols in layer.groups:
                buf[cols] = activate(act, buf[cols])

    def test(self, inputs: np.ndarray, outputs: np.ndarray) -> tuple[float, int]:
        """Return (MSE, bit fail count) as ``fann_test_data`` computes them."""
        from neural.training import output_errors

        y = self.run(np.asarray(inputs, dtype=np.float64))
        diff = output_errors(self, y, np.asarray(outputs, dtype=np.float64))
        mse = float(np.sum(diff * diff) / diff.size) if diff.size else 0.0
        bit_fail = int(np.count_nonzero(np.abs(diff) >= self.params.bit_fail_limit))
        return mse, bit_fail

    def set_params(self, **changes) -> None:
        """Replace training parameters by name, then validate them."""
        params = replace(self.params, **changes)
        params.validate()
        self.params = params


def _activation_arrays(total: int) -> tuple[np.ndarray, np.ndarray]:
    # Activation id and steepness 0 for every neuron; the creators then set
    # C FANN's defaults (SIGMOID_STEPWISE, 0.5) on all but inputs and biases.
    return np.zeros(total, dtype=np.int64), np.zeros(total)


def _check_sizes(layer_sizes) -> tuple[int, ...]:
    sizes = tuple(int(n) for n in layer_sizes)
    if len(sizes) < 2:
        raise NeuralError(f"a network needs >= 2 layers, got {len(sizes)}")
    if any(n < 1 for n in sizes):
        raise NeuralError(f"every layer needs >= 1 neuron, got {sizes}")
    return sizes


def create_standard(layer_sizes, rng: np.random.Generator | None = None) -> Network:
    """Create a fully connected layered network (``fann_create_standard``).

    Args:
        layer_sizes: neurons per layer without biases, e.g. ``(2, 3, 1)``.
        rng: draws the initial weights from U[-0.1, 0.1).
    """
    return create_sparse(1.0, layer_sizes, rng)


def create_sparse(
    connection_rate: float,
    layer_sizes,
    rng: np.random.Generator | None = None,
) -> Network:
    """Create a layered network with a fraction of the connections.

    Follows ``fann_create_sparse_array``. Each layer gets
    ``max(max(n_in, n_out), round(rate * n_in * n_out)) + n_out``
    connections (bias included), spread evenly over its neurons. Every
    neuron has its bias first, every neuron of the previous layer feeds at
    least one neuron, and the rest are drawn at random without repeats.
    Unlike C FANN, the random draws come from `rng`, uniformly.
    """
    rng = rng if rng is not None else np.random.default_rng()
    sizes = _check_sizes(layer_sizes)
    rate = min(float(connection_rate), 1.0)
    if not rate > 0:
        raise NeuralError(f"connection_rate={connection_rate} must be in (0, 1]")
    layer_neurons = tuple(n + 1 for n in sizes)
    total = sum(layer_neurons)
    activation, steepness = _activation_arrays(total)
    num_inputs = np.zeros(total, dtype=np.int64)
    all_sources: list[np.ndarray] = []
    start = 0
    for index in range(1, len(sizes)):
        prev_start = start
        start += layer_neurons[index - 1]
        n_in, n_out = sizes[index - 1], sizes[index]
        neurons = slice(start, start + n_out)
        activation[neurons] = Activation.SIGMOID_STEPWISE
        steepness[neurons] = 0.5
        if rate >= 1:
            num_inputs[neurons] = n_in + 1
            all_sources.append(np.tile(np.arange(prev_start, start), n_out))
            continue
        counts, sources = _sparse_layer(rate, n_in, n_out, prev_start, rng)
        num_inputs[neurons] = counts
        all_sources.append(sources)
    sources = np.concatenate(all_sources)
    return Network(
        network_type=NetworkType.LAYER,
        connection_rate=rate,
        layer_neurons=layer_neurons,
        activation=activation,
        steepness=steepness,
        num_inputs=num_inputs,
        sources=sources,
        weights=rng.uniform(-INIT_WEIGHT, INIT_WEIGHT, sources.size),
    )


def _sparse_layer(rate, n_in, n_out, prev_start, rng):
    minimum = max(n_in, n_out)
    wanted = max(minimum, int(0.5 + rate * n_in * n_out)) + n_out
    per_neuron = wanted // n_out
    counts = []
    allocated = 0
    for i in range(n_out):
        count = per_neuron
        allocated += per_neuron
        if allocated < wanted * (i + 1) // n_out:
            count += 1
            allocated += 1
        counts.append(count)
    bias = prev_start + n_in
    chosen: list[list[int]] = [[bias] for _ in range(n_out)]
    # Every neuron of the previous layer feeds some neuron with room left.
    for source in range(prev_start, prev_start + n_in):
        while True:
            target = int(rng.integers(n_out))
            if len(chosen[target]) < counts[target]:
                chosen[target].append(source)
                break
    # Fill the remaining slots with sources not yet connected.
    for target in range(n_out):
        free = np.setdiff1d(np.arange(prev_start, prev_start + n_in), chosen[target])
        need = counts[target] - len(chosen[target])
        chosen[target].extend(rng.choice(free, size=need, replace=False).tolist())
    return np.array(counts), np.array([s for row in chosen for s in row])


def create_shortcut(layer_sizes, rng: np.random.Generator | None = None) -> Network:
    """Create a shortcut network (``fann_create_shortcut``).

    Each neuron is connected to every neuron of every earlier layer,
    including the single bias neuron at the end of the input layer.
    """
    rng = rng if rng is not None else np.random.default_rng()
    sizes = _check_sizes(layer_sizes)
    layer_neurons = (sizes[0] + 1, *sizes[1:])
    total = sum(layer_neurons)
    activation, steepness = _activation_arrays(total)
    activation[layer_neurons[0] :] = Activation.SIGMOID_STEPWISE
    steepness[layer_neurons[0] :] = 0.5
    num_inputs = np.zeros(total, dtype=np.int64)
    sources = []
    start = layer_neurons[0]
    for n in layer_neurons[1:]:
        num_inputs[start : start + n] = start
        sources.append(np.tile(np.arange(start), n))
        start += n
    flat = np.concatenate(sources)
    return Network(
        network_type=NetworkType.SHORTCUT,
        connection_rate=1.0,
        layer_neurons=layer_neurons,
        activation=activation,
        steepness=steepness,
        num_inputs=num_inputs,
        sources=flat,
        weights=rng.uniform(-INIT_WEIGHT, INIT_WEIGHT, flat.size),
    )
