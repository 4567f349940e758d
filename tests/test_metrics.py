"""Metrics: accuracy, agreement, expected calibration error, linear CKA, loss barrier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kt_helpers import metrics

seeds = st.integers(0, 2**16)


def _representations(seed: int, N: int = 30, p: int = 6, q: int = 4):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(N, p, generator=gen, dtype=torch.float64)  # (N, p)
    Y = X[:, :q] @ torch.randn(q, q, generator=gen, dtype=torch.float64) + torch.randn(
        N, q, generator=gen, dtype=torch.float64
    )  # (N, q), partly related to X
    return X, Y


def _random_orthogonal(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))  # (n, n), Q^T Q = I


# --- accuracy and agreement ----------------------------------------------------------------------


@given(seed=seeds)
def test_accuracy_counts_correct_argmax(seed):
    gen = torch.Generator().manual_seed(seed)
    logits, y = torch.randn(20, 5, generator=gen), torch.randint(0, 5, (20,), generator=gen)
    correct = sum(int(torch.argmax(logits[i]) == y[i]) for i in range(20))
    assert metrics.accuracy(logits, y) == pytest.approx(correct / 20)


def test_accuracy_of_probabilities_equals_accuracy_of_logits():
    logits, y = torch.randn(20, 5), torch.randint(0, 5, (20,))
    assert metrics.accuracy(F.softmax(logits, dim=1), y) == metrics.accuracy(logits, y)


def test_accuracy_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"'logits' and 'y' parameters of accuracy.*Got 3 and 2"):
        metrics.accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_accuracy_rejects_negative_labels():
    with pytest.raises(ValueError, match=r"'y' parameter of accuracy.*class indices >= 0\. Got -1"):
        metrics.accuracy(torch.zeros(2, 2), torch.tensor([0, -1]))


@given(seed=seeds)
def test_agreement_is_the_fraction_of_equal_predictions(seed):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, 25, 4, generator=gen)
    same = sum(int(torch.argmax(a[i]) == torch.argmax(b[i])) for i in range(25))
    assert metrics.agreement(a, b) == pytest.approx(same / 25)
    assert metrics.agreement(a, b) == metrics.agreement(b, a)
    assert metrics.agreement(a, a) == 1.0


def test_agreement_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"'logits_a' and 'logits_b'.*same shape.*\(3, 2\) and \(3, 4\)"):
        metrics.agreement(torch.zeros(3, 2), torch.zeros(3, 4))


# --- expected calibration error ------------------------------------------------------------------


def ece_oracle(probs: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    """ECE by a plain loop over the bins (lower, upper] of confidence (Guo et al., 2017)."""
    confidence, prediction = probs.max(axis=1), probs.argmax(axis=1)
    N, ece = len(y), 0.0
    for b in range(n_bins):
        lower, upper = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(N) if lower < confidence[i] <= upper]
        if members:
            acc = np.mean([prediction[i] == y[i] for i in members])
            conf = np.mean([confidence[i] for i in members])
            ece += len(members) / N * abs(acc - conf)
    return ece


@given(seed=seeds, n_bins=st.integers(1, 20), sharpness=st.floats(0.1, 5.0))
def test_ece_matches_a_hand_written_loop(seed, n_bins, sharpness):
    gen = torch.Generator().manual_seed(seed)
    probs = F.softmax(sharpness * torch.randn(40, 4, generator=gen, dtype=torch.float64), dim=1)
    y = torch.randint(0, 4, (40,), generator=gen)
    assert metrics.expected_calibration_error(probs, y, n_bins=n_bins) == pytest.approx(
        ece_oracle(probs.numpy(), y.numpy(), n_bins), abs=1e-6
    )  # the per-bin accuracies are float32 means


def test_ece_is_zero_for_sure_and_right_predictions():
    probs = F.one_hot(torch.tensor([0, 2, 1]), 3).float()
    assert metrics.expected_calibration_error(probs, torch.tensor([0, 2, 1])) == 0.0


def test_ece_is_one_for_sure_and_wrong_predictions():
    probs = F.one_hot(torch.tensor([0, 2, 1]), 3).float()
    assert metrics.expected_calibration_error(probs, torch.tensor([1, 0, 2])) == pytest.approx(1.0)


def test_ece_rejects_logits():
    with pytest.raises(ValueError, match=r"'probs'.*non-negative rows summing to 1.*softmax\(logits\)"):
        metrics.expected_calibration_error(torch.tensor([[2.0, -1.0]]), torch.tensor([0]))


def test_ece_rejects_zero_bins():
    with pytest.raises(ValueError, match=r"'n_bins'.*integer >= 1\. Got 0"):
        metrics.expected_calibration_error(torch.tensor([[0.5, 0.5]]), torch.tensor([0]), n_bins=0)


def test_ece_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"'probs' and 'y'.*Got 1 and 2"):
        metrics.expected_calibration_error(torch.tensor([[0.5, 0.5]]), torch.tensor([0, 1]))


# --- linear CKA ----------------------------------------------------------------------------------


def cka_hsic(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Linear CKA through HSIC: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)), K = X X^T, L = Y Y^T."""
    X, Y = X.double(), Y.double()
    N = X.shape[0]
    H = torch.eye(N, dtype=torch.float64) - torch.ones(N, N, dtype=torch.float64) / N  # centring
    K, L = X @ X.T, Y @ Y.T  # (N, N) Gram matrices
    hsic = lambda A, B: torch.trace(A @ H @ B @ H)  # noqa: E731
    return float(hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L)))


@given(seed=seeds)
def test_linear_cka_matches_the_hsic_formulation(seed):
    X, Y = _representations(seed)
    assert metrics.linear_cka(X, Y) == pytest.approx(cka_hsic(X, Y), rel=1e-10)


def test_linear_cka_in_float32_matches_the_float64_oracle():
    X, Y = _representations(1)
    assert metrics.linear_cka(X.float(), Y.float()) == pytest.approx(cka_hsic(X, Y), rel=1e-5)


@given(seed=seeds)
def test_linear_cka_of_a_representation_with_itself_is_one(seed):
    X, _ = _representations(seed)
    assert metrics.linear_cka(X, X) == pytest.approx(1.0, rel=1e-12)


@given(seed=seeds, scale=st.floats(1e-3, 1e3), shift=st.floats(-10.0, 10.0))
def test_linear_cka_is_invariant_to_orthogonal_maps_scaling_and_shifts(seed, scale, shift):
    X, Y = _representations(seed)
    Q = _random_orthogonal(X.shape[1], seed)
    assert metrics.linear_cka(scale * X @ Q + shift, Y) == pytest.approx(metrics.linear_cka(X, Y), rel=1e-9)


@given(seed=seeds)
def test_linear_cka_lies_in_zero_one_and_is_symmetric(seed):
    X, Y = _representations(seed)
    Y = torch.randn(Y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    value = metrics.linear_cka(X, Y)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(metrics.linear_cka(Y, X), rel=1e-12)


def test_linear_cka_is_not_invariant_to_an_invertible_linear_map():
    X, _ = _representations(0)
    A = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 100.0], dtype=torch.float64))  # invertible
    assert metrics.linear_cka(X, X @ A) < 0.9  # about 0.51
    # (after whitening, any invertible map would give 1: CKA deliberately does not)


def test_linear_cka_of_unrelated_representations_is_small():
    gen = torch.Generator().manual_seed(0)
    X, Y = torch.randn(2000, 3, generator=gen), torch.randn(2000, 3, generator=gen)
    assert metrics.linear_cka(X, Y) < 0.01


def test_linear_cka_rejects_a_constant_representation():
    with pytest.raises(ValueError, match=r"'X' and 'Y'.*must each vary across samples"):
        metrics.linear_cka(torch.ones(5, 2), torch.randn(5, 3))


def test_linear_cka_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"'X' and 'Y' parameters of linear_cka.*Got 5 and 4"):
        metrics.linear_cka(torch.randn(5, 2), torch.randn(4, 2))


# --- loss barrier --------------------------------------------------------------------------------


@given(loss_a=st.floats(0.0, 5.0), loss_b=st.floats(0.0, 5.0))
def test_loss_barrier_of_a_straight_line_is_zero(loss_a, loss_b):
    alphas = np.linspace(0.0, 1.0, 11)
    losses = alphas * loss_a + (1 - alphas) * loss_b
    assert metrics.loss_barrier(list(losses), list(alphas)) == pytest.approx(0.0, abs=1e-12)


@given(loss_a=st.floats(0.0, 5.0), loss_b=st.floats(0.0, 5.0), height=st.floats(0.0, 3.0))
def test_loss_barrier_of_a_bump_is_its_height(loss_a, loss_b, height):
    alphas = np.linspace(0.0, 1.0, 11)  # includes 0.5, where 4 a (1 - a) peaks at 1
    losses = alphas * loss_a + (1 - alphas) * loss_b + height * 4 * alphas * (1 - alphas)
    assert metrics.loss_barrier(list(losses), list(alphas)) == pytest.approx(height, abs=1e-9)


def test_loss_barrier_does_not_depend_on_the_order():
    assert metrics.loss_barrier([0.9, 0.3, 0.1], [0.5, 1.0, 0.0]) == pytest.approx(0.7)


def test_loss_barrier_rejects_different_lengths():
    with pytest.raises(ValueError, match=r"'losses' and 'alphas'.*same length\. Got 2 and 3"):
        metrics.loss_barrier([0.1, 0.2], [0.0, 0.5, 1.0])


def test_loss_barrier_needs_both_ends():
    with pytest.raises(ValueError, match=r"'alphas'.*both ends of the path, 0 and 1\. Got \[0\.0, 0\.5\]"):
        metrics.loss_barrier([0.1, 0.2], [0.0, 0.5])


# --------------------------------------------------------------------------- format_mean_std


def test_format_mean_std_uses_the_sample_standard_deviation():
    import pandas as pd

    values = [0.80, 0.85, 0.93]
    expected = f"{np.mean(values):.1%} ± {np.std(values, ddof=1):.1%}"
    assert metrics.format_mean_std(values) == expected == "86.0% ± 6.6%"
    # the same from a pandas Series (whose std is ddof=1) and from a tensor
    series = pd.Series(values)
    assert metrics.format_mean_std(series) == f"{series.mean():.1%} ± {series.std():.1%}"
    assert metrics.format_mean_std(torch.tensor(values, dtype=torch.float64)) == expected


def test_format_mean_std_leaves_out_missing_values():
    nan = float("nan")
    assert metrics.format_mean_std([0.5, nan, 0.7], "{:.2f}") == "0.60 ± 0.14"
    assert metrics.format_mean_std([0.25, nan], "{:.2f}") == "0.25"  # no spread from one run
    assert metrics.format_mean_std([nan, nan]) == "—"
    assert metrics.format_mean_std([], missing="-") == "-"


@pytest.mark.parametrize(
    "values, fmt, argument",
    [
        (["a", "b"], "{:.1%}", "'values'"),
        ([{"x": 1}], "{:.1%}", "'values'"),
        ([0.1, 0.2], "percent", "'fmt'"),
        ([0.1, 0.2], "{:.1%} and {}", "'fmt'"),
        ([0.1, 0.2], "{:d}", "'fmt'"),
        ([0.1, 0.2], 3, "'fmt'"),
    ],
)
def test_format_mean_std_rejects_bad_input(values, fmt, argument):
    with pytest.raises(ValueError, match=argument) as error:
        metrics.format_mean_std(values, fmt)
    assert "Got" in str(error.value)


# --------------------------------------------------------------------------- entropy, r2_score


def test_entropy_is_zero_for_one_hot_rows_and_log_c_for_uniform_ones():
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(metrics.entropy(probs), torch.tensor([0.0, np.log(4), np.log(2)], dtype=torch.float32))


def test_entropy_matches_scipy_and_grows_with_the_temperature():
    from scipy.stats import entropy as scipy_entropy

    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 3
    previous = None
    for temperature in (1.0, 2.0, 4.0, 8.0):
        probs = F.softmax(logits / temperature, dim=1)
        h = metrics.entropy(probs)
        np.testing.assert_allclose(h.numpy(), scipy_entropy(probs.numpy(), axis=1), rtol=1e-5)
        if previous is not None:
            assert bool((h > previous).all())
        previous = h


@pytest.mark.parametrize(
    "probs",
    [torch.randn(4, 3), torch.full((2, 3), 0.5), torch.tensor([[1.2, -0.2]])],
    ids=["logits", "rows sum to 1.5", "a negative value"],
)
def test_entropy_rejects_what_is_not_probabilities(probs):
    with pytest.raises(ValueError, match="'probs' parameter of entropy must hold probabilities.*Got"):
        metrics.entropy(probs)


def test_entropy_rejects_a_vector():
    with pytest.raises(ValueError, match="'probs' parameter of entropy must have 2 dimensions"):
        metrics.entropy(torch.tensor([0.5, 0.5]))


def test_r2_score_matches_scikit_learn_variance_weighted():
    from sklearn.metrics import r2_score as sk_r2

    g = torch.Generator().manual_seed(1)
    target = torch.randn(80, 4, generator=g) * torch.tensor([1.0, 3.0, 0.5, 2.0])
    prediction = target + 0.7 * torch.randn(80, 4, generator=g)
    expected = sk_r2(target.numpy(), prediction.numpy(), multioutput="variance_weighted")
    assert metrics.r2_score(prediction, target) == pytest.approx(expected, abs=1e-6)
    assert metrics.r2_score(target, target) == 1.0
    mean = target.mean(dim=0).expand_as(target)
    assert metrics.r2_score(mean, target) == pytest.approx(0.0, abs=1e-12)


def test_r2_score_matches_scikit_learn_with_a_constant_column_predicted_imperfectly():
    from sklearn.metrics import r2_score as sk_r2

    g = torch.Generator().manual_seed(3)
    target = torch.randn(50, 3, generator=g, dtype=torch.float64)
    target[:, 1] = 0.5  # a dead feature, constant over the samples
    prediction = target + 0.4 * torch.randn(50, 3, generator=g, dtype=torch.float64)
    expected = sk_r2(target.numpy(), prediction.numpy(), multioutput="variance_weighted")
    assert metrics.r2_score(prediction, target) == pytest.approx(expected, abs=1e-12)
    # The constant column's error does not count: a far worse guess of it changes nothing.
    worse = prediction.clone()
    worse[:, 1] = 100.0
    assert metrics.r2_score(worse, target) == pytest.approx(expected, abs=1e-12)
    # ... while the same error in a column that varies does.
    worse = prediction.clone()
    worse[:, 0] += 3.0
    assert metrics.r2_score(worse, target) < expected - 0.5


@given(seed=seeds, n_constant=st.integers(0, 3))
def test_r2_score_matches_scikit_learn_property(seed, n_constant):
    from sklearn.metrics import r2_score as sk_r2

    g = torch.Generator().manual_seed(seed)
    target = torch.randn(20, 4, generator=g, dtype=torch.float64)
    # Constant columns, of values whose mean is exact in floating point (see the docstring).
    target[:, :n_constant] = torch.randint(-8, 8, (n_constant,), generator=g).double() / 4
    prediction = target + torch.randn(20, 4, generator=g, dtype=torch.float64)
    expected = sk_r2(target.numpy(), prediction.numpy(), multioutput="variance_weighted")
    assert metrics.r2_score(prediction, target) == pytest.approx(expected, abs=1e-10)


def test_r2_score_of_a_vector_matches_scikit_learn():
    from sklearn.metrics import r2_score as sk_r2

    target = torch.tensor([0.0, 1.0, 2.0, 4.0])
    prediction = torch.tensor([0.5, 1.0, 1.5, 3.0])
    assert metrics.r2_score(prediction, target) == pytest.approx(sk_r2(target.numpy(), prediction.numpy()), abs=1e-6)


def test_r2_score_is_the_score_of_a_linear_map():
    from kt_helpers.mapping import LinearMap

    g = torch.Generator().manual_seed(2)
    S, K = torch.randn(60, 5, generator=g), torch.randn(60, 3, generator=g)
    T = LinearMap(ridge=0.5).fit(S, K)
    assert metrics.r2_score(T.transform(S), K) == T.score(S, K)


def test_r2_score_rejects_mismatched_shapes_and_a_constant_target():
    with pytest.raises(ValueError, match="'prediction' and 'target' parameters of r2_score must have the same shape"):
        metrics.r2_score(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="'target' parameter of r2_score must vary across samples"):
        metrics.r2_score(torch.zeros(5, 2), torch.ones(5, 2))


def test_linear_cka_matrix_gives_linear_ckas_bits():
    gen = torch.Generator().manual_seed(0)
    Xs = [torch.randn(60, p, generator=gen) for p in (3, 8)]
    Ys = [torch.randn(60, q, generator=gen) for q in (5, 1, 64)] + [Xs[0] @ torch.randn(3, 4, generator=gen)]
    matrix = metrics.linear_cka_matrix(Xs, Ys)
    assert matrix.shape == (2, 4)
    for i, X in enumerate(Xs):
        for j, Y in enumerate(Ys):
            assert matrix[i, j] == metrics.linear_cka(X, Y)  # the same bits, not just close


def test_linear_cka_matrix_refuses_bad_input():
    X = torch.randn(10, 3)
    with pytest.raises(ValueError, match="'Xs' parameter of linear_cka_matrix"):
        metrics.linear_cka_matrix(X, [X])
    with pytest.raises(ValueError, match="'Ys' parameter of linear_cka_matrix"):
        metrics.linear_cka_matrix([X], [])
    with pytest.raises(ValueError, match="vary across samples"):
        metrics.linear_cka_matrix([X], [torch.ones(10, 2)])
    with pytest.raises(ValueError):
        metrics.linear_cka_matrix([X], [torch.randn(9, 2)])
