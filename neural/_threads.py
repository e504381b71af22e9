"""One BLAS thread for the engine's matrix products.

The engine's products are tall and thin (thousands of rows, tens of
columns). On a shared 2-core machine OpenBLAS 0.3.31's second thread made
them 1.5x to 15x slower: 3600 x 21 @ 21 x 16 took 1330 us with two threads
and 81 us with one. Training and batched runs therefore hold BLAS to one
thread while they work. Without threadpoolctl the limit is skipped.

threadpoolctl's own ``limit()`` costs about 15 us per use, a few percent of a
batched run, so the BLAS libraries' setters are called directly. The BLAS
thread count is global to the process, so nested and concurrent users share
one reference count under a lock, and the last one out restores the count.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_libraries: list | None = None
_saved: list[int] = []
_depth = 0


def _blas_libraries() -> list:
    global _libraries
    if _libraries is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _libraries = []
        else:
            selected = ThreadpoolController().select(user_api="blas")
            _libraries = list(selected.lib_controllers)
    return _libraries


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread inside the block."""
    global _depth, _saved
    libraries = _blas_libraries()
    if not libraries:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = [library.get_num_threads() for library in libraries]
            for library, count in zip(libraries, _saved):
                if count != 1:
                    library.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for library, count in zip(libraries, _saved):
                    if count != 1:
                        library.set_num_threads(count)
