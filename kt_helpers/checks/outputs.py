"""Self-checks for the distillation loss and its soft targets (chapter 2's exercises).

* :func:`check_soft_targets` — ``fn(logits, temperature)``, the softened
  probabilities ``softmax(logits / T)``;
* :func:`check_kd_loss` — ``fn(student_logits, teacher_logits, targets, alpha,
  temperature)``, the distillation loss
  ``α·CE + (1 − α)·τ²·KL(teacher_T ‖ student_T)``.

The references are :func:`torch.softmax` and :func:`kt_helpers.fusion.kd_loss`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fusion import kd_loss
from ._common import CheckResult, _as_tensor, _close, _finish, _require_callable, first_known_mistake

__all__ = ["check_kd_loss", "check_soft_targets"]


# --- soft targets ----------------------------------------------------------------------------

#: Moderate logits, 4 samples × 5 classes, distinct values, no ties.
_SOFT_LOGITS = torch.tensor(
    [
        [2.0, 1.0, 0.1, -1.0, 0.5],
        [-0.3, 3.0, 0.2, 0.0, -2.0],
        [1.5, 1.4, -0.5, 2.2, 0.3],
        [0.0, -1.2, 0.7, 0.4, 4.0],
    ]
)
_SOFT_TEMPERATURES = (2.0, 4.0, 0.5, 1.0)
#: Large logits, on which exp(logits) overflows in float32.
_LARGE_LOGITS = torch.tensor([[100.0, 90.0, 80.0], [-50.0, 120.0, 119.0]])


def check_soft_targets(
    fn: Callable[[Tensor, float], Tensor], *, verbose: bool = True
) -> CheckResult:
    """Check a learner's soft targets ``fn(logits, temperature)`` against ``softmax(logits / T)``.

    The reference, row by row (one row per sample, one column per class):

    .. math::
        p_i = \\frac{\\exp(z_i / T)}{\\sum_j \\exp(z_j / T)}

    ``fn`` is called on a small batch of logits of shape (4, 5) at several
    temperatures, then on large logits (such as 100) at which a naive
    ``exp`` overflows. The check prints one message — ``"correct: ..."`` or
    the most likely mistake, e.g. that the rows do not sum to 1 or that the
    temperature is not applied — and returns it in a :class:`CheckResult`.

    Args:
        fn: the learner's function, called as ``fn(logits, temperature)`` with
            ``logits`` a float tensor of shape (N, C) and ``temperature`` a float > 0.
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> import torch
        >>> result = check_soft_targets(lambda z, T: torch.softmax(z / T, dim=1))
        correct: your soft targets equal softmax(logits / T) at every temperature tried (0.5 to 4), even for large logits.
        >>> result.passed
        True
        >>> _ = check_soft_targets(lambda z, T: torch.softmax(z, dim=1))
        not yet: your result equals softmax(logits) — the temperature is not applied. Divide the logits by T before the softmax: softmax(logits / T).
    """
    _require_callable(fn, "check_soft_targets", "fn(logits, temperature)")

    def call(logits: Tensor, temperature: float) -> tuple[Tensor | None, str | None]:
        given = logits.clone()
        try:
            out = fn(given, temperature)
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            return None, (
                f"not yet: your function raised {type(error).__name__}: {error} "
                f"(called as fn(logits, temperature) with logits of shape "
                f"{tuple(logits.shape)} and temperature={temperature:g})."
            )
        if not torch.equal(given, logits):
            return None, (
                "not yet: your function changed its input 'logits' in place "
                "(e.g. with logits /= T). Compute a new tensor instead: logits / T."
            )
        result = _as_tensor(out)
        if result is None:
            return None, (
                f"not yet: your function returned a {type(out).__name__}; "
                f"expected a tensor of shape {tuple(logits.shape)}."
            )
        return result, None

    for temperature in _SOFT_TEMPERATURES:
        z = _SOFT_LOGITS.double()
        result, problem = call(_SOFT_LOGITS, temperature)
        if problem:
            return _finish(False, problem, verbose)
        expected = torch.softmax(z / temperature, dim=1)  # (N, C)
        if _close(result, expected):
            continue
        shape = tuple(_SOFT_LOGITS.shape)
        if result.shape != expected.shape:
            hint = (
                " Did you reduce over a dimension (e.g. with sum or max)?"
                if result.numel() < expected.numel()
                else ""
            )
            return _finish(
                False,
                f"not yet: your result has shape {tuple(result.shape)}; expected {shape}, "
                f"one row of class probabilities per sample.{hint}",
                verbose,
            )
        if not torch.isfinite(result).all():
            return _finish(
                False,
                f"not yet: your result contains NaN or inf at T={temperature:g}, even for "
                "ordinary logits. Compute softmax(logits / T), e.g. torch.softmax(logits / T, dim=1).",
                verbose,
            )
        if _close(result, torch.softmax(z / temperature, dim=0)):
            return _finish(
                False,
                "not yet: your columns sum to 1, not your rows — you normalised over the "
                "samples (dim=0). Normalise over the classes: softmax(logits / T, dim=1).",
                verbose,
            )
        row_sums = result.sum(dim=1)
        if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4):
            if (result < 0).any():
                return _finish(
                    False,
                    "not yet: your result has negative entries and its rows do not sum to 1 — "
                    "these are not probabilities. Did you forget the softmax? "
                    "Return softmax(logits / T).",
                    verbose,
                )
            return _finish(
                False,
                "not yet: your probabilities do not sum to 1 — did you forget to normalise? "
                "Divide exp(logits / T) by its sum over the classes (each row), or use "
                "torch.softmax(logits / T, dim=1).",
                verbose,
            )
        if temperature != 1.0 and _close(result, torch.softmax(z, dim=1)):
            return _finish(
                False,
                "not yet: your result equals softmax(logits) — the temperature is not applied. "
                "Divide the logits by T before the softmax: softmax(logits / T).",
                verbose,
            )
        if temperature != 1.0 and _close(result, torch.softmax(z * temperature, dim=1)):
            return _finish(
                False,
                "not yet: you multiplied the logits by the temperature; divide them instead: "
                "softmax(logits / T). A higher T must make the probabilities softer.",
                verbose,
            )
        gap = float((result - expected).abs().max())
        return _finish(
            False,
            f"not yet: your rows are probabilities, but they differ from softmax(logits / T) "
            f"at T={temperature:g} (largest difference {gap:.4f}). "
            "Check that you divide the logits by T and exponentiate before normalising.",
            verbose,
        )

    result, problem = call(_LARGE_LOGITS, 1.0)
    if problem:
        return _finish(False, problem, verbose)
    if not torch.isfinite(result).all():
        return _finish(
            False,
            "almost: correct for ordinary logits, but your result contains NaN or inf for large "
            "logits (such as 100): exp overflows. Subtract each row's maximum before "
            "exponentiating — softmax does not change — or use torch.softmax(logits / T, dim=1).",
            verbose,
        )
    if not _close(result, torch.softmax(_LARGE_LOGITS.double(), dim=1), tol=1e-4):
        return _finish(
            False,
            "almost: correct for ordinary logits, but wrong for large logits (such as 100). "
            "Subtract each row's maximum before exponentiating, or use torch.softmax.",
            verbose,
        )
    return _finish(
        True,
        "correct: your soft targets equal softmax(logits / T) at every temperature tried "
        "(0.5 to 4), even for large logits.",
        verbose,
    )


# --- distillation loss -----------------------------------------------------------------------

#: The mistakes that :func:`check_kd_loss` recognises, each with its explanation.
_KD_MISTAKES = {
    "no_t2": (
        "your loss is off by a factor τ² in the soft term; see the distillation loss "
        "equation in chapter 3: multiply the KL term by temperature**2"
    ),
    "swapped": (
        "the KL arguments are swapped: the soft term must be KL(teacher ‖ student). "
        "F.kl_div takes the student's log-probabilities first and the teacher's "
        "probabilities second"
    ),
    "mean": (
        "you used reduction='mean', which also divides by the number of classes; "
        "use reduction='batchmean' (the true KL divergence, averaged over the batch)"
    ),
    "sum": (
        "you used reduction='sum', which adds over the batch instead of averaging; "
        "use reduction='batchmean'"
    ),
    "alpha_swapped": (
        "α is applied to the wrong term: in this book α weighs the labels' cross-entropy "
        "(the target's own knowledge) and 1 − α the teacher's soft term"
    ),
    "no_temperature": (
        "the softmax is taken without the temperature: divide both the teacher's and "
        "the student's logits by T before the softmax"
    ),
    "no_temperature_teacher": (
        "the teacher's softmax is taken without the temperature: use softmax(teacher_logits / T)"
    ),
    "no_temperature_student": (
        "the student's log-softmax is taken without the temperature: use "
        "log_softmax(student_logits / T)"
    ),
    "not_log": (
        "F.kl_div needs the student's log-probabilities: use F.log_softmax(student_logits / T), "
        "not softmax"
    ),
}


def _kd_variant(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float,
    temperature: float,
    *,
    t2: bool = True,
    reduction: str = "batchmean",
    swapped: bool = False,
    alpha_swapped: bool = False,
    divide: str = "both",
    log: bool = True,
) -> float:
    """The distillation loss with the given mistakes (all off: the reference)."""
    t_s = temperature if divide in ("both", "student") else 1.0
    t_t = temperature if divide in ("both", "teacher") else 1.0
    hard = F.cross_entropy(student_logits, targets)
    p_teacher = F.softmax(teacher_logits / t_t, dim=1)  # (N, C)
    if log:
        log_q_student = F.log_softmax(student_logits / t_s, dim=1)  # (N, C)
    else:
        log_q_student = F.softmax(student_logits / t_s, dim=1)  # the mistake: not a log
    # Element-wise KL terms, reduced by hand as F.kl_div's reductions would reduce them
    # (F.kl_div itself warns about reduction="mean").
    if swapped:  # KL(student ‖ teacher)
        pointwise = log_q_student.exp() * (log_q_student - p_teacher.log())  # (N, C)
    else:  # KL(teacher ‖ student); with log=False, "log_q_student" holds probabilities
        pointwise = F.kl_div(log_q_student, p_teacher, reduction="none")  # (N, C)
    n = pointwise.shape[0]
    soft = {"batchmean": pointwise.sum() / n, "mean": pointwise.mean(), "sum": pointwise.sum()}[
        reduction
    ]
    scale = temperature**2 if t2 else 1.0
    a_hard, a_soft = (1.0 - alpha, alpha) if alpha_swapped else (alpha, 1.0 - alpha)
    return float(a_hard * hard + a_soft * scale * soft)


def _kd_candidates() -> list[dict[str, Any]]:
    """Every combination of mistakes, the fewest mistakes first."""
    grid = itertools.product(
        (True, False),  # t2
        ("batchmean", "mean", "sum"),  # reduction
        (False, True),  # swapped
        (False, True),  # alpha_swapped
        ("both", "none", "student", "teacher"),  # divide: which logits are divided by T
        (True, False),  # log
    )
    combos = [
        dict(t2=t2, reduction=r, swapped=s, alpha_swapped=a, divide=d, log=lg)
        for t2, r, s, a, d, lg in grid
        if not (s and not lg)  # a swapped KL with a non-log student is not a distinct mistake
    ]
    return sorted(combos, key=lambda c: len(_kd_mistakes(c)))


def _kd_mistakes(combo: dict[str, Any]) -> list[str]:
    mistakes = []
    if not combo["t2"]:
        mistakes.append("no_t2")
    if combo["swapped"]:
        mistakes.append("swapped")
    if combo["reduction"] != "batchmean":
        mistakes.append(combo["reduction"])
    if combo["alpha_swapped"]:
        mistakes.append("alpha_swapped")
    divide = {
        "none": "no_temperature",
        "student": "no_temperature_teacher",
        "teacher": "no_temperature_student",
    }
    if combo["divide"] in divide:
        mistakes.append(divide[combo["divide"]])
    if not combo["log"]:
        mistakes.append("not_log")
    return mistakes


def _kd_inputs(seed: int, n: int = 6, c: int = 10) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    student = 2.0 * torch.randn(n, c, generator=gen, dtype=torch.float64)  # (N, C)
    teacher = 3.0 * torch.randn(n, c, generator=gen, dtype=torch.float64)  # (N, C)
    targets = torch.randint(0, c, (n,), generator=gen)  # (N,)
    return student, teacher, targets


#: (seed of the inputs, alpha, temperature) of the check's test cases; α ≠ 0.5 and
#: τ² ∉ {1, C} so that every mistake changes the loss in its own way.
_KD_CASES = ((1, 0.3, 4.0), (2, 0.8, 2.5), (3, 0.0, 3.0), (4, 1.0, 2.0))


_KdCase = tuple[tuple[Tensor, Tensor, Tensor], float, float]


def _kd_cases() -> list[_KdCase]:
    """The check's test cases: ((student, teacher, targets), alpha, temperature)."""
    return [(_kd_inputs(seed), alpha, temperature) for seed, alpha, temperature in _KD_CASES]


def _call_on_kd_cases(
    fn: Callable[..., Any],
    cases: list[_KdCase],
    verbose: bool,
    convert: Callable[[Any, Tensor], tuple[Any, str | None]],
) -> tuple[list[Any], CheckResult | None]:
    """Call the learner's ``fn`` on every case, on copies of the inputs.

    ``convert(output, student_logits)`` returns ``(value, None)`` for a
    usable output or ``(None, message)`` for one of the wrong kind. Returns
    the values, or the failing :class:`CheckResult` for the first case that
    raises or returns the wrong kind of thing.
    """
    values: list[Any] = []
    for (student, teacher, targets), alpha, temperature in cases:
        try:
            out = fn(student.clone(), teacher.clone(), targets.clone(),
                     alpha=alpha, temperature=temperature)
        except Exception as error:  # noqa: BLE001 - any error of the learner's code is feedback
            return [], _finish(
                False,
                f"not yet: your function raised {type(error).__name__}: {error} (called as "
                f"fn(student_logits, teacher_logits, targets, alpha={alpha:g}, "
                f"temperature={temperature:g}) with logits of shape {tuple(student.shape)}).",
                verbose,
            )
        value, problem = convert(out, student)
        if problem is not None:
            return [], _finish(False, problem, verbose)
        values.append(value)
    return values, None


def _known_mistake(
    cases: list[_KdCase],
    matches: Callable[[list[Any]], bool],
    candidates: list[dict[str, Any]],
    variant: Callable[..., Any],
    mistakes: Callable[[dict[str, Any]], list[str]],
    explanations: dict[str, str],
) -> str | None:
    """The first combination of known mistakes whose results the learner's match.

    Each candidate is a set of keyword arguments for ``variant`` (the
    reference computation with some mistakes made); returns the "not yet"
    message naming those mistakes, or None when no candidate matches.
    """
    def compute(combo: dict[str, Any]) -> list[Any]:
        return [variant(s, t, y, alpha, temperature, **combo) for (s, t, y), alpha, temperature in cases]

    return first_known_mistake(candidates, compute, matches, mistakes, explanations)


def check_kd_loss(
    fn: Callable[..., Tensor], *, verbose: bool = True
) -> CheckResult:
    """Check a learner's distillation loss against :func:`kt_helpers.fusion.kd_loss`.

    The reference, with α weighing the labels (the target's own knowledge):

    .. math::
        L = \\alpha\\,\\mathrm{CE}(z_s, y) + (1-\\alpha)\\,T^2\\,
            \\mathrm{KL}\\bigl(\\mathrm{softmax}(z_t/T) \\,\\Vert\\, \\mathrm{softmax}(z_s/T)\\bigr)

    ``fn`` is called as ``fn(student_logits, teacher_logits, targets,
    alpha=..., temperature=...)`` on small random batches (6 samples, 10
    classes, every sample labelled) for several α and T. When the result
    differs from the reference, the check looks for the common mistakes that
    explain it — a missing τ² factor, the KL arguments swapped,
    ``reduction="mean"`` instead of ``"batchmean"``, α on the wrong term, a
    softmax without the temperature, probabilities instead of
    log-probabilities — and names them. It prints one message and returns it
    in a :class:`CheckResult`.

    Args:
        fn: the learner's function ``fn(student_logits, teacher_logits,
            targets, alpha, temperature)`` returning a scalar loss; logits of
            shape (N, C), targets of shape (N,).
        verbose: print the message (the default).

    Returns:
        A :class:`CheckResult`, truthy when ``fn`` is correct.

    Raises:
        ValueError: if ``fn`` is not callable.

    Examples:
        >>> from kt_helpers.fusion import kd_loss
        >>> result = check_kd_loss(kd_loss)
        correct: your loss equals α·CE + (1 − α)·τ²·KL(teacher_T ‖ student_T) for every α and T tried.
        >>> bool(result)
        True
        >>> def no_t2(s, t, y, alpha, temperature):
        ...     soft = F.kl_div(F.log_softmax(s / temperature, dim=1),
        ...                     F.softmax(t / temperature, dim=1), reduction="batchmean")
        ...     return alpha * F.cross_entropy(s, y) + (1 - alpha) * soft
        >>> _ = check_kd_loss(no_t2)
        not yet: your loss is off by a factor τ² in the soft term; see the distillation loss equation in chapter 3: multiply the KL term by temperature**2.
    """
    _require_callable(fn, "check_kd_loss", "fn(student_logits, teacher_logits, targets, alpha, temperature)")

    def scalar(out: Any, student: Tensor) -> tuple[float | None, str | None]:
        value = _as_tensor(out)
        if value is None:
            return None, (f"not yet: your function returned a {type(out).__name__}; expected a "
                          "scalar tensor (the loss).")
        if value.numel() != 1:
            return None, (f"not yet: your loss has shape {tuple(value.shape)}; expected a scalar. "
                          "Average over the batch: reduction='batchmean' for F.kl_div, the default "
                          "'mean' for F.cross_entropy.")
        return float(value), None

    cases = _kd_cases()
    got, failed = _call_on_kd_cases(fn, cases, verbose, scalar)
    if failed is not None:
        return failed
    reference = [
        float(kd_loss(s, t, y, alpha=alpha, temperature=temperature))
        for (s, t, y), alpha, temperature in cases
    ]

    def matches(values: list[float]) -> bool:
        return all(abs(g - v) <= 1e-5 * max(1.0, abs(v)) for g, v in zip(got, values))

    if matches(reference):
        return _finish(
            True,
            "correct: your loss equals α·CE + (1 − α)·τ²·KL(teacher_T ‖ student_T) "
            "for every α and T tried.",
            verbose,
        )
    known = _known_mistake(cases, matches, _kd_candidates(), _kd_variant, _kd_mistakes, _KD_MISTAKES)
    if known is not None:
        return _finish(False, known, verbose)

    # No known mistake explains it: say which term is wrong (α = 0 is the soft term
    # alone, α = 1 the cross-entropy alone).
    hard_ok = abs(got[3] - reference[3]) <= 1e-5 * max(1.0, abs(reference[3]))
    soft_ok = abs(got[2] - reference[2]) <= 1e-5 * max(1.0, abs(reference[2]))
    if hard_ok and not soft_ok:
        where = "with alpha=0 (the soft term alone) it differs"
    elif soft_ok and not hard_ok:
        where = "with alpha=1 (the cross-entropy alone) it differs"
    elif hard_ok and soft_ok:
        where = "each term alone is right, so check how they are weighted and added"
    else:
        where = "both terms differ"
    (s, t, y), alpha, temperature = cases[0]
    return _finish(
        False,
        f"not yet: your loss is {got[0]:.4f} where the reference gives {reference[0]:.4f} "
        f"(alpha={alpha:g}, temperature={temperature:g}); {where}. Compute "
        "alpha * CE + (1 - alpha) * T**2 * KL(softmax(teacher / T) ‖ softmax(student / T)).",
        verbose,
    )
