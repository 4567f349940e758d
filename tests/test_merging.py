"""Merging fine-tuned models: task_vectors, task_arithmetic, ties_merge, dare, sign_conflicts.

Oracles are written out by hand on small tensors; properties tie each method to
the fusion rule of kt_helpers.fusion (fuse, uniform_soup).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kt_helpers import fusion, merging, models

seeds = st.integers(0, 2**16)
scales = st.floats(-2.0, 2.0)


def _base():
    return {"w": torch.tensor([[1.0, 1.0], [1.0, 1.0]]), "b": torch.tensor([0.0, 0.0, 0.0])}


def _vectors():
    """Three small task vectors, chosen so that trimming, sign election and the
    disjoint mean each change something; the expected merges below are worked out by hand."""
    tau1 = {"w": torch.tensor([[0.5, -2.0], [0.1, 3.0]]), "b": torch.tensor([1.0, -0.2, 0.0])}
    tau2 = {"w": torch.tensor([[1.5, 1.0], [-0.3, 1.0]]), "b": torch.tensor([-2.0, 0.4, 0.0])}
    tau3 = {"w": torch.tensor([[-0.5, -1.0], [0.1, -4.0]]), "b": torch.tensor([3.0, 0.0, 0.6])}
    return [tau1, tau2, tau3]




# --- task_vectors ----------------------------------------------------------------------------------


def test_task_vectors_by_hand():
    base = {"w": torch.tensor([1.0, 2.0, 3.0]), "n": torch.tensor(5)}
    ft = [{"w": torch.tensor([1.5, 2.0, 0.0]), "n": torch.tensor(9)}]
    (tau,) = merging.task_vectors(base, ft)
    assert set(tau) == {"w"}  # integer entries (batch-norm counters) are not weights
    torch.testing.assert_close(tau["w"], torch.tensor([0.5, 0.0, -3.0]))


@given(seeds)
def test_task_vectors_of_models_are_weight_differences(perturbed, seed):
    torch.manual_seed(seed)
    base = models.MLP(hidden=(5,))
    fts = [perturbed(base, 0.1, seed + i) for i in range(2)]
    taus = merging.task_vectors(base, fts)
    for tau, ft in zip(taus, fts):
        for key, value in base.state_dict().items():
            torch.testing.assert_close(tau[key], ft.state_dict()[key] - value)


# --- task_arithmetic ------------------------------------------------------------------------------


def test_task_arithmetic_by_hand():
    merged = merging.task_arithmetic(_base(), _vectors(), scale=0.5)
    # base + 0.5 * (tau1 + tau2 + tau3); sums: w [[1.5, -2], [-0.1, 0]], b [2, 0.2, 0.6]
    torch.testing.assert_close(merged["w"], torch.tensor([[1.75, 0.0], [0.95, 1.0]]))
    torch.testing.assert_close(merged["b"], torch.tensor([1.0, 0.1, 0.3]))


@given(seeds)
def test_one_task_vector_at_scale_one_gives_the_finetuned_model_back(perturbed, seed):
    torch.manual_seed(seed)
    base = models.MLP(hidden=(6,))
    ft = perturbed(base, 0.3, seed)
    merged = merging.task_arithmetic(base, merging.task_vectors(base, [ft]), scale=1.0)
    assert isinstance(merged, nn.Module) and merged is not base
    for key, value in ft.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[key], value)


@given(seeds, st.floats(0.0, 1.0))
def test_task_arithmetic_with_one_model_is_fuse(perturbed, seed, scale):
    # theta_0 + lambda * (theta_1 - theta_0) = fuse(theta_0, theta_1, alpha = 1 - lambda)
    torch.manual_seed(seed)
    base = models.MLP(hidden=(4,))
    ft = perturbed(base, 0.5, seed)
    merged = merging.task_arithmetic(base.state_dict(), merging.task_vectors(base, [ft]), scale)
    fused = fusion.fuse(base.state_dict(), ft.state_dict(), 1.0 - scale)
    for key in fused:
        torch.testing.assert_close(merged[key], fused[key])


@given(seeds, st.integers(1, 4))
def test_task_arithmetic_at_one_over_n_is_the_uniform_soup(perturbed, seed, n):
    torch.manual_seed(seed)
    base = models.MLP(hidden=(4,))
    fts = [perturbed(base, 0.5, seed + i) for i in range(n)]
    merged = merging.task_arithmetic(base, merging.task_vectors(base, fts), 1.0 / n)
    soup = fusion.uniform_soup(fts)
    for key, value in soup.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[key], value)


@given(seeds, scales)
def test_negating_a_task_vector_undoes_adding_it(perturbed, seed, scale):
    torch.manual_seed(seed)
    base = models.MLP(hidden=(4,))
    (tau,) = merging.task_vectors(base, [perturbed(base, 0.5, seed)])
    there = merging.task_arithmetic(base, [tau], scale)
    back = merging.task_arithmetic(there, [tau], -scale)
    for key, value in base.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value)


def test_merging_keeps_integer_entries_of_the_base(perturbed):
    base = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    base.train()
    base(torch.randn(4, 2))
    ft = perturbed(base, 0.1, 0)
    ft[1].num_batches_tracked += 7
    taus = merging.task_vectors(base, [ft])
    for merged in (merging.task_arithmetic(base, taus, 1.0), merging.ties_merge(base, taus, density=0.5)):
        assert int(merged[1].num_batches_tracked) == int(base[1].num_batches_tracked)


# --- ties_merge ------------------------------------------------------------------------------------


def test_ties_by_hand_without_trimming():
    merged = merging.ties_merge(_base(), _vectors(), density=1.0, scale=1.0)
    # entry by entry: (tau1, tau2, tau3) -> elected sign of the sum -> agreeing values -> their mean
    # w[0,0]: ( 0.5,  1.5, -0.5) -> + -> 0.5, 1.5 -> 1.0
    # w[0,1]: (-2.0,  1.0, -1.0) -> - -> -2, -1   -> -1.5
    # w[1,0]: ( 0.1, -0.3,  0.1) -> - -> -0.3     -> -0.3
    # w[1,1]: ( 3.0,  1.0, -4.0) -> sum exactly 0 -> nothing agrees -> 0
    # b[0]:   ( 1.0, -2.0,  3.0) -> + -> 1, 3     -> 2.0
    # b[1]:   (-0.2,  0.4,  0.0) -> + -> 0.4      -> 0.4
    # b[2]:   ( 0.0,  0.0,  0.6) -> + -> 0.6      -> 0.6
    torch.testing.assert_close(merged["w"], torch.tensor([[2.0, -0.5], [0.7, 1.0]]))
    torch.testing.assert_close(merged["b"], torch.tensor([2.0, 0.4, 0.6]))


def test_ties_by_hand_with_trimming_and_scale():
    # 7 entries per task vector; density 0.55 keeps ceil(0.55 * 7) = 4 of largest magnitude:
    #   tau1 keeps w: -2, 3; b: 1 and w: 0.5 (|0.5| is the 4th largest)   -> zeros elsewhere
    #   tau2 keeps w: 1.5, 1, 1; b: -2                                    (4 entries)
    #   tau3 keeps w: -1, -4; b: 3, 0.6                                   (|-0.5| = 0.5 < 0.6)
    merged = merging.ties_merge(_base(), _vectors(), density=0.55, scale=2.0)
    # trimmed w: (0.5, 1.5, 0) -> + -> 1.0;  (-2, 1, -1) -> - -> -1.5;  (0, 0, 0) -> 0;
    #            (3, 1, -4) -> 0 total -> 0
    # trimmed b: (1, -2, 3) -> + -> 2;  (0, 0, 0) -> 0;  (0, 0, 0.6) -> 0.6
    expected_w = torch.tensor([[1.0 + 2 * 1.0, 1.0 + 2 * -1.5], [1.0, 1.0]])
    expected_b = torch.tensor([2 * 2.0, 0.0, 2 * 0.6])
    torch.testing.assert_close(merged["w"], expected_w)
    torch.testing.assert_close(merged["b"], expected_b)


@given(seeds, st.integers(1, 4), scales)
def test_ties_without_sign_conflict_at_density_one_is_the_disjoint_mean(seed, n, scale):
    # All task vectors move each parameter the same way (some not at all): TIES
    # averages the non-zero values of each parameter.
    gen = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(3, 4, generator=gen) < 0.5, -1.0, 1.0)
    vectors = []
    for _ in range(n):
        magnitude = torch.rand(3, 4, generator=gen) * (torch.rand(3, 4, generator=gen) < 0.7)
        vectors.append({"w": sign * magnitude})
    base = {"w": torch.randn(3, 4, generator=gen)}
    merged = merging.ties_merge(base, vectors, density=1.0, scale=scale)
    stacked = torch.stack([v["w"] for v in vectors])  # (n, 3, 4)
    count = (stacked != 0).sum(dim=0)
    mean = stacked.sum(dim=0) / count.clamp(min=1)
    torch.testing.assert_close(merged["w"], base["w"] + scale * mean)


@given(seeds, st.floats(0.05, 1.0), st.sampled_from([-1.5, 0.5, 1.0, 2.0]))
def test_ties_of_one_vector_is_its_trimmed_self(seed, density, scale):
    gen = torch.Generator().manual_seed(seed)
    tau = {"w": torch.randn(20, generator=gen)}
    base = {"w": torch.zeros(20)}
    merged = merging.ties_merge(base, [tau], density=density, scale=scale)
    kept = merged["w"] != 0
    assert int(kept.sum()) == math.ceil(density * 20)  # no ties among Gaussian draws
    # what is kept is the largest magnitudes, unchanged but for the scale
    if not kept.all():
        assert float(tau["w"][kept].abs().min()) > float(tau["w"][~kept].abs().max())
    torch.testing.assert_close(merged["w"][kept], scale * tau["w"][kept])


# --- dare ------------------------------------------------------------------------------------------


def test_dare_drops_and_rescales():
    tau = torch.arange(1.0, 1001.0)
    out = merging.dare(tau, 0.75, seed=3)
    kept = out != 0
    torch.testing.assert_close(out[kept], tau[kept] * 4.0)  # 1 / (1 - 0.75)
    assert 0.2 < float(kept.float().mean()) < 0.3  # about 1 - p are kept
    assert torch.equal(out, merging.dare(tau, 0.75, seed=3))  # the seed fixes the mask
    assert not torch.equal(out, merging.dare(tau, 0.75, seed=4))


def test_dare_is_right_in_expectation():
    # E[dare(tau)] = tau: the mean over many seeds approaches tau, within 4 standard
    # errors, |tau| * sqrt(p / (1 - p) / n) = 0.032 * |tau| for p = 0.5, n = 1000.
    # Without the rescaling the mean would be tau / 2, far outside.
    tau = {"w": torch.tensor([[1.0, -2.0], [0.5, 3.0]])}
    mean = sum(merging.dare(tau, 0.5, seed=s)["w"] for s in range(1000)) / 1000
    assert bool(((mean - tau["w"]).abs() <= 4 * 0.032 * tau["w"].abs()).all()), mean


@given(seeds)
def test_dare_at_drop_rate_zero_is_a_copy(seed):
    tau = {"w": torch.randn(3, 2), "b": torch.randn(2)}
    out = merging.dare(tau, 0.0, seed=seed)
    for key in tau:
        torch.testing.assert_close(out[key], tau[key])
        assert out[key] is not tau[key]


# --- sign_conflicts --------------------------------------------------------------------------------


def test_sign_conflicts_by_hand():
    # 7 entries; conflicts (one > 0, another < 0) at w[0,0], w[0,1], w[1,0], w[1,1], b[0], b[1]
    assert merging.sign_conflicts(_vectors()) == pytest.approx(6 / 7)
    # a pair: tau1 and tau2 conflict at w[0,1], w[1,0], b[0], b[1] -> 4 of 7
    assert merging.sign_conflicts(_vectors()[:2]) == pytest.approx(4 / 7)
    # trimmed to 4 entries each (see test_ties_by_hand_with_trimming_and_scale): w[0,1], w[1,1], b[0]
    assert merging.sign_conflicts(_vectors(), density=0.55) == pytest.approx(3 / 7)


@given(seeds)
def test_sign_conflicts_of_a_vector_with_itself_scaled_is_zero(seed):
    tau = {"w": torch.randn(5, 5, generator=torch.Generator().manual_seed(seed))}
    assert merging.sign_conflicts([tau, {"w": 2.0 * tau["w"]}]) == 0.0
    assert merging.sign_conflicts([tau, {"w": -tau["w"]}]) == pytest.approx(1.0)


def test_sign_conflicts_of_independent_signs_match_the_formula():
    # independent random signs, all non-zero: P(conflict among n) = 1 - 2 ** (1 - n)
    gen = torch.Generator().manual_seed(0)
    vectors = [{"w": torch.randn(20000, generator=gen)} for _ in range(3)]
    assert merging.sign_conflicts(vectors) == pytest.approx(0.75, abs=0.02)


# --- validation ------------------------------------------------------------------------------------


def test_validation_names_the_argument():
    base, taus = _base(), _vectors()
    with pytest.raises(ValueError, match="'scale' parameter of task_arithmetic must be a finite number"):
        merging.task_arithmetic(base, taus, float("inf"))
    with pytest.raises(ValueError, match="'scale' parameter of ties_merge .* Got 'big'"):
        merging.ties_merge(base, taus, scale="big")
    with pytest.raises(ValueError, match=r"'density' parameter of ties_merge must be a float in \(0, 1\]. Got 0"):
        merging.ties_merge(base, taus, density=0)
    with pytest.raises(ValueError, match=r"'density' parameter of sign_conflicts .* Got 1.5"):
        merging.sign_conflicts(taus, density=1.5)
    with pytest.raises(ValueError, match=r"'drop_rate' parameter of dare must be a float in \[0, 1\). Got 1.0"):
        merging.dare(taus[0], 1.0)
    with pytest.raises(ValueError, match="'seed' parameter of dare must be an integer >= 0. Got -1"):
        merging.dare(taus[0], 0.5, seed=-1)
    with pytest.raises(ValueError, match="'task_vectors' parameter of task_arithmetic must be a non-empty"):
        merging.task_arithmetic(base, [], 1.0)
    with pytest.raises(ValueError, match="'task_vectors' parameter of sign_conflicts .* at least 2 .* Got 1 of them"):
        merging.sign_conflicts(taus[:1])
    with pytest.raises(ValueError, match="'finetuned' parameter of task_vectors must be a non-empty"):
        merging.task_vectors(base, base)
    with pytest.raises(ValueError, match="'base' parameter of task_vectors must be a torch.nn.Module or a state dict"):
        merging.task_vectors([1, 2], [base])
    with pytest.raises(ValueError, match="'task_vector' parameter of dare must be a torch.nn.Module or a state dict"):
        merging.dare("tau", 0.5)


def test_mismatched_keys_and_shapes_are_named():
    base, taus = _base(), _vectors()
    with pytest.raises(ValueError, match=r"task_vectors\[1\].* same keys"):
        merging.task_arithmetic(base, [taus[0], {"w": taus[1]["w"]}], 1.0)
    with pytest.raises(ValueError, match=r"same shape for every key. Got \(2, 2\) and \(4,\)"):
        merging.ties_merge(base, [{"w": torch.zeros(4), "b": torch.zeros(3)}])
    with pytest.raises(ValueError, match=r"'base' and 'finetuned\[0\]' parameters of task_vectors must have the same keys"):
        merging.task_vectors(base, [{"w": base["w"]}])
