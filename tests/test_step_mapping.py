"""The per-step mapping of the case study (chapter 4, notebook 4): the RNN's state after rows
2, 4, 6, 8 mapped by one shared linear map to the matching row band of the CNN's pooled
feature map, and the per-step hint with its controls.

Training here is a few steps: the tests check the construction (bands, states, the shared
map, the objective and its controls), not accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score as sk_r2

from kt_helpers import extraction, mapping, metrics
from kt_helpers import protocols as P
from kt_helpers.models import DigitCNN, RowRNN

# --- row bands -----------------------------------------------------------------------------------


def test_row_bands_of_the_pooled_map_are_its_rows_oracle():
    torch.manual_seed(0)
    fmap = torch.randn(3, 32, 4, 4)  # (N, C, H, W), as DigitCNN's body.pool
    bands = mapping.row_bands(fmap)
    assert bands.shape == (3, 4, 128)
    for k in range(4):  # band k is row k of every channel, channel by channel
        expected = torch.cat([fmap[:, c, k, :] for c in range(32)], dim=1)  # (N, 128)
        assert torch.equal(bands[:, k], expected)


def test_row_bands_of_images_are_pairs_of_pixel_rows():
    X = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8)
    bands = mapping.row_bands(X)  # (N, 4, 16)
    assert bands.shape == (2, 4, 16)
    for k in range(4):
        assert torch.equal(bands[:, k], torch.cat([X[:, 0, 2 * k], X[:, 0, 2 * k + 1]], dim=1))


def test_row_bands_validates():
    with pytest.raises(ValueError, match="'feature_map' parameter of row_bands"):
        mapping.row_bands(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="'num_bands' parameter of row_bands must divide .* 8. Got 3"):
        mapping.row_bands(torch.zeros(2, 1, 8, 8), 3)


def test_the_teachers_pooled_map_gives_four_bands_of_128():
    X = torch.rand(5, 1, 8, 8)
    pooled = extraction.features(DigitCNN().eval(), X, "body.pool")
    assert pooled.shape == (5, 32, 4, 4)
    assert mapping.row_bands(pooled).shape == (5, 4, 128)


# --- the RNN's states ----------------------------------------------------------------------------


def test_states_end_with_the_features_and_read_rows_causally():
    torch.manual_seed(0)
    rnn = RowRNN(hidden_size=16).eval()
    X = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        states = rnn.states(X)  # (N, L, h)
        assert states.shape == (4, 8, 16)
        assert torch.equal(states[:, -1], rnn.features(X))
        # oracle: the state after l rows is the final state of the RNN run on those l rows alone
        for rows in (2, 5):
            out, _ = rnn.rnn(X[:, 0, :rows])  # (N, rows, h)
            torch.testing.assert_close(states[:, rows - 1], out[:, -1])


def test_step_states_picks_the_rows_and_keeps_the_mode():
    torch.manual_seed(0)
    rnn = RowRNN(hidden_size=8).train()
    X = torch.rand(3, 1, 8, 8)
    h = mapping.step_states(rnn, X)
    assert h.shape == (3, 4, 8) and not h.requires_grad and rnn.training
    with torch.no_grad():
        torch.testing.assert_close(h, rnn.states(X)[:, [1, 3, 5, 7]])


def test_step_states_validates():
    X = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="'rows' parameter of step_states must hold row counts in 1..8"):
        mapping.step_states(RowRNN(hidden_size=4), X, rows=(0, 4))
    with pytest.raises(ValueError, match="'rows' parameter of step_states"):
        mapping.step_states(RowRNN(hidden_size=4), X, rows=(9,))
    with pytest.raises(ValueError, match="'model' parameter of step_states must have a 'states' method"):
        mapping.step_states(DigitCNN(), X)


# --- one shared map ------------------------------------------------------------------------------


def test_a_shared_map_is_recovered_exactly_at_every_step():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(60, 4, 5, generator=g)  # (N, S, p)
    W, b = torch.randn(7, 5, generator=g), torch.randn(7, generator=g)
    t = h @ W.T + b  # (N, S, d): the same map at every step
    T = mapping.fit_step_map(h, t, ridge=0.0)
    torch.testing.assert_close(T.weight_, W, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(T.bias_, b, atol=1e-4, rtol=1e-4)
    assert all(abs(r["r2"] - 1.0) < 1e-8 for r in mapping.step_scores(T, h, t))


def test_the_shared_map_is_least_squares_on_the_stacked_steps():
    g = torch.Generator().manual_seed(1)
    h, t = torch.randn(30, 4, 3, generator=g), torch.randn(30, 4, 6, generator=g)
    T = mapping.fit_step_map(h, t, ridge=0.0)
    # oracle: numpy's least squares on the stacked pairs, with a column of ones for the bias
    A = np.c_[h.reshape(120, 3).double().numpy(), np.ones(120)]
    coef, *_ = np.linalg.lstsq(A, t.reshape(120, 6).double().numpy(), rcond=None)
    np.testing.assert_allclose(T.weight_.double().numpy(), coef[:3].T, atol=1e-5)
    np.testing.assert_allclose(T.bias_.double().numpy(), coef[3], atol=1e-5)


def test_step_scores_match_scikit_learn_and_linear_cka():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(50, 4, 6, generator=g, dtype=torch.float64)
    t = h @ torch.randn(6, 9, generator=g, dtype=torch.float64) + 0.5 * torch.randn(50, 4, 9, generator=g,
                                                                                      dtype=torch.float64)
    T = mapping.fit_step_map(h, t)
    scores = mapping.step_scores(T, h, t)
    assert [r["rows"] for r in scores] == [2, 4, 6, 8]
    for k, r in enumerate(scores):
        pred = (h[:, k] @ T.weight_.T + T.bias_).numpy()
        assert r["r2"] == pytest.approx(sk_r2(t[:, k].numpy(), pred, multioutput="variance_weighted"), abs=1e-10)
        assert r["cka"] == pytest.approx(metrics.linear_cka(h[:, k], t[:, k]), abs=1e-12)
        assert 0.0 <= r["cka"] <= 1.0 and r["r2"] < 1.0  # noise: not a perfect map


def test_a_shared_map_cannot_fit_steps_that_need_different_maps():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(80, 4, 4, generator=g)
    t = torch.stack([h[:, k] @ torch.randn(4, 4, generator=g) for k in range(4)], dim=1)  # a map per step
    shared = mapping.step_scores(mapping.fit_step_map(h, t), h, t)
    assert max(r["r2"] for r in shared) < 0.99  # one shared map is a real constraint


def test_fit_step_map_and_step_scores_validate():
    h, t = torch.zeros(5, 4, 3), torch.zeros(5, 3, 2)
    with pytest.raises(ValueError, match="'states' and 'bands' parameters of fit_step_map .* Got \\(5, 4\\) and \\(5, 3\\)"):
        mapping.fit_step_map(h, t)
    with pytest.raises(ValueError, match="'states' parameter of fit_step_map"):
        mapping.fit_step_map(torch.zeros(5, 3), t)
    g = torch.Generator().manual_seed(0)
    h, t = torch.randn(10, 4, 3, generator=g), torch.randn(10, 4, 2, generator=g)
    with pytest.raises(ValueError, match="'rows' parameter of step_scores must name the 4 steps"):
        mapping.step_scores(mapping.fit_step_map(h, t), h, t, rows=(2, 4))


# --- the per-step hint ---------------------------------------------------------------------------


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.tensor([0, 1, -1, -1, 2, -1][:n])
    return X, y, torch.arange(n)


def test_the_step_hint_objective_is_ce_plus_the_mean_squared_error_of_the_shared_map():
    torch.manual_seed(0)
    X, y, index = _batch()
    model = RowRNN(hidden_size=8)
    targets = torch.randn(6, 4, 5)
    objective = P.StepHintObjective(targets, hidden_size=8, alpha=0.3, hint_weight=2.0)
    loss = objective(model, X, y, index)
    # oracle, written out: the state after rows 2, 4, 6, 8 through the one map, against each target
    states = model.states(X)
    W, b = objective.mapping.weight, objective.mapping.bias
    hint = sum(((states[:, r - 1] @ W.T + b - targets[:, k]) ** 2).sum() for k, r in enumerate((2, 4, 6, 8)))
    hint = hint / (6 * 4 * 5)
    ce = F.cross_entropy(model(X)[y >= 0], y[y >= 0])
    torch.testing.assert_close(loss, 0.3 * ce + 0.7 * 2.0 * hint)


def test_at_alpha_one_the_step_hint_is_plain_cross_entropy():
    torch.manual_seed(0)
    X, y, index = _batch()
    model = RowRNN(hidden_size=8)
    objective = P.StepHintObjective(torch.randn(6, 4, 5), hidden_size=8, alpha=1.0)
    torch.testing.assert_close(objective(model, X, y, index), F.cross_entropy(model(X)[y >= 0], y[y >= 0]))


def test_the_step_hint_reaches_the_early_steps():
    """The hint on the state after 2 rows sends gradient to the first rows' pixels only through step 2."""
    torch.manual_seed(0)
    X, y, index = _batch()
    X.requires_grad_(True)
    model = RowRNN(hidden_size=8)
    targets = torch.zeros(6, 4, 5)
    P.StepHintObjective(targets, hidden_size=8, alpha=0.0, rows=(2, 4, 6, 8))(model, X, y, index).backward()
    early = X.grad[:, :, :2].abs().sum()
    X.grad = None
    P.StepHintObjective(targets[:, :1], hidden_size=8, alpha=0.0, rows=(2,))(model, X, y, index).backward()
    assert early > 0 and X.grad[:, :, 2:].abs().sum() == 0  # the state after 2 rows has read rows 1-2 only


def test_step_hint_objective_validates():
    with pytest.raises(ValueError, match="'step_targets' parameter of StepHintObjective must have one target per step"):
        P.StepHintObjective(torch.zeros(6, 3, 5), hidden_size=8)
    with pytest.raises(ValueError, match="'alpha'"):
        P.StepHintObjective(torch.zeros(6, 4, 5), hidden_size=8, alpha=1.5)
    with pytest.raises(ValueError, match="'hint_weight'"):
        P.StepHintObjective(torch.zeros(6, 4, 5), hidden_size=8, hint_weight=-1.0)


@pytest.mark.parametrize("method,width", [("trained_teacher", 128), ("untrained_teacher", 128), ("pixels", 16)])
def test_step_hint_targets_are_standardised_bands(method, width):
    X = torch.rand(20, 1, 8, 8)
    teacher = DigitCNN().eval()
    targets = P.step_hint_targets(method, X, teacher=teacher, seed=0)
    assert targets.shape == (20, 4, width)
    flat = targets.reshape(20, -1)
    torch.testing.assert_close(flat.mean(0), torch.zeros(flat.shape[1]), atol=1e-5, rtol=0)
    assert float(flat.pow(2).mean()) == pytest.approx(1.0, abs=1e-5)


def test_pixel_targets_are_the_bands_rescaled():
    X = torch.rand(20, 1, 8, 8)
    bands = mapping.row_bands(X).reshape(20, -1)
    targets = P.step_hint_targets("pixels", X).reshape(20, -1)
    centred = bands - bands.mean(0)
    torch.testing.assert_close(targets, centred / centred.pow(2).mean().sqrt())


def test_the_untrained_teacher_depends_on_the_seed_only():
    X = torch.rand(10, 1, 8, 8)
    a = P.step_hint_targets("untrained_teacher", X, seed=3)
    torch.manual_seed(123)  # whatever ran before
    assert torch.equal(a, P.step_hint_targets("untrained_teacher", X, seed=3))
    assert not torch.equal(a, P.step_hint_targets("untrained_teacher", X, seed=4))


def test_step_hint_targets_validate():
    X = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="'teacher' parameter of step_hint_targets is required"):
        P.step_hint_targets("trained_teacher", X)
    with pytest.raises(ValueError, match="'method' parameter of step_hint_targets must be one of"):
        P.step_hint_targets("labels", X)


def test_train_step_hint_starts_from_the_same_weights_and_batches_as_its_controls(monkeypatch):
    X, y, _ = _batch()
    targets = P.step_hint_targets("pixels", X)
    with pytest.raises(ValueError, match="'step_targets' parameter of train_step_hint"):
        P.train_step_hint(X, y, targets[:3], seed=0, steps=1)
    seen = []

    def record(model, X, y, *, seed, num_epochs, **kwargs):  # what fit would start from
        seen.append(({k: v.clone() for k, v in model.state_dict().items()}, seed, num_epochs))

    monkeypatch.setattr(P, "fit", record)
    torch.manual_seed(99)  # whatever ran before
    P.train_step_hint(X, y, targets, seed=5, steps=3, hidden_size=8)
    P.train_hint(X, y, targets[:, -1], seed=5, steps=3, hidden_size=8)
    P.train_with_targets(X, y, P.one_hot(y.clamp(min=0)), seed=5, alpha=0.5, steps=3, hidden_size=8)
    first = seen[0]
    for other in seen[1:]:
        assert other[1:] == first[1:]  # batch order (seed) and schedule
        for a, b in zip(first[0].values(), other[0].values(), strict=True):
            assert torch.equal(a, b)  # initial weights


def test_run_step_hint_reports_every_method_and_every_step():
    out = P.run_step_hint(seeds=(0,), transfer_size=20, steps=2, teacher_epochs=1)
    assert [r["seed"] for r in out["teacher"]] == [0]
    assert {r["method"] for r in out["errors"]} == {"labels_alone", *P.HINT_METHODS}
    assert all(0.0 <= r["test_error"] <= 1.0 and 0.0 <= r["val_error"] <= 1.0 for r in out["errors"])
    students = {"untrained_student", "labels_alone", *P.HINT_METHODS}
    assert {(r["student"], r["rows"]) for r in out["scores"]} == {(s, k) for s in students for k in (2, 4, 6, 8)}
    assert all(0.0 <= r["cka"] <= 1.0 for r in out["scores"])


def test_run_step_hint_can_skip_labels_alone_and_validates():
    out = P.run_step_hint(seeds=(1,), transfer_size=10, steps=1, teacher_epochs=1, labels_alone=False)
    assert {r["method"] for r in out["errors"]} == set(P.HINT_METHODS)
    assert "labels_alone" not in {r["student"] for r in out["scores"]}
    with pytest.raises(ValueError, match="'seeds' parameter of run_step_hint"):
        P.run_step_hint(seeds=())


def test_run_step_hint_with_a_shared_split_trains_one_teacher():
    out = P.run_step_hint(seeds=(0, 1), transfer_size=10, steps=1, teacher_epochs=1, labels_alone=False, split_seed=3)
    assert [r["seed"] for r in out["teacher"]] == [3]  # one split, one teacher
    assert {r["seed"] for r in out["errors"]} == {0, 1}
