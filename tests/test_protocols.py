"""The honest protocol of the case study (kt_helpers.protocols) and the headline of its JSON.

Training here is a few steps: the tests check the design (disjoint sets, one
objective for a method and its controls, the statistics), not accuracy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kt_helpers import case_study as cs
from kt_helpers import data, fusion
from kt_helpers import protocols as P

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "case_study.json"


# --- the split ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_teachers_images_are_disjoint_from_the_students(seed):
    idx = P.disjoint_indices(seed)
    names = list(idx)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(idx[a]) & set(idx[b]), (a, b)
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(1797))  # nothing lost
    # the same test and validation images as every other experiment of the book
    splits = data.make_splits(0.05, seed=seed)
    X, _ = data.load_digits_tensors()
    assert torch.equal(X[torch.as_tensor(idx["test"])], splits.X_test)
    assert torch.equal(X[torch.as_tensor(idx["val"])], splits.X_val)


def test_a_broken_split_would_be_caught():
    """The disjointness check can fail: a teacher given the transfer images shares them."""
    idx = P.disjoint_indices(0)
    leaky = np.concatenate([idx["teacher"], idx["transfer"]])
    assert set(leaky) & set(idx["transfer"])


def test_omitted_class_leaves_the_teacher_alone_and_the_student_without_it():
    full, omitted = P.disjoint_indices(2), P.disjoint_indices(2, exclude_classes=(3,))
    _, y = data.load_digits_tensors()
    np.testing.assert_array_equal(full["teacher"], omitted["teacher"])
    for name in ("labelled", "transfer"):
        assert not (y[torch.as_tensor(omitted[name])] == 3).any(), name
        assert set(omitted[name]) <= set(full[name])
    assert (y[torch.as_tensor(omitted["teacher"])] == 3).sum() > 20


def test_student_views_are_nested_and_hide_nothing_they_should_not():
    s = P.disjoint_splits(0)
    small, large = s.student(50), s.student(150)
    assert torch.equal(large.X_transfer[:50], small.X_transfer)
    assert (small.y_student[len(small.y_labelled):] == -1).all()
    assert len(s.student().y_transfer) == s.sizes()["transfer"]
    with pytest.raises(ValueError, match="'transfer_size'"):
        s.student(10_000)


def test_disjoint_indices_rejects_bad_input():
    with pytest.raises(ValueError, match="'teacher_fraction'"):
        P.disjoint_indices(0, teacher_fraction=1.5)
    with pytest.raises(ValueError, match="'exclude_classes'"):
        P.disjoint_indices(0, exclude_classes=(10,))


# --- targets and the one objective -----------------------------------------------------------


@pytest.mark.parametrize("entropy", [0.0, 0.1, 0.8, 2.0])
def test_smoothing_reaches_the_asked_entropy_and_keeps_the_class(entropy):
    labels = torch.tensor([0, 3, 9])
    p = P.smoothed_to_entropy(labels, entropy)
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert torch.equal(p.argmax(1), labels)
    assert P.mean_entropy(p) == pytest.approx(entropy, abs=1e-6)
    off = p.clone()
    off[torch.arange(3), labels] = float("nan")
    assert torch.allclose(off[~off.isnan()], off[~off.isnan()][0])  # the rest spread evenly


def test_smoothing_rejects_an_impossible_entropy():
    with pytest.raises(ValueError, match="'entropy'"):
        P.smoothed_to_entropy(torch.tensor([0]), math.log(10) + 0.1)


def test_target_objective_with_soft_targets_is_the_distillation_loss():
    torch.manual_seed(0)
    z_s, z_t = torch.randn(6, 10), torch.randn(6, 10)
    y = torch.tensor([1, -1, 4, -1, -1, 7])
    objective = P.TargetObjective(P.soft_targets(z_t, 3.0), alpha=0.3, temperature=3.0)
    index = torch.arange(6)
    got = objective(lambda X: X, z_s, y, index)  # the "model" returns its input: X are the logits
    expected = fusion.kd_loss(z_s, z_t, y, alpha=0.3, temperature=3.0)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_target_objective_with_one_hot_targets_is_cross_entropy():
    torch.manual_seed(1)
    z = torch.randn(5, 10)
    labels = torch.tensor([0, 2, 2, 5, 9])
    objective = P.TargetObjective(P.one_hot(labels), alpha=0.0, temperature=1.0)
    got = objective(lambda X: X, z, torch.full((5,), -1), torch.arange(5))
    assert float(got) == pytest.approx(float(F.cross_entropy(z, labels)), rel=1e-6)


def test_a_method_and_its_control_start_from_the_same_student():
    s = P.disjoint_splits(0).student(20)
    X, y = s.X_train, s.y_student
    soft = P.train_with_targets(X, y, P.one_hot(s.y_train), seed=4, alpha=0.5, steps=1)
    also = P.train_with_targets(X, y, P.one_hot(s.y_train), seed=4, alpha=0.5, steps=1)
    other = P.train_with_targets(X, y, P.smoothed_to_entropy(s.y_train, 1.0), seed=4, alpha=0.5, steps=1)
    a, b, c = (m.state_dict()["head.weight"] for m in (soft, also, other))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_epochs_for_steps():
    assert P.epochs_for_steps(57, 400) == 400
    assert P.epochs_for_steps(600, 400) == 40
    assert P.epochs_for_steps(65, 3) == 2


# --- statistics and choice ---------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5, 12])
def test_paired_ci_matches_scipy(k):
    from scipy import stats

    rng = np.random.default_rng(k)
    a, b = rng.normal(0.1, 0.02, k), rng.normal(0.12, 0.02, k)
    r = P.paired_ci(a.tolist(), b.tolist())
    d = a - b
    lo, hi = stats.t.interval(0.95, k - 1, loc=d.mean(), scale=stats.sem(d))
    assert r["mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert r["ci95"] == pytest.approx([lo, hi], abs=1e-12)
    assert r["seeds"] == k and r["differences"] == pytest.approx(d.tolist())


def test_paired_ci_known_quantile_and_bad_input():
    r = P.paired_ci([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5)  # mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776445
    half = 2.776445105 * math.sqrt(2.5) / math.sqrt(5)
    assert r["ci95"] == pytest.approx([3 - half, 3 + half], abs=1e-8)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        P.paired_ci([0.1], [0.2])


def test_selection_reports_ties_and_breaks_them_toward_distillation():
    grid = [{"alpha": a, "temperature": t, "val_error_mean": e}
            for a, t, e in [(0.0, 1.0, 0.05), (0.5, 1.0, 0.05), (0.0, 4.0, 0.05), (0.5, 8.0, 0.06)]]
    choice = P.select_on_validation(grid)
    assert (choice["alpha"], choice["temperature"]) == (0.0, 4.0)
    assert choice["ties"] == [[0.0, 1.0], [0.5, 1.0], [0.0, 4.0]]
    grid[3]["val_error_mean"] = 0.01
    assert P.select_on_validation(grid)["ties"] == [[0.5, 8.0]]


def test_run_honest_wiring():
    config = P.HonestConfig(seeds=(0, 1), sizes=(10, 20), teacher_epochs=1, steps=1, selection_seeds=(0, 1),
                            selection_size=10, temperatures=(1.0, 4.0), omitted_seeds=(0, 1),
                            omitted_temperatures=(4.0,), hint_size=20)
    out = P.run_honest(config)
    _check_headline(out["headline"], min_seeds=2)
    assert len(out["honest"]["sweep"]) == 2 * (1 + 2 * 4)
    json.dumps(out)


# --- the stored results --------------------------------------------------------------------------


def _check_headline(h: dict, *, min_seeds: int) -> None:
    s = h["soft_vs_argmax_small_transfer"]
    assert isinstance(s["transfer_size"], int) and s["transfer_size"] <= 150
    assert isinstance(s["temperature"], float) and s["temperature"] > 0
    assert isinstance(s["seeds"], int) and s["seeds"] >= min_seeds
    assert -1.0 <= s["mean_paired_difference"] <= 1.0
    lo, hi = s["ci95"]
    assert lo <= s["mean_paired_difference"] <= hi
    o = h["omitted_class"]
    assert o["class"] == 3 and isinstance(o["seeds"], int) and o["seeds"] >= min(3, min_seeds)
    for key in ("soft_recall", "soft_recall_bias_shifted", "argmax_recall_bias_shifted"):
        assert isinstance(o[key], float) and 0.0 <= o[key] <= 1.0, key
    c = h["hint_controls"]
    assert isinstance(c["seeds"], int) and c["seeds"] >= min_seeds
    for key in ("trained_teacher_error", "untrained_teacher_error", "pixels_error"):
        assert isinstance(c[key], float) and 0.0 <= c[key] <= 1.0, key
    assert h["teacher_saw_transfer_labels"] is False


@pytest.mark.skipif(not RESULTS.exists(), reason="the benchmark has not been run")
def test_stored_headline_has_the_right_types_and_ranges():
    results = json.loads(RESULTS.read_text())
    _check_headline(results["headline"], min_seeds=5)
    assert results["headline"]["omitted_class"]["seeds"] >= 3
    assert results["honest"]["teacher_saw_transfer_labels"] is False
    assert results["label_relay"]["teacher_saw_transfer_labels"] is True
    assert len({p["transfer_size"] for p in results["honest"]["paired"]}) >= 3
    assert len(results["honest"]["selection"]["seeds"]) >= 3
    assert "processor" in results["machine"]
    # today's keys, computed under the label-relay design, are kept
    assert results["label_relay"]["distilled_error"] == results["distilled_error"]
    assert cs.load_results(str(RESULTS)) == results
