"""Seconds per pipeline stage, measured by wrapping the stage functions for one run.

What it knows: how to swap a function for a timed copy and put it back, and the machine
figures every benchmark prints beside its timings (load average, peak memory). Shared by
``benchmarks/scoring.py`` and ``benchmarks/training.py``; never imported by the package.
"""

from __future__ import annotations

import functools
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min, {os.cpu_count()} CPUs)"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageClock:
    """Adds up the seconds spent inside wrapped callables, per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds.setdefault(stage, 0.0)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t0

        return timed

    def wrap_iter(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Like :meth:`wrap` for a generator function: times each step of the iteration."""
        self.seconds.setdefault(stage, 0.0)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            it = iter(fn(*args, **kwargs))
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    self.seconds[stage] += time.perf_counter() - t0
                yield item

        return timed

    @contextmanager
    def patched(self, owner: Any, name: str, stage: str) -> Iterator[None]:
        """Time ``owner.name`` (a module function or a method) as ``stage`` inside the block."""
        own = name in vars(owner)  # else inherited, or a method seen through an instance
        original = getattr(owner, name)
        setattr(owner, name, self.wrap(stage, original))
        try:
            yield
        finally:
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
