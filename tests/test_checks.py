"""The exercise checks recognise the reference and diagnose each common mistake.

Each wrong implementation below makes exactly one mistake (or one named pair
of mistakes); its test asserts that the check fails and that its message
names that mistake, and the reference passes with "correct".
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kt_helpers import checks
from kt_helpers.fusion import kd_loss

# --- check_soft_targets ----------------------------------------------------------------------


def reference_soft_targets(logits, temperature):
    return torch.softmax(logits / temperature, dim=1)


SOFT_MISTAKES = {
    "do not sum to 1 — did you forget to normalise?": lambda z, T: torch.exp(z / T),
    "temperature is not applied": lambda z, T: torch.softmax(z, dim=1),
    "multiplied the logits by the temperature": lambda z, T: torch.softmax(z * T, dim=1),
    "columns sum to 1, not your rows": lambda z, T: torch.softmax(z / T, dim=0),
    "negative entries": lambda z, T: z / T,
    "has shape (4,)": lambda z, T: torch.softmax(z / T, dim=1).max(dim=1).values,
    "raised ZeroDivisionError": lambda z, T: 1 / 0,
    "returned a str": lambda z, T: "probabilities",
    "exp overflows": lambda z, T: torch.exp(z / T) / torch.exp(z / T).sum(dim=1, keepdim=True),
    "differ from softmax(logits / T)": lambda z, T: torch.softmax(z / (T + 1), dim=1),
}


def test_soft_targets_reference_is_correct(capsys):
    result = checks.check_soft_targets(reference_soft_targets)
    assert result.passed and bool(result)
    assert result.message.startswith("correct")
    assert capsys.readouterr().out.strip() == result.message


def test_soft_targets_stable_hand_written_softmax_is_correct():
    def stable(z, T):
        z = z / T
        e = torch.exp(z - z.max(dim=1, keepdim=True).values)
        return e / e.sum(dim=1, keepdim=True)

    assert checks.check_soft_targets(stable, verbose=False).passed


def test_soft_targets_accepts_numpy_results():
    result = checks.check_soft_targets(
        lambda z, T: torch.softmax(z / T, dim=1).numpy(), verbose=False
    )
    assert result.passed


@pytest.mark.parametrize("expected", list(SOFT_MISTAKES))
def test_soft_targets_diagnoses(expected, capsys):
    result = checks.check_soft_targets(SOFT_MISTAKES[expected])
    assert not result.passed and not bool(result)
    assert expected in result.message
    assert capsys.readouterr().out.count("\n") == 1, "one message, on one line"


def test_soft_targets_in_place_change_is_diagnosed():
    def in_place(z, T):
        z /= T
        return torch.softmax(z, dim=1)

    result = checks.check_soft_targets(in_place, verbose=False)
    assert not result.passed
    assert "in place" in result.message


def test_soft_targets_verbose_false_prints_nothing(capsys):
    checks.check_soft_targets(reference_soft_targets, verbose=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("check", [checks.check_soft_targets, checks.check_kd_loss])
@pytest.mark.parametrize("not_callable", [None, 3, "softmax"])
def test_non_callable_raises(check, not_callable):
    with pytest.raises(ValueError, match="The 'fn' parameter of check_.* must be a function"):
        check(not_callable)


# --- check_kd_loss ---------------------------------------------------------------------------


def make_kd(
    *,
    t2=True,
    reduction="batchmean",
    swapped=False,
    alpha_swapped=False,
    divide_student=True,
    divide_teacher=True,
    log=True,
):
    """A hand-written distillation loss with the chosen mistakes."""

    def fn(student_logits, teacher_logits, targets, alpha, temperature):
        T = temperature
        s = student_logits / T if divide_student else student_logits
        t = teacher_logits / T if divide_teacher else teacher_logits
        hard = F.cross_entropy(student_logits, targets)
        if swapped:
            pointwise = F.kl_div(F.log_softmax(t, dim=1), F.softmax(s, dim=1), reduction="none")
        else:
            student_term = F.log_softmax(s, dim=1) if log else F.softmax(s, dim=1)
            pointwise = F.kl_div(student_term, F.softmax(t, dim=1), reduction="none")
        # what F.kl_div's reductions compute (its reduction="mean" itself warns)
        soft = {
            "batchmean": pointwise.sum() / len(pointwise),
            "mean": pointwise.mean(),
            "sum": pointwise.sum(),
        }[reduction]
        scale = T**2 if t2 else 1.0
        a_hard, a_soft = (1 - alpha, alpha) if alpha_swapped else (alpha, 1 - alpha)
        return a_hard * hard + a_soft * scale * soft

    return fn


KD_MISTAKES = {
    "off by a factor τ² in the soft term": make_kd(t2=False),
    "KL arguments are swapped": make_kd(swapped=True),
    "reduction='mean'": make_kd(reduction="mean"),
    "reduction='sum'": make_kd(reduction="sum"),
    "α is applied to the wrong term": make_kd(alpha_swapped=True),
    "softmax is taken without the temperature: divide both": make_kd(
        divide_student=False, divide_teacher=False
    ),
    "teacher's softmax is taken without the temperature": make_kd(divide_teacher=False),
    "student's log-softmax is taken without the temperature": make_kd(divide_student=False),
    "needs the student's log-probabilities": make_kd(log=False),
}


def test_kd_loss_reference_is_correct(capsys):
    result = checks.check_kd_loss(kd_loss)
    assert result.passed
    assert result.message.startswith("correct")
    assert capsys.readouterr().out.strip() == result.message


def test_kd_loss_hand_written_reference_is_correct():
    assert checks.check_kd_loss(make_kd(), verbose=False).passed


@pytest.mark.parametrize("expected", list(KD_MISTAKES))
def test_kd_loss_diagnoses_each_mistake(expected, capsys):
    result = checks.check_kd_loss(KD_MISTAKES[expected])
    assert not result.passed
    assert expected in result.message
    assert result.message.count("; and ") == 0, f"one mistake only: {result.message}"
    assert capsys.readouterr().out.count("\n") == 1


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
def test_kd_loss_diagnoses_the_real_reduction_mean():
    """The mistake as a learner makes it: F.kl_div(..., reduction="mean") (which warns)."""

    def with_mean(student_logits, teacher_logits, targets, alpha, temperature):
        T = temperature
        soft = F.kl_div(
            F.log_softmax(student_logits / T, dim=1),
            F.softmax(teacher_logits / T, dim=1),
            reduction="mean",
        )
        return alpha * F.cross_entropy(student_logits, targets) + (1 - alpha) * T**2 * soft

    result = checks.check_kd_loss(with_mean, verbose=False)
    assert not result.passed
    assert "reduction='mean'" in result.message


def test_kd_loss_diagnoses_two_mistakes_at_once():
    result = checks.check_kd_loss(make_kd(t2=False, reduction="mean"), verbose=False)
    assert not result.passed
    assert "factor τ²" in result.message and "reduction='mean'" in result.message


def test_kd_loss_unknown_mistake_names_the_wrong_term():
    def soft_ce(student_logits, teacher_logits, targets, alpha, temperature):
        # the hard term computed on the softened logits: not a known mistake
        T = temperature
        hard = F.cross_entropy(student_logits / T, targets)
        return alpha * hard + (1 - alpha) * kd_loss(
            student_logits, teacher_logits, targets, alpha=0.0, temperature=T
        )

    result = checks.check_kd_loss(soft_ce, verbose=False)
    assert not result.passed
    assert "with alpha=1 (the cross-entropy alone) it differs" in result.message


def test_kd_loss_non_scalar_is_diagnosed():
    def per_sample(student_logits, teacher_logits, targets, alpha, temperature):
        return F.cross_entropy(student_logits, targets, reduction="none")

    result = checks.check_kd_loss(per_sample, verbose=False)
    assert not result.passed
    assert "expected a scalar" in result.message


def test_kd_loss_error_in_learner_code_is_reported():
    def broken(student_logits, teacher_logits, targets, alpha, temperature):
        raise NotImplementedError("TODO")

    result = checks.check_kd_loss(broken, verbose=False)
    assert not result.passed
    assert "raised NotImplementedError: TODO" in result.message


def test_kd_loss_accepts_a_python_float():
    def as_float(student_logits, teacher_logits, targets, alpha, temperature):
        return float(kd_loss(student_logits, teacher_logits, targets, alpha=alpha, temperature=temperature))

    assert checks.check_kd_loss(as_float, verbose=False).passed
