"""Step 3, mapping: LinearMap, permute_hidden, match_weights, net2wider."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score
from torch import nn

from kt_helpers import mapping, models

seeds = st.integers(0, 2**16)
hidden_widths = st.lists(st.integers(2, 10), min_size=1, max_size=3)


def _paired_features(seed: int, N: int = 40, p: int = 5, q: int = 3, noise: float = 0.5):
    gen = torch.Generator().manual_seed(seed)
    S = torch.randn(N, p, generator=gen, dtype=torch.float64)  # (N, p)
    W = torch.randn(q, p, generator=gen, dtype=torch.float64)  # (q, p)
    b = torch.randn(q, generator=gen, dtype=torch.float64)  # (q,)
    K = S @ W.T + b + noise * torch.randn(N, q, generator=gen, dtype=torch.float64)  # (N, q)
    return S, K, W, b


# --- LinearMap -----------------------------------------------------------------------------------


def test_linear_map_stores_hyperparameters_only():
    T = mapping.LinearMap(ridge=0.5, fit_intercept=False)
    assert (T.ridge, T.fit_intercept) == (0.5, False)
    assert not hasattr(T, "weight_") and not hasattr(T, "bias_")
    assert repr(T) == "LinearMap(ridge=0.5, fit_intercept=False)"


def test_linear_map_fit_returns_itself():
    S, K, _, _ = _paired_features(0)
    T = mapping.LinearMap()
    assert T.fit(S, K) is T
    assert T.weight_.shape == (3, 5) and T.bias_.shape == (3,)


@given(seed=seeds)
def test_linear_map_recovers_an_exact_linear_map(seed):
    S, K, W, b = _paired_features(seed, noise=0.0)
    T = mapping.LinearMap().fit(S, K)
    torch.testing.assert_close(T.weight_, W)
    torch.testing.assert_close(T.bias_, b)
    torch.testing.assert_close(T.transform(S), K)
    assert T.score(S, K) == pytest.approx(1.0)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_map_matches_sklearn_least_squares(fit_intercept):
    S, K, _, _ = _paired_features(1)
    T = mapping.LinearMap(fit_intercept=fit_intercept).fit(S, K)
    ref = LinearRegression(fit_intercept=fit_intercept).fit(S.numpy(), K.numpy())
    np.testing.assert_allclose(T.weight_.numpy(), ref.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(T.bias_.numpy(), np.broadcast_to(ref.intercept_, (3,)), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("ridge", [0.1, 10.0])
def test_linear_map_matches_sklearn_ridge(ridge, fit_intercept):
    """Ridge penalises W only, never the intercept, as scikit-learn's Ridge does."""
    S, K, _, _ = _paired_features(2)
    T = mapping.LinearMap(ridge=ridge, fit_intercept=fit_intercept).fit(S, K)
    ref = Ridge(alpha=ridge, fit_intercept=fit_intercept, solver="cholesky").fit(S.numpy(), K.numpy())
    np.testing.assert_allclose(T.weight_.numpy(), ref.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(T.bias_.numpy(), np.broadcast_to(ref.intercept_, (3,)), rtol=1e-8, atol=1e-10)


def test_linear_map_ridge_shrinks_the_weights():
    S, K, _, _ = _paired_features(3)
    norms = [float(mapping.LinearMap(ridge=r).fit(S, K).weight_.norm()) for r in (0.0, 1.0, 100.0)]
    assert norms[0] > norms[1] > norms[2]


def test_linear_map_is_minimum_norm_when_underdetermined():
    """More features than samples: the least-squares solution is the minimum-norm one."""
    gen = torch.Generator().manual_seed(4)
    S = torch.randn(6, 10, generator=gen, dtype=torch.float64)  # (N=6, p=10)
    K = torch.randn(6, 2, generator=gen, dtype=torch.float64)  # (N=6, q=2)
    T = mapping.LinearMap(fit_intercept=False).fit(S, K)
    torch.testing.assert_close(T.weight_.T, torch.linalg.pinv(S) @ K)


@given(seed=seeds)
def test_linear_map_score_is_variance_weighted_r2(seed):
    S, K, _, _ = _paired_features(seed, noise=2.0)
    T = mapping.LinearMap(ridge=1.0).fit(S[:30], K[:30])
    for S_part, K_part in ((S[:30], K[:30]), (S[30:], K[30:])):  # training and held-out data
        pred = T.transform(S_part).numpy()
        expected = r2_score(K_part.numpy(), pred, multioutput="variance_weighted")
        assert T.score(S_part, K_part) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_linear_map_keeps_the_input_dtype():
    S, K, _, _ = _paired_features(5)
    T = mapping.LinearMap().fit(S.float(), K.float())
    assert T.weight_.dtype == torch.float32
    assert T.transform(S.float()).dtype == torch.float32


def test_linear_map_to_module_computes_transform():
    S, K, _, _ = _paired_features(6)
    T = mapping.LinearMap().fit(S.float(), K.float())
    layer = T.to_module()
    assert isinstance(layer, nn.Linear) and (layer.in_features, layer.out_features) == (5, 3)
    with torch.no_grad():
        torch.testing.assert_close(layer(S.float()), T.transform(S.float()))


@pytest.mark.parametrize("method", ["transform", "score", "to_module"])
def test_linear_map_not_fitted(method):
    T = mapping.LinearMap()
    args = {"transform": (torch.zeros(2, 3),), "score": (torch.zeros(2, 3), torch.zeros(2, 1)), "to_module": ()}
    with pytest.raises(ValueError, match=rf"not fitted yet: call 'fit' before '{method}'"):
        getattr(T, method)(*args[method])


def test_linear_map_rejects_a_negative_ridge():
    with pytest.raises(ValueError, match=r"'ridge' parameter of LinearMap.*>= 0\. Got -1\.0"):
        mapping.LinearMap(ridge=-1.0).fit(torch.zeros(3, 2), torch.zeros(3, 1))


def test_linear_map_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"'source' and 'target'.*LinearMap\.fit.*Got 4 and 5"):
        mapping.LinearMap().fit(torch.zeros(4, 2), torch.zeros(5, 2))


def test_linear_map_rejects_other_columns_than_fit():
    S, K, _, _ = _paired_features(7)
    T = mapping.LinearMap().fit(S, K)
    with pytest.raises(ValueError, match=r"'source'.*LinearMap\.transform must have 5 columns.*Got 4"):
        T.transform(S[:, :4])


def test_linear_map_rejects_1d_source():
    with pytest.raises(ValueError, match=r"'source'.*2 dimensions.*Got shape \(4,\)"):
        mapping.LinearMap().fit(torch.zeros(4), torch.zeros(4, 1))


def test_linear_map_score_rejects_a_constant_target():
    S, K, _, _ = _paired_features(8)
    T = mapping.LinearMap().fit(S, K)
    with pytest.raises(ValueError, match=r"'target'.*must vary across samples"):
        T.score(S, torch.ones_like(K))


# --- permute_hidden ------------------------------------------------------------------------------


def _random_perms(model: nn.Sequential, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    return [torch.randperm(m.out_features, generator=gen) for m in linears[:-1]]


@given(widths=hidden_widths, seed=seeds)
def test_permute_hidden_preserves_the_function(random_mlp, widths, seed):
    model = random_mlp(widths, seed=seed)
    permuted = mapping.permute_hidden(model, _random_perms(model, seed))
    X = torch.randn(16, 5, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(permuted(X), model(X))


def test_permute_hidden_moves_rows_and_columns(random_mlp):
    model = random_mlp([4])
    perm = torch.tensor([2, 0, 3, 1])
    permuted = mapping.permute_hidden(model, [perm])
    assert torch.equal(permuted[0].weight, model[0].weight[perm])  # unit i is old unit perm[i]
    assert torch.equal(permuted[0].bias, model[0].bias[perm])
    assert torch.equal(permuted[2].weight, model[2].weight[:, perm])
    assert torch.equal(permuted[2].bias, model[2].bias)


def test_permute_hidden_leaves_the_model_unchanged(random_mlp):
    model = random_mlp([4, 3])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mapping.permute_hidden(model, _random_perms(model, 1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_permute_hidden_rejects_a_wrong_number_of_permutations(random_mlp):
    with pytest.raises(ValueError, match=r"'perms'.*one permutation per hidden layer\. Expected 2, got 1"):
        mapping.permute_hidden(random_mlp([4, 3]), [torch.arange(4)])


def test_permute_hidden_rejects_a_non_permutation(random_mlp):
    with pytest.raises(ValueError, match=r"'perms'.*permutation of 0\.\.3\. Got \[0, 0, 1, 2\]"):
        mapping.permute_hidden(random_mlp([4]), [[0, 0, 1, 2]])


# --- match_weights -------------------------------------------------------------------------------


@given(widths=hidden_widths, seed=seeds)
def test_match_weights_recovers_a_known_permutation(random_mlp, widths, seed):
    original = random_mlp(widths, seed=seed)
    permuted = mapping.permute_hidden(original, _random_perms(original, seed + 1))
    matched = mapping.match_weights(original, permuted)
    for key, value in original.state_dict().items():
        assert torch.equal(matched.state_dict()[key], value), key


@given(widths=hidden_widths, seed=seeds)
def test_match_weights_computes_the_same_function_as_other(random_mlp, widths, seed):
    reference, other = random_mlp(widths, seed=seed), random_mlp(widths, seed=seed + 1)
    matched = mapping.match_weights(reference, other)
    X = torch.randn(16, 5, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(matched(X), other(X))


def test_match_weights_brings_other_closer_to_reference():
    torch.manual_seed(0)
    reference, other = models.MLP(hidden=(32, 16)), models.MLP(hidden=(32, 16))
    matched = mapping.match_weights(reference, other)

    def distance(a, b):
        pairs = zip(a.state_dict().values(), b.state_dict().values())
        return sum(float((a_w - b_w).pow(2).sum()) for a_w, b_w in pairs)

    assert distance(reference, matched) < distance(reference, other)


def test_match_weights_leaves_its_inputs_unchanged(random_mlp):
    reference, other = random_mlp([6, 4], seed=0), random_mlp([6, 4], seed=1)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (reference, other)]
    matched = mapping.match_weights(reference, other)
    assert matched is not other
    for saved, model in zip(before, (reference, other)):
        assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_match_weights_works_on_the_book_mlp():
    torch.manual_seed(0)
    original = models.MLP(hidden=(12, 8))
    permuted = mapping.permute_hidden(original, [torch.randperm(12), torch.randperm(8)])
    matched = mapping.match_weights(original, permuted)
    assert isinstance(matched, models.MLP)
    assert all(torch.equal(a, b) for a, b in zip(matched.parameters(), original.parameters()))


def test_match_weights_rejects_different_architectures(random_mlp):
    with pytest.raises(ValueError, match=r"'reference' and 'other'.*same architecture.*\(4, 5\).*\(6, 5\)"):
        mapping.match_weights(random_mlp([4]), random_mlp([6]))


def test_match_weights_rejects_a_model_that_is_not_a_sequential():
    with pytest.raises(ValueError, match=r"'reference'.*must be an MLP.*Got DigitCNN"):
        mapping.match_weights(models.DigitCNN(), models.DigitCNN())


def test_match_weights_rejects_a_sequential_with_other_layers():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'other'.*element-wise activation.*Got BatchNorm1d at position 1"):
        mapping.match_weights(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), net)


def test_match_weights_rejects_a_network_without_hidden_layer():
    with pytest.raises(ValueError, match=r"'reference'.*at least one hidden layer.*Got 1 Linear"):
        mapping.match_weights(nn.Sequential(nn.Linear(4, 2)), nn.Sequential(nn.Linear(4, 2)))


def test_match_weights_rejects_max_iter_zero(random_mlp):
    with pytest.raises(ValueError, match=r"'max_iter'.*integer >= 1\. Got 0"):
        mapping.match_weights(random_mlp([3]), random_mlp([3]), max_iter=0)


# --- net2wider -----------------------------------------------------------------------------------


@given(widths=hidden_widths, extra=st.integers(0, 6), data=st.data())
def test_net2wider_preserves_the_function(random_mlp, widths, extra, data):
    layer = data.draw(st.integers(0, len(widths) - 1))
    seed = data.draw(seeds)
    model = random_mlp(widths, seed=seed)
    wide = mapping.net2wider(model, layer, widths[layer] + extra, seed=seed)
    assert wide[2 * layer].out_features == widths[layer] + extra
    X = torch.randn(16, 5, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(wide(X), model(X), rtol=1e-5, atol=1e-6)


def test_net2wider_copies_units_and_splits_their_outgoing_weights(random_mlp):
    model = random_mlp([3])
    wide = mapping.net2wider(model, 0, 7, seed=2)
    W, W_wide = model[0].weight, wide[0].weight
    g = [next(i for i in range(3) if torch.equal(W_wide[j], W[i])) for j in range(7)]  # g(j)
    assert g[:3] == [0, 1, 2]
    counts = np.bincount(g, minlength=3)
    for j in range(7):
        torch.testing.assert_close(wide[2].weight[:, j], model[2].weight[:, g[j]] / counts[g[j]])


def test_net2wider_with_noise_changes_the_function_slightly():
    torch.manual_seed(0)
    model = models.MLP(hidden=(16,))
    wide = mapping.net2wider(model, 0, 24, noise=0.01, seed=0)
    X = torch.rand(32, 1, 8, 8)
    with torch.no_grad():
        difference = (wide(X) - model(X)).abs().max()
        scale = model(X).abs().max()
    assert 0 < difference < 0.05 * scale


def test_net2wider_updates_feature_dim_and_leaves_the_model_unchanged():
    torch.manual_seed(0)
    model = models.MLP(hidden=(8, 6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wide = mapping.net2wider(model, 1, 10)
    assert wide.feature_dim == 10 and model.feature_dim == 6
    assert wide.features(torch.zeros(2, 64)).shape == (2, 10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert mapping.net2wider(model, 0, 12).feature_dim == 6  # not the last hidden layer


@pytest.mark.parametrize("layer", [2, -1, True])
def test_net2wider_rejects_a_layer_that_is_not_hidden(random_mlp, layer):
    with pytest.raises(ValueError, match=rf"'layer'.*hidden layer index in \[0, 1\]\. Got {layer!r}"):
        mapping.net2wider(random_mlp([4, 3]), layer, 8)


@pytest.mark.parametrize("new_width", [3, 4.5])
def test_net2wider_rejects_a_narrower_width(random_mlp, new_width):
    with pytest.raises(ValueError, match=rf"'new_width'.*>= the current width 4\. Got {new_width!r}"):
        mapping.net2wider(random_mlp([4]), 0, new_width)


def test_net2wider_rejects_negative_noise(random_mlp):
    with pytest.raises(ValueError, match=r"'noise'.*>= 0\. Got -0\.1"):
        mapping.net2wider(random_mlp([4]), 0, 6, noise=-0.1)
