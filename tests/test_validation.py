"""Bad input raises a ValueError that names the argument, what was expected and what was given.

One ``pytest.raises(ValueError, match=...)`` per rule, on the public functions
that apply it; each pattern matches the argument's name and the given value.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from kt_helpers import _validation, extraction, fusion, mapping, metrics, models

A, B = torch.zeros(3, 2), torch.ones(3, 2)
LOGITS, TARGETS = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return models.MLP(hidden=(4,), in_features=2, num_classes=3)


# Every public function that takes an alpha, called with that alpha.
ALPHA_TAKERS = {
    "fuse": lambda alpha: fusion.fuse(A, B, alpha),
    "kd_loss": lambda alpha: fusion.kd_loss(LOGITS, LOGITS, TARGETS, alpha=alpha),
    "interpolate": lambda alpha: fusion.interpolate(_mlp(0), _mlp(1), alpha),
    "TransferObjective": lambda alpha: fusion.TransferObjective(teacher_logits=LOGITS, alpha=alpha),
}

BAD_ALPHAS = [1.5, -0.1, float("nan"), float("inf"), True, "0.5", None]


@pytest.mark.parametrize("func", list(ALPHA_TAKERS))
@pytest.mark.parametrize("alpha", BAD_ALPHAS, ids=repr)
def test_alpha_outside_zero_one_is_rejected(func, alpha):
    pattern = rf"The 'alpha' parameter of {func} must be a float in \[0, 1\]\. Got {re.escape(repr(alpha))} instead\."
    with pytest.raises(ValueError, match=pattern):
        ALPHA_TAKERS[func](alpha)


@pytest.mark.parametrize("alpha", [0, 0.0, 0.25, 1, 1.0])
def test_alpha_at_or_inside_the_ends_is_accepted(alpha):
    assert _validation.check_alpha(alpha, "f") == float(alpha)


TEMPERATURE_TAKERS = {
    "kd_loss": lambda T: fusion.kd_loss(LOGITS, LOGITS, TARGETS, temperature=T),
    "soft_targets": lambda T: extraction.soft_targets(nn.Linear(3, 3), LOGITS, T),
    "TransferObjective": lambda T: fusion.TransferObjective(teacher_logits=LOGITS, temperature=T),
}

BAD_TEMPERATURES = [0, 0.0, -1.0, float("inf"), float("nan"), False, "4"]


@pytest.mark.parametrize("func", list(TEMPERATURE_TAKERS))
@pytest.mark.parametrize("temperature", BAD_TEMPERATURES, ids=repr)
def test_temperature_not_positive_and_finite_is_rejected(func, temperature):
    pattern = (
        rf"The 'temperature' parameter of {func} must be a finite number > 0\. "
        rf"Got {re.escape(repr(temperature))} instead\."
    )
    with pytest.raises(ValueError, match=pattern):
        TEMPERATURE_TAKERS[func](temperature)


def test_mismatched_shapes_are_rejected():
    pattern = (
        r"'k_target' and 'k_mapped' parameters of fuse must have the same shape\. "
        r"Got \(3, 2\) and \(2, 3\) instead"
    )
    with pytest.raises(ValueError, match=pattern):
        fusion.fuse(A, B.T, 0.5)


def test_mismatched_rows_are_rejected():
    pattern = r"'X' and 'Y' parameters of linear_cka must have the same number of rows.*Got 3 and 2 instead"
    with pytest.raises(ValueError, match=pattern):
        metrics.linear_cka(A, B[:2])


def test_mismatched_keys_are_rejected():
    pattern = (
        r"'k_target' and 'k_mapped' parameters of fuse must have the same keys\. "
        r"Keys only in 'k_target': \['0.weight'\]; only in 'k_mapped': \['1.weight'\]"
    )
    with pytest.raises(ValueError, match=pattern):
        fusion.fuse(
            nn.Sequential(nn.Linear(2, 2, bias=False)).state_dict(),
            nn.Sequential(nn.Identity(), nn.Linear(2, 2, bias=False)).state_dict(),
            0.5,
        )


def test_mismatched_shape_of_one_key_is_rejected():
    pattern = r"same shape for every key\. Got \(4, 2\) and \(5, 2\) for key '1.weight' instead"
    with pytest.raises(ValueError, match=pattern):
        fusion.fuse(
            models.MLP(hidden=(4,), in_features=2).state_dict(),
            models.MLP(hidden=(5,), in_features=2).state_dict(),
            0.5,
        )


def test_wrong_number_of_dimensions_is_rejected():
    pattern = (
        r"The 'teacher_logits' parameter of kd_loss must have 2 dimensions\. "
        r"Got shape \(4, 3, 1\) instead"
    )
    with pytest.raises(ValueError, match=pattern):
        fusion.kd_loss(LOGITS, LOGITS[..., None], TARGETS)


def test_a_non_tensor_is_a_type_error():
    pattern = r"The 'X' parameter of linear_cka must be a torch.Tensor\. Got list instead"
    with pytest.raises(TypeError, match=pattern):
        metrics.linear_cka([[1.0, 2.0]], A)


def test_float_labels_are_rejected():
    pattern = (
        r"The 'y' parameter of accuracy must hold integer class indices\. "
        r"Got dtype torch.float32 instead"
    )
    with pytest.raises(ValueError, match=pattern):
        metrics.accuracy(LOGITS, TARGETS.float())


def test_negative_labels_are_rejected_unless_unlabelled_is_allowed():
    pattern = r"The 'y' parameter of accuracy must hold class indices >= 0\. Got -1 instead"
    with pytest.raises(ValueError, match=pattern):
        metrics.accuracy(LOGITS, torch.tensor([0, 1, -1, 2]))
    pattern = (
        r"The 'targets' parameter of kd_loss must hold class indices >= 0 \(or -1 for unlabelled\)\. "
        r"Got -3 instead"
    )
    with pytest.raises(ValueError, match=pattern):
        fusion.kd_loss(LOGITS, LOGITS, torch.tensor([0, 1, -3, 2]))


def test_an_option_outside_the_list_is_rejected():
    pattern = r"The 'cell' parameter of RowRNN must be one of 'gru', 'lstm'\. Got 'GRU' instead"
    with pytest.raises(ValueError, match=pattern):
        models.RowRNN(cell="GRU")


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "8"], ids=repr)
def test_an_integer_below_the_minimum_or_not_an_integer_is_rejected(value):
    pattern = (
        rf"The 'n_bins' parameter of expected_calibration_error must be an integer >= 1\. "
        rf"Got {re.escape(repr(value))} instead"
    )
    with pytest.raises(ValueError, match=pattern):
        metrics.expected_calibration_error(torch.full((2, 2), 0.5), torch.tensor([0, 1]), n_bins=value)


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, 2, True, "0.5"], ids=repr)
def test_a_fraction_outside_the_open_interval_is_rejected(value):
    pattern = (
        rf"The 'f' parameter of g must be a float in \(0, 1\)\. "
        rf"Got {re.escape(repr(value))} instead"
    )
    with pytest.raises(ValueError, match=pattern):
        _validation.check_fraction(value, "g", "f")


def test_a_closed_fraction_accepts_one():
    assert _validation.check_fraction(1.0, "g", "f", closed=True) == 1.0
    pattern = r"The 'f' parameter of g must be a float in \(0, 1\]\. Got 1\.01 instead"
    with pytest.raises(ValueError, match=pattern):
        _validation.check_fraction(1.01, "g", "f", closed=True)


@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf"), True, "1"])
def test_a_negative_or_non_finite_weight_is_rejected(value):
    with pytest.raises(ValueError, match=rf"'w' parameter of f must be a finite number >= 0\. Got {re.escape(repr(value))}"):
        _validation.check_non_negative(value, "f", "w")


@pytest.mark.parametrize(
    "call",
    [
        lambda: fusion.TransferObjective(teacher_logits=torch.zeros(2, 3), hint_weight=float("nan")),
        lambda: mapping.LinearMap(ridge=float("inf")).fit(torch.zeros(3, 2), torch.zeros(3, 1)),
    ],
)
def test_helpers_reject_a_non_finite_weight(call):
    with pytest.raises(ValueError, match=r"must be a finite number >= 0"):
        call()


def test_zero_is_a_valid_weight():
    assert _validation.check_non_negative(0, "f", "w") == 0.0


# A class index must name a column of the scores: without this check, PyTorch's
# cross-entropy raises an IndexError deep inside the loss (or, for accuracy, an
# out-of-range label silently counts as a mistake).
LABEL_TAKERS = {
    "kd_loss": lambda y: fusion.kd_loss(LOGITS, LOGITS, y),
    "accuracy": lambda y: metrics.accuracy(LOGITS, y),
    "expected_calibration_error": lambda y: metrics.expected_calibration_error(
        torch.full((4, 3), 1 / 3), y
    ),
}


@pytest.mark.parametrize("func", list(LABEL_TAKERS))
def test_a_class_index_beyond_the_scores_is_rejected(func):
    name = "targets" if func == "kd_loss" else "y"
    pattern = (
        rf"The '{name}' parameter of {func} must hold class indices below 3, "
        r"the number of classes \(columns of the scores\)\. Got 5 instead\."
    )
    with pytest.raises(ValueError, match=pattern):
        LABEL_TAKERS[func](torch.tensor([0, 1, 2, 5]))


def test_a_score_target_with_other_columns_than_fit_is_rejected():
    S = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    fitted = mapping.LinearMap().fit(S, S[:, :2])
    pattern = r"The 'target' parameter of LinearMap\.score must have 2 columns, as in fit\. Got 3 instead\."
    with pytest.raises(ValueError, match=pattern):
        fitted.score(S, S[:, :3])
