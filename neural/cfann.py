"""Optional ctypes binding to C FANN 2.2.0, for comparisons only.

Public API: ``find_library() -> str | None``, ``CFann(path_or_lib)``,
``CNet`` (``load``, ``save``, ``run``, ``train_epoch``, ``test``,
``close``), ``CData`` (a C ``fann_train_data``), ``CFannError``.

Tests check files against the float build of C FANN with it, and the
benchmark times that build. Debian's ``libfann-dev`` ships it as
``libfloatfann.so.2``, and ``bench/setup`` installs it. The engine itself
never needs it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
from pathlib import Path

import numpy as np

from neural import NeuralError
from neural.fileio import TrainingData, format_data

_CANDIDATES = ("libfloatfann.so.2", "libfloatfann.so", "floatfann")


class CFannError(NeuralError):
    """C FANN is missing or returned an error."""


def find_library() -> str | None:
    """Return a loadable name of C FANN's float library, or None."""
    for name in _CANDIDATES:
        try:
            ctypes.CDLL(name)
        except OSError:
            found = ctypes.util.find_library(name)
            if found:
                return found
            continue
        return name
    return None


class CFann:
    """The loaded C library with typed entry points."""

    def __init__(self, name: str | None = None) -> None:
        name = name or find_library()
        if name is None:
            raise CFannError(
                "C FANN (libfloatfann) not found; install Debian's libfann-dev "
                "with bench/setup"
            )
        lib = ctypes.CDLL(name)
        p, f, u, c = ctypes.c_void_p, ctypes.c_float, ctypes.c_uint, ctypes.c_char_p
        self._declare(lib, "fann_create_from_file", p, [c])
        self._declare(lib, "fann_save", ctypes.c_int, [p, c])
        self._declare(lib, "fann_run", ctypes.POINTER(f), [p, ctypes.POINTER(f)])
        self._declare(lib, "fann_destroy", None, [p])
        self._declare(lib, "fann_read_train_from_file", p, [c])
        self._declare(lib, "fann_destroy_train", None, [p])
        self._declare(lib, "fann_train_epoch", f, [p, p])
        self._declare(lib, "fann_test_data", f, [p, p])
        self._declare(lib, "fann_get_bit_fail", u, [p])
        self._declare(lib, "fann_get_num_input", u, [p])
        self._declare(lib, "fann_get_num_output", u, [p])
        self._declare(lib, "fann_get_total_connections", u, [p])
        self._declare(lib, "fann_set_error_log", None, [p, p])
        # Silence C FANN's own error printing; failures surface as NULLs.
        lib.fann_set_error_log(None, None)
        self.lib = lib

    @staticmethod
    def _declare(lib, name, restype, argtypes) -> None:
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes


class CNet:
    """A C FANN network loaded from a file."""

    def __init__(self, cfann: CFann, path: str | Path) -> None:
        self.lib = cfann.lib
        self.ptr = self.lib.fann_create_from_file(str(path).encode())
        if not self.ptr:
            raise CFannError(f"C FANN could not load {path}")
        self.num_inputs = self.lib.fann_get_num_input(self.ptr)
        self.num_outputs = self.lib.fann_get_num_output(self.ptr)
        self.total_connections = self.lib.fann_get_total_connections(self.ptr)

    def save(self, path: str | Path) -> None:
        if self.lib.fann_save(self.ptr, str(path).encode()) != 0:
            raise CFannError(f"C FANN could not save {path}")

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Call ``fann_run`` for each row; returns float64 (rows, outputs)."""
        rows = np.ascontiguousarray(np.atleast_2d(inputs), dtype=np.float32)
        out = np.empty((rows.shape[0], self.num_outputs))
        for index, row in enumerate(rows):
            ptr = row.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            result = self.lib.fann_run(self.ptr, ptr)
            out[index] = result[: self.num_outputs]
        return out

    def train_epoch(self, data: CData) -> float:
        return float(self.lib.fann_train_epoch(self.ptr, data.ptr))

    def test(self, data: CData) -> tuple[float, int]:
        """Return (MSE, bit fail) of ``fann_test_data`` over `data`."""
        mse = float(self.lib.fann_test_data(self.ptr, data.ptr))
        return mse, int(self.lib.fann_get_bit_fail(self.ptr))

    def close(self) -> None:
        if self.ptr:
            self.lib.fann_destroy(self.ptr)
            self.ptr = None

    def __enter__(self) -> CNet:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CData:
    """A C ``fann_train_data`` read from a `.data` file or made from arrays."""

    def __init__(self, cfann: CFann, source: str | Path | TrainingData) -> None:
        self.lib = cfann.lib
        if isinstance(source, TrainingData):
            fd, name = tempfile.mkstemp(suffix=".data")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(format_data(source))
                self.ptr = self.lib.fann_read_train_from_file(name.encode())
            finally:
                os.unlink(name)
        else:
            self.ptr = self.lib.fann_read_train_from_file(str(source).encode())
        if not self.ptr:
            raise CFannError(f"C FANN could not read training data {source}")

    def close(self) -> None:
        if self.ptr:
            self.lib.fann_destroy_train(self.ptr)
            self.ptr = None

    def __enter__(self) -> CData:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()
