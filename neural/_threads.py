"""One BLAS thread for the engine's matrix products.

The engine's products are tall and thin (thousands of rows, tens of
columns). On a shared 2-core machine OpenBLAS 0.3.31's second thread made
them 1.5x to 15x slower: 3600 x 21 @ 21 x 16 took 1330 us with two threads
and 81 us with one. Training and batched runs therefore hold BLAS to one
thread while they work. Without threadpoolctl the limit is skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_controller = None
_unavailable = False


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread inside the block."""
    global _controller, _unavailable
    if _controller is None and not _unavailable:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _unavailable = True
        else:
            _controller = ThreadpoolController()
    if _controller is None:
        yield
        return
    with _controller.limit(limits=1, user_api="blas"):
        yield
