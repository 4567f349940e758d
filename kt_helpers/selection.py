"""Step 1 of 4 — model selection: choose the source model with numbers, not adjectives.

The source document asks for a source model "with high accuracy and
generalisation, so that the extracted knowledge is portable". This module
measures what that means for transfer: accuracy, calibration (are its
probabilities — the soft labels a student will learn from — trustworthy?),
negative log-likelihood, and how much the candidates agree with each other.
Introduced in chapter 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # for annotations only
    import pandas as pd

from ._validation import check_labels, check_same_rows, check_tensor
from .metrics import accuracy, agreement, expected_calibration_error
from .train import predict_logits

__all__ = ["agreement_matrix", "compare_sources", "select_source"]


def compare_sources(
    models: Mapping[str, nn.Module], X: Tensor, y: Tensor, *, n_bins: int = 15
) -> pd.DataFrame:
    """Score candidate source models on held-out data.

    Args:
        models: candidate models by name.
        X: held-out inputs of shape (N, ...) (a validation set, never the test set).
        y: their labels, of shape (N,).
        n_bins: bins of the calibration error.

    Returns:
        A :class:`pandas.DataFrame`, one row per candidate, with columns
        ``accuracy``, ``ece`` (expected calibration error), ``nll`` (mean
        negative log-likelihood) and ``mean_agreement`` (mean fraction of
        samples on which it predicts the same class as each other candidate;
        NaN when there is a single candidate).
    """
    import pandas as pd

    if not models:
        raise ValueError("The 'models' parameter of compare_sources must hold at least one model. Got none.")
    check_tensor(X, "compare_sources", "X")
    check_labels(y, "compare_sources", "y")
    check_same_rows(X, y, "compare_sources", ("X", "y"))
    logits = {name: predict_logits(model, X) for name, model in models.items()}
    rows = []
    for name, z in logits.items():
        others = [agreement(z, logits[o]) for o in logits if o != name]
        rows.append(
            {
                "model": name,
                "accuracy": accuracy(z, y),
                "ece": expected_calibration_error(F.softmax(z, dim=1), y, n_bins=n_bins),
                "nll": float(F.cross_entropy(z, y)),
                "mean_agreement": sum(others) / len(others) if others else float("nan"),
            }
        )
    return pd.DataFrame(rows).set_index("model")


def agreement_matrix(models: Mapping[str, nn.Module], X: Tensor) -> pd.DataFrame:
    """Pairwise agreement (fraction of equal predictions) between candidate models.

    Returns:
        A symmetric :class:`pandas.DataFrame` indexed by model name, with 1 on the diagonal.
    """
    import pandas as pd

    check_tensor(X, "agreement_matrix", "X")
    logits = {name: predict_logits(model, X) for name, model in models.items()}
    names = list(logits)
    return pd.DataFrame(
        [[agreement(logits[a], logits[b]) for b in names] for a in names], index=names, columns=names
    )


def select_source(table: pd.DataFrame, *, by: str = "accuracy", tie_break: str = "ece") -> str:
    """Name of the best candidate in a :func:`compare_sources` table.

    Higher is better for ``accuracy`` and ``mean_agreement``; lower is better
    for ``ece`` and ``nll``. Ties on ``by`` are broken by ``tie_break``.
    """
    higher_is_better = {"accuracy": True, "mean_agreement": True, "ece": False, "nll": False}
    for name, value in (("by", by), ("tie_break", tie_break)):
        if value not in higher_is_better:
            raise ValueError(
                f"The '{name}' parameter of select_source must be one of "
                f"{', '.join(repr(k) for k in higher_is_better)}. Got {value!r} instead."
            )
    ordered = table.sort_values(
        [by, tie_break], ascending=[not higher_is_better[by], not higher_is_better[tie_break]]
    )
    return ordered.index[0]
