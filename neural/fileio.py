"""Reading and writing C FANN `.net` and `.data` files.

Public API:
    ``load(path) -> Network``, ``loads(text, source="<string>") -> Network``,
    ``dumps(net) -> str``, ``save(net, path)``, ``content_hash(net) -> str``;
    ``TrainingData(inputs, outputs)``, ``read_data(path)``,
    ``parse_data(text, source)``, ``write_data(data, path)``,
    ``format_data(data) -> str``; ``FileFormatError``.

Reading accepts ``FANN_FLO_2.1`` (with or without the ``cascade_min_*``
lines that older writers omit), ``FANN_FLO_2.0`` (no scaling lines) and
``FANN_FIX_2.0`` (integers scaled by ``2**decimal_point``, converted on
load). Writing produces ``FANN_FLO_2.1``, byte for byte as C FANN 2.2.0's
``fann_save`` writes it. Keys must come in C FANN's order, since C FANN
reads them with one ``fscanf`` each.

Every problem raises ``FileFormatError`` naming the file, line, offending
token and what was expected; a network or data set is built only after the
whole file has been checked, so nothing is ever half-loaded.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neural import NeuralError
from neural.activations import NUM_ACTIVATIONS
from neural.network import Network
from neural.params import (
    CascadeParams,
    ErrorFunction,
    NetworkType,
    ScaleParams,
    StopFunction,
    TrainingAlgorithm,
    TrainingParams,
)


class FileFormatError(NeuralError):
    """A `.net` or `.data` file is malformed."""

    def __init__(self, source: str, line: int, token: str, expected: str) -> None:
        self.source, self.line, self.token, self.expected = (
            source,
            line,
            token,
            expected,
        )
        shown = token if len(token) <= 60 else token[:57] + "..."
        super().__init__(f"{source}:{line}: expected {expected}, got {shown!r}")


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _float(token: str, source: str, line: int, what: str) -> float:
    if _NUMBER.fullmatch(token) is None:
        if re.fullmatch(r"[+-]?\d+,\d*([eE][+-]?\d+)?", token):
            what += " (a decimal comma was found; use a decimal point)"
        elif token.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            what += " (finite, not NaN or inf)"
        raise FileFormatError(source, line, token, what)
    value = float(token)
    if not math.isfinite(value):
        raise FileFormatError(source, line, token, what + " (finite, not NaN or inf)")
    return value


def _int(token: str, source: str, line: int, what: str, low: int = 0, high=None) -> int:
    if not re.fullmatch(r"\+?\d+", token):
        raise FileFormatError(source, line, token, what)
    value = int(token)
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise FileFormatError(source, line, token, f"{what} in {bound}")
    return value


# (key, kind, optional) in the order C FANN 2.2.0 reads them. Kinds:
# "u" unsigned, "f" %f float, "e" fann_type, "U" unsigned list,
# "E" fann_type list.
_KEYS = (
    ("num_layers", "u", False),
    ("learning_rate", "f", False),
    ("connection_rate", "f", False),
    ("network_type", "u", False),
    ("learning_momentum", "f", False),
    ("training_algorithm", "u", False),
    ("train_error_function", "u", False),
    ("train_stop_function", "u", False),
    ("cascade_output_change_fraction", "f", True),
    ("quickprop_decay", "f", False),
    ("quickprop_mu", "f", False),
    ("rprop_increase_factor", "f", False),
    ("rprop_decrease_factor", "f", False),
    ("rprop_delta_min", "f", False),
    ("rprop_delta_max", "f", False),
    ("rprop_delta_zero", "f", False),
    ("cascade_output_stagnation_epochs", "u", True),
    ("cascade_candidate_change_fraction", "f", True),
    ("cascade_candidate_stagnation_epochs", "u", True),
    ("cascade_max_out_epochs", "u", True),
    ("cascade_min_out_epochs", "u", True),
    ("cascade_max_cand_epochs", "u", True),
    ("cascade_min_cand_epochs", "u", True),
    ("cascade_num_candidate_groups", "u", True),
    ("bit_fail_limit", "e", False),
    ("cascade_candidate_limit", "e", True),
    ("cascade_weight_multiplier", "e", True),
    ("cascade_activation_functions_count", "u", True),
    ("cascade_activation_functions", "U", True),
    ("cascade_activation_steepnesses_count", "u", True),
    ("cascade_activation_steepnesses", "E", True),
    ("layer_sizes", "U", False),
    ("scale_included", "u", True),
)
_SCALE_KEYS = tuple(f"scale_{name}" for name in ScaleParams.FIELDS)
_NEURONS = "neurons (num_inputs, activation_function, activation_steepness)="
_CONNECTIONS = "connections (connected_to_neuron, weight)="
_VERSIONS = ("FANN_FLO_2.1", "FANN_FLO_2.0", "FANN_FIX_2.0", "FANN_FIX_2.1")
_TUPLE = re.compile(r"\(([^()]*)\)")


class _Reader:
    """Walks the lines of a `.net` file, remembering line numbers."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.source = source
        self.index = 0

    @property
    def lineno(self) -> int:
        return self.index + 1

    def peek(self) -> str | None:
        return self.lines[self.index] if self.index < len(self.lines) else None

    def next(self, expected: str) -> str:
        line = self.peek()
        if line is None:
            raise FileFormatError(self.source, self.lineno, "<end of file>", expected)
        self.index += 1
        return line.rstrip("\r")

    def fail(self, token: str, expected: str, line: int | None = None):
        raise FileFormatError(self.source, line or self.index, token, expected)


def _read_keys(reader: _Reader, scale: float) -> dict:
    lines: dict[str, int] = {}
    values: dict = {"_lines": lines}
    for key, kind, optional in _KEYS:
        line = reader.peek()
        if line is None or not line.startswith(key + "="):
            if optional:
                continue
            raise FileFormatError(
                reader.source, reader.lineno, line or "<end of file>", f"'{key}=...'"
            )
        line = reader.next(key)
        raw = line[len(key) + 1 :]
        n = reader.index
        src = reader.source
        lines[key] = n
        if kind == "u":
            values[key] = _int(raw.strip(), src, n, f"an unsigned integer for {key}")
        elif kind == "f":
            values[key] = _float(raw.strip(), src, n, f"a number for {key}")
        elif kind == "e":
            values[key] = _float(raw.strip(), src, n, f"a number for {key}") / scale
        elif kind == "U":
            values[key] = [
                _int(t, src, n, f"an unsigned integer in {key}") for t in raw.split()
            ]
        else:
            values[key] = [
                _float(t, src, n, f"a number in {key}") / scale for t in raw.split()
            ]
    return values


def _check_keys(values: dict, reader: _Reader) -> None:
    src = reader.source
    at = values["_lines"].get
    checks = (
        ("network_type", len(NetworkType)),
        ("training_algorithm", len(TrainingAlgorithm)),
        ("train_error_function", len(ErrorFunction)),
        ("train_stop_function", len(StopFunction)),
    )
    for key, count in checks:
        if values[key] >= count:
            raise FileFormatError(
                src, at(key, 0), str(values[key]), f"{key} in 0..{count - 1}"
            )
    if values["num_layers"] < 2:
        raise FileFormatError(
            src, at("num_layers", 0), str(values["num_layers"]), "num_layers >= 2"
        )
    if len(values["layer_sizes"]) != values["num_layers"]:
        raise FileFormatError(
            src,
            at("layer_sizes", 0),
            " ".join(map(str, values["layer_sizes"])),
            f"{values['num_layers']} layer sizes (num_layers)",
        )
    for name in ("functions", "steepnesses"):
        key = f"cascade_activation_{name}"
        if key in values and len(values[key]) != values.get(key + "_count"):
            raise FileFormatError(
                src,
                at(key, 0),
                str(len(values[key])),
                f"{values.get(key + '_count')} {key}",
            )


def _read_scale(reader: _Reader, num_in: int, num_out: int) -> ScaleParams:
    arrays = []
    for key in _SCALE_KEYS:
        count = num_in if key.endswith("_in") else num_out
        line = reader.next(f"'{key}=...'")
        if not line.startswith(key + "="):
            reader.fail(line, f"'{key}=...'")
        tokens = line[len(key) + 1 :].split()
        if len(tokens) != count:
            reader.fail(line, f"{count} values for {key}")
        arrays.append(
            np.array(
                [
                    _float(t, reader.source, reader.index, f"a number in {key}")
                    for t in tokens
                ]
            )
        )
    return ScaleParams(*arrays)


def _tuples(reader: _Reader, prefix: str, width: int) -> list[list[str]]:
    line = reader.next(f"'{prefix}...'")
    if not line.startswith(prefix):
        reader.fail(line, f"'{prefix}...'")
    body = line[len(prefix) :]
    items = []
    end = 0
    for match in _TUPLE.finditer(body):
        if body[end : match.start()].strip():
            reader.fail(body[end : match.start()].strip(), f"a {width}-tuple '(...)'")
        parts = [p.strip() for p in match.group(1).split(",")]
        if len(parts) != width:
            reader.fail(match.group(0), f"a {width}-tuple")
        items.append(parts)
        end = match.end()
    rest = body[end:].strip()
    if rest:
        reader.fail(rest, f"a complete {width}-tuple '(...)' (line truncated?)")
    return items


def loads(text: str, source: str = "<string>") -> Network:
    """Parse the text of a C FANN `.net` file.

    Raises:
        FileFormatError: the text is not a valid FANN network.
    """
    reader = _Reader(text, source)
    version = reader.next("a FANN version line").strip()
    if version not in _VERSIONS:
        reader.fail(version, "one of " + ", ".join(_VERSIONS))
    scale_factor = 1.0
    if version.startswith("FANN_FIX"):
        line = reader.next("'decimal_point=N'")
        if not line.startswith("decimal_point="):
            reader.fail(line, "'decimal_point=N'")
        point = _int(line[14:].strip(), source, reader.index, "a decimal point", 0, 30)
        scale_factor = float(2**point)
    values = _read_keys(reader, scale_factor)
    _check_keys(values, reader)
    layered = values["network_type"] == NetworkType.LAYER
    layer_neurons = values["layer_sizes"]
    num_in = layer_neurons[0] - 1
    num_out = layer_neurons[-1] - (1 if layered else 0)
    scale = None
    if values.get("scale_included", 0) == 1:
        scale = _read_scale(reader, num_in, num_out)
    neurons = _parse_neurons(
        reader, sum(layer_neurons), scale_factor, layered, layer_neurons
    )
    num_inputs, activation, steepness = neurons
    expected = int(num_inputs.sum())
    fast = _fast_connections(reader.peek(), expected)
    if fast is not None:
        reader.index += 1
        sources, weights = fast[0], fast[1] / scale_factor
    else:
        connections = _tuples(reader, _CONNECTIONS, 2)
        sources, weights = _parse_connections(
            reader, connections, expected, scale_factor
        )
    for extra in reader.lines[reader.index :]:
        if extra.strip():
            reader.index += 1
            reader.fail(extra, "end of file")
    try:
        return Network(
            network_type=NetworkType(values["network_type"]),
            connection_rate=values["connection_rate"],
            layer_neurons=tuple(layer_neurons),
            activation=activation,
            steepness=steepness,
            num_inputs=num_inputs,
            sources=sources,
            weights=weights,
            params=_training_params(values),
            cascade=_cascade_params(values),
            scale=scale,
        )
    except FileFormatError:
        raise
    except NeuralError as error:
        raise FileFormatError(
            source, reader.index, "connections", f"a consistent network ({error})"
        ) from None


def _parse_neurons(reader, total, scale_factor, layered, layer_neurons):
    items = _tuples(reader, _NEURONS, 3)
    line = reader.index
    src = reader.source
    if len(items) != total:
        reader.fail(
            f"{len(items)} neurons", f"{total} neurons (the sum of layer_sizes)"
        )

    num_inputs = np.empty(total, dtype=np.int64)
    activation = np.empty(total, dtype=np.int64)
    steepness = np.empty(total)

    # Input and bias neurons have no steepness (C FANN writes 0 for them).
    no_steepness = np.zeros(total, dtype=bool)
    no_steepness[: layer_neurons[0]] = True
    if layered:
        no_steepness[np.cumsum(layer_neurons) - 1] = True

    for index, (count, act, steep) in enumerate(items):
        num_inputs[index] = _int(count, src, line, f"an input count for neuron {index}")
        activation[index] = _int(
            act,
            src,
            line,
            f"an activation id for neuron {index}",
            0,
            NUM_ACTIVATIONS - 1,
        )
        steepness[index] = (
            _float(steep, src, line, f"a steepness for neuron {index}") / scale_factor
        )
        if not no_steepness[index] and steepness[index] <= 0:
            raise FileFormatError(
                src, line, steep, f"a steepness > 0 for neuron {index}"
            )
    return num_inputs, activation, steepness


_PAIRS = re.compile(r"(?:\(\d+, [^()\s,_]+\) ?)*")
_PUNCTUATION = str.maketrans("(),", "   ")


def _fast_connections(line: str | None, expected: int):
    """Parse a connections line as ``fann_save`` writes it, or return None.

    A large network's line holds hundreds of thousands of pairs, which the
    token-by-token parser takes seconds over. Anything unusual returns None,
    and the careful parser then finds and reports the fault.
    """
    if line is None or not line.startswith(_CONNECTIONS):
        return None
    body = line[len(_CONNECTIONS) :].strip()
    if body.count("(") != expected or _PAIRS.fullmatch(body) is None:
        return None
    try:
        values = np.array(body.translate(_PUNCTUATION).split(), dtype=np.float64)
    except ValueError:
        return None
    if values.size != 2 * expected or not np.all(np.isfinite(values)):
        return None
    sources = values[0::2]
    if expected and sources.max() >= 2**53:
        return None
    return sources.astype(np.int64), values[1::2].copy()


def _parse_connections(reader, items, expected, scale_factor):
    line = reader.index
    if len(items) != expected:
        reader.fail(
            f"{len(items)} connections",
            f"{expected} connections (the sum of the neurons' input counts)",
        )
    src = reader.source
    sources = np.empty(expected, dtype=np.int64)
    weights = np.empty(expected)
    for index, (neuron, weight) in enumerate(items):
        sources[index] = _int(
            neuron, src, line, f"a neuron index in connection {index}"
        )
        weights[index] = _float(weight, src, line, f"a weight in connection {index}")
    return sources, weights / scale_factor


def _training_params(values: dict) -> TrainingParams:
    return TrainingParams(
        learning_rate=values["learning_rate"],
        learning_momentum=values["learning_momentum"],
        training_algorithm=TrainingAlgorithm(values["training_algorithm"]),
        train_error_function=ErrorFunction(values["train_error_function"]),
        train_stop_function=StopFunction(values["train_stop_function"]),
        quickprop_decay=values["quickprop_decay"],
        quickprop_mu=values["quickprop_mu"],
        rprop_increase_factor=values["rprop_increase_factor"],
        rprop_decrease_factor=values["rprop_decrease_factor"],
        rprop_delta_min=values["rprop_delta_min"],
        rprop_delta_max=values["rprop_delta_max"],
        rprop_delta_zero=values["rprop_delta_zero"],
        bit_fail_limit=values["bit_fail_limit"],
    )


def _cascade_params(values: dict) -> CascadeParams:
    default = CascadeParams()
    fields = {}
    for name in CascadeParams.__dataclass_fields__:
        key = "cascade_" + name
        if key in values:
            value = values[key]
            fields[name] = tuple(value) if isinstance(value, list) else value
        else:
            fields[name] = getattr(default, name)
    return CascadeParams(**fields)


def load(path: str | Path) -> Network:
    """Read a C FANN `.net` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as error:
        raise FileFormatError(str(path), 1, "<binary data>", "ASCII text") from error
    except OSError as error:
        raise NeuralError(
            f"cannot read network file {path}: {error.strerror}"
        ) from error
    return loads(text, str(path))


def _e(value: float) -> str:
    return f"{value:.20e}"


def dumps(net: Network) -> str:
    """Return `net` as ``FANN_FLO_2.1`` text, formatted as ``fann_save``."""
    p, c = net.params, net.cascade
    lines = [
        "FANN_FLO_2.1",
        f"num_layers={net.num_layers}",
        f"learning_rate={p.learning_rate:f}",
        f"connection_rate={net.connection_rate:f}",
        f"network_type={int(net.network_type)}",
        f"learning_momentum={p.learning_momentum:f}",
        f"training_algorithm={int(p.training_algorithm)}",
        f"train_error_function={int(p.train_error_function)}",
        f"train_stop_function={int(p.train_stop_function)}",
        f"cascade_output_change_fraction={c.output_change_fraction:f}",
        f"quickprop_decay={p.quickprop_decay:f}",
        f"quickprop_mu={p.quickprop_mu:f}",
        f"rprop_increase_factor={p.rprop_increase_factor:f}",
        f"rprop_decrease_factor={p.rprop_decrease_factor:f}",
        f"rprop_delta_min={p.rprop_delta_min:f}",
        f"rprop_delta_max={p.rprop_delta_max:f}",
        f"rprop_delta_zero={p.rprop_delta_zero:f}",
        f"cascade_output_stagnation_epochs={c.output_stagnation_epochs}",
        f"cascade_candidate_change_fraction={c.candidate_change_fraction:f}",
        f"cascade_candidate_stagnation_epochs={c.candidate_stagnation_epochs}",
        f"cascade_max_out_epochs={c.max_out_epochs}",
        f"cascade_min_out_epochs={c.min_out_epochs}",
        f"cascade_max_cand_epochs={c.max_cand_epochs}",
        f"cascade_min_cand_epochs={c.min_cand_epochs}",
        f"cascade_num_candidate_groups={c.num_candidate_groups}",
        "bit_fail_limit=" + _e(p.bit_fail_limit),
        "cascade_candidate_limit=" + _e(c.candidate_limit),
        "cascade_weight_multiplier=" + _e(c.weight_multiplier),
        f"cascade_activation_functions_count={len(c.activation_functions)}",
        "cascade_activation_functions="
        + "".join(f"{a} " for a in c.activation_functions),
        f"cascade_activation_steepnesses_count={len(c.activation_steepnesses)}",
        "cascade_activation_steepnesses="
        + "".join(_e(s) + " " for s in c.activation_steepnesses),
        "layer_sizes=" + "".join(f"{n} " for n in net.layer_neurons),
    ]
    if net.scale is None:
        lines.append("scale_included=0")
    else:
        lines.append("scale_included=1")
        for key, name in zip(_SCALE_KEYS, ScaleParams.FIELDS):
            values = getattr(net.scale, name)
            lines.append(f"{key}=" + "".join(f"{v:f} " for v in values))
    lines.append(
        _NEURONS
        + "".join(
            f"({n}, {a}, {_e(s)}) "
            for n, a, s in zip(
                net.num_inputs_per_neuron.tolist(),
                net.activation.tolist(),
                net.steepness.tolist(),
            )
        )
    )
    lines.append(
        _CONNECTIONS
        + "".join(
            f"({n}, {_e(w)}) "
            for n, w in zip(net.sources.tolist(), net.weights.tolist())
        )
    )
    return "\n".join(lines) + "\n"


def save(net: Network, path: str | Path) -> None:
    """Write `net` to `path` as ``FANN_FLO_2.1``, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(net), encoding="ascii")
    tmp.replace(path)


def content_hash(net: Network) -> str:
    """Return the hex SHA-256 of ``dumps(net)``: equal files, equal hashes."""
    return hashlib.sha256(dumps(net).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class TrainingData:
    """Rows of inputs and desired outputs, float64 arrays."""

    inputs: np.ndarray
    outputs: np.ndarray

    def __post_init__(self) -> None:
        inputs = np.ascontiguousarray(self.inputs, dtype=np.float64)
        outputs = np.ascontiguousarray(self.outputs, dtype=np.float64)
        if inputs.ndim != 2 or outputs.ndim != 2:
            raise NeuralError(
                f"inputs and outputs must be 2-D, got {inputs.shape} and {outputs.shape}"
            )
        if inputs.shape[0] != outputs.shape[0]:
            raise NeuralError(
                f"inputs have {inputs.shape[0]} rows but outputs have {outputs.shape[0]}"
            )
        if not (np.all(np.isfinite(inputs)) and np.all(np.isfinite(outputs))):
            raise NeuralError("training data must be finite (no NaN or inf)")
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "outputs", outputs)

    @property
    def num_data(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_input(self) -> int:
        return self.inputs.shape[1]

    @property
    def num_output(self) -> int:
        return self.outputs.shape[1]

    def shuffled(self, rng: np.random.Generator) -> TrainingData:
        """Return the rows in a random order."""
        order = rng.permutation(self.num_data)
        return TrainingData(self.inputs[order], self.outputs[order])


def _token_lines(text: str):
    for lineno, line in enumerate(text.split("\n"), start=1):
        for token in line.split():
            yield lineno, token


def parse_data(text: str, source: str = "<string>") -> TrainingData:
    """Parse `.data` text: ``N NUM_IN NUM_OUT`` then the rows.

    Like C FANN, any white space separates values; the writer's layout
    (inputs on one line, outputs on the next) is not required.
    """
    tokens = text.split()
    if len(tokens) < 3:
        lineno = text.count("\n") + 1
        raise FileFormatError(
            source,
            lineno,
            " ".join(tokens) or "<end of file>",
            "a header 'NUM_DATA NUM_INPUT NUM_OUTPUT'",
        )
    header = [_int(t, source, 1, "a header count") for t in tokens[:3]]
    rows, num_in, num_out = header
    expected = rows * (num_in + num_out)
    body = tokens[3:]
    values = None
    if len(body) == expected:
        try:
            values = np.array(body, dtype=np.float64)
        except ValueError:
            values = None
    if (
        values is None
        or not np.all(np.isfinite(values))
        or any("," in t or "_" in t for t in body)
    ):
        values = _slow_parse(text, source, rows, num_in, num_out, len(body))
    values = values.reshape(rows, num_in + num_out)
    return TrainingData(values[:, :num_in], values[:, num_in:])


def _slow_parse(text, source, rows, num_in, num_out, available) -> np.ndarray:
    """Find the exact token at fault and raise, or parse token by token."""
    width = num_in + num_out
    total = rows * width
    # The header alone must not size the buffer: a count of 10**12 would ask
    # for terabytes before the short body is noticed.
    values = np.empty(min(total, available))
    stream = _token_lines(text)
    for _ in range(3):
        next(stream)
    count = 0
    lineno = 1
    for lineno, token in stream:
        if count == total:
            raise FileFormatError(
                source,
                lineno,
                token,
                f"end of data after {rows} rows (the header says {rows} rows of "
                f"{num_in} inputs and {num_out} outputs)",
            )
        row, col = divmod(count, width)
        part = f"input {col}" if col < num_in else f"output {col - num_in}"
        values[count] = _float(token, source, lineno, f"a number ({part} of row {row})")
        count += 1
    if count < total:
        row, col = divmod(count, width)
        raise FileFormatError(
            source,
            lineno,
            "<end of file>",
            f"{total} values for {rows} rows of {num_in} inputs and {num_out} "
            f"outputs, but the file ends in row {row} after {count} values",
        )
    return values


def read_data(path: str | Path) -> TrainingData:
    """Read a C FANN `.data` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as error:
        raise FileFormatError(str(path), 1, "<binary data>", "ASCII text") from error
    except OSError as error:
        raise NeuralError(f"cannot read data file {path}: {error.strerror}") from error
    return parse_data(text, str(path))


def format_data(data: TrainingData) -> str:
    """Return `.data` text; ``repr`` floats read back to the same value."""
    parts = [f"{data.num_data} {data.num_input} {data.num_output}\n"]
    for x, y in zip(data.inputs.tolist(), data.outputs.tolist()):
        parts.append(" ".join(map(repr, x)) + "\n")
        parts.append(" ".join(map(repr, y)) + "\n")
    return "".join(parts)


def write_data(data: TrainingData, path: str | Path) -> None:
    """Write `data` as a `.data` file."""
    Path(path).write_text(format_data(data), encoding="ascii")
