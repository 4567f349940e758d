"""Input checks shared by every public function of :mod:`kt_helpers`.

Every message follows one formula: who raised it, what was expected, what was
given, and (where there is one) the fix, e.g.

    The 'alpha' parameter of fuse must be a float in [0, 1]. Got 1.5 instead.

Checks raise :class:`ValueError` (or :class:`TypeError` for a wrong type);
they never use ``assert``, which vanishes under ``python -O``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor


def check_alpha(alpha: Any, func: str, name: str = "alpha") -> float:
    """Return ``alpha`` as a float after checking that it lies in [0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or math.isnan(float(alpha)):
        raise ValueError(
            f"The '{name}' parameter of {func} must be a float in [0, 1]. Got {alpha!r} instead."
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(
            f"The '{name}' parameter of {func} must be a float in [0, 1]. Got {alpha!r} instead."
        )
    return float(alpha)


def check_positive(value: Any, func: str, name: str) -> float:
    """Return ``value`` as a float after checking that it is a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(float(value))
        or float(value) <= 0
    ):
        raise ValueError(
            f"The '{name}' parameter of {func} must be a finite number > 0. Got {value!r} instead."
        )
    return float(value)


def check_non_negative(value: Any, func: str, name: str) -> float:
    """Return ``value`` as a float after checking that it is a finite number >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(float(value))
        or float(value) < 0
    ):
        raise ValueError(
            f"The '{name}' parameter of {func} must be a finite number >= 0. Got {value!r} instead."
        )
    return float(value)


def check_fraction(value: Any, func: str, name: str, *, closed: bool = False) -> float:
    """Return ``value`` as a float after checking that it lies in (0, 1) (or (0, 1])."""
    interval = "(0, 1]" if closed else "(0, 1)"
    ok = not isinstance(value, bool) and isinstance(value, Real)
    if ok:
        v = float(value)
        ok = 0.0 < v < 1.0 or (closed and v == 1.0)
    if not ok:
        raise ValueError(
            f"The '{name}' parameter of {func} must be a float in {interval}. Got {value!r} instead."
        )
    return float(value)


def check_int(value: Any, func: str, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` after checking that it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"The '{name}' parameter of {func} must be an integer >= {minimum}. "
            f"Got {value!r} instead."
        )
    return value


def check_tensor(value: Any, func: str, name: str, *, ndim: int | None = None) -> Tensor:
    """Return ``value`` after checking that it is a tensor (of ``ndim`` dimensions)."""
    if not isinstance(value, Tensor):
        raise TypeError(
            f"The '{name}' parameter of {func} must be a torch.Tensor. "
            f"Got {type(value).__name__} instead."
        )
    if ndim is not None and value.ndim != ndim:
        raise ValueError(
            f"The '{name}' parameter of {func} must have {ndim} dimensions. "
            f"Got shape {tuple(value.shape)} instead."
        )
    return value


def check_probabilities(probs: Tensor, func: str, name: str = "probs") -> Tensor:
    """Return ``probs`` after checking that it is (N, C) with non-negative rows summing to 1."""
    check_tensor(probs, func, name, ndim=2)
    if probs.numel() == 0:
        return probs
    row_sums = probs.sum(dim=1)
    if float(probs.min()) < 0 or not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4):
        raise ValueError(
            f"The '{name}' parameter of {func} must hold probabilities: non-negative rows "
            f"summing to 1 (pass softmax(logits), not logits). Got values from "
            f"{float(probs.min()):.4g} to {float(probs.max()):.4g} and row sums from "
            f"{float(row_sums.min()):.4g} to {float(row_sums.max()):.4g} instead."
        )
    return probs


def check_same_shape(a: Tensor, b: Tensor, func: str, names: tuple[str, str]) -> None:
    """Raise unless two tensors have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"The '{names[0]}' and '{names[1]}' parameters of {func} must have the same shape. "
            f"Got {tuple(a.shape)} and {tuple(b.shape)} instead."
        )


def check_same_rows(a: Tensor, b: Tensor, func: str, names: tuple[str, str]) -> None:
    """Raise unless two arrays have the same number of rows (samples)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"The '{names[0]}' and '{names[1]}' parameters of {func} must have the same number "
            f"of rows (one per sample). Got {a.shape[0]} and {b.shape[0]} instead."
        )


def check_same_keys(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], func: str, names: tuple[str, str]
) -> None:
    """Raise unless two state dicts have the same keys and, key by key, the same shapes."""
    keys_a, keys_b = set(a), set(b)
    if keys_a != keys_b:
        only_a = sorted(keys_a - keys_b)
        only_b = sorted(keys_b - keys_a)
        raise ValueError(
            f"The '{names[0]}' and '{names[1]}' parameters of {func} must have the same keys. "
            f"Keys only in '{names[0]}': {only_a}; only in '{names[1]}': {only_b}."
        )
    for key in a:
        if tuple(a[key].shape) != tuple(b[key].shape):
            raise ValueError(
                f"The '{names[0]}' and '{names[1]}' parameters of {func} must have the same shape "
                f"for every key. Got {tuple(a[key].shape)} and {tuple(b[key].shape)} "
                f"for key {key!r} instead."
            )


def check_option(value: Any, func: str, name: str, options: Sequence[Any]) -> Any:
    """Raise unless ``value`` is one of ``options``."""
    if value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(
            f"The '{name}' parameter of {func} must be one of {listed}. Got {value!r} instead."
        )
    return value


def check_labels(
    y: Tensor,
    func: str,
    name: str = "y",
    *,
    allow_unlabelled: bool = False,
    num_classes: int | None = None,
) -> Tensor:
    """Check that ``y`` is a 1-D integer tensor of class indices (-1 = unlabelled if allowed),
    each below ``num_classes`` when that is given."""
    check_tensor(y, func, name, ndim=1)
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(
            f"The '{name}' parameter of {func} must hold integer class indices. "
            f"Got dtype {y.dtype} instead."
        )
    low = -1 if allow_unlabelled else 0
    if y.numel() and int(y.min()) < low:
        what = "class indices >= 0 (or -1 for unlabelled)" if allow_unlabelled else "class indices >= 0"
        raise ValueError(
            f"The '{name}' parameter of {func} must hold {what}. Got {int(y.min())} instead."
        )
    if num_classes is not None and y.numel() and int(y.max()) >= num_classes:
        raise ValueError(
            f"The '{name}' parameter of {func} must hold class indices below {num_classes}, "
            f"the number of classes (columns of the scores). Got {int(y.max())} instead."
        )
    return y
