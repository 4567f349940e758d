"""What every self-check shares: the result, the comparison and the messages.

A check calls the learner's function on small fixed inputs, compares the
result with the book's reference, and prints one message — ``"correct: ..."``
or ``"not yet: ..."`` with the most likely mistake. The mistakes are found by
one mechanism, :func:`first_known_mistake`: each check lists the mistakes it
knows, a function that recomputes the reference *with* a chosen set of them,
and the explanation of each; the first set (the fewest mistakes first) whose
results the learner's match is the diagnosis.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["CheckResult"]


@dataclass(frozen=True)
class CheckResult:
    """What a check found.

    Attributes:
        passed: True when the learner's function matches the reference.
        message: the message the check printed: ``"correct: ..."`` or a diagnosis.
    """

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed


def _require_callable(fn: Any, func: str, signature: str) -> None:
    if not callable(fn):
        raise ValueError(
            f"The 'fn' parameter of {func} must be a function {signature}. "
            f"Got {type(fn).__name__} instead."
        )


def _finish(passed: bool, message: str, verbose: bool) -> CheckResult:
    if verbose:
        print(message)
    return CheckResult(passed, message)


def _as_tensor(value: Any) -> Tensor | None:
    """The learner's result as a float64 tensor, or None if it is not array-like."""
    try:
        return torch.as_tensor(value).detach().to(torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError):
        return None


def one_number(out: Any, expected: str) -> tuple[float | None, str | None]:
    """``(value, None)`` when a learner's function returned one number, else ``(None, message)``.

    ``expected`` says what the number should have been, e.g. ``"one number, the
    CKA of the two representations"``.
    """
    value = _as_tensor(out)
    if value is not None and value.numel() == 1:
        return float(value), None
    what = type(out).__name__ if value is None else f"a tensor of shape {tuple(value.shape)}"
    return None, f"not yet: your function returned {what}; expected {expected}."


def _close(a: Tensor, b: Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=tol, atol=tol))



def relative_close(a: float, b: float, tol: float = 1e-5) -> bool:
    """Two scalars equal up to a relative tolerance (absolute below 1)."""
    return abs(a - b) <= tol * max(1.0, abs(b))


def raised(error: Exception, call: str) -> str:
    """The message for a learner's function that raised ``error`` when called as ``call``."""
    return f"not yet: your function raised {type(error).__name__}: {error} (called as {call})."


def combinations(options: dict[str, Sequence[Any]], *, max_mistakes: int | None = None,
                 count: Callable[[dict[str, Any]], int] | None = None) -> list[dict[str, Any]]:
    """Every combination of ``options`` (each option's first value is the correct one),
    the fewest mistakes first, at most ``max_mistakes`` of them.

    ``count(combo)`` counts a combination's mistakes; by default, the options
    that differ from their first value.
    """
    keys = list(options)
    combos = [dict(zip(keys, values)) for values in itertools.product(*options.values())]
    if count is None:
        def count(combo: dict[str, Any]) -> int:
            return sum(combo[k] != options[k][0] for k in keys)
    if max_mistakes is not None:
        combos = [c for c in combos if count(c) <= max_mistakes]
    return sorted(combos, key=count)


def first_known_mistake(
    candidates: Iterable[dict[str, Any]],
    compute: Callable[[dict[str, Any]], Any],
    matches: Callable[[Any], bool],
    mistakes: Callable[[dict[str, Any]], list[str]],
    explanations: dict[str, str],
) -> str | None:
    """The "not yet" message for the first candidate set of mistakes that the learner made.

    Each candidate is a set of keyword arguments for ``compute``, which
    recomputes the reference with those mistakes made (over all the check's
    cases); ``matches(values)`` says whether the learner's results equal them.
    Returns ``"not yet: "`` and the explanations of the candidate's mistakes,
    joined; or None when no candidate matches (or the first one, the correct
    computation, does: that is the caller's "correct" case).
    """
    for combo in candidates:
        names = mistakes(combo)
        if names and matches(compute(combo)):
            return "not yet: " + "; and ".join(explanations[m] for m in names) + "."
    return None
