"""Self-check for the closed-form (ridge) linear map of chapter 3.

* :func:`check_linear_map` — ``fn(source, target, ridge) -> (weight, bias)``,
  checked against :class:`kt_helpers.mapping.LinearMap`'s solution.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._common import CheckResult, _as_tensor, _close, _finish, _require_callable

__all__ = ["check_linear_map"]


#: The mistakes that :func:`check_linear_map` recognises, each with its explanation.
_MAP_MISTAKES = {
    "no_intercept": (
        "you fitted no intercept: your bias is 0 and W was solved from uncentred features. "
        "Centre S and K (subtract each column's mean), solve for W, then set b = k̄ − W s̄"
    ),
    "uncentred": (
        "you forgot to centre: W was solved from the raw S and K, so it also tries to "
        "explain the means, which the intercept should absorb. Solve the normal equations "
        "with the centred S_c = S − s̄ and K_c = K − k̄, then set b = k̄ − W s̄"
    ),
    "augmented": (
        "the ridge penalty is also applied to the intercept (e.g. a column of ones appended "
        "to S and penalised with W). Penalise W only: centre, solve "
        "(S_cᵀS_c + λI) Wᵀ = S_cᵀK_c, then b = k̄ − W s̄"
    ),
    "no_ridge": (
        "the ridge penalty is not applied: your map is the least-squares one even when "
        "ridge > 0. Solve (S_cᵀS_c + λI) Wᵀ = S_cᵀK_c with λ = ridge"
    ),
    "ridge_times_n": (
        "your penalty is N times too strong: the objective sums the squared errors over the "
        "N samples (it does not average them), so add λI, not NλI"
    ),
    "ridge_over_n": (
        "your penalty is N times too weak: the objective sums the squared errors over the "
        "N samples, so add λI to S_cᵀS_c, not (λ/N)I"
    ),
    "bias_mean": (
        "your bias is k̄, the target's mean; it must be b = k̄ − W s̄, so that the map sends "
        "the source's mean to the target's mean"
    ),
}


def _map_variant(
    S: Tensor,
    K: Tensor,
    ridge: float,
    *,
    intercept: str = "centred",
    penalty: str = "ok",
    bias: str = "ok",
) -> tuple[Tensor, Tensor]:
    """The ridge map's (weight (d, p), bias (d,)) with the given mistakes (none: the reference)."""
    N, p = S.shape
    lam = {"ok": ridge, "none": 0.0, "times_n": ridge * N, "over_n": ridge / N}[penalty]
    if intercept == "augmented":  # a column of ones, penalised like the weights
        A = torch.cat([S, torch.ones(N, 1, dtype=S.dtype)], dim=1)  # (N, p + 1)
        gram = A.T @ A + lam * torch.eye(p + 1, dtype=S.dtype)  # (p + 1, p + 1)
        solution = torch.linalg.solve(gram, A.T @ K)  # (p + 1, d)
        return solution[:p].T, solution[p]
    centre = intercept == "centred"
    s_mean = S.mean(dim=0) if centre else torch.zeros(p, dtype=S.dtype)  # (p,)
    k_mean = K.mean(dim=0) if centre else torch.zeros(K.shape[1], dtype=S.dtype)  # (d,)
    S_c, K_c = S - s_mean, K - k_mean
    gram = S_c.T @ S_c + lam * torch.eye(p, dtype=S.dtype)  # (p, p)
    W_t = torch.linalg.solve(gram, S_c.T @ K_c)  # (p, d)
    if intercept == "none":
        return W_t.T, torch.zeros(K.shape[1], dtype=S.dtype)
    b = K.mean(dim=0) if bias == "mean" else K.mean(dim=0) - S.mean(dim=0) @ W_t
    return W_t.T, b


def _map_mistakes(combo: dict[str, str]) -> list[str]:
    mistakes = []
    if combo["intercept"] != "centred":
        mistakes.append({"none": "no_intercept", "uncentred": "uncentred", "augmented": "augmented"}[combo["intercept"]])
    if combo["penalty"] != "ok":
        mistakes.append({"none": "no_ridge", "times_n": "ridge_times_n", "over_n": "ridge_over_n"}[combo["penalty"]])
    if combo["bias"] != "ok":
        mistakes.append("bias_mean")
    return mistakes


def _map_candidates() -> list[dict[str, str]]:
    """Every meaningful combination of mistakes, the fewest first."""
    combos = [
        dict(intercept=i, penalty=pen, bias=b)
        for i, pen, b in itertools.product(
            ("centred", "uncentred", "none", "augmented"),
            ("ok", "none", "times_n", "over_n"),
            ("ok", "mean"),
        )
        if not (b == "mean" and i in ("none", "augmented"))
    ]
    return sorted(combos, key=lambda c: len(_map_mistakes(c)))


def _map_inputs() -> tuple[Tensor, Tensor]:
    """Source (40, 3) and target (40, 2) features with means far from 0, as float64."""
    gen = torch.Generator().manual_seed(3)
    S = torch.randn(40, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64) + 3.0  # (N, p)
    W = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, 2.0]], dtype=torch.float64)  # (d, p)
    K = S @ W.T + torch.tensor([5.0, -4.0], dtype=torch.float64)  # (N, d)
    K = K + 0.5 * torch.randn(K.shape, generator=gen, dtype=torch.float64)
    return S, K


#: The ridge values the check tries: 0 (least squares) and one that changes the map.
_MAP_RIDGES = (0.0, 20.0)


def check_linear_map(fn: Callable[..., Any], *, verbose: bool = True) -> CheckResult:
    """Check a learner's closed-form ridge map against :class:`kt_helpers.mapping.LinearMap`.

    The reference minimises :math:`\\lVert S W^\\top + \\mathbf 1 b^\\top - K\\rVert_F^2
    + \\lambda \\lVert W\\rVert_F^2` (the intercept b is not penalised):

    .. math::
        (S_c^\\top S_c + \\lambda I)\\, W^\\top = S_c^\\top K_c, \\qquad b = \\bar k - W \\bar s

    with :math:`S_c, K_c` the column-centred features. ``fn`` is called as
    ``fn(source, target, ridge)`` on float64 features of shape (40, 3) and
    (40, 2) whose means are far from 0, with ``ridge`` 0 and 20. When the
    result is wrong, the check names the likely mistake: weights transposed,
    no intercept, features not centred, the ridge penalty applied to the
    intercept, missing or scaled by N, or a bias that ignores W. Introduced in
    chapter 3 (exercises).

    Args:
        fn: the learner's function ``fn(source, target, ridge) -> (weight, bias)``
            with ``source`` of shape (N, p), ``target`` of shape (N, d), and
            returning ``weight`` of shape (d, p) (as in :class:`torch.nn.Linear`)
            and ``bias`` of shape (d,).
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> from kt_helpers.mapping import LinearMap
        >>> def reference(S, K, ridge):
        ...     T = LinearMap(ridge=ridge).fit(S, K)
        ...     return T.weight_, T.bias_
        >>> _ = check_linear_map(reference)
        correct: your map equals the closed-form ridge solution, with its intercept, for ridge 0 and 20.
        >>> def no_centring(S, K, ridge):
        ...     W_t = torch.linalg.solve(S.T @ S + ridge * torch.eye(S.shape[1], dtype=S.dtype), S.T @ K)
        ...     return W_t.T, torch.zeros(K.shape[1])
        >>> _ = check_linear_map(no_centring)
        not yet: you fitted no intercept: your bias is 0 and W was solved from uncentred features. Centre S and K (subtract each column's mean), solve for W, then set b = k̄ − W s̄.
    """
    _require_callable(fn, "check_linear_map", "fn(source, target, ridge) -> (weight, bias)")
    S, K = _map_inputs()
    (N, p), d = S.shape, K.shape[1]
    got: list[tuple[Tensor, Tensor]] = []
    transposed = False
    for ridge in _MAP_RIDGES:
        given = (S.clone(), K.clone())
        try:
            out = fn(*given, ridge)
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            return _finish(
                False,
                f"not yet: your function raised {type(error).__name__}: {error} (called as "
                f"fn(source, target, ridge={ridge:g}) with source of shape {(N, p)} and "
                f"target of shape {(N, d)}).",
                verbose,
            )
        if not (torch.equal(given[0], S) and torch.equal(given[1], K)):
            return _finish(
                False,
                "not yet: your function changed 'source' or 'target' in place (e.g. with "
                "S -= S.mean(0)). Centre into new tensors instead: S_c = S - S.mean(0).",
                verbose,
            )
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            return _finish(
                False,
                f"not yet: your function returned a {type(out).__name__}; expected a pair "
                f"(weight, bias) with weight of shape {(d, p)} and bias of shape {(d,)}.",
                verbose,
            )
        W, b = _as_tensor(out[0]), _as_tensor(out[1])
        if W is None or b is None:
            return _finish(
                False,
                "not yet: your weight and bias must be tensors (or arrays); got "
                f"{type(out[0]).__name__} and {type(out[1]).__name__}.",
                verbose,
            )
        if W.shape == (p, d):
            transposed, W = True, W.T
        if W.shape != (d, p):
            return _finish(
                False,
                f"not yet: your weight has shape {tuple(W.shape)}; expected {(d, p)} "
                "(target features × source features, as in nn.Linear).",
                verbose,
            )
        if b.shape != (d,):
            return _finish(
                False,
                f"not yet: your bias has shape {tuple(b.shape)}; expected {(d,)}, one entry "
                "per target feature.",
                verbose,
            )
        got.append((W, b))

    def matches(values: list[tuple[Tensor, Tensor]]) -> bool:
        return all(_close(W, Wv, 1e-6) and _close(b, bv, 1e-6) for (W, b), (Wv, bv) in zip(got, values))

    flip = (
        f"your weight has shape {(p, d)}: it is transposed. Return it as {(d, p)}, "
        "target features × source features like nn.Linear's weight (e.g. W_t.T)"
    )
    for combo in _map_candidates():
        values = [_map_variant(S, K, ridge, **combo) for ridge in _MAP_RIDGES]
        if matches(values):
            reasons = [_MAP_MISTAKES[m] for m in _map_mistakes(combo)]
            if transposed:
                reasons.insert(0, flip)
            if not reasons:
                return _finish(
                    True,
                    "correct: your map equals the closed-form ridge solution, with its "
                    "intercept, for ridge 0 and 20.",
                    verbose,
                )
            return _finish(False, "not yet: " + "; and ".join(reasons) + ".", verbose)

    (W0, b0), (W1, b1) = got
    (R0, c0), (R1, c1) = (_map_variant(S, K, r) for r in _MAP_RIDGES)
    if _close(W0, R0, 1e-6) and _close(b0, c0, 1e-6):
        where = "it is right for ridge=0 but not for ridge=20: check the penalty term λI"
    elif _close(W0, R0, 1e-6):
        where = "the weight is right for ridge=0 but the bias is not: b = k̄ − W s̄"
    else:
        gap = float((W0 - R0).abs().max())
        where = f"for ridge=0 the weight differs from the least-squares one by up to {gap:.4f}"
    prefix = flip + "; also, " if transposed else ""
    return _finish(
        False,
        f"not yet: {prefix}{where}. Centre S and K, solve (S_cᵀS_c + λI) Wᵀ = S_cᵀK_c, "
        "then b = k̄ − W s̄.",
        verbose,
    )
