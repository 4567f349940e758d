"""Chapter 5's self-checks, check_widen and check_loss_barrier: the reference passes,
each typical mistake is named.

The wrong implementations are written as a learner would write them, with one
mistake each (or a named pair), independently of the checks' own variants.
"""

from __future__ import annotations

import pytest
import torch

from kt_helpers import checks

# --- check_widen ------------------------------------------------------------------------------


def widen(weight, bias, next_weight, mapping):
    copies = torch.bincount(mapping, minlength=len(weight)).to(weight)  # (width,)
    return weight[mapping], bias[mapping], next_weight[:, mapping] / copies[mapping]


def not_divided(weight, bias, next_weight, mapping):
    return weight[mapping], bias[mapping], next_weight[:, mapping]


def new_only(weight, bias, next_weight, mapping):
    copies = torch.bincount(mapping, minlength=len(weight)).to(weight)
    U = next_weight[:, mapping].clone()
    n = len(weight)
    U[:, n:] /= copies[mapping[n:]]
    return weight[mapping], bias[mapping], U


def uniform(weight, bias, next_weight, mapping):
    return weight[mapping], bias[mapping], next_weight[:, mapping] * len(weight) / len(mapping)


def incoming(weight, bias, next_weight, mapping):
    copies = torch.bincount(mapping, minlength=len(weight)).to(weight)[mapping]
    return weight[mapping] / copies[:, None], bias[mapping] / copies, next_weight[:, mapping]


def modulo(weight, bias, next_weight, mapping):
    g = torch.arange(len(mapping)) % len(weight)  # ignores the given mapping
    return widen(weight, bias, next_weight, g)


def modulo_out(weight, bias, next_weight, mapping):
    g = torch.arange(len(mapping)) % len(weight)
    copies = torch.bincount(mapping, minlength=len(weight)).to(weight)
    return weight[mapping], bias[mapping], next_weight[:, g] / copies[mapping]


def bias_zero(weight, bias, next_weight, mapping):
    W, b, U = widen(weight, bias, next_weight, mapping)
    b = b.clone()
    b[len(weight):] = 0
    return W, b, U


WIDEN_MISTAKES = {
    "not divided": (not_divided, "not divided by the number of copies"),
    "originals not divided": (new_only, "the original unit is a copy too"),
    "one divisor for all": (uniform, "divided by the same number"),
    "incoming divided": (incoming, "the *incoming* weights"),
    "wrong units": (modulo, "not the unit g(j)"),
    "outgoing from other units": (modulo_out, "come from another unit"),
    "new biases zero": (bias_zero, "biases are 0"),
}


def test_widen_reference_passes(capsys):
    result = checks.check_widen(widen)
    assert result.passed
    assert capsys.readouterr().out.startswith("correct:")


def test_widen_with_net2wider_itself_passes():
    from kt_helpers import mapping as kt_mapping

    def via_net2wider(weight, bias, next_weight, mapping):
        # Build the narrow MLP and compare a hand-made widening with net2wider's function.
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(weight.shape[1], len(weight)),
                                    torch.nn.ReLU(), torch.nn.Linear(len(weight), next_weight.shape[0])).double()
        with torch.no_grad():
            model[1].weight.copy_(weight)
            model[1].bias.copy_(bias)
            model[3].weight.copy_(next_weight)
        wide = kt_mapping.net2wider(model, 0, len(mapping))
        X = torch.randn(10, weight.shape[1], dtype=torch.float64)
        assert torch.allclose(wide(X), model(X))
        return widen(weight, bias, next_weight, mapping)

    assert checks.check_widen(via_net2wider, verbose=False).passed


@pytest.mark.parametrize("name", sorted(WIDEN_MISTAKES))
def test_widen_mistake_is_named(name):
    fn, expected = WIDEN_MISTAKES[name]
    result = checks.check_widen(fn, verbose=False)
    assert not result.passed
    assert result.message.startswith("not yet:") and expected in result.message, result.message
    assert "; and " not in result.message


def test_widen_two_mistakes_are_both_named():
    def both(weight, bias, next_weight, mapping):
        W, b, U = not_divided(weight, bias, next_weight, mapping)
        b = b.clone()
        b[len(weight):] = 0
        return W, b, U

    message = checks.check_widen(both, verbose=False).message
    assert "not divided" in message and "biases are 0" in message


def test_widen_an_unknown_function_changing_mistake_reports_the_change():
    def noisy(weight, bias, next_weight, mapping):
        W, b, U = widen(weight, bias, next_weight, mapping)
        return W, b, U + 0.1

    message = checks.check_widen(noisy, verbose=False).message
    assert "does not compute the same function" in message


def test_widen_a_function_preserving_but_other_widening_is_told_apart():
    def zero_outgoing(weight, bias, next_weight, mapping):
        W, b, U = weight[mapping], bias[mapping], next_weight[:, mapping].clone()
        U[:, len(weight):] = 0  # the new units are silent: same function, not Net2Net
        return W, b, U

    message = checks.check_widen(zero_outgoing, verbose=False).message
    assert "computes the same function, but it is not Net2Net's" in message


def test_widen_reports_bad_outputs_errors_and_in_place_changes():
    assert "expected the triple" in checks.check_widen(lambda *a: a[0], verbose=False).message
    assert "expected the triple" in checks.check_widen(
        lambda W, b, U, g: (W, b, U), verbose=False).message  # not widened
    assert "raised ZeroDivisionError" in checks.check_widen(lambda *a: 1 / 0, verbose=False).message

    def in_place(weight, bias, next_weight, mapping):
        next_weight /= 2
        return widen(weight, bias, next_weight, mapping)

    assert "in place" in checks.check_widen(in_place, verbose=False).message


def test_widen_fn_must_be_callable():
    with pytest.raises(ValueError, match="The 'fn' parameter of check_widen must be a function"):
        checks.check_widen(None)


# --- check_loss_barrier -----------------------------------------------------------------------


def barrier(losses, alphas):
    at = dict(zip(alphas, losses))
    line = {a: a * at[1.0] + (1 - a) * at[0.0] for a in at}
    return max(v - line[a] for a, v in at.items())


def _rises(losses, alphas, a_end=None, b_end=None):
    at = dict(zip(alphas, losses))
    a_end = at[1.0] if a_end is None else a_end
    b_end = at[0.0] if b_end is None else b_end
    return {a: v - (a * a_end + (1 - a) * b_end) for a, v in at.items()}


BARRIER_MISTAKES = {
    "no line": (lambda losses, alphas: max(losses), "the largest loss on the path"),
    "mean of the ends": (
        lambda losses, alphas: max(losses) - (dict(zip(alphas, losses))[0.0] + dict(zip(alphas, losses))[1.0]) / 2,
        "the mean of the two end-point losses"),
    "larger end": (
        lambda losses, alphas: max(losses) - max(dict(zip(alphas, losses))[a] for a in (0.0, 1.0)),
        "the larger end-point loss"),
    "min": (lambda losses, alphas: min(_rises(losses, alphas).values()), "minimum over the path"),
    "line reversed": (
        lambda losses, alphas: max(_rises(losses, alphas, dict(zip(alphas, losses))[0.0],
                                          dict(zip(alphas, losses))[1.0]).values()),
        "the line runs the wrong way"),
    "midpoint": (lambda losses, alphas: _rises(losses, alphas)[0.5], "at α = 0.5 only"),
    "ends left out": (
        lambda losses, alphas: max(r for a, r in _rises(losses, alphas).items() if 0 < a < 1),
        "left the two ends out"),
    "absolute": (lambda losses, alphas: max(abs(r) for r in _rises(losses, alphas).values()),
                 "*absolute* difference"),
    "ends by position": (
        lambda losses, alphas: max(_rises(losses, alphas, losses[-1], losses[0]).values()),
        "first and last entries"),
}


def test_barrier_reference_passes(capsys):
    assert checks.check_loss_barrier(barrier).passed
    assert capsys.readouterr().out.startswith("correct:")


def test_barrier_with_metrics_passes():
    from kt_helpers.metrics import loss_barrier

    assert checks.check_loss_barrier(loss_barrier, verbose=False).passed


@pytest.mark.parametrize("name", sorted(BARRIER_MISTAKES))
def test_barrier_mistake_is_named(name):
    fn, expected = BARRIER_MISTAKES[name]
    result = checks.check_loss_barrier(fn, verbose=False)
    assert not result.passed
    assert result.message.startswith("not yet:") and expected in result.message, result.message


def test_barrier_unknown_mistake_and_bad_outputs():
    message = checks.check_loss_barrier(lambda losses, alphas: barrier(losses, alphas) + 0.01, verbose=False).message
    assert message.startswith("not yet: on the path")
    assert "expected one number" in checks.check_loss_barrier(lambda l, a: [1.0, 2.0], verbose=False).message
    assert "expected one number" in checks.check_loss_barrier(lambda l, a: "high", verbose=False).message
    assert "raised KeyError" in checks.check_loss_barrier(lambda l, a: {}[0], verbose=False).message


def test_barrier_fn_must_be_callable():
    with pytest.raises(ValueError, match="The 'fn' parameter of check_loss_barrier must be a function"):
        checks.check_loss_barrier(0.5)
