"""Run independent experiments (seeds, candidates) on two CPU cores at once.

The book's models are so small that one training run keeps one core busy and
no more (:data:`kt_helpers.train.MAX_THREADS` is 1). Most laptops, Colab's free
runtime and the book's own test machine have two or more cores, so
experiments that do not depend on each other — the seeds of a comparison, the
cells of a grid — can run side by side. :func:`map_runs` does that with forked
worker processes, and is an exact replacement for ``[fn(x) for x in items]``:

* each run must seed itself (every function in the book calls
  :func:`~kt_helpers.train.seed_everything` first), so it gives the same bits
  in a worker as in the notebook's own process;
* the global random state after the call is the state before it, whether the
  runs were parallel or not, so the rest of the notebook prints the same digits
  on a machine that runs them one after the other;
* the results come back in the order of ``items``.

It runs the items one after the other (in this process) where forking is not
available (Windows, and macOS, where it is unsafe), on a single core, for one
item, or when ``KT_PARALLEL=off``. A function defined in the notebook works,
since forked workers inherit it. Introduced in chapter 7.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import torch

from ._validation import check_int

__all__ = ["SWITCH_VARIABLE", "map_runs", "workers"]

#: Environment variable that makes :func:`map_runs` run everything in this process when ``off``.
SWITCH_VARIABLE = "KT_PARALLEL"
T = TypeVar("T")
R = TypeVar("R")
_FN: Callable[[Any], Any] | None = None  # the function the forked workers call
_ITEMS: list[Any] = []  # its arguments: forked workers inherit them, so only an index travels


def workers(max_workers: int = 2) -> int:
    """How many processes :func:`map_runs` would use here: 1 (one after the other) or more."""
    check_int(max_workers, "workers", "max_workers")
    if os.environ.get(SWITCH_VARIABLE, "").lower() == "off":
        return 1
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(max_workers, cores))


def _warm_up() -> None:
    """Import, in this process, what every training run imports lazily on its first optimiser.

    torch imports ``torch._dynamo`` the first time an optimiser is built (about
    0.7 s). A forked worker that does it itself pays that again in every worker
    of every :func:`map_runs` call, since the import dies with the worker; done
    once here, before forking, the workers inherit it. It touches no random state.
    """
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


def _call(index: int) -> Any:
    assert _FN is not None
    return _FN(_ITEMS[index])


def map_runs(fn: Callable[[T], R], items: Iterable[T], *, max_workers: int = 2) -> list[R]:
    """``[fn(item) for item in items]``, with up to ``max_workers`` runs at a time.

    Args:
        fn: one independent run; it must seed itself and must not rely on
            changes made by an earlier run (each worker is a copy of this
            process as it was when :func:`map_runs` was called).
        items: the runs' arguments, e.g. seeds.
        max_workers: at most this many processes (never more than the cores).

    Returns:
        The results, in the order of ``items``. The items need not be picklable
        (the workers inherit them; a lambda will do), but the results travel
        back by pickling: models, tensors, numbers and data frames do.

    Example:
        >>> map_runs(lambda seed: seed * seed, [1, 2, 3])
        [1, 4, 9]
    """
    global _FN, _ITEMS
    if not callable(fn):
        raise ValueError(f"The 'fn' parameter of map_runs must be callable. Got {type(fn).__name__} instead.")
    items = list(items)
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    count = min(workers(max_workers), len(items))
    try:
        if count <= 1:
            return [fn(item) for item in items]
        _FN, _ITEMS = fn, items
        _warm_up()
        threads = torch.get_num_threads()
        with multiprocessing.get_context("fork").Pool(count) as pool:
            results = pool.map(_call, range(len(items)), chunksize=1)
        torch.set_num_threads(threads)
        return results
    finally:
        _FN, _ITEMS = None, []
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
