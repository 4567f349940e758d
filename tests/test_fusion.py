"""Step 4, fusion: fuse, kd_loss, hint_loss, TransferObjective, interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kt_helpers import fusion, models

alphas = st.floats(0.0, 1.0)
temperatures = st.floats(0.5, 20.0)
seeds = st.integers(0, 2**16)


def _logits(seed: int, N: int = 6, C: int = 4, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    z_s = torch.randn(N, C, generator=gen, dtype=dtype) * 3  # (N, C)
    z_t = torch.randn(N, C, generator=gen, dtype=dtype) * 3  # (N, C)
    y = torch.randint(0, C, (N,), generator=gen)  # (N,)
    return z_s, z_t, y


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kd_oracle(z_s, z_t, y, alpha, T) -> float:
    """kd_loss from its definition, in numpy float64: CE over the labelled rows,
    KL(p || q) = sum p log(p / q) / N over all rows."""
    z_s, z_t, y = z_s.double().numpy(), z_t.double().numpy(), y.numpy()
    labelled = y >= 0
    if labelled.any():
        log_probs = np.log(_softmax(z_s[labelled]))
        ce = -log_probs[np.arange(labelled.sum()), y[labelled]].mean()
    else:
        ce = 0.0
    p, q = _softmax(z_t / T), _softmax(z_s / T)
    kl = (p * np.log(p / q)).sum() / len(y)
    return alpha * ce + (1 - alpha) * T**2 * kl


# --- fuse ----------------------------------------------------------------------------------------


@given(alpha=alphas, seed=seeds)
def test_fuse_tensors_is_the_weighted_sum(alpha, seed):
    gen = torch.Generator().manual_seed(seed)
    k_target, k_mapped = torch.randn(2, 3, 4, generator=gen)
    fused = fusion.fuse(k_target, k_mapped, alpha)
    torch.testing.assert_close(fused, alpha * k_target + (1 - alpha) * k_mapped)


@given(seed=seeds)
def test_fuse_ends_return_target_and_mapped(seed):
    gen = torch.Generator().manual_seed(seed)
    k_target, k_mapped = torch.randn(2, 5, generator=gen)
    assert torch.equal(fusion.fuse(k_target, k_mapped, 1.0), k_target)
    assert torch.equal(fusion.fuse(k_target, k_mapped, 0.0), k_mapped)
    assert torch.equal(fusion.fuse(k_target, k_mapped, 1), k_target)  # an int is a number too


def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    net.train()
    net(torch.randn(8, 3))  # moves the running statistics and the batch counter
    if seed:
        net(torch.randn(8, 3))
    return net


@given(alpha=alphas, seed=st.integers(0, 100))
def test_fuse_state_dicts_key_by_key(alpha, seed):
    target, mapped = _bn_net(0).state_dict(), _bn_net(seed + 1).state_dict()
    fused = fusion.fuse(target, mapped, alpha)
    assert list(fused) == list(target)
    for key, value in target.items():
        if torch.is_floating_point(value):
            torch.testing.assert_close(fused[key], alpha * value + (1 - alpha) * mapped[key])
        else:  # the batch counter is not averaged: it is the target's
            assert torch.equal(fused[key], value)
    assert not torch.equal(target["1.num_batches_tracked"], mapped["1.num_batches_tracked"])


def test_fuse_state_dict_ends():
    target, mapped = _bn_net(0).state_dict(), _bn_net(1).state_dict()
    at_one, at_zero = fusion.fuse(target, mapped, 1.0), fusion.fuse(target, mapped, 0.0)
    for key in target:
        assert torch.equal(at_one[key], target[key])
        if torch.is_floating_point(target[key]):
            assert torch.equal(at_zero[key], mapped[key])


def test_fuse_does_not_change_its_inputs():
    target, mapped = _bn_net(0).state_dict(), _bn_net(1).state_dict()
    before = {k: v.clone() for k, v in target.items()}
    fusion.fuse(target, mapped, 0.3)
    assert all(torch.equal(before[k], target[k]) for k in target)


def test_fuse_rejects_a_tensor_with_a_state_dict():
    with pytest.raises(ValueError, match=r"'k_target' and 'k_mapped'.*both be tensors.*Tensor and dict"):
        fusion.fuse(torch.zeros(2), {"w": torch.zeros(2)}, 0.5)


def test_fuse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"'k_target' and 'k_mapped'.*same shape.*\(2, 3\) and \(3, 2\)"):
        fusion.fuse(torch.zeros(2, 3), torch.zeros(3, 2), 0.5)


def test_fuse_rejects_mismatched_keys():
    with pytest.raises(ValueError, match=r"same keys.*only in 'k_target': \['b'\]; only in 'k_mapped': \['c'\]"):
        fusion.fuse({"a": torch.zeros(1), "b": torch.zeros(1)}, {"a": torch.zeros(1), "c": torch.zeros(1)}, 0.5)


def test_fuse_rejects_a_key_with_another_shape():
    with pytest.raises(ValueError, match=r"same shape for every key.*\(2,\) and \(3,\) for key 'w'"):
        fusion.fuse({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)


# --- kd_loss -------------------------------------------------------------------------------------


@given(alpha=alphas, T=temperatures, seed=seeds)
def test_kd_loss_matches_its_definition(alpha, T, seed):
    z_s, z_t, y = _logits(seed)
    loss = fusion.kd_loss(z_s, z_t, y, alpha=alpha, temperature=T)
    assert loss.shape == ()
    assert float(loss) == pytest.approx(kd_oracle(z_s, z_t, y, alpha, T), rel=1e-9, abs=1e-12)


def test_kd_loss_in_float32_matches_the_float64_oracle():
    z_s, z_t, y = _logits(3, N=32, C=10, dtype=torch.float32)
    loss = fusion.kd_loss(z_s, z_t, y, alpha=0.3, temperature=4.0)
    assert float(loss) == pytest.approx(kd_oracle(z_s, z_t, y, 0.3, 4.0), rel=1e-5)


def test_kd_loss_uses_batchmean_not_mean():
    """The KL term is summed over classes and averaged over samples only."""
    z_s, z_t, y = _logits(0, N=5, C=7)
    T = 2.0
    loss = fusion.kd_loss(z_s, z_t, y, alpha=0.0, temperature=T)
    p, log_q = F.softmax(z_t / T, dim=1), F.log_softmax(z_s / T, dim=1)
    per_sample = (p * (p.log() - log_q)).sum(dim=1)  # (N,)
    torch.testing.assert_close(loss, T**2 * per_sample.mean())


def test_kd_loss_ends():
    z_s, z_t, y = _logits(1)
    torch.testing.assert_close(fusion.kd_loss(z_s, z_t, y, alpha=1.0, temperature=3.0), F.cross_entropy(z_s, y))
    # alpha = 0 and student = teacher: nothing left to learn
    assert float(fusion.kd_loss(z_t, z_t, y, alpha=0.0, temperature=3.0)) == pytest.approx(0.0, abs=1e-12)


@given(alpha=alphas, T=temperatures, seed=seeds)
def test_kd_loss_gradient_wrt_student_logits(alpha, T, seed):
    """Autograd against the closed form: alpha (softmax(z_s) - onehot) / N + (1 - alpha) T (q - p) / N."""
    z_s, z_t, y = _logits(seed)
    N, C = z_s.shape
    z_s.requires_grad_(True)
    fusion.kd_loss(z_s, z_t, y, alpha=alpha, temperature=T).backward()
    q, p = F.softmax(z_s.detach() / T, dim=1), F.softmax(z_t / T, dim=1)
    hard = (F.softmax(z_s.detach(), dim=1) - F.one_hot(y, C)) / N
    torch.testing.assert_close(z_s.grad, alpha * hard + (1 - alpha) * T * (q - p) / N)


@given(T=temperatures, seed=seeds)
def test_kd_loss_soft_gradient_is_one_minus_alpha_T_q_minus_p_over_N(T, seed):
    z_s, z_t, y = _logits(seed)
    N = len(y)
    z_s.requires_grad_(True)
    fusion.kd_loss(z_s, z_t, y, alpha=0.0, temperature=T).backward()
    q, p = F.softmax(z_s.detach() / T, dim=1), F.softmax(z_t / T, dim=1)
    torch.testing.assert_close(z_s.grad, T * (q - p) / N)


def test_kd_loss_sends_no_gradient_to_the_teacher():
    z_s, z_t, y = _logits(2)
    z_s.requires_grad_(True)
    z_t.requires_grad_(True)
    fusion.kd_loss(z_s, z_t, y, alpha=0.5, temperature=2.0).backward()
    assert z_s.grad is not None
    assert z_t.grad is None


@given(alpha=alphas, T=temperatures, seed=seeds)
def test_kd_loss_unlabelled_samples_contribute_only_the_soft_term(alpha, T, seed):
    z_s, z_t, y = _logits(seed, N=8)
    y[::3] = -1  # rows 0, 3 and 6 are unlabelled
    assert float(fusion.kd_loss(z_s, z_t, y, alpha=alpha, temperature=T)) == pytest.approx(
        kd_oracle(z_s, z_t, y, alpha, T), rel=1e-9, abs=1e-12
    )
    # the gradient of an unlabelled row is the soft term's alone
    z_s.requires_grad_(True)
    fusion.kd_loss(z_s, z_t, y, alpha=alpha, temperature=T).backward()
    q, p = F.softmax(z_s.detach() / T, dim=1), F.softmax(z_t / T, dim=1)
    soft_grad = (1 - alpha) * T * (q - p) / len(y)
    torch.testing.assert_close(z_s.grad[y < 0], soft_grad[y < 0])


def test_kd_loss_with_no_label_is_the_soft_term():
    z_s, z_t, _ = _logits(4)
    y = torch.full((len(z_s),), -1)
    T, alpha = 3.0, 0.6
    soft = fusion.kd_loss(z_s, z_t, y, alpha=0.0, temperature=T)
    torch.testing.assert_close(fusion.kd_loss(z_s, z_t, y, alpha=alpha, temperature=T), (1 - alpha) * soft)


def test_kd_loss_rejects_mismatched_logits():
    with pytest.raises(ValueError, match=r"'student_logits' and 'teacher_logits'.*\(4, 3\) and \(4, 5\)"):
        fusion.kd_loss(torch.zeros(4, 3), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))


def test_kd_loss_rejects_targets_of_another_length():
    with pytest.raises(ValueError, match=r"'student_logits' and 'targets'.*number of rows.*Got 4 and 3"):
        fusion.kd_loss(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))


def test_kd_loss_rejects_1d_logits():
    with pytest.raises(ValueError, match=r"'student_logits'.*2 dimensions.*Got shape \(4,\)"):
        fusion.kd_loss(torch.zeros(4), torch.zeros(4), torch.zeros(4, dtype=torch.long))


def test_kd_loss_rejects_float_targets():
    with pytest.raises(ValueError, match=r"'targets'.*integer class indices.*torch.float32"):
        fusion.kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2))


def test_kd_loss_rejects_targets_below_minus_one():
    with pytest.raises(ValueError, match=r"'targets'.*-1 for unlabelled.*Got -2"):
        fusion.kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, -2]))


# --- hint_loss -----------------------------------------------------------------------------------


def test_hint_loss_is_the_mean_squared_error_through_the_map():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=gen), torch.randn(6, 5, generator=gen)
    torch.manual_seed(0)
    T = nn.Linear(3, 5)
    expected = ((T(s) - t) ** 2).sum() / (6 * 5)  # 1/(N q) sum ||T(s_n) - t_n||^2
    torch.testing.assert_close(fusion.hint_loss(s, t, T), expected)


def test_hint_loss_gradients_reach_student_and_map_not_teacher():
    s, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 2, requires_grad=True)
    T = nn.Linear(3, 2)
    fusion.hint_loss(s, t, T).backward()
    assert s.grad is not None and T.weight.grad is not None
    assert t.grad is None


def test_hint_loss_rejects_a_map_to_the_wrong_width():
    with pytest.raises(ValueError, match=r"'mapping'.*teacher's shape \(4, 2\).*Got \(4, 3\)"):
        fusion.hint_loss(torch.zeros(4, 3), torch.zeros(4, 2), nn.Linear(3, 3))


def test_hint_loss_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"'student_features' and 'teacher_features'.*Got 4 and 5"):
        fusion.hint_loss(torch.zeros(4, 3), torch.zeros(5, 2), nn.Linear(3, 2))


# --- TransferObjective ---------------------------------------------------------------------------


@pytest.fixture()
def student():
    torch.manual_seed(0)
    return models.MLP(hidden=(6,), in_features=4, num_classes=3)


def test_transfer_objective_indexes_the_cached_logits(student):
    gen = torch.Generator().manual_seed(0)
    X, teacher_logits = torch.randn(10, 4, generator=gen), torch.randn(10, 3, generator=gen)
    y = torch.randint(0, 3, (10,), generator=gen)
    index = torch.tensor([7, 2, 5])
    objective = fusion.distillation_objective(teacher_logits, alpha=0.3, temperature=2.0)
    expected = fusion.kd_loss(student(X[index]), teacher_logits[index], y[index], alpha=0.3, temperature=2.0)
    torch.testing.assert_close(objective(student, X[index], y[index], index), expected)


def test_transfer_objective_adds_the_weighted_hint(student):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(10, 4, generator=gen)
    teacher_logits, teacher_features = torch.randn(10, 3, generator=gen), torch.randn(10, 5, generator=gen)
    y = torch.randint(0, 3, (10,), generator=gen)
    mapping = nn.Linear(6, 5)
    alpha, beta, index = 0.4, 2.5, torch.tensor([1, 8, 3, 0])
    objective = fusion.TransferObjective(
        teacher_logits=teacher_logits, teacher_features=teacher_features, mapping=mapping,
        alpha=alpha, temperature=3.0, hint_weight=beta,
    )
    kd = fusion.kd_loss(student(X[index]), teacher_logits[index], y[index], alpha=alpha, temperature=3.0)
    hint = fusion.hint_loss(student.features(X[index]), teacher_features[index], mapping)
    torch.testing.assert_close(objective(student, X[index], y[index], index), kd + (1 - alpha) * beta * hint)


def test_hint_objective_is_alpha_ce_plus_weighted_hint(student):
    gen = torch.Generator().manual_seed(2)
    X, teacher_features = torch.randn(8, 4, generator=gen), torch.randn(8, 5, generator=gen)
    y = torch.tensor([0, 1, 2, -1, 0, 1, 2, -1])
    mapping = nn.Linear(6, 5)
    objective = fusion.hint_objective(teacher_features, mapping, alpha=0.25, hint_weight=3.0)
    index = torch.arange(8)
    labelled = y >= 0
    ce = F.cross_entropy(student(X)[labelled], y[labelled])
    hint = fusion.hint_loss(student.features(X), teacher_features, mapping)
    torch.testing.assert_close(objective(student, X, y, index), 0.25 * ce + 0.75 * 3.0 * hint)
    assert list(objective.parameters())  # the map is the objective's own parameter


def test_transfer_objective_caches_a_copy():
    teacher_logits = torch.randn(5, 3)
    objective = fusion.distillation_objective(teacher_logits)
    teacher_logits.zero_()
    assert not torch.equal(objective.teacher_logits, teacher_logits)


def test_transfer_objective_needs_knowledge():
    with pytest.raises(ValueError, match=r"'teacher_logits', 'teacher_features' or both\. Got neither"):
        fusion.TransferObjective()


def test_transfer_objective_needs_a_map_with_features():
    with pytest.raises(ValueError, match=r"'mapping'.*required with 'teacher_features'\. Got None"):
        fusion.TransferObjective(teacher_features=torch.zeros(4, 2))


def test_transfer_objective_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"'teacher_logits' and 'teacher_features'.*Got 4 and 5"):
        fusion.TransferObjective(
            teacher_logits=torch.zeros(4, 3), teacher_features=torch.zeros(5, 2), mapping=nn.Linear(2, 2)
        )


def test_transfer_objective_rejects_a_negative_hint_weight():
    with pytest.raises(ValueError, match=r"'hint_weight'.*>= 0\. Got -1\.0"):
        fusion.TransferObjective(teacher_logits=torch.zeros(4, 3), hint_weight=-1.0)


# --- interpolate and interpolation_curve ---------------------------------------------------------


def _pair():
    torch.manual_seed(0)
    a = models.MLP(hidden=(8,), in_features=4, num_classes=3)
    torch.manual_seed(1)
    b = models.MLP(hidden=(8,), in_features=4, num_classes=3)
    return a, b


@given(alpha=alphas)
def test_interpolate_is_fuse_of_the_weights(alpha):
    a, b = _pair()
    mixed = fusion.interpolate(a, b, alpha)
    expected = fusion.fuse(a.state_dict(), b.state_dict(), alpha)
    for key, value in mixed.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    assert mixed is not a


def test_interpolate_ends_and_inputs_unchanged():
    a, b = _pair()
    before = {k: v.clone() for k, v in a.state_dict().items()}
    X = torch.randn(5, 4)
    assert torch.equal(fusion.interpolate(a, b, 1.0)(X), a(X))
    assert torch.equal(fusion.interpolate(a, b, 0.0)(X), b(X))
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())


def test_interpolation_curve_scores_each_alpha():
    a, b = _pair()
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(20, 4, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    curve = fusion.interpolation_curve(a, b, X, y, alphas=[0.0, 0.5, 1.0])
    assert list(curve.columns) == ["alpha", "loss", "accuracy"]
    assert curve["alpha"].tolist() == [0.0, 0.5, 1.0]
    with torch.no_grad():
        for _, row in curve.iterrows():
            model = fusion.interpolate(a, b, row["alpha"])
            assert row["loss"] == pytest.approx(float(F.cross_entropy(model(X), y)), rel=1e-6)
            assert row["accuracy"] == pytest.approx(float((model(X).argmax(1) == y).float().mean()))
    assert len(fusion.interpolation_curve(a, b, X, y)) == 11  # 11 evenly spaced by default
