"""Chapters 7 and 8's self-checks, check_linear_cka and check_logit_matching: the
reference passes, each typical mistake is named.

The wrong implementations are written as a learner would, one mistake each,
independently of the checks' own variants; the logit-matching reference is
itself checked against kd_loss at a high temperature (the limit it stands for).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kt_helpers import checks
from kt_helpers.fusion import kd_loss

fro = torch.linalg.matrix_norm

# --- check_linear_cka -------------------------------------------------------------------------


def cka(X, Y):
    X, Y = X - X.mean(dim=0), Y - Y.mean(dim=0)
    return fro(Y.T @ X) ** 2 / (fro(X.T @ X) * fro(Y.T @ Y))


def hsic_cka(X, Y):
    """CKA through centred Gram matrices (the kernel form): equal for a linear kernel."""
    N = X.shape[0]
    H = torch.eye(N, dtype=X.dtype) - 1.0 / N
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return (K * L).sum() / (fro(K) * fro(L))


def _ratio(X, Y, power=2, norm="gram"):
    num = fro(Y.T @ X) ** power
    if norm == "gram":
        return num / (fro(X.T @ X) * fro(Y.T @ Y))
    if norm == "data":
        return num / (fro(X) ** 2 * fro(Y) ** 2)
    if norm == "squared":
        return num / (fro(X.T @ X) ** 2 * fro(Y.T @ Y) ** 2)
    return num


CKA_MISTAKES = {
    "not centred": (lambda X, Y: _ratio(X, Y), "not centred"),
    "one side centred": (lambda X, Y: _ratio(X - X.mean(0), Y), "only one of the two"),
    "rows centred": (lambda X, Y: _ratio(X - X.mean(1, keepdim=True), Y - Y.mean(1, keepdim=True)),
                     "instead of each feature"),
    "standardised": (lambda X, Y: _ratio((X - X.mean(0)) / X.std(0), (Y - Y.mean(0)) / Y.std(0)),
                     "scaled each feature to unit variance"),
    "no normalisation": (lambda X, Y: _ratio(X - X.mean(0), Y - Y.mean(0), norm="none"),
                         "normalisation is missing"),
    "norms of the features": (lambda X, Y: _ratio(X - X.mean(0), Y - Y.mean(0), norm="data"),
                              "the norms of the features"),
    "squared norms": (lambda X, Y: _ratio(X - X.mean(0), Y - Y.mean(0), norm="squared"),
                      "norms are squared"),
    "numerator not squared": (lambda X, Y: _ratio(X - X.mean(0), Y - Y.mean(0), power=1),
                              "numerator is not squared"),
    "square root": (lambda X, Y: cka(X, Y).sqrt(), "square root"),
}


@pytest.mark.parametrize("fn", [cka, hsic_cka], ids=["feature form", "kernel form"])
def test_cka_reference_passes(fn, capsys):
    assert checks.check_linear_cka(fn).passed
    assert capsys.readouterr().out.startswith("correct:")


@pytest.mark.parametrize("name", sorted(CKA_MISTAKES))
def test_cka_mistake_is_named(name):
    fn, expected = CKA_MISTAKES[name]
    result = checks.check_linear_cka(fn, verbose=False)
    assert not result.passed
    assert result.message.startswith("not yet:") and expected in result.message, result.message


def test_cka_two_mistakes_are_both_named():
    message = checks.check_linear_cka(lambda X, Y: _ratio(X, Y, norm="data"), verbose=False).message
    assert "not centred" in message and "the norms of the features" in message


def test_cka_unknown_mistake_bad_outputs_and_in_place():
    assert checks.check_linear_cka(lambda X, Y: 0.5, verbose=False).message.startswith(
        "not yet: on the first pair")
    assert "expected one number" in checks.check_linear_cka(lambda X, Y: X, verbose=False).message
    assert "raised RuntimeError" in checks.check_linear_cka(lambda X, Y: X @ Y, verbose=False).message

    def in_place(X, Y):
        X -= X.mean(0)
        return cka(X, Y)

    assert "in place" in checks.check_linear_cka(in_place, verbose=False).message


def test_cka_fn_must_be_callable():
    with pytest.raises(ValueError, match="The 'fn' parameter of check_linear_cka must be a function"):
        checks.check_linear_cka([1, 2])


# --- check_logit_matching ---------------------------------------------------------------------


def centred(z):
    return z - z.mean(dim=1, keepdim=True)


def logit_matching(z_s, z_t):
    return ((centred(z_s) - centred(z_t)) ** 2).sum(dim=1).mean() / (2 * z_s.shape[1])


def test_the_reference_is_the_limit_of_kd_loss():
    # The oracle: τ²·KL from kd_loss (α = 0) approaches the reference as T grows.
    gen = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(6, 10, generator=gen, dtype=torch.float64), torch.randn(6, 10, generator=gen, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    limit = float(logit_matching(z_s, z_t))
    gaps = [abs(float(kd_loss(z_s, z_t, y, alpha=0.0, temperature=T)) - limit) / limit for T in (10.0, 100.0, 1000.0)]
    assert gaps[2] < 1e-3 and gaps[0] > gaps[1] > gaps[2]


LIMIT_MISTAKES = {
    "not centred": (lambda z_s, z_t: ((z_s - z_t) ** 2).sum(1).mean() / (2 * z_s.shape[1]), "not centred"),
    "centred over the batch": (
        lambda z_s, z_t: (((z_s - z_s.mean(0)) - (z_t - z_t.mean(0))) ** 2).sum(1).mean() / (2 * z_s.shape[1]),
        "over the batch (dim=0)"),
    "student only": (lambda z_s, z_t: ((centred(z_s) - z_t) ** 2).sum(1).mean() / (2 * z_s.shape[1]),
                     "only the student's"),
    "teacher only": (lambda z_s, z_t: ((z_s - centred(z_t)) ** 2).sum(1).mean() / (2 * z_s.shape[1]),
                     "only the teacher's"),
    "mse_loss, no 1/2": (lambda z_s, z_t: F.mse_loss(centred(z_s), centred(z_t)), "factor 1/2 is missing"),
    "no 1/C": (lambda z_s, z_t: ((centred(z_s) - centred(z_t)) ** 2).sum(1).mean() / 2, "factor 1/C is missing"),
    "no constant": (lambda z_s, z_t: ((centred(z_s) - centred(z_t)) ** 2).sum(1).mean(), "constant 1/(2C)"),
    "sum over the batch": (lambda z_s, z_t: logit_matching(z_s, z_t) * len(z_s), "summed over the batch"),
}


def test_logit_matching_reference_passes(capsys):
    assert checks.check_logit_matching(logit_matching).passed
    assert capsys.readouterr().out.startswith("correct:")


@pytest.mark.parametrize("name", sorted(LIMIT_MISTAKES))
def test_logit_matching_mistake_is_named(name):
    fn, expected = LIMIT_MISTAKES[name]
    result = checks.check_logit_matching(fn, verbose=False)
    assert not result.passed
    assert result.message.startswith("not yet:") and expected in result.message, result.message
    assert "; and " not in result.message


def test_logit_matching_raw_mse_names_both_mistakes():
    # Ba and Caruana's regression of raw logits with F.mse_loss: uncentred and without 1/2.
    message = checks.check_logit_matching(F.mse_loss, verbose=False).message
    assert "not centred" in message and "factor 1/2 is missing" in message


def test_logit_matching_unknown_mistake_bad_outputs_and_in_place():
    assert checks.check_logit_matching(lambda a, b: 1.0, verbose=False).message.startswith(
        "not yet: on the first batch")
    assert "expected one number" in checks.check_logit_matching(lambda a, b: a - b, verbose=False).message
    assert "raised ZeroDivisionError" in checks.check_logit_matching(lambda a, b: 1 / 0, verbose=False).message

    def in_place(z_s, z_t):
        z_s -= z_s.mean(1, keepdim=True)
        return logit_matching(z_s, z_t)

    assert "in place" in checks.check_logit_matching(in_place, verbose=False).message


def test_logit_matching_fn_must_be_callable():
    with pytest.raises(ValueError, match="The 'fn' parameter of check_logit_matching must be a function"):
        checks.check_logit_matching(None)


def test_uncentred_cka_finds_the_unrelated_pair_similar():
    # What the chapter 7 exercise's solution says of the mistake, on the check's own data.
    from kt_helpers.checks.similarity import _pairs, _variant
    from kt_helpers.metrics import linear_cka

    X, unrelated = _pairs()[1]
    assert linear_cka(X, unrelated) < 0.2 < 0.8 < _variant(X, unrelated, centre="uncentred")
