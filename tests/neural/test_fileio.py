"""Reading and writing C FANN .net and .data files."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neural
from neural import FileFormatError, NeuralError

REFERENCE_RUNS = [
    f"{name}_e{epochs}"
    for name in ("xor", "diabetes", "thyroid", "robot", "mushroom")
    for epochs in (200, 1000)
]


@pytest.fixture(scope="module")
def xor_text(fann_datasets) -> str:
    return (fann_datasets / "reference/nets/xor_e200.net").read_text()


@pytest.mark.parametrize("run", REFERENCE_RUNS)
@pytest.mark.parametrize("stage", ["init.net", "net"])
def test_reference_net_save_is_byte_identical(fann_datasets, run, stage):
    path = fann_datasets / "reference/nets" / f"{run}.{stage}"
    text = path.read_text()
    net = neural.load(path)
    assert neural.dumps(net) == text


def test_save_and_load_through_disk(tmp_path, xor_text):
    net = neural.loads(xor_text)
    target = tmp_path / "copy.net"
    neural.save(net, target)
    assert target.read_text() == xor_text
    assert not (tmp_path / "copy.net.tmp").exists()


def test_content_hash_is_sha256_of_text(xor_text):
    import hashlib

    net = neural.loads(xor_text)
    assert neural.content_hash(net) == hashlib.sha256(xor_text.encode()).hexdigest()


def test_content_hash_changes_with_weights(xor_text):
    net = neural.loads(xor_text)
    before = neural.content_hash(net)
    weights = net.weights.copy()
    weights[0] += 1e-3
    net.set_weights(weights)
    assert neural.content_hash(net) != before


def test_missing_cascade_min_lines_accepted(xor_text):
    lines = [
        line
        for line in xor_text.splitlines(keepends=True)
        if not line.startswith(("cascade_min_out_epochs", "cascade_min_cand_epochs"))
    ]
    net = neural.loads("".join(lines))
    assert net.cascade.min_out_epochs == 50
    assert neural.dumps(net) == xor_text


def test_flo_2_0_without_scale_line(xor_text):
    text = xor_text.replace("FANN_FLO_2.1", "FANN_FLO_2.0").replace(
        "scale_included=0\n", ""
    )
    net = neural.loads(text)
    reference = neural.loads(xor_text)
    x = np.array([[1.0, -1.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(net.run(x), reference.run(x))


def _to_fixed(text: str, point: int) -> str:
    """Rewrite a float .net text the way C FANN's fixed-point save would."""
    scale = 2**point

    def fixed(match):
        return str(int(np.floor(float(match.group(0)) * scale + 0.5)))

    out = []
    for line in text.splitlines():
        if line.startswith(("neurons", "connections")):
            head, body = line.split("=", 1)
            body = re.sub(r"(?<=, )-?\d\.\d+e[+-]\d+", fixed, body)
            out.append(f"{head}={body}")
        elif line.startswith(
            ("bit_fail_limit", "cascade_candidate_limit", "cascade_weight_multiplier")
        ):
            key, value = line.split("=")
            out.append(f"{key}={fixed(re.match(r'.*', value))}")
        elif line.startswith("cascade_activation_steepnesses="):
            values = line.split("=")[1].split()
            out.append(
                "cascade_activation_steepnesses="
                + "".join(f"{int(float(v) * scale + 0.5)} " for v in values)
            )
        elif line.startswith("scale_included"):
            continue
        elif line == "FANN_FLO_2.1":
            out += ["FANN_FIX_2.0", f"decimal_point={point}"]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_fix_2_0_converted_with_decimal_point(xor_text):
    fixed = neural.loads(_to_fixed(xor_text, 13))
    reference = neural.loads(xor_text)
    np.testing.assert_allclose(fixed.weights, reference.weights, atol=2**-13)
    assert fixed.steepness[3] == 0.5
    assert fixed.params.bit_fail_limit == pytest.approx(0.35, abs=2**-13)
    assert neural.dumps(fixed).startswith("FANN_FLO_2.1\n")


def _replace_line(text: str, prefix: str, new: str) -> str:
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    lines[index] = new
    return "\n".join(lines) + "\n"


def _error(text: str) -> FileFormatError:
    with pytest.raises(FileFormatError) as info:
        neural.loads(text, "bad.net")
    return info.value


def test_error_unknown_version(xor_text):
    error = _error(xor_text.replace("FANN_FLO_2.1", "FANN_FLO_9.9"))
    assert (error.line, error.token) == (1, "FANN_FLO_9.9")
    assert "bad.net:1:" in str(error)


def test_error_decimal_comma(xor_text):
    error = _error(xor_text.replace("learning_rate=0.700000", "learning_rate=0,700000"))
    assert error.line == 3
    assert error.token == "0,700000"
    assert "decimal comma" in str(error)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_error_non_finite_weight(xor_text, bad):
    head, body = xor_text.split("connections (connected_to_neuron, weight)=")
    body = re.sub(r"^\(0, [^)]*\)", f"(0, {bad})", body)
    error = _error(f"{head}connections (connected_to_neuron, weight)={body}")
    assert error.line == 36
    assert error.token == bad
    assert "finite" in error.expected


def test_error_truncated_connections_line(xor_text):
    text = xor_text.rstrip("\n")
    cut = text[: text.rindex("(") + 4]
    error = _error(cut + "\n")
    assert error.line == 36
    assert "truncated" in error.expected


def test_error_connection_count_disagrees(xor_text):
    text = xor_text.rstrip("\n")
    error = _error(text[: text.rindex("(")] + "\n")
    assert error.line == 36
    assert "13 connections" in error.expected


def test_error_steepness_not_positive(xor_text):
    text = xor_text.replace(
        "(3, 5, 5.00000000000000000000e-01) (3, 5",
        "(3, 5, 0.00000000000000000000e+00) (3, 5",
        1,
    )
    error = _error(text)
    assert error.line == 35
    assert "steepness > 0" in error.expected


def test_error_layer_sizes_disagree_with_neurons(xor_text):
    error = _error(xor_text.replace("layer_sizes=3 4 2 ", "layer_sizes=3 5 2 "))
    assert error.line == 35
    assert "10 neurons" in error.expected


def test_error_keys_out_of_order(xor_text):
    text = _replace_line(xor_text, "num_layers=", "learning_rate=0.7")
    error = _error(text)
    assert error.line == 2
    assert "num_layers" in error.expected


def test_error_neuron_with_more_inputs_than_layer(xor_text):
    text = xor_text.replace(
        "(4, 5, 5.00000000000000000000e-01)", "(5, 5, 5.00000000000000000000e-01)"
    )
    text = text.rstrip("\n") + "(0, 1.0e+00) \n"
    with pytest.raises(NeuralError, match="5 inputs but only 4 neurons"):
        neural.loads(text, "bad.net")


def test_error_trailing_garbage(xor_text):
    error = _error(xor_text + "surprise\n")
    assert error.token == "surprise"


def test_load_names_missing_file(tmp_path):
    with pytest.raises(NeuralError, match="cannot read network file"):
        neural.load(tmp_path / "absent.net")


# -- .data files -------------------------------------------------------------


def test_read_reference_data(fann_datasets):
    data = neural.read_data(fann_datasets / "thyroid.train")
    assert data.inputs.shape == (3600, 21)
    assert data.outputs.shape == (3600, 3)
    assert data.inputs[0, 0] == 0.53


def test_data_any_whitespace_layout():
    data = neural.parse_data("2 2 1\n1 2 3 4 5\n6\n")
    np.testing.assert_array_equal(data.inputs, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(data.outputs, [[3], [6]])


def _data_error(text: str) -> FileFormatError:
    with pytest.raises(FileFormatError) as info:
        neural.parse_data(text, "bad.data")
    return info.value


def test_data_error_too_few_rows():
    error = _data_error("3 2 1\n0 0\n0\n1 1\n1\n")
    assert error.token == "<end of file>"
    assert "3 rows" in error.expected


@pytest.mark.parametrize(
    "header", ["999999999999 2 1", "1000000000 2000000000 1", "3 1 99999999999"]
)
def test_data_error_huge_header_counts(header):
    # The counts must be checked against the body before any buffer is sized
    # from them; sizing first fails with MemoryError or "array is too big".
    error = _data_error(f"{header}\n0 0\n1\n")
    assert (error.line, error.token) == (3, "<end of file>")
    assert "the file ends in row" in error.expected


def test_data_error_too_many_values():
    error = _data_error("1 2 1\n0 0\n0\n1 1\n")
    assert (error.line, error.token) == (4, "1")


def test_data_error_decimal_comma():
    error = _data_error("2 2 1\n0.5 0.25\n1\n0,5 1\n0\n")
    assert (error.line, error.token) == (4, "0,5")
    assert "decimal comma" in error.expected
    assert "input 0 of row 1" in error.expected


@pytest.mark.parametrize("bad", ["nan", "inf", "NaN", "-Infinity"])
def test_data_error_non_finite(bad):
    error = _data_error(f"1 2 1\n0 {bad}\n0\n")
    assert (error.line, error.token) == (2, bad)


def test_data_error_bad_header():
    error = _data_error("2 x 1\n")
    assert (error.line, error.token) == (1, "x")


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def training_data(draw):
    rows = draw(st.integers(0, 6))
    num_in = draw(st.integers(1, 5))
    num_out = draw(st.integers(1, 3))
    values = draw(
        st.lists(
            finite,
            min_size=rows * (num_in + num_out),
            max_size=rows * (num_in + num_out),
        )
    )
    array = np.array(values, dtype=np.float64).reshape(rows, num_in + num_out)
    return neural.TrainingData(array[:, :num_in], array[:, num_in:])


@settings(max_examples=60, deadline=None)
@given(training_data())
def test_data_round_trip_property(data):
    again = neural.parse_data(neural.format_data(data))
    np.testing.assert_array_equal(again.inputs, data.inputs)
    np.testing.assert_array_equal(again.outputs, data.outputs)
    assert again.inputs.shape == data.inputs.shape


@st.composite
def networks(draw):
    sizes = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
    kind = draw(st.sampled_from(["standard", "sparse", "shortcut"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "standard":
        net = neural.create_standard(sizes, rng)
    elif kind == "sparse":
        net = neural.create_sparse(draw(st.floats(0.1, 0.99)), sizes, rng)
    else:
        net = neural.create_shortcut(sizes, rng)
    net.set_activation_function_hidden(draw(st.integers(0, 19)))
    net.set_activation_function_output(draw(st.integers(0, 19)))
    net.set_activation_steepness_output(draw(st.floats(0.01, 4.0)))
    weight = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
    weights = draw(
        st.lists(weight, min_size=net.total_connections, max_size=net.total_connections)
    )
    net.set_weights(np.array(weights))
    return net


@settings(max_examples=60, deadline=None)
@given(networks())
def test_net_round_trip_property(net):
    text = neural.dumps(net)
    again = neural.loads(text)
    assert neural.dumps(again) == text
    np.testing.assert_array_equal(again.weights, net.weights)
    np.testing.assert_array_equal(again.sources, net.sources)
    x = np.linspace(-1, 1, 3 * net.num_inputs).reshape(3, net.num_inputs)
    np.testing.assert_array_equal(again.run(x), net.run(x))


@st.composite
def corrupted(draw, text: str):
    """Return `text` with a few random edits: cut, delete, insert, replace."""
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "delete", "insert", "replace", "dup"]))
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        if kind == "cut":
            text = text[:at]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif kind == "insert":
            text = text[:at] + draw(st.text(max_size=8)) + text[at:]
        elif kind == "replace":
            text = text[:at] + draw(st.sampled_from("0-9e.,( )\n=x")) + text[at + 1 :]
        else:
            lines = text.split("\n")
            index = draw(st.integers(0, len(lines) - 1))
            text = "\n".join(lines[: index + 1] + lines[index:])
    return text


XOR_TEXT = neural.dumps(neural.create_standard((2, 3, 1), np.random.default_rng(0)))


@settings(max_examples=300, deadline=None)
@given(corrupted(XOR_TEXT))
def test_corrupted_net_raises_only_neural_error(text):
    try:
        net = neural.loads(text, "peer.net")
    except NeuralError as error:
        assert "peer.net" in str(error) or "connection" in str(error)
        return
    assert net.run(np.zeros(net.num_inputs)).shape == (net.num_outputs,)


@settings(max_examples=200, deadline=None)
@given(corrupted("3 2 1\n0.5 1\n0\n1 1e-3\n1\n-1 2\n0.25\n"))
def test_corrupted_data_raises_only_neural_error(text):
    try:
        data = neural.parse_data(text, "peer.data")
    except NeuralError as error:
        assert "peer.data" in str(error)
        return
    assert data.inputs.shape[0] == data.outputs.shape[0]


def test_huge_sparse_layer_rejected_not_allocated():
    sizes = (5000, 5000)
    neurons = " ".join(
        ["(0, 0, 0.0)"] * 5001 + ["(1, 3, 0.5)"] * 5000 + ["(0, 3, 0.0)"]
    )
    connections = " ".join("(5000, 0.1)" for _ in range(5000))
    text = neural.dumps(neural.create_sparse(0.5, (3, 3), np.random.default_rng(0)))
    text = re.sub(
        r"layer_sizes=.*", f"layer_sizes={sizes[0] + 1} {sizes[1] + 1} ", text
    )
    text = re.sub(
        r"neurons \(.*",
        f"neurons (num_inputs, activation_function, activation_steepness)={neurons} ",
        text,
    )
    text = re.sub(
        r"connections \(.*",
        f"connections (connected_to_neuron, weight)={connections} ",
        text,
    )
    with pytest.raises(NeuralError, match="at most"):
        neural.loads(text, "big.net")


def test_unusual_spacing_takes_careful_parser(xor_text):
    spaced = xor_text.replace("(0, ", "( 0 ,  ")
    net = neural.loads(spaced)
    np.testing.assert_array_equal(net.weights, neural.loads(xor_text).weights)


def test_underscore_in_number_rejected(xor_text):
    head, body = xor_text.split("connections (connected_to_neuron, weight)=")
    body = re.sub(r"^\(0, [^)]*\)", "(0, 1_0.5)", body)
    error = _error(f"{head}connections (connected_to_neuron, weight)={body}")
    assert error.token == "1_0.5"
