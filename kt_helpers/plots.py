"""The book's figures. Functions here only draw what they are given: every
number is computed elsewhere (:mod:`kt_helpers.metrics`, the notebooks), so
a figure never hides a computation. Each returns the matplotlib ``Figure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "plot_curves",
    "plot_heatmap",
    "plot_probabilities",
    "show_digits",
]


def show_digits(
    X: Tensor,
    labels: Sequence[object] | None = None,
    *,
    ncols: int = 10,
    title: str | None = None,
    size: float = 1.0,
) -> Figure:
    """Show images of shape (N, 1, H, W) or (N, H, W) in a grid, with optional labels."""
    images = X.detach().cpu().numpy().reshape(len(X), X.shape[-2], X.shape[-1])
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=1)
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_probabilities(
    probs: Mapping[str, Sequence[float] | np.ndarray | Tensor],
    *,
    classes: Sequence[object] = tuple(range(10)),
    title: str | None = None,
    log: bool = False,
) -> Figure:
    """Grouped bars of class probabilities, one group per class, one bar per entry of ``probs``."""
    names = list(probs)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(7, 3))
    for i, name in enumerate(names):
        p = np.asarray(probs[name].detach().cpu() if isinstance(probs[name], Tensor) else probs[name])
        ax.bar(x + (i - (len(names) - 1) / 2) * width, p, width, label=name)
    ax.set_xticks(x, [str(c) for c in classes])
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    if log:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    errors: Mapping[str, Sequence[float]] | None = None,
    logx: bool = False,
    marker: str = "o",
) -> Figure:
    """Line plot of named ``(x, y)`` curves, with optional error bars (e.g. a spread over seeds)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (xs, ys) in curves.items():
        err = None if errors is None else errors.get(name)
        ax.errorbar(xs, ys, yerr=err, marker=marker, markersize=4, capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_heatmap(
    matrix: np.ndarray | Tensor,
    *,
    row_labels: Sequence[object],
    col_labels: Sequence[object],
    title: str | None = None,
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """A matrix of values (e.g. a CKA map or an agreement matrix) with each cell annotated."""
    values = np.asarray(matrix.detach().cpu() if isinstance(matrix, Tensor) else matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(0.7 * len(col_labels) + 2.5, 0.5 * len(row_labels) + 1.5))
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels], rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    mid = np.nanmean(values)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(
                j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=8,
                color="white" if values[i, j] < mid else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
