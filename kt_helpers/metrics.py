"""Measures of models and of representations: accuracy, calibration, agreement,
the entropy of soft labels, how well one representation predicts another (R²),
similarity (linear CKA) and the loss barrier between two networks; and
:func:`format_mean_std`, how the book reports a measure repeated over seeds.

These functions only compute; the figures live in :mod:`kt_helpers.plots`.
Introduced in chapter 2 (selection) and chapter 3 (CKA, loss barrier).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._validation import (
    check_int,
    check_labels,
    check_probabilities,
    check_same_rows,
    check_same_shape,
    check_tensor,
)

__all__ = [
    "accuracy",
    "agreement",
    "entropy",
    "expected_calibration_error",
    "format_mean_std",
    "linear_cka",
    "linear_cka_matrix",
    "loss_barrier",
    "r2_score",
]


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of samples whose highest-scoring class is the label.

    Args:
        logits: scores (or probabilities) of shape (N, C).
        y: labels of shape (N,).

    Example:
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        0.5
    """
    check_tensor(logits, "accuracy", "logits", ndim=2)
    check_labels(y, "accuracy", "y", num_classes=logits.shape[1])
    check_same_rows(logits, y, "accuracy", ("logits", "y"))
    return float((logits.argmax(dim=1) == y).float().mean())


def agreement(logits_a: Tensor, logits_b: Tensor) -> float:
    """Fraction of samples on which two models predict the same class.

    Args:
        logits_a, logits_b: scores of shape (N, C) for the same samples.
    """
    check_tensor(logits_a, "agreement", "logits_a", ndim=2)
    check_tensor(logits_b, "agreement", "logits_b", ndim=2)
    check_same_shape(logits_a, logits_b, "agreement", ("logits_a", "logits_b"))
    return float((logits_a.argmax(1) == logits_b.argmax(1)).float().mean())


def entropy(probs: Tensor) -> Tensor:
    """Entropy of each row of a table of class probabilities, in nats.

    .. math::
        H(p) = -\\sum_{c=1}^{C} p_c \\log p_c

    0 for a one-hot row, :math:`\\log C` for a uniform one. Soft labels at a
    higher temperature have a higher entropy: they say more about the wrong
    classes ("dark knowledge", chapter 2).

    Args:
        probs: probabilities of shape (N, C), rows summing to 1, such as
            :func:`kt_helpers.extraction.soft_targets`.

    Returns:
        The entropies, shape (N,).

    Example:
        >>> entropy(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
        tensor([0.0000, 0.6931])
    """
    check_probabilities(probs, "entropy", "probs")
    return torch.special.entr(probs).sum(dim=1)  # entr(p) = -p log p, 0 at p = 0


def expected_calibration_error(probs: Tensor, y: Tensor, *, n_bins: int = 15) -> float:
    """Expected calibration error (ECE) of predicted probabilities.

    Predictions are grouped into ``n_bins`` equal-width bins of confidence
    (the top probability); ECE is the bin-size-weighted mean gap between
    confidence and accuracy (Guo et al., 2017):

    .. math::
        \\mathrm{ECE} = \\sum_{b=1}^{B} \\frac{|S_b|}{N}\\,
        \\bigl|\\mathrm{acc}(S_b) - \\mathrm{conf}(S_b)\\bigr|

    A perfectly calibrated model (70% sure means right 70% of the time) has ECE 0.

    Args:
        probs: probabilities of shape (N, C), rows summing to 1.
        y: labels of shape (N,).
        n_bins: number of confidence bins.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
        >>> round(expected_calibration_error(probs, torch.tensor([0, 1])), 4)
        0.4
    """
    check_probabilities(probs, "expected_calibration_error", "probs")
    check_labels(y, "expected_calibration_error", "y", num_classes=probs.shape[1])
    check_same_rows(probs, y, "expected_calibration_error", ("probs", "y"))
    check_int(n_bins, "expected_calibration_error", "n_bins")
    confidence, prediction = probs.max(dim=1)  # (N,), (N,)
    correct = (prediction == y).float()
    bins = torch.clamp((confidence * n_bins).ceil().long() - 1, 0, n_bins - 1)  # (N,)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            gap = (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
            ece += in_bin.float().mean().double() * gap.double()
    return float(ece)


def linear_cka(X: Tensor, Y: Tensor) -> float:
    """Linear centred kernel alignment between two representations of the same samples.

    With column-centred ``X`` (N, p) and ``Y`` (N, q) (Kornblith et al., 2019):

    .. math::
        \\mathrm{CKA}(X, Y) = \\frac{\\lVert Y^\\top X \\rVert_F^2}
        {\\lVert X^\\top X \\rVert_F \\, \\lVert Y^\\top Y \\rVert_F}

    It lies in [0, 1], is invariant to orthogonal transforms and isotropic
    scaling of either representation (not to arbitrary invertible linear maps),
    and needs no mapping between the two spaces: ``p`` and ``q`` may differ.

    Args:
        X: representation of shape (N, p).
        Y: representation of shape (N, q), the same N samples in the same order.

    Example:
        >>> X = torch.randn(100, 5)
        >>> round(linear_cka(X, 3 * X), 6)
        1.0
    """
    check_tensor(X, "linear_cka", "X", ndim=2)
    check_tensor(Y, "linear_cka", "Y", ndim=2)
    check_same_rows(X, Y, "linear_cka", ("X", "Y"))
    return _cka(_centred_with_norm(X, "linear_cka", "'X' and 'Y'"), _centred_with_norm(Y, "linear_cka", "'X' and 'Y'"))


def _centred_with_norm(X: Tensor, func: str, names: str) -> tuple[Tensor, Tensor]:
    """``X`` column-centred in float64, and ``||X^T X||_F``; a constant representation is refused."""
    X = X.double() - X.double().mean(dim=0, keepdim=True)  # (N, p) centred
    norm = torch.linalg.matrix_norm(X.T @ X)
    if float(norm) == 0.0:
        raise ValueError(
            f"The {names} parameters of {func} must each vary across samples. "
            "Got a representation that is constant over all samples."
        )
    return X, norm


def _cka(x: tuple[Tensor, Tensor], y: tuple[Tensor, Tensor]) -> float:
    (X, norm_x), (Y, norm_y) = x, y
    cross = torch.linalg.matrix_norm(Y.T @ X) ** 2  # ||Y^T X||_F^2
    return float(cross / (norm_x * norm_y))


def linear_cka_matrix(Xs: Sequence[Tensor], Ys: Sequence[Tensor]) -> np.ndarray:
    """:func:`linear_cka` of every pair ``(Xs[i], Ys[j])``, each representation centred once.

    The same numbers, bit for bit, as calling :func:`linear_cka` on each pair,
    but each representation is centred and normalised once instead of once per
    pair: comparing the 8 steps of an RNN with 4 layers of a CNN (chapter 7)
    costs 12 normalisations instead of 64.

    Args:
        Xs: k representations of shape (N, p_i).
        Ys: m representations of shape (N, q_j), the same N samples in the same order.

    Returns:
        An array of shape (k, m).

    Example:
        >>> X = torch.randn(50, 4)
        >>> linear_cka_matrix([X], [X, 2 * X]).round(6).tolist()
        [[1.0, 1.0]]
    """
    func = "linear_cka_matrix"
    for name, reps in (("Xs", Xs), ("Ys", Ys)):
        if isinstance(reps, Tensor) or not len(reps):
            raise ValueError(f"The '{name}' parameter of {func} must be a non-empty list of tensors. "
                             f"Got {type(reps).__name__} instead.")
        for rep in reps:
            check_tensor(rep, func, name, ndim=2)
            check_same_rows(rep, Xs[0], func, (name, "Xs"))
    xs = [_centred_with_norm(X, func, "'Xs' and 'Ys'") for X in Xs]
    ys = [_centred_with_norm(Y, func, "'Xs' and 'Ys'") for Y in Ys]
    return np.array([[_cka(x, y) for y in ys] for x in xs])


def loss_barrier(losses: Sequence[float], alphas: Sequence[float]) -> float:
    """Height of the loss barrier along a linear path between two networks.

    With ``losses[i]`` the loss of the network ``alphas[i]·θ_A + (1 − alphas[i])·θ_B``
    (so α = 1 is network A, α = 0 network B), the barrier is the largest rise of
    the path above the straight line joining its two ends (Frankle et al., 2020;
    Entezari et al., 2022):

    .. math::
        B = \\max_\\alpha \\; L(\\alpha\\theta_A + (1-\\alpha)\\theta_B)
            - \\bigl(\\alpha L(\\theta_A) + (1-\\alpha) L(\\theta_B)\\bigr)

    Args:
        losses: losses along the path.
        alphas: the matching interpolation weights; must include 0 and 1.

    Example:
        >>> round(loss_barrier([0.1, 0.9, 0.3], [0.0, 0.5, 1.0]), 4)
        0.7
    """
    if len(losses) != len(alphas):
        raise ValueError(
            "The 'losses' and 'alphas' parameters of loss_barrier must have the same length. "
            f"Got {len(losses)} and {len(alphas)} instead."
        )
    bad = [a for a in alphas if not 0.0 <= float(a) <= 1.0]
    if bad:
        raise ValueError(
            "The 'alphas' parameter of loss_barrier must hold weights in [0, 1]. "
            f"Got {bad} instead."
        )
    if len(set(float(a) for a in alphas)) != len(alphas):
        raise ValueError(
            "The 'alphas' parameter of loss_barrier must not repeat a weight. "
            f"Got {list(alphas)} instead."
        )
    pairs = dict(zip((float(a) for a in alphas), (float(v) for v in losses)))
    if 0.0 not in pairs or 1.0 not in pairs:
        raise ValueError(
            "The 'alphas' parameter of loss_barrier must include both ends of the path, 0 and 1. "
            f"Got {sorted(pairs)} instead."
        )
    loss_a, loss_b = pairs[1.0], pairs[0.0]
    return max(v - (a * loss_a + (1 - a) * loss_b) for a, v in pairs.items())


def r2_score(prediction: Tensor, target: Tensor) -> float:
    """Coefficient of determination R² of a prediction of ``target``.

    Variance-weighted over the d target dimensions, as scikit-learn's
    ``r2_score(target, prediction, multioutput="variance_weighted")``, and
    computed in float64:

    .. math::
        R^2 = 1 - \\frac{\\sum_{j \\in V} \\sum_n (K_{nj} - \\hat K_{nj})^2}{\\sum_{j \\in V} \\sum_n (K_{nj} - \\bar K_j)^2},
        \\qquad V = \\{j : K_{\\cdot j} \\text{ is not constant}\\}

    A constant ("dead") target column has weight 0 in the variance-weighted
    average, so it neither helps nor hurts the score, even when it is
    predicted imperfectly: its residual is left out of the numerator, exactly
    as scikit-learn does. 1 is a perfect prediction, 0 is no better than
    predicting each column's mean, and it is negative for worse.
    :meth:`kt_helpers.mapping.LinearMap.score` is this score of its own
    prediction; use this one for any other map, such as an ``nn.Linear``
    learned during training (chapter 4).

    Two fine points where the two differ. A column counts as constant here
    when all its values are equal; scikit-learn tests its computed variance
    against 0, and a floating-point mean can leave a variance of about 1e-33
    (a column of 0.1s, say), in which case it counts that column's residual.
    Where every column of the target is constant scikit-learn returns 1 or 0
    by convention; this function raises instead, since no variance is there
    to explain.

    Args:
        prediction: the predicted representation, shape (N, d) (or (N,)).
        target: the true one, the same shape.

    Returns:
        R², a float.

    Example:
        >>> K = torch.tensor([[0.0], [1.0], [2.0]])
        >>> r2_score(K + 0.5, K)
        0.625
    """
    return _r2(prediction, target, "r2_score")


def _r2(prediction: Tensor, target: Tensor, func: str) -> float:
    check_tensor(prediction, func, "prediction")
    check_tensor(target, func, "target")
    check_same_shape(prediction, target, func, ("prediction", "target"))
    K, pred = target.double(), prediction.double()
    if K.dim() == 1:
        K, pred = K[:, None], pred[:, None]  # (N,) -> (N, 1)
    varies = (K != K[:1]).any(dim=0)  # (d,), False for a constant column
    ss_res = ((K - pred) ** 2)[:, varies].sum()  # constant columns have weight 0
    ss_tot = ((K - K.mean(dim=0)) ** 2)[:, varies].sum()
    if float(ss_tot) == 0.0:
        raise ValueError(
            f"The 'target' parameter of {func} must vary across samples. Got a constant target."
        )
    return float(1.0 - ss_res / ss_tot)


def format_mean_std(values: Sequence[float], fmt: str = "{:.1%}", *, missing: str = "—") -> str:
    """A measure repeated over seeds, as ``"mean ± standard deviation"``.

    The standard deviation is the sample one (``ddof=1``, as in pandas), the
    spread a reader should expect from one more seed. Missing values (NaN)
    are left out; with one value left the result is that value alone, with
    none it is ``missing``.

    Args:
        values: the measure, one value per run (a list, an array, a tensor or
            a pandas Series).
        fmt: a :meth:`str.format` pattern for one number, such as ``"{:.1%}"``
            (the default, for accuracies and errors) or ``"{:.3f}"``.
        missing: what to show when there is no value.

    Returns:
        The formatted string.

    Raises:
        ValueError: if ``values`` does not hold numbers or ``fmt`` is not a
            pattern for one number.

    Examples:
        >>> format_mean_std([0.90, 0.92, 0.94])
        '92.0% ± 2.0%'
        >>> format_mean_std([0.1234, 0.1236], "{:.4f}")
        '0.1235 ± 0.0001'
        >>> format_mean_std([float("nan")])
        '—'
    """
    import numpy as np

    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError(
            "The 'values' parameter of format_mean_std must hold numbers (one per run). "
            f"Got {values!r} instead."
        ) from None
    try:
        shows_a_number = fmt.format(0.5) != fmt
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        shows_a_number = False
    if not shows_a_number:
        raise ValueError(
            "The 'fmt' parameter of format_mean_std must be a format pattern for one number, "
            f"such as '{{:.1%}}'. Got {fmt!r} instead."
        )
    array = array[~np.isnan(array)]
    if array.size == 0:
        return missing
    if array.size == 1:
        return fmt.format(array[0])
    return f"{fmt.format(array.mean())} ± {fmt.format(array.std(ddof=1))}"
