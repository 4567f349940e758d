"""Self-check for the high-temperature limit of distillation, logit matching (chapter 8).

* :func:`check_logit_matching` — ``fn(student_logits, teacher_logits)``, the
  loss that ``τ²·KL`` of :func:`kt_helpers.fusion.kd_loss` tends to as T grows
  (Hinton et al., 2015, section 2.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

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

__all__ = ["check_logit_matching"]

#: The mistakes that :func:`check_logit_matching` recognises, each with its explanation.
_MISTAKES = {
    "not_centred": (
        "the logits are not centred: the softmax, and so τ²·KL at every temperature, cannot see "
        "a shift of a sample's logits, so its limit compares z − mean(z) per sample; subtract "
        "each row's mean (dim=1) from both. Regressing the raw logits (as Ba and Caruana do) also "
        "penalises a difference of means that no softmax sees"
    ),
    "centred_batch": (
        "you centred each class over the batch (dim=0); centre each sample's logits over its "
        "classes: z - z.mean(dim=1, keepdim=True)"
    ),
    "student_only": "only the student's logits are centred: centre the teacher's too",
    "teacher_only": "only the teacher's logits are centred: centre the student's too",
    "no_half": (
        "the factor 1/2 is missing: the limit is (1 / 2C)·‖z − v‖² per sample "
        "(F.mse_loss averages over the C classes but does not halve)"
    ),
    "no_c": (
        "the factor 1/C is missing: the limit is (1 / 2C)·‖z − v‖² per sample, the squared "
        "error averaged over the C classes and halved"
    ),
    "no_constant": (
        "the constant 1/(2C) is missing: the limit is (1 / 2C)·‖z − v‖² per sample, "
        "not the plain squared distance"
    ),
    "sum": (
        "you summed over the batch: kd_loss averages over the samples (reduction='batchmean'), "
        "and so does its limit"
    ),
}

_OPTIONS: dict[str, tuple[str, ...]] = {
    "centre": ("rows", "none", "batch", "student_only", "teacher_only"),
    "scale": ("half_over_c", "over_c", "half", "one"),
    "batch": ("mean", "sum"),
}


def _mistakes(combo: dict[str, str]) -> list[str]:
    names = []
    if combo["centre"] != "rows":
        names.append({"none": "not_centred", "batch": "centred_batch"}.get(combo["centre"], combo["centre"]))
    if combo["scale"] != "half_over_c":
        names.append({"over_c": "no_half", "half": "no_c", "one": "no_constant"}[combo["scale"]])
    if combo["batch"] != "mean":
        names.append("sum")
    return names


def _variant(z_s: Tensor, z_t: Tensor, *, centre: str = "rows", scale: str = "half_over_c",
             batch: str = "mean") -> float:
    """The logit-matching loss with the given mistakes (none: the reference)."""
    N, C = z_s.shape
    if centre in ("rows", "student_only"):
        z_s = z_s - z_s.mean(dim=1, keepdim=True)  # (N, C)
    if centre in ("rows", "teacher_only"):
        z_t = z_t - z_t.mean(dim=1, keepdim=True)  # (N, C)
    if centre == "batch":
        z_s, z_t = z_s - z_s.mean(dim=0), z_t - z_t.mean(dim=0)
    per_sample = ((z_s - z_t) ** 2).sum(dim=1)  # (N,)
    per_sample = per_sample / {"half_over_c": 2 * C, "over_c": C, "half": 2, "one": 1}[scale]
    return float(per_sample.mean() if batch == "mean" else per_sample.sum())


def _cases() -> list[tuple[Tensor, Tensor]]:
    """Two batches of float64 logits, (6, 10) and (4, 5), each sample with its own offset."""
    gen = torch.Generator().manual_seed(11)
    cases = []
    for N, C in ((6, 10), (4, 5)):
        z_s = 2.0 * torch.randn(N, C, generator=gen, dtype=torch.float64) + 3.0 * torch.randn(N, 1, generator=gen, dtype=torch.float64)
        z_t = 3.0 * torch.randn(N, C, generator=gen, dtype=torch.float64) - 2.0 * torch.randn(N, 1, generator=gen, dtype=torch.float64)
        cases.append((z_s, z_t))
    return cases


def check_logit_matching(fn: Callable[[Tensor, Tensor], Any], *, verbose: bool = True) -> CheckResult:
    """Check a learner's high-temperature limit of the distillation loss (logit matching).

    As T grows, the soft term of :func:`kt_helpers.fusion.kd_loss` (α = 0,
    ``τ²·KL`` averaged over the batch) tends to a squared error between the
    logits centred per sample (Hinton et al., 2015, section 2.1):

    .. math::
        T^2\\,\\mathrm{KL}\\bigl(\\mathrm{softmax}(z_t/T)\\,\\Vert\\,\\mathrm{softmax}(z_s/T)\\bigr)
        \\;\\to\\; \\frac{1}{2C}\\,\\lVert (z_s - \\bar z_s) - (z_t - \\bar z_t) \\rVert^2

    with :math:`\\bar z` the mean of a sample's C logits. ``fn`` is called on two
    float64 batches, of shape (6, 10) and (4, 5), whose samples have logits
    with different means. When the result is wrong, the check names the likely
    mistakes: logits not centred (or centred over the batch, or on one side
    only), the constant 1/(2C) wrong, a sum over the batch instead of the mean.
    Introduced in chapter 8 (exercises).

    Args:
        fn: the learner's function ``fn(student_logits, teacher_logits)`` with
            both of shape (N, C), returning the loss averaged over the N samples.
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> def logit_matching(z_s, z_t):
        ...     z_s = z_s - z_s.mean(dim=1, keepdim=True)
        ...     z_t = z_t - z_t.mean(dim=1, keepdim=True)
        ...     return ((z_s - z_t) ** 2).sum(dim=1).mean() / (2 * z_s.shape[1])
        >>> _ = check_logit_matching(logit_matching)
        correct: your loss equals the high-temperature limit of τ²·KL, (1 / 2C)·‖centred z − centred v‖² averaged over the batch.
        >>> _ = check_logit_matching(lambda z_s, z_t: 0.5 * torch.nn.functional.mse_loss(z_s, z_t))  # doctest: +ELLIPSIS
        not yet: the logits are not centred: ...
    """
    _require_callable(fn, "check_logit_matching", "fn(student_logits, teacher_logits)")
    cases = _cases()
    got: list[float] = []
    for z_s, z_t in cases:
        given = (z_s.clone(), z_t.clone())
        try:
            out = fn(*given)
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            return _finish(False, raised(error, f"fn(student_logits, teacher_logits) with logits of "
                                                f"shape {tuple(z_s.shape)}"), verbose)
        if not (torch.equal(given[0], z_s) and torch.equal(given[1], z_t)):
            return _finish(False, "not yet: your function changed its logits in place (e.g. with "
                                  "z -= z.mean(1, keepdim=True)); centre into new tensors.", verbose)
        value, problem = one_number(out, "one number, the loss averaged over the batch")
        if problem:
            return _finish(False, problem, verbose)
        got.append(value)

    def matches(values: list[float]) -> bool:
        return all(relative_close(g, v, 1e-6) for g, v in zip(got, values))

    def compute(combo: dict[str, str]) -> list[float]:
        return [_variant(z_s, z_t, **combo) for z_s, z_t in cases]

    if matches(compute({})):
        return _finish(True, "correct: your loss equals the high-temperature limit of τ²·KL, "
                             "(1 / 2C)·‖centred z − centred v‖² averaged over the batch.", verbose)
    known = first_known_mistake(combinations(_OPTIONS), compute, matches, _mistakes, _MISTAKES)
    if known is not None:
        return _finish(False, known, verbose)
    return _finish(False, f"not yet: on the first batch your loss is {got[0]:.4f}, the limit "
                          f"{compute({})[0]:.4f}. Centre each sample's logits (dim=1), then "
                          "average ‖z − v‖² / (2C) over the samples.", verbose)
