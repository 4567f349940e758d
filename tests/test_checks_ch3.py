"""Chapter 3's exercise checks: check_linear_map and check_kd_gradient.

The references pass with "correct"; each wrong implementation makes one named
mistake (or a named pair), and the check must fail and name it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kt_helpers import checks
from kt_helpers.fusion import kd_loss
from kt_helpers.mapping import LinearMap

# --- check_linear_map ------------------------------------------------------------------------


def reference_map(S, K, ridge):
    """The normal equations of chapter 3, written out by hand."""
    s_mean, k_mean = S.mean(0), K.mean(0)
    S_c, K_c = S - s_mean, K - k_mean
    W_t = torch.linalg.solve(S_c.T @ S_c + ridge * torch.eye(S.shape[1], dtype=S.dtype), S_c.T @ K_c)
    return W_t.T, k_mean - s_mean @ W_t


def _solve(S, K, lam):
    return torch.linalg.solve(S.T @ S + lam * torch.eye(S.shape[1], dtype=S.dtype), S.T @ K)


def transposed(S, K, ridge):
    W, b = reference_map(S, K, ridge)
    return W.T, b


def no_intercept(S, K, ridge):
    return _solve(S, K, ridge).T, torch.zeros(K.shape[1], dtype=S.dtype)


def uncentred(S, K, ridge):
    W_t = _solve(S, K, ridge)
    return W_t.T, K.mean(0) - S.mean(0) @ W_t


def ridge_on_intercept(S, K, ridge):
    A = torch.cat([S, torch.ones(len(S), 1, dtype=S.dtype)], 1)
    sol = _solve(A, K, ridge)
    return sol[:-1].T, sol[-1]


def no_ridge(S, K, ridge):
    return reference_map(S, K, 0.0)


def ridge_times_n(S, K, ridge):
    return reference_map(S, K, ridge * len(S))


def bias_is_mean(S, K, ridge):
    W, _ = reference_map(S, K, ridge)
    return W, K.mean(0)


def transposed_and_uncentred(S, K, ridge):
    W, b = uncentred(S, K, ridge)
    return W.T, b


MAP_MISTAKES = {
    "it is transposed": transposed,
    "you fitted no intercept": no_intercept,
    "you forgot to centre": uncentred,
    "also applied to the intercept": ridge_on_intercept,
    "the ridge penalty is not applied": no_ridge,
    "N times too strong": ridge_times_n,
    "must be b = k̄ − W s̄": bias_is_mean,
    "raised ZeroDivisionError": lambda S, K, ridge: 1 / 0,
    "returned a Tensor; expected a pair": lambda S, K, ridge: reference_map(S, K, ridge)[0],
    "your bias has shape (1,)": lambda S, K, ridge: (reference_map(S, K, ridge)[0], torch.zeros(1)),
    "changed 'source' or 'target' in place": lambda S, K, ridge: reference_map(S.sub_(S.mean(0)), K, ridge),
}


def test_linear_map_reference_is_correct(capsys):
    result = checks.check_linear_map(reference_map)
    assert result.passed and result.message.startswith("correct")
    assert capsys.readouterr().out.strip() == result.message


def test_linear_map_accepts_the_book_estimator_and_numpy():
    def with_linear_map(S, K, ridge):
        T = LinearMap(ridge=ridge).fit(S, K)
        return T.weight_.numpy(), T.bias_.numpy()

    assert checks.check_linear_map(with_linear_map, verbose=False).passed


@pytest.mark.parametrize("expected, fn", MAP_MISTAKES.items(), ids=list(MAP_MISTAKES))
def test_linear_map_diagnoses_each_mistake(expected, fn):
    result = checks.check_linear_map(fn, verbose=False)
    assert not result.passed
    assert result.message.startswith("not yet")
    assert expected in result.message


def test_linear_map_names_two_mistakes_at_once():
    message = checks.check_linear_map(transposed_and_uncentred, verbose=False).message
    assert "it is transposed" in message and "you forgot to centre" in message


def test_linear_map_unknown_mistake_still_gives_advice():
    def noisy(S, K, ridge):
        W, b = reference_map(S, K, ridge)
        return W + 0.1, b

    message = checks.check_linear_map(noisy, verbose=False).message
    assert message.startswith("not yet") and "b = k̄ − W s̄" in message


def test_linear_map_rejects_a_non_function():
    with pytest.raises(ValueError, match="'fn' parameter of check_linear_map must be a function"):
        checks.check_linear_map(42)


# --- check_kd_gradient -----------------------------------------------------------------------


def formula(s, t, y, alpha, temperature, *, power=1, sign=1, mean=True, hard=True, soften=True):
    T = temperature if soften else 1.0
    q, p = F.softmax(s / T, 1), F.softmax(t / T, 1)
    g = (1 - alpha) * temperature**power * (q - p)
    if hard:
        g = g + alpha * (F.softmax(s, 1) - F.one_hot(y, s.shape[1]))
    return sign * g / (len(s) if mean else 1)


def autograd_gradient(s, t, y, alpha, temperature):
    z = s.clone().requires_grad_(True)
    kd_loss(z, t, y, alpha=alpha, temperature=temperature).backward()
    return z.grad


GRAD_MISTAKES = {
    "(q − p)/T, the gradient of the KL divergence alone": dict(power=-1),
    "the chain rule through z/T takes one T away": dict(power=2),
    "lacks the factor T": dict(power=0),
    "the sign is flipped": dict(sign=-1),
    "did not divide by the batch size": dict(mean=False),
    "cross-entropy's gradient": dict(hard=False),
    "softened probabilities": dict(soften=False),
}


@pytest.mark.parametrize("fn", [formula, autograd_gradient], ids=["formula", "autograd"])
def test_kd_gradient_reference_is_correct(fn, capsys):
    result = checks.check_kd_gradient(fn)
    assert result.passed and result.message.startswith("correct")
    assert capsys.readouterr().out.strip() == result.message


@pytest.mark.parametrize("expected, kwargs", GRAD_MISTAKES.items(), ids=list(GRAD_MISTAKES))
def test_kd_gradient_diagnoses_each_mistake(expected, kwargs):
    def wrong(s, t, y, alpha, temperature):
        return formula(s, t, y, alpha, temperature, **kwargs)

    result = checks.check_kd_gradient(wrong, verbose=False)
    assert not result.passed and expected in result.message


def test_kd_gradient_alpha_on_the_wrong_term():
    def swapped(s, t, y, alpha, temperature):
        return formula(s, t, y, 1 - alpha, temperature)

    assert "α is applied to the wrong term" in checks.check_kd_gradient(swapped, verbose=False).message


def test_kd_gradient_two_mistakes_are_both_named():
    def wrong(s, t, y, alpha, temperature):
        return formula(s, t, y, alpha, temperature, power=-1, mean=False)

    message = checks.check_kd_gradient(wrong, verbose=False).message
    assert "gradient of the KL divergence alone" in message and "batch size" in message


def test_kd_gradient_wrong_shape_and_errors():
    assert "expected a tensor of shape (6, 10)" in checks.check_kd_gradient(
        lambda s, t, y, alpha, temperature: s.sum(), verbose=False
    ).message
    assert "raised KeyError" in checks.check_kd_gradient(
        lambda s, t, y, alpha, temperature: {}["x"], verbose=False
    ).message


def test_kd_gradient_unknown_mistake_reports_the_gap():
    def off(s, t, y, alpha, temperature):
        return formula(s, t, y, alpha, temperature) + 0.01

    message = checks.check_kd_gradient(off, verbose=False).message
    assert message.startswith("not yet: your gradient differs from autograd's by up to 0.0100")


def test_kd_gradient_rejects_a_non_function():
    with pytest.raises(ValueError, match="'fn' parameter of check_kd_gradient must be a function"):
        checks.check_kd_gradient("formula")
