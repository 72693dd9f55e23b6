"""One thread for scoring's many small dense operations.

What it knows: scoring runs thousands of tiny matrix products (per event, a similarity of
one prompt to the account's last 64; per account, a topic product; per batch of accounts,
one GRU step per event). Split across threads they gain nothing, and on a busy machine
every split waits for a helper thread that is not scheduled: at a load average of 5 on 2
cores, numpy's OpenBLAS topic products ran 5x slower with two threads than with one and the
sequence network 60x slower (``benchmarks/scoring.py`` prints the network figure). Inside
``one_thread()`` torch (when it is imported) and the BLAS libraries numpy uses run one
thread; the previous settings come back when the outermost block ends.

What it does not know: what runs inside. The limit is process-wide while a block is open
(both libraries keep one setting per process), so other threads see it too; the service
already runs torch on one thread (``serve/settings.py``). Results do not change: a product
splits its output rows between threads, never the sums that make one value.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_depth = 0
_undo: list[Callable[[], None]] = []


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch thread and one BLAS thread (re-entrant, thread-safe)."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            _undo[:] = _limit_to_one()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for undo in reversed(_undo):
                    undo()
                _undo.clear()


def _limit_to_one() -> list[Callable[[], None]]:
    undo: list[Callable[[], None]] = []
    torch = sys.modules.get("torch")  # never imported here: model/ stays cheap to import
    if torch is not None:
        before = torch.get_num_threads()
        if before != 1:
            torch.set_num_threads(1)
            undo.append(lambda: torch.set_num_threads(before))
    for lib in _blas_libraries():
        blas_before = lib.get_num_threads()
        if blas_before is not None and blas_before != 1:
            lib.set_num_threads(1)
            undo.append(functools.partial(lib.set_num_threads, blas_before))
    return undo


@functools.cache
def _blas_libraries() -> tuple[Any, ...]:
    """threadpoolctl's handles on the BLAS libraries loaded now (none without threadpoolctl)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # a dependency of scikit-learn, so normally present
        return ()
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)
