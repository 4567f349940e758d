"""Chapter 4's self-check, check_fusion_loss: the reference passes, each typical mistake is named.

The learner-style implementations below are written with PyTorch's losses
(F.kl_div, F.cross_entropy, F.mse_loss), independently of the check's own
variants, each with one mistake (or a named pair).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kt_helpers import checks
from kt_helpers.checks import check_fusion_loss


def make_fusion(**mistakes):
    """A fusion loss written as a learner would, with the given mistakes."""

    def fusion_loss(z_s, s, z_t, t, y, mapping, alpha, temperature, hint_weight):
        T = temperature
        t_s = 1.0 if mistakes.get("divide") in ("none", "teacher") else T
        t_t = 1.0 if mistakes.get("divide") in ("none", "student") else T
        labelled = y >= 0
        if mistakes.get("ce_batch"):
            hard = F.cross_entropy(z_s[labelled], y[labelled], reduction="sum") / len(y)
        else:
            hard = F.cross_entropy(z_s[labelled], y[labelled])
        p = F.softmax(z_t / t_t, dim=1)
        if mistakes.get("not_log"):
            first = F.softmax(z_s / t_s, dim=1)
        else:
            first = F.log_softmax(z_s / t_s, dim=1)
        if mistakes.get("reversed"):  # KL(student ‖ teacher)
            first, p = F.log_softmax(z_t / t_t, dim=1), F.softmax(z_s / t_s, dim=1)
        reduction = mistakes.get("reduction", "batchmean")
        if reduction == "classes":
            soft = F.kl_div(first, p, reduction="none").mean(dim=1).sum()
        elif reduction == "mean":  # what reduction="mean" computes (F.kl_div warns about it)
            soft = F.kl_div(first, p, reduction="none").mean()
        else:
            soft = F.kl_div(first, p, reduction=reduction)
        if not mistakes.get("no_t2"):
            soft = T**2 * soft
        if mistakes.get("hint_per_sample"):
            hint = ((mapping(s) - t) ** 2).sum(dim=1).mean()
        else:
            hint = F.mse_loss(mapping(s), t)
        a_hard, a_soft = (1 - alpha, alpha) if mistakes.get("alpha_swapped") else (alpha, 1 - alpha)
        hint_coef = {"no_alpha": hint_weight, "no_beta": a_soft, "missing": 0.0}.get(
            mistakes.get("hint"), a_soft * hint_weight)
        return a_hard * hard + a_soft * soft + hint_coef * hint

    return fusion_loss


MISTAKES = {
    "the factor τ²": (dict(no_t2=True), "lacks the factor τ²"),
    "no temperature": (dict(divide="none"), "applied to neither side"),
    "teacher unsoftened": (dict(divide="student"), "to the student's logits only"),
    "student unsoftened": (dict(divide="teacher"), "to the teacher's logits only"),
    "softmax, not log-softmax": (dict(not_log=True), "not its probabilities (F.softmax)"),
    "KL reversed": (dict(reversed=True), "the KL divergence is reversed"),
    "mean over classes too": (dict(reduction="mean"), "averaged over the classes as well"),
    "summed over the batch": (dict(reduction="sum"), "summed over the batch"),
    "mean over the wrong dimension": (dict(reduction="classes"), "the other way round"),
    "α swapped": (dict(alpha_swapped=True), "α weighs the wrong terms"),
    "CE over the batch": (dict(ce_batch=True), "divided by the batch size B"),
    "hint without 1 − α": (dict(hint="no_alpha"), "not multiplied by 1 − α"),
    "hint without β": (dict(hint="no_beta"), "lacks its weight β"),
    "no hint": (dict(hint="missing"), "the feature hint is missing"),
    "hint summed over features": (dict(hint_per_sample=True), "summed over the features"),
}


def test_the_reference_passes_and_prints_correct(capsys):
    result = check_fusion_loss(make_fusion())
    assert result.passed and bool(result)
    assert capsys.readouterr().out.startswith("correct:")


def test_it_is_exported_from_the_package():
    assert checks.check_fusion_loss is check_fusion_loss


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_each_mistake_is_named(name, capsys):
    mistakes, expected = MISTAKES[name]
    result = check_fusion_loss(make_fusion(**mistakes))
    assert not result.passed
    out = capsys.readouterr().out
    assert out.startswith("not yet:") and expected in out, out
    assert result.message.count("; and ") == 0, result.message  # one mistake, one reason


def test_two_mistakes_are_both_named():
    message = check_fusion_loss(make_fusion(no_t2=True, alpha_swapped=True), verbose=False).message
    assert "lacks the factor τ²" in message and "α weighs the wrong terms" in message


def test_a_cross_entropy_over_unlabelled_samples_is_explained():
    def with_unlabelled(z_s, s, z_t, t, y, mapping, alpha, temperature, hint_weight):
        return F.cross_entropy(z_s, y)  # targets of -1 are out of range

    message = check_fusion_loss(with_unlabelled, verbose=False).message
    assert "raised" in message and "targets >= 0" in message


def test_an_unknown_mistake_says_which_side_differs():
    def off(*args, **kwargs):
        return make_fusion()(*args, **kwargs) * 1.1

    message = check_fusion_loss(off, verbose=False).message
    assert message.startswith("not yet: your loss is") and "both sides differ" in message


def test_wrong_kinds_of_output_and_in_place_changes_are_reported():
    assert "expected a scalar" in check_fusion_loss(lambda *a, **k: torch.zeros(3), verbose=False).message
    assert "expected a scalar" in check_fusion_loss(lambda *a, **k: "loss", verbose=False).message

    def in_place(z_s, s, z_t, t, y, mapping, alpha, temperature, hint_weight):
        z_s /= temperature
        return z_s.sum()

    assert "in place" in check_fusion_loss(in_place, verbose=False).message


def test_a_float_result_is_accepted():
    def as_float(*args, **kwargs):
        return float(make_fusion()(*args, **kwargs).detach())

    assert check_fusion_loss(as_float, verbose=False).passed


def test_fn_must_be_callable():
    with pytest.raises(ValueError, match="The 'fn' parameter of check_fusion_loss must be a function"):
        check_fusion_loss("loss")
