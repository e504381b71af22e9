"""FANN-compatible neural networks in numpy.

Public API (see each module's docstring for details):

- Files: ``load(path)``, ``loads(text, source)``, ``dumps(net)``,
  ``save(net, path)``, ``content_hash(net) -> str``, ``read_data(path)``,
  ``parse_data(text, source)``, ``write_data(data, path)``,
  ``TrainingData(inputs, outputs)``, ``FileFormatError``.
- Networks: ``Network`` (``run`` on 1-D or 2-D input, ``test``, activation
  setters, ``init_weights``, ``randomize_weights``, scaling),
  ``create_standard(layer_sizes, rng)``, ``create_sparse(rate, sizes, rng)``,
  ``create_shortcut(layer_sizes, rng)``, ``Activation``,
  ``parse_activation``.
- Training: ``train(net, inputs, outputs, max_epochs, desired_error,
  on_epoch)`` with ``on_epoch(epoch, mse, bit_fail)``, ``make_trainer``,
  the five trainer classes, ``TrainingDiverged``, ``TrainingParams``.
"""


class NeuralError(Exception):
    """Root of the errors that the neural package raises."""


# Imported after NeuralError, which the submodules import from here.
from neural.activations import Activation, parse_activation
from neural.fileio import (
    FileFormatError,
    TrainingData,
    content_hash,
    dumps,
    format_data,
    load,
    loads,
    parse_data,
    read_data,
    save,
    write_data,
)
from neural.network import (
    Network,
    create_shortcut,
    create_sparse,
    create_standard,
)
from neural.params import (
    ErrorFunction,
    NetworkType,
    ScaleParams,
    StopFunction,
    TrainingAlgorithm,
    TrainingParams,
)
from neural.training import (
    BatchTrainer,
    EpochStats,
    IncrementalTrainer,
    QuickpropTrainer,
    RpropTrainer,
    SarpropTrainer,
    TrainingDiverged,
    TrainResult,
    make_trainer,
    train,
)

__all__ = [
    "Activation",
    "BatchTrainer",
    "EpochStats",
    "ErrorFunction",
    "FileFormatError",
    "IncrementalTrainer",
    "Network",
    "NetworkType",
    "NeuralError",
    "QuickpropTrainer",
    "RpropTrainer",
    "SarpropTrainer",
    "ScaleParams",
    "StopFunction",
    "TrainResult",
    "TrainingAlgorithm",
    "TrainingData",
    "TrainingDiverged",
    "TrainingParams",
    "content_hash",
    "create_shortcut",
    "create_sparse",
    "create_standard",
    "dumps",
    "format_data",
    "load",
    "loads",
    "make_trainer",
    "parse_activation",
    "parse_data",
    "read_data",
    "save",
    "train",
    "write_data",
]
