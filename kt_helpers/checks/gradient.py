"""Self-check for the gradient of the distillation loss, derived in chapter 3.

* :func:`check_kd_gradient` — the gradient of :func:`kt_helpers.fusion.kd_loss`
  with respect to the student's logits, checked against autograd.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fusion import kd_loss
from ._common import CheckResult, _as_tensor, _close, _finish, _require_callable
from .outputs import _call_on_kd_cases, _kd_cases, _known_mistake

__all__ = ["check_kd_gradient"]


#: The mistakes that :func:`check_kd_gradient` recognises, each with its explanation.
_GRAD_MISTAKES = {
    "over_t": (
        "your soft term's gradient is (q − p)/T, the gradient of the KL divergence alone; "
        "the loss multiplies the KL term by τ², so its gradient is (1 − α)·T·(q − p)/N"
    ),
    "t_squared": (
        "your soft term has a factor τ², but the chain rule through z/T takes one T away: "
        "the gradient is (1 − α)·T·(q − p)/N"
    ),
    "no_t": (
        "your soft term lacks the factor T: τ² from the loss times 1/T from the chain rule "
        "through z/T leaves (1 − α)·T·(q − p)/N"
    ),
    "flipped": (
        "the sign is flipped: the gradient is softmax(z_s) − onehot(y) and q − p (student "
        "minus target), so that a gradient *descent* step moves the student towards the targets"
    ),
    "sum": (
        "you did not divide by the batch size N: kd_loss averages both terms over the batch"
    ),
    "alpha_swapped": (
        "α is applied to the wrong term: α weighs the labels' cross-entropy and 1 − α the "
        "teacher's soft term"
    ),
    "no_hard": (
        "the cross-entropy's gradient α·(softmax(z_s) − onehot(y))/N is missing"
    ),
    "no_temperature": (
        "q and p must be the softened probabilities softmax(z_s / T) and softmax(z_t / T)"
    ),
}


def _grad_variant(
    student: Tensor,
    teacher: Tensor,
    targets: Tensor,
    alpha: float,
    temperature: float,
    *,
    factor: str = "t",
    flipped: bool = False,
    batch: str = "mean",
    alpha_swapped: bool = False,
    hard: bool = True,
    soften: bool = True,
) -> Tensor:
    """The gradient of kd_loss w.r.t. the student's logits, with the given mistakes."""
    N, C = student.shape
    t = temperature if soften else 1.0
    q = F.softmax(student / t, dim=1)  # (N, C) student, softened
    p = F.softmax(teacher / t, dim=1)  # (N, C) teacher, softened
    scale = {"t": temperature, "over_t": 1 / temperature, "t_squared": temperature**2, "no_t": 1.0}[factor]
    a_hard, a_soft = (1 - alpha, alpha) if alpha_swapped else (alpha, 1 - alpha)
    grad = a_soft * scale * (q - p)  # (N, C)
    if hard:
        grad = grad + a_hard * (F.softmax(student, dim=1) - F.one_hot(targets, C).to(student))
    if batch == "mean":
        grad = grad / N
    return -grad if flipped else grad


def _grad_mistakes(combo: dict[str, Any]) -> list[str]:
    mistakes = [] if combo["factor"] == "t" else [combo["factor"]]
    if combo["flipped"]:
        mistakes.append("flipped")
    if combo["batch"] != "mean":
        mistakes.append("sum")
    if combo["alpha_swapped"]:
        mistakes.append("alpha_swapped")
    if not combo["hard"]:
        mistakes.append("no_hard")
    if not combo["soften"]:
        mistakes.append("no_temperature")
    return mistakes


def _grad_candidates() -> list[dict[str, Any]]:
    combos = [
        dict(factor=f, flipped=fl, batch=b, alpha_swapped=a, hard=h, soften=s)
        for f, fl, b, a, h, s in itertools.product(
            ("t", "over_t", "t_squared", "no_t"),
            (False, True),
            ("mean", "sum"),
            (False, True),
            (True, False),
            (True, False),
        )
    ]
    return sorted(combos, key=lambda c: len(_grad_mistakes(c)))


def check_kd_gradient(fn: Callable[..., Any], *, verbose: bool = True) -> CheckResult:
    """Check a learner's gradient of the distillation loss with respect to the student's logits.

    The reference is autograd through :func:`kt_helpers.fusion.kd_loss`; the
    formula (chapter 3), for a batch of N labelled samples, is

    .. math::
        \\frac{\\partial L}{\\partial z_s} = \\frac{1}{N}\\Bigl[\\alpha\\,
        \\bigl(\\mathrm{softmax}(z_s) - \\mathrm{onehot}(y)\\bigr)
        + (1-\\alpha)\\, T\\, (q - p)\\Bigr],

    with :math:`q = \\mathrm{softmax}(z_s/T)` and :math:`p = \\mathrm{softmax}(z_t/T)`.
    ``fn`` is called as ``fn(student_logits, teacher_logits, targets,
    alpha=..., temperature=...)`` on small random batches (6 samples, 10
    classes) for several α and T. When the result is wrong the check names
    the likely mistakes: the power of T, the sign, the batch average, α on the
    wrong term, a missing cross-entropy term, unsoftened probabilities.

    Args:
        fn: the learner's function returning a tensor of shape (N, C), the
            gradient of ``kd_loss`` with respect to ``student_logits``.
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> def formula(s, t, y, alpha, temperature):
        ...     q, p = F.softmax(s / temperature, 1), F.softmax(t / temperature, 1)
        ...     hard = F.softmax(s, 1) - F.one_hot(y, s.shape[1])
        ...     return (alpha * hard + (1 - alpha) * temperature * (q - p)) / len(s)
        >>> _ = check_kd_gradient(formula)
        correct: your gradient equals autograd's through kd_loss for every α and T tried.
        >>> def kl_only(s, t, y, alpha, temperature):
        ...     q, p = F.softmax(s / temperature, 1), F.softmax(t / temperature, 1)
        ...     hard = F.softmax(s, 1) - F.one_hot(y, s.shape[1])
        ...     return (alpha * hard + (1 - alpha) * (q - p) / temperature) / len(s)
        >>> _ = check_kd_gradient(kl_only)
        not yet: your soft term's gradient is (q − p)/T, the gradient of the KL divergence alone; the loss multiplies the KL term by τ², so its gradient is (1 − α)·T·(q − p)/N.
    """
    _require_callable(
        fn, "check_kd_gradient", "fn(student_logits, teacher_logits, targets, alpha, temperature)"
    )
    def gradient(out: Any, student: Tensor) -> tuple[Tensor | None, str | None]:
        value = _as_tensor(out)
        if value is None or value.shape != student.shape:
            what = type(out).__name__ if value is None else f"shape {tuple(value.shape)}"
            return None, (f"not yet: your function returned {what}; expected a tensor of shape "
                          f"{tuple(student.shape)}, one gradient row per sample (∂L/∂z_s).")
        return value, None

    cases = _kd_cases()
    got, failed = _call_on_kd_cases(fn, cases, verbose, gradient)
    if failed is not None:
        return failed

    reference = []
    for (student, teacher, targets), alpha, temperature in cases:
        z = student.clone().requires_grad_(True)
        kd_loss(z, teacher, targets, alpha=alpha, temperature=temperature).backward()
        reference.append(z.grad)

    def matches(values: list[Tensor]) -> bool:
        return all(_close(g, v, 1e-6) for g, v in zip(got, values))

    if matches(reference):
        return _finish(
            True,
            "correct: your gradient equals autograd's through kd_loss for every α and T tried.",
            verbose,
        )
    known = _known_mistake(cases, matches, _grad_candidates(), _grad_variant, _grad_mistakes, _GRAD_MISTAKES)
    if known is not None:
        return _finish(False, known, verbose)
    gap = float((got[0] - reference[0]).abs().max())
    (_, _, _), alpha, temperature = cases[0]
    return _finish(
        False,
        f"not yet: your gradient differs from autograd's by up to {gap:.4f} "
        f"(alpha={alpha:g}, temperature={temperature:g}). Compute "
        "(alpha * (softmax(z_s) - onehot(y)) + (1 - alpha) * T * (q - p)) / N.",
        verbose,
    )
