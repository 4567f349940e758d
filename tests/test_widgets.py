"""The explorers of chapter 3: compute functions, widgets, and argument validation."""

from __future__ import annotations

import ipywidgets
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kt_helpers import widgets  # noqa: E402

LOGITS = torch.tensor([3.0, 1.0, 0.5, -1.0, -2.0])


def _bar_heights(figure, group: int, num_classes: int) -> torch.Tensor:
    """Heights of the bars of legend entry ``group`` in a plot_probabilities figure."""
    patches = figure.axes[0].patches[group * num_classes : (group + 1) * num_classes]
    return torch.tensor([p.get_height() for p in patches], dtype=torch.float64)


# --- compute functions -----------------------------------------------------------------------


def test_temperature_probabilities_is_softmax_of_logits_over_t():
    probs = widgets.temperature_probabilities(LOGITS, [1.0, 4.0])
    assert list(probs) == ["τ = 1", "τ = 4"]
    for t, p in zip([1.0, 4.0], probs.values()):
        torch.testing.assert_close(p, F.softmax(LOGITS.double() / t, dim=0))


def test_higher_temperature_is_softer():
    low, high = widgets.temperature_probabilities(LOGITS, [1.0, 10.0]).values()
    entropy = lambda p: float(-(p * p.log()).sum())  # noqa: E731
    assert entropy(high) > entropy(low)
    assert float(high.max()) < float(low.max())


def test_fused_targets_is_the_fusion_rule():
    out = widgets.fused_targets(2, LOGITS, [1.0, 0.3, 0.0], temperature=2.0)
    onehot, teacher, at_one, mid, at_zero = out.values()
    torch.testing.assert_close(onehot, F.one_hot(torch.tensor(2), 5).double())
    torch.testing.assert_close(teacher, F.softmax(LOGITS.double() / 2.0, dim=0))
    torch.testing.assert_close(at_one, onehot)  # α = 1: the target's own knowledge
    torch.testing.assert_close(at_zero, teacher)  # α = 0: the transferred knowledge
    torch.testing.assert_close(mid, 0.3 * onehot + 0.7 * teacher)
    assert all(abs(float(v.sum()) - 1.0) < 1e-12 for v in out.values())


def test_fused_target_cross_entropy_is_the_fused_loss():
    """CE is linear in its target: CE(fused target) = α·CE(label) + (1 − α)·CE(teacher)."""
    z_student = torch.tensor([0.2, -1.0, 2.0, 0.0, 0.3], dtype=torch.float64)
    alpha = 0.4
    onehot, teacher, fused = widgets.fused_targets(1, LOGITS, alpha).values()
    log_q = F.log_softmax(z_student, dim=0)
    ce = lambda target: float(-(target * log_q).sum())  # noqa: E731
    assert ce(fused) == pytest.approx(alpha * ce(onehot) + (1 - alpha) * ce(teacher))


# --- explorers -------------------------------------------------------------------------------


def test_temperature_explorer_builds_and_updates():
    explorer = widgets.temperature_explorer(LOGITS, value=2.0)
    assert isinstance(explorer, ipywidgets.interactive)
    slider = explorer.children[0]
    assert isinstance(slider, ipywidgets.FloatLogSlider)
    assert isinstance(explorer.children[-1], ipywidgets.Output)
    first = explorer.result
    assert isinstance(first, widgets.ExplorerView)
    assert list(first.values) == ["τ = 1", "τ = 2"]

    slider.value = 8.0
    view = explorer.result
    assert view is not first
    assert list(view.values) == ["τ = 1", "τ = 8"]
    expected = F.softmax(LOGITS.double() / 8.0, dim=0)
    torch.testing.assert_close(view.values["τ = 8"], expected)
    # the figure shows the new values, and no figure is left open
    torch.testing.assert_close(_bar_heights(view.figure, 1, 5), expected)
    assert plt.get_fignums() == []


def test_alpha_explorer_builds_and_updates():
    explorer = widgets.alpha_explorer(0, LOGITS, alpha=0.5, temperature=4.0)
    alpha_slider, temperature_slider = explorer.children[:2]
    assert isinstance(alpha_slider, ipywidgets.FloatSlider)
    assert isinstance(temperature_slider, ipywidgets.FloatLogSlider)
    assert "8.00·KL" in explorer.result.figure.axes[0].get_title()  # (1 − 0.5)·4²

    alpha_slider.value = 0.2
    view = explorer.result
    expected = widgets.fused_targets(0, LOGITS, 0.2, temperature=4.0)
    assert list(view.values) == list(expected)
    for key in expected:
        torch.testing.assert_close(view.values[key], expected[key])
    torch.testing.assert_close(_bar_heights(view.figure, 2, 5), expected["fused K_t', α = 0.20"])
    assert "0.20·CE + 12.80·KL" in view.figure.axes[0].get_title()

    temperature_slider.value = 1.0
    assert "teacher T(K_s), τ = 1" in explorer.result.values
    assert plt.get_fignums() == []


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: widgets.temperature_probabilities(LOGITS, 0.0), "'temperatures' parameter of temperature_probabilities must be a finite number > 0"),
        (lambda: widgets.temperature_probabilities(LOGITS, []), "'temperatures' parameter of temperature_probabilities must be a number or a non-empty sequence"),
        (lambda: widgets.temperature_probabilities(LOGITS[None], 1.0), "'logits' parameter of temperature_probabilities must have 1 dimensions"),
        (lambda: widgets.temperature_probabilities(torch.tensor([1, 2]), 1.0), "must be a float tensor of one sample's logits"),
        (lambda: widgets.fused_targets(5, LOGITS, 0.5), r"'label' parameter of fused_targets must be a class index in \[0, 4\]"),
        (lambda: widgets.fused_targets(0, LOGITS, 1.5), r"'alphas' parameter of fused_targets must be a float in \[0, 1\]"),
        (lambda: widgets.fused_targets(0, LOGITS, 0.5, temperature=-1.0), "'temperature' parameter of fused_targets"),
        (lambda: widgets.temperature_explorer(LOGITS, temperatures=(5.0, 1.0)), "'temperatures' parameter of temperature_explorer must be a pair"),
        (lambda: widgets.temperature_explorer(LOGITS, value=50.0), r"'value' parameter of temperature_explorer must lie in the slider's range \[0.5, 20\]"),
        (lambda: widgets.alpha_explorer(0, LOGITS, alpha=-0.1), r"'alpha' parameter of alpha_explorer must be a float in \[0, 1\]"),
        (lambda: widgets.alpha_explorer(9, LOGITS), "'label' parameter of fused_targets"),
        (lambda: widgets.alpha_explorer(0, LOGITS, temperature=0.1), "'temperature' parameter of alpha_explorer must lie in the slider's range"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_logits_must_be_a_tensor():
    with pytest.raises(TypeError, match="'logits' parameter of temperature_explorer must be a torch.Tensor"):
        widgets.temperature_explorer([1.0, 2.0])


# --- the panel plot used next to the explorers in chapter 3 ----------------------------------


def test_plot_curve_panels_draws_one_panel_per_entry_with_stable_colours():
    from kt_helpers import plots

    panels = {
        "width 32": {"a": ([0, 1], [1.0, 2.0]), "b": ([0, 1], [3.0, 1.0])},
        "width 256": {"b": ([0, 1], [0.5, 0.5]), "a": ([0, 1], [2.0, 2.5])},
    }
    figure = plots.plot_curve_panels(panels, xlabel="α", ylabel="loss")
    left, right = figure.axes
    assert [ax.get_title() for ax in figure.axes] == ["width 32", "width 256"]
    colour = lambda ax, name: next(l.get_color() for l in ax.lines if l.get_label() == name)  # noqa: E731
    assert colour(left, "a") == colour(right, "a") and colour(left, "b") == colour(right, "b")
    assert list(right.lines[1].get_ydata()) == [2.0, 2.5]
    plt.close(figure)
