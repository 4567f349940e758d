"""The book's claims about its results, stated as checks.

Each sentence of the prose that reads a computed result — an ordering ("soft
targets beat the teacher's argmax"), a range ("about 2 %"), a count ("on 5 of
5 seeds") — is also stated in code, in a cell right after the result, tagged
``claim`` (hidden on the website; visible in Colab and Jupyter). A claim that
holds prints nothing; one that does not raises :class:`ClaimFailed`, which
names the claim and the numbers it was checked on, so that a reader whose
machine computes other digits (Apple silicon, a GPU, another torch version)
learns at once whether the finding still holds there.

``make test-claims`` re-executes every notebook and checks these claims
without comparing digits, with the pinned kernels and with others.
Introduced in the appendix "How to run".

Example:
    >>> from kt_helpers import claims
    >>> claims.less("distillation beats labels alone", 0.021, 0.089)
    >>> claims.less("labels alone beat distillation", 0.089, 0.021)
    Traceback (most recent call last):
    ...
    kt_helpers.claims.ClaimFailed: Claim failed: labels alone beat distillation. Expected 0.089 < 0.021.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Real
from typing import Any

__all__ = ["ClaimFailed", "at_least", "between", "claim", "close", "count", "less"]


class ClaimFailed(AssertionError):
    """A claim the prose makes about a result does not hold on this run."""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


def _check_statement(statement: Any, func: str) -> str:
    if not isinstance(statement, str) or not statement.strip():
        raise ValueError(
            f"The 'statement' parameter of {func} must be a non-empty string. "
            f"Got {statement!r} instead."
        )
    return statement


def _check_number(value: Any, func: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        try:  # a 0-d tensor or NumPy scalar
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"The '{name}' parameter of {func} must be a real number. Got {value!r} instead."
            ) from None
    return float(value)


def claim(statement: str, condition: bool, **evidence: Any) -> None:
    """Check a claim; raise :class:`ClaimFailed` naming it and its evidence if it fails.

    Args:
        statement: the claim as the prose makes it.
        condition: whether it holds on this run.
        **evidence: the numbers it rests on, shown when it fails.

    Raises:
        ClaimFailed: ``condition`` is false.
    """
    _check_statement(statement, "claim")
    if not isinstance(condition, bool):
        try:
            condition = bool(condition)
        except (TypeError, RuntimeError, ValueError):
            raise ValueError(
                f"The 'condition' parameter of claim must be a bool. Got {condition!r} instead."
            ) from None
    if not condition:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in evidence.items())
        raise ClaimFailed(f"Claim failed: {statement}." + (f" Evidence: {shown}." if shown else ""))


def less(statement: str, smaller: Any, larger: Any, *, margin: float = 0.0) -> None:
    """Claim that ``smaller + margin < larger`` (e.g. an error below another by ``margin``)."""
    _check_statement(statement, "less")
    a = _check_number(smaller, "less", "smaller")
    b = _check_number(larger, "less", "larger")
    m = _check_number(margin, "less", "margin")
    if not a + m < b:
        extra = f" by more than {_fmt(m)}" if m else ""
        raise ClaimFailed(f"Claim failed: {statement}. Expected {_fmt(a)} < {_fmt(b)}{extra}.")


def at_least(statement: str, value: Any, minimum: Any) -> None:
    """Claim that ``value >= minimum``."""
    _check_statement(statement, "at_least")
    v = _check_number(value, "at_least", "value")
    lo = _check_number(minimum, "at_least", "minimum")
    if not v >= lo:
        raise ClaimFailed(f"Claim failed: {statement}. Expected {_fmt(v)} >= {_fmt(lo)}.")


def between(statement: str, value: Any, low: Any, high: Any) -> None:
    """Claim that ``low <= value <= high`` (a range the prose states, with its tolerance)."""
    _check_statement(statement, "between")
    v = _check_number(value, "between", "value")
    lo = _check_number(low, "between", "low")
    hi = _check_number(high, "between", "high")
    if lo > hi:
        raise ValueError(
            f"The 'low' parameter of between must not exceed 'high'. Got low={lo}, high={hi} instead."
        )
    if not lo <= v <= hi:
        raise ClaimFailed(
            f"Claim failed: {statement}. Expected {_fmt(v)} in [{_fmt(lo)}, {_fmt(hi)}]."
        )


def close(statement: str, value: Any, expected: Any, *, atol: float) -> None:
    """Claim that ``|value - expected| <= atol``."""
    _check_statement(statement, "close")
    v = _check_number(value, "close", "value")
    e = _check_number(expected, "close", "expected")
    tol = _check_number(atol, "close", "atol")
    if tol < 0:
        raise ValueError(f"The 'atol' parameter of close must be >= 0. Got {atol!r} instead.")
    if not abs(v - e) <= tol:
        raise ClaimFailed(
            f"Claim failed: {statement}. Expected {_fmt(v)} within {_fmt(tol)} of {_fmt(e)}."
        )


def count(statement: str, flags: Iterable[Any], *, at_least: int) -> None:
    """Claim that at least ``at_least`` of ``flags`` are true (e.g. "on 4 of 5 seeds").

    Returns nothing, like every claim, so that a claim cell prints nothing.
    """
    _check_statement(statement, "count")
    values = [bool(f) for f in flags]
    n = sum(values)
    if n < at_least:
        raise ClaimFailed(
            f"Claim failed: {statement}. Expected at least {at_least} of {len(values)}, got {n}."
        )
