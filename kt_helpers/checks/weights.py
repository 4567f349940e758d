"""Self-checks for knowledge in the weights (chapter 5): growing a network and the loss barrier.

* :func:`check_widen` — ``fn(weight, bias, next_weight, g)``, one
  Net2WiderNet step, checked against :func:`kt_helpers.mapping.net2wider`;
* :func:`check_loss_barrier` — ``fn(losses, alphas)``, the loss barrier along
  a linear path, checked against :func:`kt_helpers.metrics.loss_barrier`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..mapping import net2wider
from ..metrics import loss_barrier
from ..models import MLP
from ._common import (
    CheckResult,
    _as_tensor,
    _close,
    combinations,
    _finish,
    first_known_mistake,
    one_number,
    raised,
    relative_close,
    _require_callable,
)

__all__ = ["check_loss_barrier", "check_widen"]

# --- Net2WiderNet -----------------------------------------------------------------------------

#: The mistakes that :func:`check_widen` recognises, each with its explanation.
_WIDEN_MISTAKES = {
    "not_divided": (
        "the outgoing weights are copied but not divided by the number of copies: the next "
        "layer now receives a unit's activation once per copy. Divide column j of next_weight "
        "by the number of copies of unit g(j), the original included"
    ),
    "new_only": (
        "only the new copies' outgoing weights are divided; the original unit is a copy too: "
        "divide the outgoing weights of every unit j, old or new, by the number of copies of g(j)"
    ),
    "uniform": (
        "every outgoing weight is divided by the same number, new_width / width (here 2), the "
        "average number of copies; divide each by the number of copies of *its* unit, which "
        "differs from unit to unit (torch.bincount(g) counts them)"
    ),
    "incoming": (
        "the *incoming* weights and biases are divided by the number of copies instead of the "
        "outgoing ones. With ReLU this happens to keep the function (ReLU(x / c) = ReLU(x) / c), "
        "but the copies are no longer copies of the unit, and with tanh the function changes. "
        "Copy the incoming weights and the bias unchanged and divide the outgoing weights"
    ),
    "modulo": (
        "you copied unit j mod width, not the unit g(j) that 'g' gives: new unit j must copy "
        "unit g[j] — weight[g], bias[g] and next_weight[:, g]"
    ),
    "modulo_out": (
        "the outgoing weights of new unit j come from another unit (j mod width) than its "
        "incoming weights (g[j]): both must come from unit g[j]"
    ),
    "bias_zero": (
        "the new units' biases are 0: a copy takes the bias of its unit too, bias[g]"
    ),
}

_WIDEN_OPTIONS: dict[str, tuple[str, ...]] = {
    "outgoing": ("divided", "not_divided", "new_only", "uniform", "incoming"),
    "units": ("g", "modulo", "modulo_out"),
    "bias": ("copied", "zero"),
}


def _widen_mistakes(combo: dict[str, str]) -> list[str]:
    names = [] if combo["outgoing"] == "divided" else [combo["outgoing"]]
    if combo["units"] != "g":
        names.append(combo["units"])
    if combo["bias"] != "copied":
        names.append("bias_zero")
    return names


def _widen_variant(W: Tensor, b: Tensor, U: Tensor, g: Tensor, *, outgoing: str = "divided",
                   units: str = "g", bias: str = "copied") -> tuple[Tensor, Tensor, Tensor]:
    """A widening with the given mistakes: (weight (n', in), bias (n',), next_weight (out, n'))."""
    n, n_new = W.shape[0], len(g)
    modulo = torch.arange(n_new) % n  # (n',) unit j mod n
    g_in = modulo if units == "modulo" else g
    g_out = modulo if units in ("modulo", "modulo_out") else g
    counts = torch.bincount(g_in, minlength=n).to(W)[g_in]  # (n',) copies of each new unit's unit
    W_new, b_new, U_new = W[g_in].clone(), b[g_in].clone(), U[:, g_out].clone()
    if bias == "zero":
        b_new[n:] = 0.0
    if outgoing == "divided":
        U_new = U_new / counts
    elif outgoing == "new_only":
        U_new[:, n:] = U_new[:, n:] / counts[n:]
    elif outgoing == "uniform":
        U_new = U_new * n / n_new
    elif outgoing == "incoming":
        W_new, b_new = W_new / counts[:, None], b_new / counts
    return W_new, b_new, U_new


#: (seed of the network, seed of net2wider's choice of units): the two choices copy some
#: units once, some twice and some three times, so that each mistake shows.
_WIDEN_CASES = ((0, 0), (1, 3))
_WIDTH, _NEW_WIDTH, _IN, _OUT = 5, 10, 7, 3


def _widen_case(seed: int, choice: int) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """The old layer's (weight, bias, next_weight, mapping g) and net2wider's widened triple."""
    with torch.random.fork_rng():  # seed the network without touching the caller's RNG
        torch.manual_seed(seed)
        model = MLP(hidden=(_WIDTH,), in_features=_IN, num_classes=_OUT).double()
        wide = net2wider(model, 0, _NEW_WIDTH, seed=choice)  # its new layers draw initial weights
    W, b, U = model[1].weight.detach(), model[1].bias.detach(), model[3].weight.detach()
    W_new = wide[1].weight.detach()  # (n', in): row j is row g(j) of W
    g = (W_new[:, None, :] == W[None, :, :]).all(dim=2).long().argmax(dim=1)  # (n',)
    return (W, b, U, g), (W_new, wide[1].bias.detach(), wide[3].weight.detach())


def _forward(W: Tensor, b: Tensor, U: Tensor, X: Tensor) -> Tensor:
    return torch.relu(X @ W.T + b) @ U.T  # (N, out), the next layer's bias left out


def check_widen(fn: Callable[..., Any], *, verbose: bool = True) -> CheckResult:
    """Check a learner's Net2WiderNet step against :func:`kt_helpers.mapping.net2wider`.

    A hidden layer :math:`h = \\mathrm{ReLU}(W x + b)` of ``width`` units,
    followed by a layer with weights :math:`U`, is widened to ``len(g)``
    units; new unit :math:`j` copies unit :math:`g(j)` (``g[j]``, with
    :math:`g(j) = j` for the old units) (Chen, Goodfellow and Shlens, 2016,
    "Net2Net", Algorithm 1):

    .. math::
        W'_{j,:} = W_{g(j),:}, \\qquad b'_j = b_{g(j)}, \\qquad
        U'_{k,j} = \\frac{U_{k,g(j)}}{\\lvert\\{j' : g(j') = g(j)\\}\\rvert}

    ``fn`` is called on two float64 layers (7 inputs, 5 hidden units widened to
    10, 3 outputs), each with the units ``net2wider`` chose, and its result is
    compared with ``net2wider``'s. When it differs, the check names the likely
    mistakes: outgoing weights not divided, or divided by the wrong count, the
    incoming weights divided instead, units other than ``g``'s copied, new
    biases set to 0; otherwise it says whether the wider layer still computes
    the same function. Introduced in chapter 5 (growing a network).

    Args:
        fn: the learner's function ``fn(weight, bias, next_weight, g)``
            with ``weight`` of shape (width, in), ``bias`` of shape (width,),
            ``next_weight`` of shape (out, width) and ``g`` an integer
            tensor of shape (new_width,), the unit each new unit copies, returning the triple ``(weight,
            bias, next_weight)`` of shapes (new_width, in), (new_width,) and
            (out, new_width).
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> def widen(weight, bias, next_weight, g):
        ...     copies = torch.bincount(g, minlength=len(weight)).to(weight)
        ...     return weight[g], bias[g], next_weight[:, g] / copies[g]
        >>> _ = check_widen(widen)
        correct: your wider layer equals net2wider's, and computes the same function as the narrow one.
        >>> def not_divided(weight, bias, next_weight, g):
        ...     return weight[g], bias[g], next_weight[:, g]
        >>> _ = check_widen(not_divided)  # doctest: +ELLIPSIS
        not yet: the outgoing weights are copied but not divided by the number of copies: ...
    """
    _require_callable(fn, "check_widen", "fn(weight, bias, next_weight, g)")
    cases = [_widen_case(*case) for case in _WIDEN_CASES]
    got: list[tuple[Tensor, Tensor, Tensor]] = []
    for (W, b, U, g), _ in cases:
        given = (W.clone(), b.clone(), U.clone(), g.clone())
        try:
            out = fn(*given)
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            call = (f"fn(weight, bias, next_weight, g) with weight of shape {tuple(W.shape)}, "
                    f"next_weight of shape {tuple(U.shape)} and g of shape {tuple(g.shape)}")
            return _finish(False, raised(error, call), verbose)
        if not all(torch.equal(a, c) for a, c in zip(given, (W, b, U, g))):
            return _finish(False, "not yet: your function changed one of its inputs in place; "
                                  "build new tensors instead (indexing with g copies).", verbose)
        shapes = ((len(g), W.shape[1]), (len(g),), (U.shape[0], len(g)))
        triple = [_as_tensor(v) for v in out] if isinstance(out, (tuple, list)) and len(out) == 3 else None
        if triple is None or any(t is None or tuple(t.shape) != s for t, s in zip(triple, shapes)):
            found = (type(out).__name__ if triple is None or any(t is None for t in triple)
                     else ", ".join(str(tuple(t.shape)) for t in triple))
            return _finish(False, f"not yet: your function returned {found}; expected the triple "
                                  f"(weight, bias, next_weight) of shapes {shapes[0]}, {shapes[1]} "
                                  f"and {shapes[2]}.", verbose)
        got.append(tuple(triple))  # type: ignore[arg-type]

    def matches(values: list[tuple[Tensor, Tensor, Tensor]]) -> bool:
        return all(_close(a, v, 1e-9) for triple, expected in zip(got, values) for a, v in zip(triple, expected))

    if matches([reference for _, reference in cases]):
        return _finish(True, "correct: your wider layer equals net2wider's, and computes the same "
                             "function as the narrow one.", verbose)

    def compute(combo: dict[str, str]) -> list[tuple[Tensor, Tensor, Tensor]]:
        return [_widen_variant(*inputs, **combo) for inputs, _ in cases]

    known = first_known_mistake(combinations(_WIDEN_OPTIONS), compute, matches, _widen_mistakes, _WIDEN_MISTAKES)
    if known is not None:
        return _finish(False, known, verbose)
    X = torch.randn(20, _IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # (20, in)
    (W, b, U, _), _ = cases[0]
    gap = float((_forward(*got[0], X) - _forward(W, b, U, X)).abs().max())
    if gap < 1e-9:
        return _finish(False, "not yet: your wider layer computes the same function, but it is not "
                              "Net2Net's: copy unit g[j]'s incoming weights and bias into "
                              "unit j, and divide its outgoing weights by that unit's number of copies.",
                       verbose)
    return _finish(False, f"not yet: your wider layer does not compute the same function: the next "
                          f"layer's output changes by up to {gap:.4f}. Copy weight[g] and bias[g], "
                          "and divide next_weight[:, g] by the number of "
                          "copies of each unit.", verbose)


# --- the loss barrier -------------------------------------------------------------------------

#: The mistakes that :func:`check_loss_barrier` recognises, each with its explanation.
_BARRIER_MISTAKES = {
    "no_line": (
        "you returned the largest loss on the path; the barrier is its largest rise *above the "
        "straight line* between the end-point losses: subtract α·L(θ_A) + (1 − α)·L(θ_B) at each α"
    ),
    "mean_ends": (
        "you subtracted the mean of the two end-point losses from every point; subtract the "
        "linear interpolation of the end-point losses at the same α, α·L(θ_A) + (1 − α)·L(θ_B)"
    ),
    "max_ends": (
        "you subtracted the larger end-point loss; subtract the linear interpolation of the "
        "end-point losses at the same α, α·L(θ_A) + (1 − α)·L(θ_B)"
    ),
    "min": (
        "you took the minimum over the path; the barrier is the *largest* rise above the line (max)"
    ),
    "swapped_ends": (
        "the line runs the wrong way: α = 1 is network A (losses at alphas == 1) and α = 0 "
        "network B, so the line at α is α·L(α=1) + (1 − α)·L(α=0)"
    ),
    "midpoint": (
        "you measured the rise at α = 0.5 only; the barrier is the largest rise over every α "
        "of the path, wherever the peak is"
    ),
    "interior": (
        "you left the two ends out of the maximum, so a path below the line gives a negative "
        "barrier; the ends lie on the line (rise 0), so the barrier is never below 0"
    ),
    "abs": (
        "you took the largest *absolute* difference from the line; a path below the line is no "
        "barrier: take the largest signed rise (never below 0, the ends)"
    ),
    "by_position": (
        "you took the end-point losses from the first and last entries of the list; take them "
        "where alphas == 1 (network A) and alphas == 0 (network B): the list need not be sorted"
    ),
}

_BARRIER_OPTIONS: dict[str, tuple[str, ...]] = {
    "line": ("interpolated", "none", "mean_ends", "max_ends", "swapped_ends", "by_position"),
    "reduce": ("max", "min", "midpoint", "interior", "abs"),
}


def _barrier_mistakes(combo: dict[str, str]) -> list[str]:
    names = [] if combo["line"] == "interpolated" else ["no_line" if combo["line"] == "none" else combo["line"]]
    return names + ([] if combo["reduce"] == "max" else [combo["reduce"]])


def _barrier_variant(losses: Sequence[float], alphas: Sequence[float], *, line: str = "interpolated",
                     reduce: str = "max") -> float:
    pairs = list(zip(alphas, losses))
    at = dict(pairs)
    a_end, b_end = (losses[-1], losses[0]) if line == "by_position" else (at[1.0], at[0.0])
    if line == "swapped_ends":
        a_end, b_end = b_end, a_end

    def baseline(a: float) -> float:
        return {"none": 0.0, "mean_ends": (a_end + b_end) / 2, "max_ends": max(a_end, b_end)}.get(
            line, a * a_end + (1 - a) * b_end)

    rises = {a: v - baseline(a) for a, v in pairs}
    if reduce == "midpoint":
        return rises[0.5]
    if reduce == "interior":
        return max(r for a, r in rises.items() if 0.0 < a < 1.0)
    if reduce == "abs":
        return max(abs(r) for r in rises.values())
    return (min if reduce == "min" else max)(rises.values())


#: Paths (alphas, losses): an asymmetric bump off the midpoint, a path below the line and a
#: path listed from α = 1 down to α = 0.
_BARRIER_CASES = (
    ([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
     [0.2, 0.5, 0.9, 1.1, 1.0, 0.9, 0.8, 0.75, 0.7, 0.65, 0.6]),
    ([0.0, 0.25, 0.5, 0.75, 1.0], [0.5, 0.3, 0.25, 0.3, 0.4]),
    ([1.0, 0.8, 0.6, 0.5, 0.4, 0.2, 0.0], [0.3, 0.9, 0.7, 0.6, 0.5, 0.45, 0.1]),
)


def check_loss_barrier(fn: Callable[[list[float], list[float]], Any], *, verbose: bool = True) -> CheckResult:
    """Check a learner's loss barrier against :func:`kt_helpers.metrics.loss_barrier`.

    With ``losses[i]`` the loss of the network :math:`\\alpha_i\\theta_A +
    (1-\\alpha_i)\\theta_B` (α = 1 is network A, α = 0 network B), the barrier
    is the largest rise of the path above the straight line joining the
    losses of its two ends (Frankle et al., 2020; Entezari et al., 2022):

    .. math::
        B = \\max_\\alpha \\; L(\\alpha\\theta_A + (1-\\alpha)\\theta_B)
            - \\bigl(\\alpha L(\\theta_A) + (1-\\alpha) L(\\theta_B)\\bigr)

    ``fn`` is called on three paths given as lists of floats: a bump whose peak
    is not at α = 0.5, a path below the line (barrier 0) and a path listed from
    α = 1 down to 0. When the result is wrong the check names the likely
    mistakes: no line subtracted (or the mean or the larger of the end
    losses instead of the line), the minimum instead of the maximum, the line
    running the wrong way, the midpoint only, the ends left out, an absolute
    value, the ends taken by position. Introduced in chapter 5 (weight fusion).

    Args:
        fn: the learner's function ``fn(losses, alphas)`` returning the
            barrier as a number; ``losses`` and ``alphas`` are lists of floats
            of the same length, ``alphas`` in [0, 1] including 0 and 1.
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> def barrier(losses, alphas):
        ...     at = dict(zip(alphas, losses))
        ...     return max(v - (a * at[1.0] + (1 - a) * at[0.0]) for a, v in at.items())
        >>> _ = check_loss_barrier(barrier)
        correct: your barrier equals loss_barrier's on every path tried (a bump off the midpoint, a path below the line, α listed from 1 to 0).
        >>> _ = check_loss_barrier(lambda losses, alphas: max(losses))  # doctest: +ELLIPSIS
        not yet: you returned the largest loss on the path; ...
    """
    _require_callable(fn, "check_loss_barrier", "fn(losses, alphas)")
    got: list[float] = []
    for alphas, losses in _BARRIER_CASES:
        given = (list(losses), list(alphas))
        try:
            out = fn(*given)
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            return _finish(False, raised(error, f"fn(losses, alphas) with alphas={alphas}"), verbose)
        value, problem = one_number(out, "one number, the barrier (the largest rise above the line)")
        if problem:
            return _finish(False, problem, verbose)
        got.append(value)

    def matches(values: list[float]) -> bool:
        return all(relative_close(g, v, 1e-6) for g, v in zip(got, values))

    if matches([loss_barrier(losses, alphas) for alphas, losses in _BARRIER_CASES]):
        return _finish(True, "correct: your barrier equals loss_barrier's on every path tried (a bump "
                             "off the midpoint, a path below the line, α listed from 1 to 0).", verbose)

    def compute(combo: dict[str, str]) -> list[float]:
        return [_barrier_variant(losses, alphas, **combo) for alphas, losses in _BARRIER_CASES]

    candidates = combinations(_BARRIER_OPTIONS)
    known = first_known_mistake(candidates, compute, matches, _barrier_mistakes, _BARRIER_MISTAKES)
    if known is not None:
        return _finish(False, known, verbose)
    alphas, losses = _BARRIER_CASES[0]
    return _finish(False, f"not yet: on the path alphas={alphas}, losses={losses} your barrier is "
                          f"{got[0]:.4f}, the reference {loss_barrier(losses, alphas):.4f}. At each α "
                          "subtract α·L(α=1) + (1 − α)·L(α=0) from the loss, then take the maximum.",
                   verbose)
