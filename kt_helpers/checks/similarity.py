"""Self-check for linear CKA computed by hand (chapter 7, misaligned representations).

* :func:`check_linear_cka` — ``fn(X, Y)``, linear centred kernel alignment
  between two representations of the same samples, checked against
  :func:`kt_helpers.metrics.linear_cka`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..metrics import linear_cka
from ._common import (
    CheckResult,
    combinations,
    _finish,
    first_known_mistake,
    one_number,
    raised,
    relative_close,
    _require_callable,
)

__all__ = ["check_linear_cka"]

#: The mistakes that :func:`check_linear_cka` recognises, each with its explanation.
_MISTAKES = {
    "uncentred": (
        "the features are not centred: subtract each column's mean (over the samples, dim=0) "
        "from X and from Y first, or the means dominate and even unrelated features look similar"
    ),
    "one_centred": (
        "only one of the two representations is centred: centre both X and Y (each column minus "
        "its mean over the samples)"
    ),
    "rows": (
        "you centred each sample (row, dim=1) instead of each feature (column): subtract "
        "X.mean(dim=0), the mean over the samples"
    ),
    "standardised": (
        "you also scaled each feature to unit variance; CKA only centres them (scaling the "
        "features one by one changes CKA: it is invariant to isotropic scaling only)"
    ),
    "no_norm": (
        "the normalisation is missing: divide ‖YᵀX‖²_F by ‖XᵀX‖_F·‖YᵀY‖_F so that CKA lies in "
        "[0, 1] and CKA(X, cX) = 1"
    ),
    "data_norms": (
        "wrong normalisation: you divided by ‖X‖²_F·‖Y‖²_F, the norms of the features; divide by "
        "the norms of the Gram matrices, ‖XᵀX‖_F·‖YᵀY‖_F"
    ),
    "squared_norms": (
        "wrong normalisation: the denominator's norms are squared; divide ‖YᵀX‖²_F by "
        "‖XᵀX‖_F·‖YᵀY‖_F (not by their squares)"
    ),
    "not_squared": (
        "the numerator is not squared: CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F·‖YᵀY‖_F), the Frobenius norm "
        "*squared* on top"
    ),
    "sqrt": (
        "you took a square root of the ratio; linear CKA is ‖YᵀX‖²_F / (‖XᵀX‖_F·‖YᵀY‖_F) itself"
    ),
}

_OPTIONS: dict[str, tuple[str, ...]] = {
    "centre": ("columns", "uncentred", "one_centred", "rows", "standardised"),
    "norm": ("gram", "no_norm", "data_norms", "squared_norms", "not_squared", "sqrt"),
}


def _mistakes(combo: dict[str, str]) -> list[str]:
    names = [] if combo["centre"] == "columns" else [combo["centre"]]
    return names + ([] if combo["norm"] == "gram" else [combo["norm"]])


def _variant(X: Tensor, Y: Tensor, *, centre: str = "columns", norm: str = "gram") -> float:
    """Linear CKA with the given mistakes (none: the reference, by hand)."""
    if centre in ("columns", "one_centred", "standardised"):
        X = X - X.mean(dim=0)  # (N, p)
        if centre != "one_centred":
            Y = Y - Y.mean(dim=0)  # (N, q)
    elif centre == "rows":
        X, Y = X - X.mean(dim=1, keepdim=True), Y - Y.mean(dim=1, keepdim=True)
    if centre == "standardised":
        X, Y = X / X.std(dim=0), Y / Y.std(dim=0)
    cross = torch.linalg.matrix_norm(Y.T @ X)  # ‖YᵀX‖_F
    gx, gy = torch.linalg.matrix_norm(X.T @ X), torch.linalg.matrix_norm(Y.T @ Y)
    value = {
        "gram": cross**2 / (gx * gy),
        "no_norm": cross**2,
        "data_norms": cross**2 / (torch.linalg.matrix_norm(X) ** 2 * torch.linalg.matrix_norm(Y) ** 2),
        "squared_norms": cross**2 / (gx**2 * gy**2),
        "not_squared": cross / (gx * gy),
        "sqrt": cross / (gx * gy).sqrt(),
    }[norm]
    return float(value)


def _pairs() -> list[tuple[Tensor, Tensor]]:
    """Three pairs (X (N, p), Y (N, q)) of float64 features, with means far from 0 and
    columns of different scales: a noisy linear image, an unrelated pair, and a
    representation with a mean-free part and a large offset."""
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(40, 5, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0], dtype=torch.float64) + 4.0
    A = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    Y = X @ A + 0.5 * torch.randn(40, 3, generator=gen, dtype=torch.float64) - 2.0  # (40, 3)
    U = torch.randn(40, 4, generator=gen, dtype=torch.float64) + 6.0  # unrelated to X
    Z = torch.randn(40, 6, generator=gen, dtype=torch.float64) * torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    W = Z[:, :2] @ torch.tensor([[2.0, 0.0], [1.0, -1.0]], dtype=torch.float64) + 10.0  # (40, 2)
    return [(X, Y), (X, U), (Z, W)]


def check_linear_cka(fn: Callable[[Tensor, Tensor], Any], *, verbose: bool = True) -> CheckResult:
    """Check a learner's linear CKA against :func:`kt_helpers.metrics.linear_cka`.

    With column-centred ``X`` (N, p) and ``Y`` (N, q) (Kornblith et al., 2019):

    .. math::
        \\mathrm{CKA}(X, Y) = \\frac{\\lVert Y^\\top X \\rVert_F^2}
        {\\lVert X^\\top X \\rVert_F \\, \\lVert Y^\\top Y \\rVert_F}

    ``fn`` is called on three pairs of float64 representations of 40 samples
    whose columns have means far from 0 and different scales: a noisy linear
    image of ``X``, features unrelated to ``X``, and a pair of different
    widths. When the result is wrong, the check names the likely mistakes:
    features not centred (or one side only, or the rows instead of the
    columns, or standardised as well), and a wrong normalisation (none, the
    norms of the features instead of the Gram matrices, squared norms, the
    numerator not squared, a square root). Introduced in chapter 7 (exercises).

    Args:
        fn: the learner's function ``fn(X, Y)`` returning CKA as a number;
            ``X`` of shape (N, p) and ``Y`` of shape (N, q), the same N samples.
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> def cka(X, Y):
        ...     X, Y = X - X.mean(dim=0), Y - Y.mean(dim=0)
        ...     fro = torch.linalg.matrix_norm
        ...     return fro(Y.T @ X) ** 2 / (fro(X.T @ X) * fro(Y.T @ Y))
        >>> _ = check_linear_cka(cka)
        correct: your CKA equals metrics.linear_cka on every pair tried (related, unrelated, of different widths).
        >>> def uncentred(X, Y):
        ...     fro = torch.linalg.matrix_norm
        ...     return fro(Y.T @ X) ** 2 / (fro(X.T @ X) * fro(Y.T @ Y))
        >>> _ = check_linear_cka(uncentred)  # doctest: +ELLIPSIS
        not yet: the features are not centred: ...
    """
    _require_callable(fn, "check_linear_cka", "fn(X, Y)")
    pairs = _pairs()
    got: list[float] = []
    for X, Y in pairs:
        given = (X.clone(), Y.clone())
        try:
            out = fn(*given)
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            call = f"fn(X, Y) with X of shape {tuple(X.shape)} and Y of shape {tuple(Y.shape)}"
            return _finish(False, raised(error, call), verbose)
        if not (torch.equal(given[0], X) and torch.equal(given[1], Y)):
            return _finish(False, "not yet: your function changed X or Y in place (e.g. with "
                                  "X -= X.mean(0)). Centre into new tensors: X_c = X - X.mean(0).",
                           verbose)
        value, problem = one_number(out, "one number, the CKA of the two representations")
        if problem:
            return _finish(False, problem, verbose)
        got.append(value)

    def matches(values: list[float]) -> bool:
        return all(relative_close(g, v, 1e-6) for g, v in zip(got, values))

    if matches([linear_cka(X, Y) for X, Y in pairs]):
        return _finish(True, "correct: your CKA equals metrics.linear_cka on every pair tried "
                             "(related, unrelated, of different widths).", verbose)

    def compute(combo: dict[str, str]) -> list[float]:
        return [_variant(X, Y, **combo) for X, Y in pairs]

    known = first_known_mistake(combinations(_OPTIONS), compute, matches, _mistakes, _MISTAKES)
    if known is not None:
        return _finish(False, known, verbose)
    X, Y = pairs[0]
    return _finish(False, f"not yet: on the first pair your CKA is {got[0]:.4f}, metrics.linear_cka "
                          f"gives {linear_cka(X, Y):.4f}. Centre the columns of X and Y, then compute "
                          "‖YᵀX‖²_F / (‖XᵀX‖_F·‖YᵀY‖_F).", verbose)
