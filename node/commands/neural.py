"""``synaptic-mesh neural``: train, test and run FANN networks locally.

``neural train DATA`` creates and trains a network and saves it as a C FANN
``.net`` file; ``neural test NET DATA`` reports MSE, bit fail and
classification error; ``neural run NET`` prints outputs for one input row or
a ``.data`` file. Each takes ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

ALGORITHMS = ("incremental", "batch", "rprop", "quickprop", "sarprop")
ACTIVATION_HELP = (
    "FANN activation name, e.g. sigmoid_symmetric, sigmoid, linear, elliot, "
    "gaussian, linear_piece_rect (all 20 of FANN's names are accepted)"
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "neural",
        help="train, test and run FANN-compatible networks on this machine",
        description="Train, test and run C FANN compatible networks (.net files).",
    )
    commands = parser.add_subparsers(
        dest="neural_command", metavar="COMMAND", required=True
    )
    _register_train(commands)
    _register_test(commands)
    _register_run(commands)


def _register_train(commands) -> None:
    train = commands.add_parser(
        "train",
        help="create a network, train it on a .data file and save it",
        description=(
            "Create a layered network (or a sparse or shortcut one), train it on "
            "DATA (C FANN .data format) and save it as a C FANN .net file. "
            "Progress (epoch, MSE, bit fail) goes to stderr."
        ),
    )
    train.add_argument("data", metavar="DATA", type=Path, help="training .data file")
    train.add_argument("--test", metavar="DATA", type=Path, help="test .data file")
    train.add_argument(
        "--layers",
        required=True,
        help="neurons per layer without biases, inputs first: e.g. 8,4,2",
    )
    train.add_argument(
        "--hidden-activation",
        default="sigmoid_symmetric",
        help=ACTIVATION_HELP + " (default sigmoid_symmetric)",
    )
    train.add_argument(
        "--output-activation",
        default="sigmoid",
        help=ACTIVATION_HELP + " (default sigmoid)",
    )
    train.add_argument(
        "--steepness",
        type=float,
        default=0.5,
        help="activation steepness (default 0.5)",
    )
    train.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="rprop",
        help="training algorithm, as FANN names them (default rprop)",
    )
    train.add_argument(
        "--error-function",
        choices=("tanh", "linear"),
        default="tanh",
        help="error backpropagated from the outputs (default tanh, as C FANN)",
    )
    train.add_argument(
        "--stop-function",
        choices=("mse", "bit"),
        default="mse",
        help="compare --desired-error with the MSE or the bit fail count (default mse)",
    )
    train.add_argument(
        "--learning-rate",
        type=float,
        default=0.7,
        help="for incremental, batch and quickprop (default 0.7)",
    )
    train.add_argument(
        "--momentum",
        type=float,
        default=0.0,
        help="learning momentum, incremental only (default 0)",
    )
    train.add_argument(
        "--epochs", type=int, default=1000, help="maximum epochs (default 1000)"
    )
    train.add_argument(
        "--desired-error",
        type=float,
        default=0.0,
        help="stop once the epoch's MSE (or bit fail) is at or below this (default 0)",
    )
    train.add_argument("--seed", type=int, help="random seed (default: fresh entropy)")
    train.add_argument(
        "--connection-rate",
        type=float,
        default=1.0,
        help="fraction of connections for a sparse network (default 1: full)",
    )
    train.add_argument(
        "--shortcut",
        action="store_true",
        help="connect every neuron to all neurons of all earlier layers",
    )
    train.add_argument(
        "--init",
        choices=("random", "widrow-nguyen"),
        default="random",
        help="initial weights: U[-0.1, 0.1) or Widrow-Nguyen from DATA",
    )
    train.add_argument(
        "--scale",
        action="store_true",
        help="scale inputs and outputs to [-1, 1] from DATA and keep it in the file",
    )
    train.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT.net",
        help="where to save the trained network",
    )
    train.add_argument("--json", action="store_true", help="print a JSON summary")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.set_defaults(func=run_train)


def _register_test(commands) -> None:
    test = commands.add_parser(
        "test",
        help="report MSE, bit fail and classification error of NET on DATA",
        description=(
            "Run NET on every row of DATA and report C FANN's MSE and bit fail "
            "count and the classification error (argmax, or a threshold at the "
            "middle of the output range for one output)."
        ),
    )
    test.add_argument("net", metavar="NET", type=Path, help="C FANN .net file")
    test.add_argument("data", metavar="DATA", type=Path, help=".data file")
    test.add_argument("--json", action="store_true", help="print JSON")
    test.set_defaults(func=run_test)


def _register_run(commands) -> None:
    run = commands.add_parser(
        "run",
        help="print the outputs of NET for one input row or a .data file",
        description=(
            "Print NET's outputs, one row per line. Inputs and outputs are "
            "scaled when NET carries scaling parameters."
        ),
    )
    run.add_argument("net", metavar="NET", type=Path, help="C FANN .net file")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help='one row of inputs, e.g. "0.1 0.2 0.3"')
    source.add_argument("--data", type=Path, help=".data file whose inputs to run")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.set_defaults(func=run_run)


class _Progress:
    """A one-line progress bar on stderr (periodic lines when not a TTY)."""

    WIDTH = 30

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.step = max(self.total // 10, 1)
        self.latest: tuple[int, float, int] | None = None
        self.shown = 0

    def __call__(
        self, epoch: int, mse: float, bit_fail: int, final: bool = False
    ) -> None:
        if not self.enabled:
            return
        self.latest = (epoch, mse, bit_fail)
        final = final or epoch == self.total
        if self.tty:
            now = time.monotonic()
            if not final and now - self.last < 0.1:
                return
            self.last = now
            filled = self.WIDTH * epoch // self.total
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            sys.stderr.write(
                f"\repoch {epoch:>{len(str(self.total))}}/{self.total} [{bar}] "
                f"MSE {mse:.6g} bit fail {bit_fail}"
            )
            sys.stderr.flush()
            self.shown = epoch
        elif epoch == 1 or epoch % self.step == 0 or final:
            sys.stderr.write(
                f"epoch {epoch}/{self.total} MSE {mse:.6g} bit fail {bit_fail}\n"
            )
            self.shown = epoch

    def close(self) -> None:
        """Show the last epoch (throttling may have skipped it) and end the line."""
        if self.enabled and self.latest is not None:
            epoch, mse, bit_fail = self.latest
            if epoch != self.shown:
                self(epoch, mse, bit_fail, final=True)
            if self.tty:
                sys.stderr.write("\n")


def _parse_layers(text: str) -> list[int]:
    from neural import NeuralError

    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise NeuralError(
            f"--layers {text!r} is invalid: expected comma-separated counts like 8,4,2"
        ) from None
    if len(sizes) < 2 or any(n < 1 for n in sizes):
        raise NeuralError(f"--layers {text!r} needs >= 2 layers of >= 1 neuron")
    return sizes


def _fail(error: Exception) -> int:
    print(f"synaptic-mesh: error: {error}", file=sys.stderr)
    return 1


def _create(args, data, rng):
    import neural

    sizes = _parse_layers(args.layers)
    if sizes[0] != data.num_input or sizes[-1] != data.num_output:
        raise neural.NeuralError(
            f"--layers {args.layers} has {sizes[0]} inputs and {sizes[-1]} outputs "
            f"but {args.data} has {data.num_input} and {data.num_output}"
        )
    if args.shortcut:
        net = neural.create_shortcut(sizes, rng)
    else:
        net = neural.create_sparse(args.connection_rate, sizes, rng)
    net.set_activation_function_hidden(args.hidden_activation)
    net.set_activation_function_output(args.output_activation)
    net.set_activation_steepness_hidden(args.steepness)
    net.set_activation_steepness_output(args.steepness)
    net.set_params(
        training_algorithm=neural.TrainingAlgorithm[args.algorithm.upper()],
        train_error_function=neural.ErrorFunction[args.error_function.upper()],
        train_stop_function=neural.StopFunction[args.stop_function.upper()],
        learning_rate=args.learning_rate,
        learning_momentum=args.momentum,
    )
    return net


def run_train(args: argparse.Namespace) -> int:
    import numpy as np

    import neural

    try:
        data = neural.read_data(args.data)
        test = neural.read_data(args.test) if args.test else None
        rng = np.random.default_rng(args.seed)
        net = _create(args, data, rng)
        inputs, outputs = data.inputs, data.outputs
        if args.scale:
            net.set_scaling_params(inputs, outputs)
            inputs, outputs = net.scale_input(inputs), net.scale_output(outputs)
        if args.init == "widrow-nguyen":
            net.init_weights(inputs, rng)
        logger.info(
            "training started layers=%s algorithm=%s rows=%d epochs=%d",
            args.layers,
            args.algorithm,
            data.num_data,
            args.epochs,
        )
        progress = _Progress(args.epochs, not args.quiet)
        started = time.perf_counter()
        try:
            result = neural.train(
                net, inputs, outputs, args.epochs, args.desired_error, progress, rng=rng
            )
        finally:
            progress.close()
        seconds = time.perf_counter() - started
        neural.save(net, args.output)
    except neural.NeuralError as error:
        return _fail(error)
    summary = {
        "output": str(args.output),
        "epochs": result.epochs,
        "seconds": round(seconds, 3),
        "train_mse": result.mse,
        "train_bit_fail": result.bit_fail,
        "desired_error_reached": result.reached,
        "content_hash": neural.content_hash(net),
    }
    if test is not None:
        summary["test"] = _evaluate(net, test)
    logger.info("training finished epochs=%d mse=%g", result.epochs, result.mse)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    print(
        f"saved {summary['output']} after {summary['epochs']} epochs "
        f"({summary['seconds']} s)"
    )
    print(f"train MSE {summary['train_mse']:.6g}  bit fail {summary['train_bit_fail']}")
    if "test" in summary:
        t = summary["test"]
        print(
            f"test  MSE {t['mse']:.6g}  bit fail {t['bit_fail']}  "
            f"classification error {t['classification_error']:.4f}"
        )


def _evaluate(net, data) -> dict:
    import numpy as np

    from neural import NeuralError

    if data.num_input != net.num_inputs or data.num_output != net.num_outputs:
        raise NeuralError(
            f"the data has {data.num_input} inputs and {data.num_output} outputs, "
            f"the network {net.num_inputs} and {net.num_outputs}"
        )
    inputs, outputs = data.inputs, data.outputs
    if net.scale is not None:
        inputs, outputs = net.scale_input(inputs), net.scale_output(outputs)
    mse, bit_fail = net.test(inputs, outputs)
    y = net.run(inputs)
    if net.num_outputs > 1:
        # Per-output scaling can reorder outputs, so compare the classes in
        # the data's own units.
        if net.scale is not None:
            y = net.descale_output(y)
        wrong = np.argmax(y, axis=1) != np.argmax(data.outputs, axis=1)
    else:
        middle = 0.0 if net.output_symmetric()[0] else 0.5
        wrong = (y[:, 0] >= middle) != (outputs[:, 0] >= middle)
    error = float(np.mean(wrong)) if len(wrong) else 0.0
    return {
        "rows": data.num_data,
        "mse": mse,
        "bit_fail": bit_fail,
        "classification_error": error,
    }


def run_test(args: argparse.Namespace) -> int:
    import neural

    try:
        net = neural.load(args.net)
        report = _evaluate(net, neural.read_data(args.data))
    except neural.NeuralError as error:
        return _fail(error)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"rows                  {report['rows']}")
        print(f"MSE                   {report['mse']:.9g}")
        print(f"bit fail              {report['bit_fail']}")
        print(f"classification error  {report['classification_error']:.4f}")
    return 0


def _input_row(text: str, count: int):
    import numpy as np

    from neural import NeuralError

    tokens = text.replace(",", " ").split()
    try:
        row = np.array([float(token) for token in tokens])
    except ValueError:
        raise NeuralError(f"--input {text!r} is invalid: expected numbers") from None
    if row.size != count:
        raise NeuralError(f"--input has {row.size} values; the network takes {count}")
    if not np.all(np.isfinite(row)):
        raise NeuralError("--input values must be finite")
    return row[None, :]


def run_run(args: argparse.Namespace) -> int:
    import neural

    try:
        net = neural.load(args.net)
        if args.input is not None:
            inputs = _input_row(args.input, net.num_inputs)
        else:
            data = neural.read_data(args.data)
            if data.num_input != net.num_inputs:
                raise neural.NeuralError(
                    f"{args.data} has {data.num_input} inputs; the network takes "
                    f"{net.num_inputs}"
                )
            inputs = data.inputs
        if net.scale is not None:
            outputs = net.descale_output(net.run(net.scale_input(inputs)))
        else:
            outputs = net.run(inputs)
    except neural.NeuralError as error:
        return _fail(error)
    if args.json:
        print(json.dumps({"outputs": outputs.tolist()}))
    else:
        for row in outputs:
            print(" ".join(f"{value:.9g}" for value in row))
    return 0
