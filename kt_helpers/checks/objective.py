"""Self-check for the case study's fusion loss (chapter 4).

* :func:`check_fusion_loss` — ``fn(student_logits, student_features,
  teacher_logits, teacher_features, targets, mapping, alpha, temperature,
  hint_weight)``, the loss that :class:`kt_helpers.fusion.TransferObjective`
  computes for one mini-batch: the labels' cross-entropy, the soft labels and
  the feature hint, with unlabelled samples in the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..fusion import TransferObjective
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

__all__ = ["check_fusion_loss"]

#: The mistakes that :func:`check_fusion_loss` recognises, each with its explanation.
_MISTAKES = {
    "no_t2": (
        "the soft term lacks the factor τ²: multiply the KL term by temperature**2, which keeps "
        "its gradient on the same scale at every temperature (chapter 3)"
    ),
    "no_temperature": (
        "the temperature is applied to neither side: divide both the teacher's and the "
        "student's logits by T before the softmax and the log-softmax"
    ),
    "no_temperature_teacher": (
        "the temperature is applied to the student's logits only: the teacher's soft labels "
        "are softmax(teacher_logits / T) too"
    ),
    "no_temperature_student": (
        "the temperature is applied to the teacher's logits only: the student's side is "
        "log_softmax(student_logits / T) too"
    ),
    "not_log": (
        "F.kl_div's first argument must be the student's log-probabilities "
        "(F.log_softmax(student_logits / T)), not its probabilities (F.softmax)"
    ),
    "kl_reversed": (
        "the KL divergence is reversed: the soft term is KL(p_teacher ‖ q_student) = "
        "Σ p·(log p − log q), which F.kl_div(log_q_student, p_teacher) computes — its first "
        "argument is the student's"
    ),
    "kl_mean": (
        "the KL term is averaged over the classes as well as the samples (reduction='mean'): "
        "sum it over the classes and average over the batch (reduction='batchmean')"
    ),
    "kl_sum": (
        "the KL term is summed over the batch: average it over the B samples "
        "(reduction='batchmean')"
    ),
    "kl_classes": (
        "the KL term is averaged over the classes and summed over the samples; it is the other "
        "way round: sum over the classes, average over the batch (reduction='batchmean')"
    ),
    "alpha_swapped": (
        "α weighs the wrong terms: in this book α weighs the labels' cross-entropy (the "
        "student's own knowledge) and 1 − α the teacher's knowledge, soft labels and hint"
    ),
    "ce_batch": (
        "the cross-entropy is divided by the batch size B, unlabelled samples included: "
        "average it over the labelled samples only, F.cross_entropy(z[labelled], y[labelled]) "
        "with labelled = targets >= 0"
    ),
    "hint_no_alpha": (
        "the hint is not multiplied by 1 − α: like the soft labels it is the teacher's "
        "knowledge, so its term is (1 − α)·β·L_hint"
    ),
    "hint_no_beta": "the hint lacks its weight β (hint_weight): its term is (1 − α)·β·L_hint",
    "hint_missing": (
        "the feature hint is missing: add (1 − α)·β times the mean squared error between "
        "mapping(student_features) and teacher_features"
    ),
    "hint_per_sample": (
        "the hint's squared error is summed over the features: average it over the features "
        "as well as the samples (F.mse_loss's default), the 1/(B q) of the equation"
    ),
}

#: Each option's first value is the correct computation.
_OPTIONS: dict[str, tuple[Any, ...]] = {
    "t2": (True, False),
    "divide": ("both", "none", "student", "teacher"),
    "log": (True, False),
    "reversed": (False, True),
    "reduction": ("batchmean", "mean", "sum", "classes"),
    "alpha_swapped": (False, True),
    "ce": ("labelled", "batch"),
    "hint": ("ok", "no_alpha", "no_beta", "missing", "per_sample"),
}


def _mistakes(combo: dict[str, Any]) -> list[str]:
    names = []
    if not combo["t2"]:
        names.append("no_t2")
    divide = {"none": "no_temperature", "student": "no_temperature_teacher", "teacher": "no_temperature_student"}
    if combo["divide"] in divide:
        names.append(divide[combo["divide"]])
    if not combo["log"]:
        names.append("not_log")
    if combo["reversed"]:
        names.append("kl_reversed")
    if combo["reduction"] != "batchmean":
        names.append("kl_" + combo["reduction"])
    if combo["alpha_swapped"]:
        names.append("alpha_swapped")
    if combo["ce"] != "labelled":
        names.append("ce_batch")
    if combo["hint"] != "ok":
        names.append("hint_" + combo["hint"])
    return names


_Batch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, nn.Module]

#: (seed, alpha, temperature, hint_weight) of the check's batches: α ∉ {0.5}, β ≠ 1 and
#: τ² ∉ {1, C} in most, so that each mistake changes the loss in its own way.
_CASES = ((1, 0.3, 4.0, 0.5), (2, 0.8, 2.5, 2.0), (3, 0.0, 3.0, 1.0), (4, 1.0, 2.0, 1.5))


def _batch(seed: int, B: int = 8, C: int = 10, p: int = 6, d: int = 4) -> _Batch:
    """One mini-batch of float64 logits, features, targets (3 unlabelled: -1) and a map."""
    gen = torch.Generator().manual_seed(seed)
    student_logits = 2.0 * torch.randn(B, C, generator=gen, dtype=torch.float64)  # (B, C)
    student_features = torch.randn(B, p, generator=gen, dtype=torch.float64)  # (B, p)
    teacher_logits = 3.0 * torch.randn(B, C, generator=gen, dtype=torch.float64)  # (B, C)
    teacher_features = torch.randn(B, d, generator=gen, dtype=torch.float64)  # (B, d)
    targets = torch.randint(0, C, (B,), generator=gen)  # (B,)
    targets[torch.randperm(B, generator=gen)[:3]] = -1  # unlabelled transfer images
    with torch.random.fork_rng():  # the map's initial weights, without touching the caller's RNG
        torch.manual_seed(seed)
        mapping = nn.Linear(p, d).double()
    return student_logits, student_features, teacher_logits, teacher_features, targets, mapping


class _Fixed(nn.Module):
    """A stand-in student that returns fixed (logits, features), for TransferObjective."""

    def __init__(self, logits: Tensor, features: Tensor) -> None:
        super().__init__()
        self.logits, self.features = logits, features

    def forward(self, X: Tensor, return_features: bool = False) -> Any:
        return (self.logits, self.features) if return_features else self.logits


def _reference(batch: _Batch, alpha: float, temperature: float, hint_weight: float) -> float:
    """The loss of :class:`~kt_helpers.fusion.TransferObjective` on this batch."""
    z_s, s, z_t, t, y, mapping = batch
    objective = TransferObjective(teacher_logits=z_t, teacher_features=t, mapping=mapping,
                                  alpha=alpha, temperature=temperature, hint_weight=hint_weight)
    index = torch.arange(len(y))
    with torch.no_grad():
        return float(objective(_Fixed(z_s, s), torch.zeros(len(y), 1), y, index))


_SOFT_KEYS = ("t2", "divide", "log", "reversed", "reduction")


def _soft(batch: _Batch, temperature: float, t2: bool, divide: str, log: bool, reversed: bool,
          reduction: str) -> float:
    """The soft-label term with the given mistakes (the reference: τ²·KL(p ‖ q), batchmean)."""
    z_s, _, z_t, _, _, _ = batch
    B, C = z_s.shape
    t_s = temperature if divide in ("both", "student") else 1.0
    t_t = temperature if divide in ("both", "teacher") else 1.0
    p = F.softmax(z_t / t_t, dim=1)  # (B, C) teacher's soft labels
    q = F.softmax(z_s / t_s, dim=1)  # (B, C) student's
    log_q = F.log_softmax(z_s / t_s, dim=1) if log else q  # not_log: "log_q" holds q
    if reversed:
        pointwise = q * (q.log() - p.log())  # (B, C) KL(student ‖ teacher)
    else:
        pointwise = p * (p.log() - log_q)  # (B, C) what F.kl_div(log_q, p) computes
    soft = {"batchmean": pointwise.sum() / B, "mean": pointwise.mean(), "sum": pointwise.sum(),
            "classes": pointwise.sum() / C}[reduction]
    return float(temperature**2 * soft if t2 else soft)


def _hard_and_hint(batch: _Batch) -> tuple[dict[str, float], dict[str, float]]:
    """The cross-entropy (over the labelled samples, or over the batch) and the hint
    (averaged over samples and features, or summed over the features)."""
    z_s, s, _, t, y, mapping = batch
    B = len(y)
    labelled = y >= 0
    ce = float(F.cross_entropy(z_s[labelled], y[labelled], reduction="sum"))
    with torch.no_grad():
        squared = (mapping(s) - t) ** 2  # (B, d)
    return ({"labelled": ce / int(labelled.sum()), "batch": ce / B},
            {"mean": float(squared.mean()), "per_sample": float(squared.sum()) / B})


def _variant(batch: _Batch, alpha: float, temperature: float, hint_weight: float, *,
             soft_value: float, hard_values: dict[str, float], hint_values: dict[str, float],
             **combo: Any) -> float:
    """The fusion loss with the mistakes of ``combo`` (all off: the reference, by hand),
    from its soft term and the two variants of the cross-entropy and of the hint."""
    a_hard, a_soft = (1.0 - alpha, alpha) if combo["alpha_swapped"] else (alpha, 1.0 - alpha)
    hint_coef = {"ok": a_soft * hint_weight, "no_alpha": hint_weight, "no_beta": a_soft,
                 "missing": 0.0, "per_sample": a_soft * hint_weight}[combo["hint"]]
    hint_value = hint_values["per_sample" if combo["hint"] == "per_sample" else "mean"]
    return a_hard * hard_values[combo["ce"]] + a_soft * soft_value + hint_coef * hint_value


def _candidates() -> list[dict[str, Any]]:
    """Up to two mistakes at once (a reversed KL of probabilities is no distinct mistake)."""
    return [c for c in combinations(_OPTIONS, max_mistakes=2) if not (c["reversed"] and not c["log"])]


def check_fusion_loss(fn: Callable[..., Any], *, verbose: bool = True) -> CheckResult:
    """Check a learner's fusion loss against :class:`kt_helpers.fusion.TransferObjective`.

    The reference is the case study's fusion loss (chapter 4) for one
    mini-batch of B samples, of which the labelled ones (``targets >= 0``)
    form the set L:

    .. math::
        \\mathcal L = \\alpha\\,\\frac{1}{|L|}\\sum_{n\\in L}\\mathrm{CE}(z_n, y_n)
        + (1-\\alpha)\\Bigl[\\frac{T^2}{B}\\sum_n
        \\mathrm{KL}\\bigl(p_n(T)\\,\\Vert\\,q_n(T)\\bigr)
        + \\beta\\,\\frac{1}{B\\,q}\\sum_n \\lVert W s_n + b - t_n\\rVert^2\\Bigr]

    with :math:`p_n(T) = \\mathrm{softmax}(z^t_n/T)` the teacher's soft labels
    and :math:`q_n(T)` the student's. It is what
    ``TransferObjective.forward`` computes after its one forward call of the student. ``fn`` is called on
    four float64 batches (8 samples of which 3 unlabelled, 10 classes, student
    features of size 6, teacher features of size 4, a map ``nn.Linear(6, 4)``)
    for several α, T and β. When the result is wrong the check names the
    likely mistakes (up to two at once): the temperature not applied to both
    sides, the missing τ², α on the wrong terms, softmax where log-softmax is
    needed, the KL divergence reversed, an average over the wrong dimension
    (of the KL term, of the cross-entropy over the batch instead of the
    labelled samples, of the hint over the samples only), the hint's weights.
    Introduced in chapter 4 (exercises of the fusion notebook).

    Args:
        fn: the learner's function ``fn(student_logits, student_features,
            teacher_logits, teacher_features, targets, mapping, alpha,
            temperature, hint_weight)`` returning a scalar loss; logits of
            shape (B, C), features of shape (B, p) and (B, d), targets of shape
            (B,) with ``-1`` for an unlabelled sample, ``mapping`` a module from
            p to d features; α, T and β are passed by keyword.
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> def fusion_loss(z_s, s, z_t, t, y, mapping, alpha, temperature, hint_weight):
        ...     T, labelled = temperature, y >= 0
        ...     hard = F.cross_entropy(z_s[labelled], y[labelled])
        ...     soft = F.kl_div(F.log_softmax(z_s / T, dim=1), F.softmax(z_t / T, dim=1),
        ...                     reduction="batchmean")
        ...     hint = F.mse_loss(mapping(s), t)
        ...     return alpha * hard + (1 - alpha) * (T**2 * soft + hint_weight * hint)
        >>> _ = check_fusion_loss(fusion_loss)
        correct: your loss equals TransferObjective's on every batch tried (α, T and β varied, unlabelled samples included).
        >>> def teacher_unsoftened(z_s, s, z_t, t, y, mapping, alpha, temperature, hint_weight):
        ...     T, labelled = temperature, y >= 0
        ...     hard = F.cross_entropy(z_s[labelled], y[labelled])
        ...     soft = F.kl_div(F.log_softmax(z_s / T, dim=1), F.softmax(z_t, dim=1),
        ...                     reduction="batchmean")
        ...     hint = F.mse_loss(mapping(s), t)
        ...     return alpha * hard + (1 - alpha) * (T**2 * soft + hint_weight * hint)
        >>> _ = check_fusion_loss(teacher_unsoftened)
        not yet: the temperature is applied to the student's logits only: the teacher's soft labels are softmax(teacher_logits / T) too.
    """
    signature = ("fn(student_logits, student_features, teacher_logits, teacher_features, targets, "
                 "mapping, alpha, temperature, hint_weight)")
    _require_callable(fn, "check_fusion_loss", signature)
    cases = [(_batch(seed), alpha, temperature, beta) for seed, alpha, temperature, beta in _CASES]
    got: list[float] = []
    for batch, alpha, temperature, beta in cases:
        z_s, s, z_t, t, y, mapping = batch
        given = [z_s.clone(), s.clone(), z_t.clone(), t.clone(), y.clone()]
        try:
            out = fn(*given, mapping, alpha=alpha, temperature=temperature, hint_weight=beta)
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            message = raised(error, f"{signature} with alpha={alpha:g}, temperature={temperature:g}, "
                                    f"hint_weight={beta:g} on a batch of {len(y)} samples")
            if "-1" in str(error) or "out of bounds" in str(error):
                message += (" Some targets are -1, the unlabelled transfer images: take the "
                            "cross-entropy over the labelled samples only (targets >= 0).")
            return _finish(False, message, verbose)
        if not all(torch.equal(a, b) for a, b in zip(given, (z_s, s, z_t, t, y))):
            return _finish(False, "not yet: your function changed one of its input tensors in place "
                                  "(e.g. with logits /= T). Compute new tensors instead.", verbose)
        value, problem = one_number(out, "a scalar tensor (the loss, averaged over the batch)")
        if problem:
            return _finish(False, problem, verbose)
        got.append(value)

    reference = [_reference(*case) for case in cases]

    def matches(values: list[float]) -> bool:
        return all(relative_close(g, v) for g, v in zip(got, values))

    if matches(reference):
        return _finish(True, "correct: your loss equals TransferObjective's on every batch tried "
                             "(α, T and β varied, unlabelled samples included).", verbose)

    parts = [_hard_and_hint(batch) for batch, _, _, _ in cases]
    softs: dict[tuple[Any, ...], list[float]] = {}  # the soft terms, computed once per variant

    def compute(combo: dict[str, Any]) -> list[float]:
        key = tuple(combo[k] for k in _SOFT_KEYS)
        if key not in softs:
            softs[key] = [_soft(batch, temperature, *key) for batch, _, temperature, _ in cases]
        return [_variant(*case, soft_value=soft, hard_values=hard, hint_values=hint, **combo)
                for case, soft, (hard, hint) in zip(cases, softs[key], parts)]

    known = first_known_mistake(_candidates(), compute, matches, _mistakes, _MISTAKES)
    if known is not None:
        return _finish(False, known, verbose)
    # α = 1 (case 3) is the cross-entropy alone, α = 0 (case 2) the teacher's terms alone.
    hard_ok, teacher_ok = relative_close(got[3], reference[3]), relative_close(got[2], reference[2])
    if hard_ok and not teacher_ok:
        where = "with alpha=0 (soft labels and hint alone) it differs"
    elif teacher_ok and not hard_ok:
        where = "with alpha=1 (the labels' cross-entropy alone) it differs"
    elif hard_ok and teacher_ok:
        where = "each side alone is right, so check how α weighs them"
    else:
        where = "both sides differ"
    _, alpha, temperature, beta = cases[0]
    return _finish(
        False,
        f"not yet: your loss is {got[0]:.4f} where TransferObjective gives {reference[0]:.4f} "
        f"(alpha={alpha:g}, temperature={temperature:g}, hint_weight={beta:g}); {where}. Compute "
        "alpha * CE(labelled) + (1 - alpha) * (T**2 * KL(p_T ‖ q_T) + beta * MSE(mapping(s), t)).",
        verbose,
    )
