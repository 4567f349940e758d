"""Self-checks for the exercises: call a learner's function, compare it with the
reference, and say *specifically* what is wrong.

Each check takes the learner's function, runs it on small fixed inputs, prints
one message — ``"correct: ..."`` or a diagnosis of the most likely mistake —
and returns a :class:`CheckResult` (truthy when the function is correct). The
references are the book's own helpers (:func:`torch.softmax`,
:func:`kt_helpers.fusion.kd_loss`), so a learner who passes a check has
re-derived exactly what the rest of the book uses.

* :func:`check_soft_targets` — ``fn(logits, temperature)``, the softened
  probabilities ``softmax(logits / T)``;
* :func:`check_kd_loss` — ``fn(student_logits, teacher_logits, targets, alpha,
  temperature)``, the distillation loss
  ``α·CE + (1 − α)·T²·KL(teacher_T ‖ student_T)``;
* :func:`check_linear_map` — ``fn(source, target, ridge) -> (weight, bias)``,
  the closed-form (ridge) least-squares map of chapter 3;
* :func:`check_kd_gradient` — the gradient of the distillation loss with
  respect to the student's logits, derived in chapter 3.

Introduced in chapter 2 (exercises); the last two in chapter 3.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .fusion import kd_loss

__all__ = ["CheckResult", "check_kd_gradient", "check_kd_loss", "check_linear_map", "check_soft_targets"]


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


def _close(a: Tensor, b: Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=tol, atol=tol))


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
        "your loss is off by a factor T² in the soft term; see the distillation loss "
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
#: T² ∉ {1, C} so that every mistake changes the loss in its own way.
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
    for combo in candidates:
        values = [variant(s, t, y, alpha, temperature, **combo) for (s, t, y), alpha, temperature in cases]
        if matches(values):
            return "not yet: " + "; and ".join(explanations[m] for m in mistakes(combo)) + "."
    return None


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
    explain it — a missing T² factor, the KL arguments swapped,
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
        correct: your loss equals α·CE + (1 − α)·T²·KL(teacher_T ‖ student_T) for every α and T tried.
        >>> bool(result)
        True
        >>> def no_t2(s, t, y, alpha, temperature):
        ...     soft = F.kl_div(F.log_softmax(s / temperature, dim=1),
        ...                     F.softmax(t / temperature, dim=1), reduction="batchmean")
        ...     return alpha * F.cross_entropy(s, y) + (1 - alpha) * soft
        >>> _ = check_kd_loss(no_t2)
        not yet: your loss is off by a factor T² in the soft term; see the distillation loss equation in chapter 3: multiply the KL term by temperature**2.
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
            "correct: your loss equals α·CE + (1 − α)·T²·KL(teacher_T ‖ student_T) "
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


# --- chapter 3: the closed-form linear map and the distillation gradient ---------------------

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


#: The mistakes that :func:`check_kd_gradient` recognises, each with its explanation.
_GRAD_MISTAKES = {
    "over_t": (
        "your soft term's gradient is (q − p)/T, the gradient of the KL divergence alone; "
        "the loss multiplies the KL term by T², so its gradient is (1 − α)·T·(q − p)/N"
    ),
    "t_squared": (
        "your soft term has a factor T², but the chain rule through z/T takes one T away: "
        "the gradient is (1 − α)·T·(q − p)/N"
    ),
    "no_t": (
        "your soft term lacks the factor T: T² from the loss times 1/T from the chain rule "
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
        not yet: your soft term's gradient is (q − p)/T, the gradient of the KL divergence alone; the loss multiplies the KL term by T², so its gradient is (1 − α)·T·(q − p)/N.
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

