"""Chapter 5 helpers: model soups (fusion.uniform_soup, fusion.greedy_soup) and
the cost measures of kt_helpers.benchmarking (count_macs, measure_latency)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kt_helpers import benchmarking, fusion, models

seeds = st.integers(0, 2**16)




# --- uniform_soup ----------------------------------------------------------------------------


@given(seeds, st.integers(1, 5))
def test_uniform_soup_is_the_mean_of_the_weights(seed, num_models):
    torch.manual_seed(seed)
    ingredients = [models.MLP(hidden=(6,)) for _ in range(num_models)]
    soup = fusion.uniform_soup(ingredients)
    for name, value in soup.state_dict().items():
        oracle = sum(m.state_dict()[name] for m in ingredients) / num_models
        torch.testing.assert_close(value, oracle)


@given(seeds)
def test_uniform_soup_of_two_is_fuse_at_one_half(random_mlp, seed):
    a, b = random_mlp([4], seed=seed), random_mlp([4], seed=seed + 1)
    soup = fusion.uniform_soup([a, b])
    fused = fusion.fuse(a.state_dict(), b.state_dict(), 0.5)
    for name, value in soup.state_dict().items():
        torch.testing.assert_close(value, fused[name])


def test_uniform_soup_of_one_model_is_an_independent_copy():
    model = models.MLP(hidden=(4,))
    soup = fusion.uniform_soup([model])
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(soup(x), model(x))
    with torch.no_grad():
        soup[1].weight.add_(1.0)
    assert not torch.equal(soup[1].weight, model[1].weight)


def test_uniform_soup_leaves_the_ingredients_unchanged():
    a, b = models.MLP(hidden=(4,)), models.MLP(hidden=(4,))
    before = [copy.deepcopy(m.state_dict()) for m in (a, b)]
    fusion.uniform_soup([a, b])
    for m, state in zip((a, b), before):
        for name, value in m.state_dict().items():
            assert torch.equal(value, state[name])


def test_uniform_soup_keeps_integer_buffers_of_the_first_model():
    a = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    b = copy.deepcopy(a)
    b[1].num_batches_tracked += 7
    soup = fusion.uniform_soup([a, b])
    assert int(soup[1].num_batches_tracked) == int(a[1].num_batches_tracked)


@pytest.mark.parametrize("bad", [[], (), None, "models", [nn.Linear(2, 2), "not a model"]])
def test_uniform_soup_rejects_no_models(bad):
    with pytest.raises(ValueError, match="'models' parameter of uniform_soup"):
        fusion.uniform_soup(bad)


def test_uniform_soup_rejects_a_single_module():
    with pytest.raises(ValueError, match="'models' parameter of uniform_soup"):
        fusion.uniform_soup(models.MLP())


def test_uniform_soup_rejects_different_architectures():
    with pytest.raises(ValueError, match="same shape for every key"):
        fusion.uniform_soup([models.MLP(hidden=(4,)), models.MLP(hidden=(5,))])


# --- greedy_soup -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_mlp(splits):
    torch.manual_seed(0)
    from kt_helpers import train

    model = models.MLP(hidden=(16,))
    train.fit(model, splits.X_train, splits.y_train, num_epochs=5, lr=1e-2)
    return model


def _accuracy(model, X, y) -> float:
    """Validation accuracy, computed independently of kt_helpers.train.evaluate."""
    with torch.no_grad():
        return float((model.eval()(X).argmax(1) == y).float().mean())


def test_greedy_soup_starts_with_the_best_model_and_never_does_worse(trained_mlp, splits, perturbed):
    X, y = splits.X_val, splits.y_val
    ingredients = [perturbed(trained_mlp, s, seed=i) for i, s in enumerate([0.3, 0.0, 0.05, 1.0])]
    scores = [_accuracy(m, X, y) for m in ingredients]
    soup, chosen = fusion.greedy_soup(ingredients, X, y)
    assert chosen[0] == max(range(len(scores)), key=lambda i: (scores[i], -i))
    assert _accuracy(soup, X, y) >= max(scores)
    assert len(set(chosen)) == len(chosen)


def test_greedy_soup_is_the_uniform_soup_of_its_chosen_ingredients(trained_mlp, splits, perturbed):
    X, y = splits.X_val, splits.y_val
    ingredients = [perturbed(trained_mlp, 0.02, seed=i) for i in range(3)]
    soup, chosen = fusion.greedy_soup(ingredients, X, y)
    oracle = fusion.uniform_soup([ingredients[i] for i in chosen])
    for name, value in soup.state_dict().items():
        torch.testing.assert_close(value, oracle.state_dict()[name])


def test_greedy_soup_rejects_a_harmful_ingredient(trained_mlp, splits, perturbed):
    X, y = splits.X_val, splits.y_val
    broken = perturbed(trained_mlp, 10.0, seed=0)
    soup, chosen = fusion.greedy_soup([trained_mlp, broken], X, y)
    assert chosen == [0]
    assert soup is not trained_mlp
    torch.testing.assert_close(soup(X), trained_mlp(X))


def test_greedy_soup_validates_its_input(trained_mlp, splits):
    with pytest.raises(ValueError, match="'models' parameter of greedy_soup"):
        fusion.greedy_soup([], splits.X_val, splits.y_val)
    with pytest.raises(ValueError, match="'X_val' and 'y_val' parameters of greedy_soup"):
        fusion.greedy_soup([trained_mlp], splits.X_val, splits.y_val[:-1])
    with pytest.raises(ValueError, match="'y_val' parameter of greedy_soup"):
        fusion.greedy_soup([trained_mlp], splits.X_val, splits.y_val.float())


# --- count_macs ------------------------------------------------------------------------------


def test_count_macs_of_an_mlp_is_the_sum_of_its_weight_matrices():
    model = models.MLP(hidden=(32, 16))
    assert benchmarking.count_macs(model) == 64 * 32 + 32 * 16 + 16 * 10


def test_count_macs_of_the_cnn_matches_the_formula():
    c1, c2, d = 4, 8, 12
    model = models.DigitCNN(channels=(c1, c2), feature_dim=d)
    per_pixel = 1 * c1 * 9 + c1 * c2 * 9  # two 3x3 convolutions, same padding on 8x8
    oracle = 64 * per_pixel + (c2 * 16) * d + d * 10
    assert benchmarking.count_macs(model) == oracle


@given(st.integers(1, 6))
def test_count_macs_grows_linearly_with_the_batch(batch):
    model = models.DigitCNN(channels=(2, 3), feature_dim=5)
    one = benchmarking.count_macs(model)
    assert benchmarking.count_macs(model, (batch, 1, 8, 8)) == batch * one


def test_count_macs_counts_grouped_convolutions():
    model = nn.Conv2d(4, 6, kernel_size=3, padding=1, groups=2)
    assert benchmarking.count_macs(model, (1, 4, 5, 5)) == 6 * 25 * (4 // 2) * 9


def test_count_macs_restores_the_mode_and_leaves_no_hook():
    model = models.MLP(hidden=(4,)).train()
    benchmarking.count_macs(model)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("hidden", [4, 32, 64])
def test_count_macs_of_a_gru_matches_the_formula(hidden):
    # A GRU has three gates, each an input and a recurrent matrix product per row.
    model = models.RowRNN(hidden_size=hidden)
    rows, pixels = 8, 8
    oracle = rows * 3 * hidden * (pixels + hidden) + hidden * 10
    assert benchmarking.count_macs(model) == oracle


def test_count_macs_of_the_book_models():
    # The numbers quoted in the issue that replaced the hand-written counter.
    assert benchmarking.count_macs(models.DigitCNN()) == 337_536
    assert benchmarking.count_macs(models.RowRNN()) == 111_232


def test_count_macs_counts_a_matrix_product_outside_any_layer():
    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(64, 7))

        def forward(self, x):
            return x.flatten(1) @ self.weight

    assert benchmarking.count_macs(Bare()) == 64 * 7


def test_count_macs_rejects_bad_input():
    with pytest.raises(ValueError, match="'input_shape' parameter of count_macs"):
        benchmarking.count_macs(models.MLP(), (0, 64))
    with pytest.raises(TypeError, match="'model' parameter of count_macs"):
        benchmarking.count_macs("mlp")


# --- measure_latency -------------------------------------------------------------------------


def test_measure_latency_returns_a_positive_time_and_restores_state():
    model = models.MLP(hidden=(8,)).train()
    threads = torch.get_num_threads()
    X = torch.zeros(4, 1, 8, 8)
    seconds = benchmarking.measure_latency(model, X, repeats=3, warmup=1, num_threads=1)
    assert isinstance(seconds, float) and 0.0 < seconds < 1.0
    assert model.training
    assert torch.get_num_threads() == threads


def test_measure_latency_runs_the_model_warmup_plus_repeats_times():
    calls = []
    model = models.MLP(hidden=(3,))
    model.register_forward_hook(lambda *_: calls.append(1))
    benchmarking.measure_latency(model, torch.zeros(2, 64), repeats=4, warmup=2)
    assert len(calls) == 6


def test_measure_latency_is_the_median_of_the_timings(monkeypatch):
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # durations 1, 3, 2 -> median 2
    monkeypatch.setattr(benchmarking.time, "perf_counter", lambda: next(ticks))
    model = models.MLP(hidden=(3,))
    seconds = benchmarking.measure_latency(model, torch.zeros(1, 64), repeats=3, warmup=0)
    assert seconds == 2.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup"), ({"num_threads": 0}, "num_threads")],
)
def test_measure_latency_validates_its_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter of measure_latency"):
        benchmarking.measure_latency(models.MLP(), torch.zeros(1, 64), **kwargs)


# --- net2wider keeps the dtype (a fix made for chapter 5) ------------------------------------


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_net2wider_keeps_float64_and_preserves_the_function_to_float64_precision(noise):
    from kt_helpers import mapping

    torch.manual_seed(0)
    small = models.MLP(hidden=(5,)).double()
    wide = mapping.net2wider(small, 0, 12, noise=noise)
    assert all(p.dtype == torch.float64 for p in wide.parameters())
    X = torch.rand(7, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        gap = float((wide(X) - small(X)).abs().max())
    if noise == 0.0:
        assert gap < 1e-12
    else:
        assert gap > 0.0
