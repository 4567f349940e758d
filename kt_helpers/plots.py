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
    "plot_transfer_schematic",
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


def plot_curve_panels(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    sharey: bool = True,
    marker: str = "o",
) -> Figure:
    """Side-by-side line plots: one panel per entry of ``panels``, each with named ``(x, y)`` curves.

    For comparisons that share axes but differ in one setting (e.g. the
    loss-barrier curves of two network widths, chapter 3). A curve keeps its
    colour from panel to panel when it has the same name.
    """
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 0.6, 3.5), sharey=sharey, squeeze=False
    )
    names = list(dict.fromkeys(name for curves in panels.values() for name in curves))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for ax, (panel, curves) in zip(axes.flat, panels.items()):
        for name, (xs, ys) in curves.items():
            ax.plot(xs, ys, marker=marker, markersize=4, label=name, color=colours[name])
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel(ylabel)
    if len(names) > 1:
        axes.flat[-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_curve_panels"]


def show_rows(image: np.ndarray | Tensor, *, title: str | None = None) -> Figure:
    """One digit as the CNN sees it (an image) and as the RNN reads it (a sequence of rows).

    Left: the image of shape (1, H, W) or (H, W). Right: its H rows, one per
    time step, top to bottom (chapter 4).
    """
    values = np.asarray(image.detach().cpu() if isinstance(image, Tensor) else image, dtype=float)
    values = values.reshape(values.shape[-2], values.shape[-1])  # (H, W)
    H = values.shape[0]
    fig = plt.figure(figsize=(6.5, 3.2))
    grid = fig.add_gridspec(H, 2, width_ratios=[1, 1.4], wspace=0.35, hspace=0.6)
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(values, cmap="gray_r", vmin=0, vmax=1)
    ax.set_title("CNN input: 1 × 8 × 8 image", fontsize=9)
    ax.axis("off")
    for t in range(H):
        row_ax = fig.add_subplot(grid[t, 1])
        row_ax.imshow(values[t : t + 1], cmap="gray_r", vmin=0, vmax=1, aspect="auto")
        row_ax.set_xticks([])
        row_ax.set_yticks([])
        row_ax.set_ylabel(f"t={t + 1}", rotation=0, fontsize=7, labelpad=14, va="center")
        if t == 0:
            row_ax.set_title("RNN input: 8 steps of 8 pixels", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_seed_spread(
    points: Mapping[str, Sequence[float]],
    *,
    means: Mapping[str, float],
    stds: Mapping[str, float],
    xlabel: str,
    title: str | None = None,
    percent: bool = True,
) -> Figure:
    """One row per configuration: a dot per seed, and the mean ± standard deviation as a bar.

    ``points``, ``means`` and ``stds`` are computed by the caller (this
    function only draws); rows are drawn top to bottom in the order of
    ``points``. Used for the results of the case study (chapter 4).
    """
    names = list(points)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.2))
    for i, name in enumerate(names):
        row = len(names) - 1 - i
        xs = np.asarray(points[name], dtype=float)
        offsets = np.linspace(-0.12, 0.12, len(xs)) if len(xs) > 1 else np.zeros(1)
        ax.scatter(xs, row + offsets, s=14, color=f"C{i % 10}", alpha=0.7, zorder=3)
        ax.errorbar(
            means[name], row, xerr=stds[name], fmt="|", markersize=16, capsize=4,
            color="black", zorder=4,
        )
    ax.set_yticks(range(len(names)), list(reversed(names)))
    ax.set_xlabel(xlabel)
    ax.set_xlim(left=0)
    if percent:
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_value_bars(
    values: Mapping[str, float],
    *,
    ylabel: str,
    title: str | None = None,
    fmt: str = "{:.2f}",
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """Vertical bars of named values, each annotated with ``fmt`` (e.g. CKA per model, chapter 4)."""
    names = list(values)
    heights = [float(values[n]) for n in names]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.0, 3.2))
    bars = ax.bar(range(len(names)), heights, color=[f"C{i % 10}" for i in range(len(names))])
    for bar, h in zip(bars, heights):
        ax.text(bar.get_x() + bar.get_width() / 2, h, fmt.format(h), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


__all__ += ["plot_seed_spread", "plot_value_bars", "show_rows"]


def plot_transfer_schematic() -> Figure:
    """The book's setting in one picture: source, target, transfer set and the four steps.

    A schematic, not a result: the source model :math:`M_s` (the teacher)
    with its own labelled data, the target model :math:`M_t` (the student)
    with few labels and a transfer set of unlabelled inputs, and the four
    steps of the source document (select, extract, map with :math:`T`, fuse
    with :math:`\\alpha`) that carry knowledge from one to the other.
    Introduced in chapter 1.

    Returns:
        The matplotlib ``Figure``.
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(9.0, 3.6))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.35, 4.1)
    ax.axis("off")

    def box(x, y, w, h, label, colour):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05",
                                    facecolor=colour, edgecolor="0.25", linewidth=1.2))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=9)

    def arrow(xy_from, xy_to, label=None, offset=(0.0, 0.18)):
        ax.add_patch(FancyArrowPatch(xy_from, xy_to, arrowstyle="-|>", mutation_scale=14,
                                     linewidth=1.3, color="0.2"))
        if label:
            mx, my = (xy_from[0] + xy_to[0]) / 2, (xy_from[1] + xy_to[1]) / 2
            ax.text(mx + offset[0], my + offset[1], label, ha="center", va="bottom", fontsize=8.5)

    # Data, bottom row.
    box(0.2, 0.25, 2.3, 0.9, "source's own data\n(labelled)", "#dbe9f6")
    box(3.85, 0.25, 2.3, 0.9, "transfer set\n(inputs, no labels)", "#f2f2f2")
    box(7.5, 0.25, 2.3, 0.9, "target's data\n(few labels)", "#fde3cf")
    # Models, top row.
    box(0.2, 2.6, 2.3, 1.0, "source $M_s$\n(teacher), knowledge $K_s$", "#9ecae1")
    box(7.5, 2.6, 2.3, 1.0, "target $M_t$\n(student), knowledge $K_t$", "#fdae6b")
    # Steps along the top.
    arrow((1.35, 1.2), (1.35, 2.55), "trains", offset=(0.45, -0.1))
    arrow((8.65, 1.2), (8.65, 2.55), "trains", offset=(0.45, -0.1))
    arrow((2.55, 3.1), (4.0, 3.1), "2 extract\n$K_s$")
    box(4.05, 2.75, 1.9, 0.7, "3 map\n$T(K_s)$", "#e5f5e0")
    arrow((6.0, 3.1), (7.45, 3.1), "4 fuse\n$\\alpha K_t + (1-\\alpha)\\,T(K_s)$")
    # The transfer set is where the teacher is queried and the student trained.
    arrow((4.6, 1.2), (2.0, 2.55))
    arrow((5.4, 1.2), (8.0, 2.55))
    ax.text(1.35, 3.75, "1 select the source", ha="center", va="bottom", fontsize=8.5)
    ax.text(5.0, -0.05, "the teacher is queried, and the student trained, on the same inputs",
            ha="center", va="top", fontsize=8, color="0.3")
    fig.tight_layout()
    return fig
