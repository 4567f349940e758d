"""Interactive explorers of the distillation loss's two knobs: the temperature and α.

Introduced in chapter 3 (fusion in the space of outputs). Each explorer is
built from two parts that can be used, and tested, on their own:

* a pure *compute* function that returns the numbers the explorer shows —
  :func:`temperature_probabilities` (a digit's soft labels at temperature τ)
  and :func:`fused_targets` (the source document's fusion rule applied to the
  target distribution, α·one-hot + (1 − α)·teacher soft labels);
* a *plot* function from :mod:`kt_helpers.plots` that only draws them
  (:func:`~kt_helpers.plots.plot_probabilities`).

:func:`temperature_explorer` and :func:`alpha_explorer` tie them to sliders
with :class:`ipywidgets.interactive`. Widgets only run in a live notebook (Jupyter,
Colab); on the book's static website each explorer is followed by a static
figure drawn from the same compute function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

if TYPE_CHECKING:  # for annotations only: ipywidgets is imported where it is used
    import ipywidgets

from . import plots
from ._validation import check_alpha, check_positive, check_tensor
from .fusion import fuse

__all__ = [
    "ExplorerView",
    "alpha_explorer",
    "fused_targets",
    "temperature_explorer",
    "temperature_probabilities",
]


@dataclass(frozen=True)
class ExplorerView:
    """What an explorer shows for one setting of its sliders.

    Attributes:
        values: the computed probabilities, one entry per bar group's legend
            label, each a tensor of shape (C,).
        figure: the figure drawn from ``values`` (closed after display, so it
            does not pile up; its artists can still be inspected).
    """

    values: dict[str, Tensor]
    figure: Figure


def _check_logits(logits: Any, func: str, name: str) -> Tensor:
    check_tensor(logits, func, name, ndim=1)
    if logits.numel() < 2 or not torch.is_floating_point(logits):
        raise ValueError(
            f"The '{name}' parameter of {func} must be a float tensor of one sample's logits, "
            f"of shape (C,) with C >= 2 classes. Got dtype {logits.dtype} and shape "
            f"{tuple(logits.shape)} instead."
        )
    return logits.detach().double().cpu()


def _as_list(values: Any, func: str, name: str) -> list[float]:
    """A float or a non-empty sequence of floats, as a list."""
    if isinstance(values, Real) and not isinstance(values, bool):
        return [float(values)]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(
            f"The '{name}' parameter of {func} must be a number or a non-empty sequence of "
            f"numbers. Got {values!r} instead."
        )
    return list(values)


def _check_range(bounds: Any, func: str, name: str) -> tuple[float, float]:
    ok = (
        isinstance(bounds, Sequence)
        and not isinstance(bounds, (str, bytes))
        and len(bounds) == 2
        and all(isinstance(b, Real) and not isinstance(b, bool) for b in bounds)
    )
    if ok:
        low, high = float(bounds[0]), float(bounds[1])
        ok = math.isfinite(low) and math.isfinite(high) and 0 < low < high
    if not ok:
        raise ValueError(
            f"The '{name}' parameter of {func} must be a pair (low, high) of temperatures with "
            f"0 < low < high. Got {bounds!r} instead."
        )
    return low, high


def _check_in_range(value: Any, bounds: tuple[float, float], func: str, name: str) -> float:
    value = check_positive(value, func, name)
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(
            f"The '{name}' parameter of {func} must lie in the slider's range "
            f"[{bounds[0]:g}, {bounds[1]:g}]. Got {value!r} instead."
        )
    return value


def temperature_probabilities(
    logits: Tensor, temperatures: float | Sequence[float]
) -> dict[str, Tensor]:
    """One sample's soft labels ``softmax(logits / T)`` at one or several temperatures.

    .. math::
        p_i(T) = \\frac{\\exp(z_i / T)}{\\sum_j \\exp(z_j / T)}

    The compute part of :func:`temperature_explorer` (chapter 3).

    Args:
        logits: one sample's logits, of shape (C,).
        temperatures: a temperature τ > 0 or a sequence of them.

    Returns:
        ``{"τ = 1": p(1), "τ = 4": p(4), ...}``, each of shape (C,), float64,
        in the order given.

    Example:
        >>> probs = temperature_probabilities(torch.tensor([2.0, 0.0]), [1.0, 1e6])
        >>> [round(float(p[0]), 3) for p in probs.values()]
        [0.881, 0.5]
    """
    func = "temperature_probabilities"
    z = _check_logits(logits, func, "logits")  # (C,)
    out: dict[str, Tensor] = {}
    for t in _as_list(temperatures, func, "temperatures"):
        t = check_positive(t, func, "temperatures")
        out[f"τ = {t:.3g}"] = F.softmax(z / t, dim=0)  # (C,)
    return out


def fused_targets(
    label: int,
    teacher_logits: Tensor,
    alphas: float | Sequence[float],
    *,
    temperature: float = 1.0,
) -> dict[str, Tensor]:
    """The fusion rule applied to a target distribution: α·one-hot(y) + (1 − α)·p_teacher.

    .. math::
        \\tilde y = \\alpha\\, \\mathrm{onehot}(y) + (1-\\alpha)\\, \\mathrm{softmax}(v / \\tau)

    Because the cross-entropy is linear in its target, training on
    :math:`\\tilde y` is training on α·CE(labels) + (1 − α)·CE(teacher's soft
    labels): the distillation loss (chapter 3). The compute part of
    :func:`alpha_explorer`.

    Args:
        label: the sample's class y, in [0, C).
        teacher_logits: the teacher's logits for the sample, of shape (C,).
        alphas: α in [0, 1], the weight of the label, or a sequence of them.
        temperature: τ > 0 of the teacher's soft labels.

    Returns:
        ``{"labels K_t": one-hot, "teacher T(K_s), τ = ...": p, "fused K_t', α = ...": ...}``,
        each of shape (C,), float64; one fused entry per α, in the order given.

    Example:
        >>> out = fused_targets(0, torch.tensor([0.0, 0.0]), 0.5)
        >>> [round(float(v[0]), 2) for v in out.values()]
        [1.0, 0.5, 0.75]
    """
    func = "fused_targets"
    z = _check_logits(teacher_logits, func, "teacher_logits")  # (C,)
    num_classes = z.numel()
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise ValueError(
            f"The 'label' parameter of {func} must be a class index in [0, {num_classes - 1}]. "
            f"Got {label!r} instead."
        )
    temperature = check_positive(temperature, func, "temperature")
    onehot = F.one_hot(torch.tensor(label), num_classes).double()  # (C,)
    teacher = F.softmax(z / temperature, dim=0)  # (C,)
    out = {"labels K_t": onehot, f"teacher T(K_s), τ = {temperature:.3g}": teacher}
    for a in _as_list(alphas, func, "alphas"):
        a = check_alpha(a, func, "alphas")
        out[f"fused K_t', α = {a:.2f}"] = fuse(onehot, teacher, a)
    return out


def _show(figure: Figure) -> None:
    """Display a figure in the live notebook (inside the explorer's output area), then close it."""
    from IPython import get_ipython
    from IPython.display import display

    if get_ipython() is not None:
        display(figure)
    plt.close(figure)


def _temperature_slider(value: float, bounds: tuple[float, float]) -> ipywidgets.FloatLogSlider:
    """A logarithmic temperature slider over ``bounds``, updating on release."""
    import ipywidgets

    return ipywidgets.FloatLogSlider(
        value=value,
        base=10,
        min=math.log10(bounds[0]),
        max=math.log10(bounds[1]),
        step=0.01,
        description="temperature",
        continuous_update=False,
        readout_format=".3g",
    )


def temperature_explorer(
    logits: Tensor,
    *,
    temperatures: tuple[float, float] = (0.5, 20.0),
    value: float = 4.0,
    reference: float = 1.0,
    log: bool = False,
    title: str | None = None,
) -> ipywidgets.interactive:
    """A slider over the temperature τ showing one sample's soft labels at τ and at ``reference``.

    Built from :func:`temperature_probabilities` and
    :func:`kt_helpers.plots.plot_probabilities`. Chapter 3.

    Args:
        logits: one sample's logits (e.g. the teacher's), of shape (C,).
        temperatures: the slider's range (low, high), 0 < low < high; the
            slider is logarithmic.
        value: the slider's initial temperature, within the range.
        reference: a fixed temperature drawn next to the slider's, for comparison.
        log: draw the probabilities on a log scale.
        title: title of the figure.

    Returns:
        An :class:`ipywidgets.interactive` whose ``children[0]`` is the slider
        and whose ``result`` is the :class:`ExplorerView` of the current setting.
    """
    import ipywidgets

    func = "temperature_explorer"
    z = _check_logits(logits, func, "logits")
    bounds = _check_range(temperatures, func, "temperatures")
    value = _check_in_range(value, bounds, func, "value")
    reference = check_positive(reference, func, "reference")
    classes = tuple(range(z.numel()))

    def view(temperature: float) -> ExplorerView:
        probs = temperature_probabilities(z, [reference, temperature])
        figure = plots.plot_probabilities(probs, classes=classes, log=log, title=title)
        _show(figure)
        return ExplorerView(probs, figure)

    return ipywidgets.interactive(view, temperature=_temperature_slider(value, bounds))


def alpha_explorer(
    label: int,
    teacher_logits: Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 4.0,
    temperatures: tuple[float, float] = (0.5, 20.0),
    title: str | None = None,
) -> ipywidgets.interactive:
    """Sliders over α and T showing the fused target α·one-hot + (1 − α)·teacher soft labels.

    Built from :func:`fused_targets` and :func:`kt_helpers.plots.plot_probabilities`;
    the figure's title states the two weights of the distillation loss,
    α on the cross-entropy and (1 − α)·τ² on the KL term. Chapter 3.

    Args:
        label: the sample's class, in [0, C).
        teacher_logits: the teacher's logits for the sample, of shape (C,).
        alpha: the initial α, in [0, 1].
        temperature: the initial temperature, within ``temperatures``.
        temperatures: the temperature slider's range (low, high), 0 < low < high.
        title: first line of the figure's title.

    Returns:
        An :class:`ipywidgets.interactive` whose ``children`` start with the α
        and temperature sliders and whose ``result`` is the
        :class:`ExplorerView` of the current setting.
    """
    import ipywidgets

    func = "alpha_explorer"
    z = _check_logits(teacher_logits, func, "teacher_logits")
    fused_targets(label, z, 0.5)  # validates the label against the logits
    alpha = check_alpha(alpha, func)
    bounds = _check_range(temperatures, func, "temperatures")
    temperature = _check_in_range(temperature, bounds, func, "temperature")
    classes = tuple(range(z.numel()))

    def view(alpha: float, temperature: float) -> ExplorerView:
        targets = fused_targets(label, z, alpha, temperature=temperature)
        weights = (
            f"loss = {alpha:.2f}·CE + {(1 - alpha) * temperature**2:.2f}·KL  "
            f"(α = {alpha:.2f}, (1 − α)·τ² with τ = {temperature:.3g})"
        )
        figure = plots.plot_probabilities(
            targets, classes=classes, title=weights if title is None else f"{title}\n{weights}"
        )
        _show(figure)
        return ExplorerView(targets, figure)

    alpha_slider = ipywidgets.FloatSlider(
        value=alpha, min=0.0, max=1.0, step=0.05, description="alpha", continuous_update=False
    )
    temperature_slider = _temperature_slider(temperature, bounds)
    return ipywidgets.interactive(view, alpha=alpha_slider, temperature=temperature_slider)
