"""Helpers for the book *Knowledge Transfer Between Deep Learning Models*.

The package is laid out like the method it teaches. The four steps of
knowledge transfer each have a module:

1. :mod:`kt_helpers.selection` — choose the source model;
2. :mod:`kt_helpers.extraction` — extract its knowledge (outputs, features, weights);
3. :mod:`kt_helpers.mapping` — map the knowledge into the target's space, K_t = T(K_s);
4. :mod:`kt_helpers.fusion` — fuse it with the target's own, K_t' = α·K_t + (1 − α)·T(K_s).

Around them: :mod:`~kt_helpers.data` (the digits as images and as row
sequences), :mod:`~kt_helpers.models` (CNN, RNN, MLP), :mod:`~kt_helpers.train`
(seeding, one training loop, evaluation), :mod:`~kt_helpers.metrics` and
:mod:`~kt_helpers.plots`; :mod:`~kt_helpers.reproducibility` (the pinned CPU
kernels) and :mod:`~kt_helpers.claims` (the prose's claims, checked in code).
"""

from . import cache, claims, data, extraction, fusion, mapping, merging, metrics, models, reproducibility, selection, train

__version__ = "0.1.0"

__all__ = [
    "cache",
    "claims",
    "data",
    "extraction",
    "fusion",
    "mapping",
    "merging",
    "metrics",
    "models",
    "reproducibility",
    "selection",
    "train",
    "__version__",
]
