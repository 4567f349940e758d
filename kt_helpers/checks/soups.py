"""Self-check for a greedy model soup's choice of ingredients (chapter 5, weight fusion).

* :func:`check_greedy_soup` — ``fn(models, X_val, y_val)``, the ingredients a
  greedy soup keeps, checked against :func:`kt_helpers.fusion.greedy_soup`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..fusion import greedy_soup, uniform_soup
from ..models import MLP
from ..train import evaluate
from ._common import CheckResult, _finish, _require_callable, combinations, first_known_mistake, raised

__all__ = ["check_greedy_soup"]

#: The mistakes that :func:`check_greedy_soup` recognises, each with its explanation.
_MISTAKES = {
    "not_sorted": (
        "you tried the ingredients in the order they were given; sort them by validation "
        "accuracy, best first, and start the soup with the best one"
    ),
    "strict": (
        "you keep an ingredient only if it *raises* the validation accuracy; the recipe keeps it "
        "when the accuracy does not drop (>=), so an ingredient that ties joins the soup"
    ),
    "stale_best": (
        "you compare every candidate soup with the best single ingredient's accuracy; compare it "
        "with the current soup's, updated each time an ingredient joins"
    ),
    "uniform": (
        "you kept every ingredient, a uniform soup: keep an ingredient only if the soup with it is "
        "at least as accurate on the validation set as the soup without it"
    ),
}

_OPTIONS: dict[str, tuple[Any, ...]] = {
    "ordered": (True, False),
    "keep": (">=", ">"),
    "compare": ("soup", "first"),
    "uniform": (False, True),
}


def _mistakes(combo: dict[str, Any]) -> list[str]:
    if combo["uniform"]:
        return ["uniform"]
    names = [] if combo["ordered"] else ["not_sorted"]
    if combo["keep"] != ">=":
        names.append("strict")
    if combo["compare"] != "soup":
        names.append("stale_best")
    return names


def _candidates() -> list[dict[str, Any]]:
    """Every combination; a uniform soup is one mistake whatever the other options."""
    combos = combinations(_OPTIONS, count=lambda c: len(_mistakes(c)))
    return [c for c in combos if not c["uniform"] or (c["ordered"] and c["keep"] == ">=" and c["compare"] == "soup")]


def _variant(models: Sequence[nn.Module], X: Tensor, y: Tensor, scores: list[float], *,
             ordered: bool = True, keep: str = ">=", compare: str = "soup", uniform: bool = False) -> set[int]:
    """The greedy soup's chosen ingredients with the given mistakes (none: the recipe)."""
    order = list(range(len(models)))
    if uniform:
        return set(order)
    if ordered:
        order.sort(key=lambda i: -scores[i])
    chosen, best = [order[0]], scores[order[0]]
    first = best
    for i in order[1:]:
        accuracy = evaluate(uniform_soup([models[j] for j in chosen + [i]]), X, y)
        reference = best if compare == "soup" else first
        if accuracy >= reference if keep == ">=" else accuracy > reference:
            chosen.append(i)
            best = accuracy
    return set(chosen)


#: (seed, noise of each ingredient): ingredients are a random network plus noise; the
#: fourth ingredient is a copy of the second, so that adding it can tie.
_CASES = ((2, (0.3, 0.3, 0.3, 0.7, 0.5)), (10, (1.5, 0.3, 1.0, 1.0, 1.5)))


def _case(seed: int, noises: Sequence[float]) -> tuple[list[nn.Module], Tensor, Tensor]:
    """Six MLP ingredients (8 inputs, 4 classes) and a validation set labelled by their base."""
    with torch.random.fork_rng():  # seed the base network without touching the caller's RNG
        torch.manual_seed(seed)
        base = MLP(hidden=(16,), in_features=8, num_classes=4)
    gen = torch.Generator().manual_seed(seed + 100)
    X = torch.randn(300, 8, generator=gen)  # (300, 8)
    with torch.no_grad():
        y = base(X).argmax(dim=1)  # (300,)
    ingredients = []
    for noise in noises:
        with torch.random.fork_rng():
            model = MLP(hidden=(16,), in_features=8, num_classes=4)  # weights overwritten below
        with torch.no_grad():
            for p, q in zip(model.parameters(), base.parameters()):
                p.copy_(q + noise * torch.randn(q.shape, generator=gen))
        ingredients.append(model)
    ingredients.insert(3, ingredients[1])  # a duplicate: adding it ties
    return ingredients, X, y


def _chosen(out: Any, n: int) -> set[int] | None:
    """The learner's chosen indices, from ``chosen`` or ``(soup, chosen)``; None if unusable."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module):
        out = out[1]
    if isinstance(out, Tensor):
        out = out.tolist()
    try:
        indices = [int(i) for i in out]
    except (TypeError, ValueError):
        return None
    return set(indices) if all(0 <= i < n for i in indices) else None


def check_greedy_soup(fn: Callable[..., Any], *, verbose: bool = True) -> CheckResult:
    """Check a learner's greedy soup against :func:`kt_helpers.fusion.greedy_soup`.

    The recipe (Wortsman et al., 2022, Algorithm 1): sort the ingredients by
    validation accuracy, best first; start the soup with the best; try each
    next one in turn and keep it if the uniform soup of the kept ones plus this
    one is at least as accurate *on the validation set* as the soup without it.

    ``fn`` is called on two sets of six small MLP ingredients (one of them a copy
    of another, so that adding it ties) with a validation set of 300 samples,
    and the set of ingredients it keeps is compared with ``greedy_soup``'s.
    When they differ, the check names the likely mistakes: ingredients not
    sorted by validation accuracy, a tie rejected (``>`` for ``>=``), candidates
    compared with the best single ingredient instead of the current soup, every
    ingredient kept. Otherwise it reminds the learner to use the validation
    data passed in, never the test set. Introduced in chapter 5 (weight fusion).

    Args:
        fn: the learner's function ``fn(models, X_val, y_val)`` returning the
            indices (into ``models``) of the ingredients it keeps, or the pair
            ``(soup, chosen)`` as :func:`~kt_helpers.fusion.greedy_soup` does;
            ``X_val`` of shape (N, 8), ``y_val`` of shape (N,).
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> from kt_helpers import fusion
        >>> _ = check_greedy_soup(fusion.greedy_soup)
        correct: your soup keeps the same ingredients as greedy_soup on both sets tried, ties included.
        >>> _ = check_greedy_soup(lambda models, X_val, y_val: list(range(len(models))))  # doctest: +ELLIPSIS
        not yet: you kept every ingredient, a uniform soup: ...
    """
    _require_callable(fn, "check_greedy_soup", "fn(models, X_val, y_val)")
    cases = [_case(*case) for case in _CASES]
    got: list[set[int]] = []
    for models, X, y in cases:
        try:
            out = fn(list(models), X.clone(), y.clone())
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            call = f"fn(models, X_val, y_val) with {len(models)} MLPs and X_val of shape {tuple(X.shape)}"
            return _finish(False, raised(error, call), verbose)
        chosen = _chosen(out, len(models))
        if chosen is None:
            return _finish(False, f"not yet: your function returned {type(out).__name__}; expected the "
                                  f"indices of the ingredients it keeps (integers from 0 to "
                                  f"{len(models) - 1}), or the pair (soup, chosen).", verbose)
        got.append(chosen)

    if all(g == set(greedy_soup(models, X, y)[1]) for g, (models, X, y) in zip(got, cases)):
        return _finish(True, "correct: your soup keeps the same ingredients as greedy_soup on both "
                             "sets tried, ties included.", verbose)
    scores = [[evaluate(m, X, y) for m in models] for models, X, y in cases]

    def compute(combo: dict[str, Any]) -> list[set[int]]:
        return [_variant(models, X, y, s, **combo) for (models, X, y), s in zip(cases, scores)]

    known = first_known_mistake(_candidates(), compute, lambda values: values == got, _mistakes, _MISTAKES)
    if known is not None:
        return _finish(False, known, verbose)
    models, X, y = cases[0]
    return _finish(False, f"not yet: on the first set your soup keeps ingredients {sorted(got[0])}, "
                          f"greedy_soup keeps {sorted(greedy_soup(models, X, y)[1])}. Score every "
                          "soup on the X_val, y_val passed to your function (never on the test "
                          "set), sort the ingredients by that accuracy, and keep each one that does "
                          "not lower the soup's.", verbose)
