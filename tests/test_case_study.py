"""The case study's configuration and runners (chapter 4) and its benchmark's JSON.

Everything here trains for one or two epochs: the tests check wiring
(alignment of cached knowledge, shapes, keys), not accuracy.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from kt_helpers import case_study as cs
from kt_helpers import data, extraction, fusion, metrics, models, train

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = ROOT / "benchmarks" / "case_study.py"
RESULTS = ROOT / "benchmarks" / "results" / "case_study.json"

TINY = dict(
    seeds=(0, 1), teacher_epochs=1, labelled_epochs=1, transfer_epochs=1, full_epochs=1, hidden_size=8
)


@pytest.fixture(scope="module")
def tiny() -> cs.CaseStudyConfig:
    return cs.CaseStudyConfig(**TINY)


@pytest.fixture(scope="module")
def teacher(splits, tiny) -> models.DigitCNN:
    return cs.train_teacher(splits, tiny, seed=0)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"alpha": 1.5}, "'alpha' parameter of CaseStudyConfig"),
        ({"hint_alpha": -0.1}, "'hint_alpha'"),
        ({"temperature": 0.0}, "'temperature'"),
        ({"cell": "rnn"}, "'cell'"),
        ({"transfer_epochs": 0}, "'transfer_epochs'"),
        ({"labelled_lr": -1.0}, "'labelled_lr'"),
        ({"hint_weight": -1.0}, "'hint_weight'"),
        ({"seeds": ()}, "'seeds'"),
        ({"seeds": (0, -1)}, "'seeds'"),
    ],
)
def test_config_rejects_bad_settings(change, match):
    with pytest.raises(ValueError, match=match):
        cs.CaseStudyConfig(**change)


def test_config_replace_and_dict_round_trip():
    config = cs.CaseStudyConfig(seeds=[3, 4])
    assert config.seeds == (3, 4)
    changed = config.replace(alpha=0.5)
    assert changed.alpha == 0.5 and changed.seeds == config.seeds
    assert config.replace() == config
    assert cs.CaseStudyConfig(**{**changed.as_dict(), "seeds": tuple(changed.seeds)}) == changed
    assert json.loads(json.dumps(config.as_dict()))["seeds"] == [3, 4]


# --- data ------------------------------------------------------------------------------------


def test_shift_images_matches_slicing_oracle():
    X = torch.rand(5, 1, 8, 8)
    down, right = cs.shift_images(X, [(1, 0), (0, 1)]).split(5)
    expected_down = torch.zeros_like(X)
    expected_down[..., 1:, :] = X[..., :-1, :]
    expected_right = torch.zeros_like(X)
    expected_right[..., :, 1:] = X[..., :, :-1]
    torch.testing.assert_close(down, expected_down)
    torch.testing.assert_close(right, expected_right)
    negative = cs.shift_images(X, [(-1, -1)])
    torch.testing.assert_close(negative[..., :-1, :-1], X[..., 1:, 1:])
    assert float(negative[..., -1, :].abs().sum()) == 0.0
    assert float(negative[..., :, -1].abs().sum()) == 0.0


def test_shift_images_rejects_bad_input():
    with pytest.raises(ValueError, match="'X' parameter of shift_images"):
        cs.shift_images(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="'shifts' parameter of shift_images"):
        cs.shift_images(torch.zeros(2, 1, 8, 8), [(8, 0)])


def test_transfer_set_hides_the_transfer_labels(splits):
    X, y = cs.transfer_set(splits)
    n_lab = len(splits.y_labelled)
    torch.testing.assert_close(X, splits.X_train)
    assert torch.equal(y[:n_lab], splits.y_labelled)
    assert bool((y[n_lab:] == -1).all())
    X_aug, y_aug = cs.transfer_set(splits, augment=True)
    assert len(X_aug) == 5 * len(X) and len(y_aug) == len(X_aug)
    assert torch.equal(y_aug[: len(y)], y) and bool((y_aug[len(y):] == -1).all())


def test_all_labels_set_keeps_labels_with_their_shifted_images(splits):
    X, y = cs._all_labels_set(splits, augment=True)
    n = len(splits.y_train)
    for k in range(5):
        assert torch.equal(y[k * n : (k + 1) * n], splits.y_train)


def test_for_fraction_keeps_the_number_of_steps():
    config = cs.CaseStudyConfig(labelled_epochs=300, batch_size=64)
    for fraction in (0.05, 0.2, 0.5):
        sub = config.for_fraction(fraction)
        assert sub.label_fraction == fraction
        steps = sub.labelled_epochs * math.ceil(len(data.make_splits(fraction).y_labelled) / 64)
        assert steps == pytest.approx(600, rel=0.25)


# --- small helpers -------------------------------------------------------------------------


def test_standardise_centres_and_scales():
    gen = torch.Generator().manual_seed(0)
    F = torch.rand(50, 6, generator=gen) * torch.tensor([1.0, 10.0, 0.0, 3.0, 50.0, 2.0])  # a dead column
    Z = cs.standardise(F)
    torch.testing.assert_close(Z.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    assert float(Z.pow(2).mean()) == pytest.approx(1.0, abs=1e-5)
    assert metrics.linear_cka(Z, F) == pytest.approx(1.0, abs=1e-6)  # geometry kept
    held_out = torch.rand(7, 6, generator=gen)
    expected = (held_out - F.mean(0)) / (F - F.mean(0)).pow(2).mean().sqrt()
    torch.testing.assert_close(cs.standardise(held_out, like=F), expected)


def test_standardise_rejects_bad_input():
    with pytest.raises(ValueError, match="'features' parameter of standardise"):
        cs.standardise(torch.zeros(5))
    with pytest.raises(ValueError, match="'like' parameter of standardise"):
        cs.standardise(torch.zeros(5, 2), like=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="must vary"):
        cs.standardise(torch.ones(5, 2))


def test_bias_shift_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(60, 4, generator=gen)
    logits[:, 2] -= 2.0  # class 2 is under-predicted
    y = torch.randint(0, 4, (60,), generator=gen)
    shifts = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]

    def acc(shift):
        z = logits.clone()
        z[:, 2] += shift
        return float((z.argmax(1) == y).float().mean())

    best = cs.bias_shift(logits, y, 2, shifts)
    assert acc(best) == max(acc(s) for s in shifts)
    assert best == min(s for s in shifts if acc(s) == acc(best))  # ties: the smallest
    with pytest.raises(ValueError, match="'cls' parameter of bias_shift"):
        cs.bias_shift(logits, y, 4)


def test_error_rate_is_one_minus_accuracy(splits, teacher):
    assert cs.error_rate(teacher, splits) == pytest.approx(1 - train.evaluate(teacher, splits.X_test, splits.y_test))
    assert cs.error_rate(teacher, splits, "val") == pytest.approx(
        1 - train.evaluate(teacher, splits.X_val, splits.y_val))
    with pytest.raises(ValueError, match="'split' parameter of error_rate"):
        cs.error_rate(teacher, splits, "train")


def test_as_percent_formats_columns():
    import pandas as pd

    frame = pd.DataFrame({"error": [0.1234, 0.5], "epochs": [30, 60]})
    out = cs.as_percent(frame, ["error"])
    assert out["error"].tolist() == ["12.3%", "50.0%"] and out["epochs"].tolist() == [30, 60]
    assert frame["error"].tolist() == [0.1234, 0.5]  # the input is unchanged
    assert cs.as_percent(frame["error"], decimals=0).tolist() == ["12%", "50%"]
    with pytest.raises(ValueError, match="'columns' parameter of as_percent"):
        cs.as_percent(frame, ["accuracy"])


def test_the_package_ships_the_benchmarks_results_unchanged():
    """Colab installs only the package: its copy must be the benchmark's file, byte for byte
    (benchmarks/case_study.py writes both)."""
    stored = ROOT / cs.RESULTS_PATH
    packaged = cs.packaged_results_file()
    assert packaged.is_file(), f"{packaged} is missing: re-run benchmarks/case_study.py"
    assert packaged.read_bytes() == stored.read_bytes(), (
        f"{packaged} differs from {stored}: re-run benchmarks/case_study.py, which writes both"
    )
    import tomllib

    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "results/*.json" in data_files["kt_helpers"], "pyproject.toml does not ship the results"


def test_load_results_outside_the_repository_reads_the_packaged_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no _config.yml/_toc.yml above: as on Colab
    assert cs.load_results() == json.loads(cs.packaged_results_file().read_text())
    monkeypatch.setattr(cs, "PACKAGED_RESULTS_PATH", "results/missing.json")
    assert cs.load_results() is None


def test_load_results(tmp_path):
    assert cs.load_results(str(tmp_path / "missing.json")) is None
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"num_seeds": 5}))
    assert cs.load_results(str(path)) == {"num_seeds": 5}


# --- alignment of cached knowledge under shuffling -------------------------------------------


class _CheckingObjective(fusion.TransferObjective):
    """A TransferObjective that also recomputes the teacher on each batch and
    records whether the cached rows it indexes are that batch's own."""

    def __init__(self, teacher, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_teacher", teacher)
        self.max_gap = 0.0
        self.batches = 0
        self.seen = []

    def forward(self, model, X, y, index):
        with torch.no_grad():
            live = self._teacher(X)  # (B, C) computed from the batch's own images
        gap = float((self.teacher_logits[index] - live).abs().max())
        self.max_gap = max(self.max_gap, gap)
        self.batches += 1
        self.seen.append(index.clone())
        return super().forward(model, X, y, index)


def test_cached_logits_stay_aligned_with_shuffled_batches(splits, teacher):
    X, y = cs.transfer_set(splits)
    cached = extraction.logits(teacher, X)  # (N, 10), one row per training sample
    objective = _CheckingObjective(teacher, teacher_logits=cached, alpha=0.0, temperature=2.0)
    student = models.RowRNN(hidden_size=8)
    train.fit(student, X, y, objective=objective, num_epochs=2, batch_size=64, seed=3)
    assert objective.batches == 2 * math.ceil(len(y) / 64)
    assert objective.max_gap < 1e-4
    first_epoch = torch.cat(objective.seen[: math.ceil(len(y) / 64)])
    assert sorted(first_epoch.tolist()) == list(range(len(y)))  # every sample once per epoch
    assert first_epoch.tolist() != list(range(len(y)))  # ... in shuffled order


def test_misaligned_cache_is_detected(splits, teacher):
    """The check above has teeth: a cache in the wrong order is caught."""
    X, y = cs.transfer_set(splits)
    cached = extraction.logits(teacher, X).flip(0)  # rows no longer match their samples
    objective = _CheckingObjective(teacher, teacher_logits=cached, alpha=0.0, temperature=2.0)
    train.fit(models.RowRNN(hidden_size=8), X, y, objective=objective, num_epochs=1, seed=3)
    assert objective.max_gap > 1e-2


def test_live_teacher_gives_the_cached_loss(splits, teacher):
    X, y = cs.transfer_set(splits)
    index = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:64]
    cached = fusion.distillation_objective(extraction.logits(teacher, X), alpha=0.3, temperature=2.0)
    live = cs.LiveTeacherObjective(teacher, alpha=0.3, temperature=2.0)
    student = models.RowRNN(hidden_size=8).eval()
    torch.testing.assert_close(
        live(student, X[index], y[index], index), cached(student, X[index], y[index], index)
    )


def test_live_teacher_is_not_trained(splits, teacher):
    X, y = cs.transfer_set(splits)
    before = extraction.weights(teacher)
    live = cs.LiveTeacherObjective(teacher, alpha=0.0, temperature=2.0)
    train.fit(models.RowRNN(hidden_size=8), X[:128], y[:128], objective=live, num_epochs=1)
    for key, value in extraction.weights(teacher).items():
        assert torch.equal(value, before[key])


# --- runners -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", cs.METHODS)
def test_every_method_trains_a_student(method, splits, tiny, teacher):
    run = cs.train_student(method, splits, tiny, seed=0, teacher=teacher)
    assert isinstance(run.model, models.RowRNN)
    assert (run.mapping is not None) == ("hint" in method)
    assert 0.0 <= cs.error_rate(run.model, splits) <= 1.0


@pytest.mark.parametrize("standardised", [True, False])
def test_hint_targets_are_standardised_unless_asked(standardised, splits, tiny, teacher, monkeypatch):
    seen = {}

    class Recording(fusion.TransferObjective):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(cs, "TransferObjective", Recording)
    cs.train_student("hint", splits, tiny.replace(hint_standardise=standardised), seed=0, teacher=teacher)
    X, _ = cs.transfer_set(splits)
    raw = extraction.features(teacher, X, cs.TEACHER_FEATURE_LAYER)
    expected = cs.standardise(raw) if standardised else raw
    torch.testing.assert_close(seen["teacher_features"], expected)
    assert seen["teacher_logits"] is None and seen["alpha"] == tiny.hint_alpha


def test_same_seed_same_initial_student(tiny):
    a, b = cs.new_student(tiny, seed=4), cs.new_student(tiny, seed=4)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name


def test_train_student_needs_a_teacher_for_transfer(splits, tiny):
    with pytest.raises(ValueError, match="'teacher' parameter of train_student"):
        cs.train_student("kd", splits, tiny, seed=0)
    with pytest.raises(ValueError, match="'method' parameter of train_student"):
        cs.train_student("fitnet", splits, tiny, seed=0, teacher=None)


def test_run_study_and_summarise_shapes(tiny):
    results = cs.run_study(tiny, methods=("labelled", "kd"))
    assert list(results.columns) == ["seed", "method", "val_error", "test_error"]
    assert len(results) == len(tiny.seeds) * 3  # teacher + two students per seed
    table = cs.summarise(results)
    assert list(table.index) == ["teacher", "labelled", "kd"]
    assert list(table.columns) == ["mean", "std", "min", "max", "seeds"]
    assert (table["seeds"] == len(tiny.seeds)).all()
    with pytest.raises(ValueError, match="'value' parameter of summarise"):
        cs.summarise(results, value="accuracy")


def test_dark_knowledge_hides_the_class(tiny):
    out = cs.dark_knowledge(tiny, seed=0, hidden_class=3, drop_from_transfer=True)
    assert not bool((out["splits"].y_labelled == 3).any())
    assert not bool((out["splits"].y_transfer == 3).any())
    kept = cs.dark_knowledge(tiny, seed=0, hidden_class=3, teacher=out["teacher"])
    assert not bool((kept["splits"].y_labelled == 3).any())
    assert bool((kept["splits"].y_transfer == 3).any())  # images stay, unlabelled


def test_epoch_costs_reports_medians_and_ratios(splits, tiny, teacher):
    ticks = iter(range(10_000))
    costs = cs.epoch_costs(splits, tiny, teacher, repeats=2, timer=lambda: float(next(ticks)))
    assert set(costs) == {
        "plain_epoch_s", "kd_epoch_s", "live_epoch_s", "extraction_s",
        "kd_epoch_cost_ratio", "live_teacher_epoch_cost_ratio", "repeats",
    }
    assert costs["plain_epoch_s"] == costs["kd_epoch_s"] == costs["live_epoch_s"] == 1.0
    assert costs["kd_epoch_cost_ratio"] == 1.0


# --- the benchmark ---------------------------------------------------------------------------

REQUIRED_KEYS = {
    "label_fraction": float,
    "seeds": list,
    "num_seeds": int,
    "teacher_error": float,
    "student_error": float,
    "distilled_error": float,
    "relative_error_reduction": float,
    "full_label_student_error": float,
    "kd_epoch_cost_ratio": float,
    "live_teacher_epoch_cost_ratio": float,
    "teacher_error_std": float,
    "student_error_std": float,
    "distilled_error_std": float,
    "full_label_student_error_std": float,
    "hyperparameters": dict,
    "notes": dict,
}


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("case_study_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_results(results: dict) -> None:
    for key, kind in REQUIRED_KEYS.items():
        assert key in results, key
        assert isinstance(results[key], kind), (key, type(results[key]))
    assert results["num_seeds"] == len(results["seeds"])
    expected = 1 - results["distilled_error"] / results["student_error"]
    assert results["relative_error_reduction"] == pytest.approx(expected, abs=1e-3)
    for key in ("teacher_error", "student_error", "distilled_error", "full_label_student_error"):
        assert 0.0 <= results[key] <= 1.0
    json.dumps(results)  # serialisable as it is


def test_benchmark_writes_the_expected_keys(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "case_study.json"
    results = bench.main(["--tiny", "--output", str(out)])
    _check_results(results)
    assert json.loads(out.read_text()) == results
    assert results["headline"]["teacher_saw_transfer_labels"] is False
    assert results["label_relay"]["teacher_saw_transfer_labels"] is True
    assert results["label_relay"]["distilled_error"] == results["distilled_error"]
    assert list(results)[:2] == ["headline", "label_relay"] and "processor" in results["machine"]


def test_benchmark_part_keeps_the_other_designs_keys(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "case_study.json"
    out.write_text(json.dumps({"distilled_error": 0.5, "methods": {"pseudo_labels": {"mean": 0.4}},
                               "headline": {"old": True}}))
    results = bench.main(["--tiny", "--part", "honest", "--output", str(out)])
    assert results["distilled_error"] == 0.5  # the label-relay keys are kept
    assert "old" not in results["headline"]  # the honest ones are replaced
    assert results["label_relay"]["pseudo_labels_error"] == 0.4


@pytest.mark.skipif(not RESULTS.exists(), reason="the benchmark has not been run")
def test_stored_benchmark_results_have_the_expected_keys():
    results = json.loads(RESULTS.read_text())
    _check_results(results)
    assert results["label_fraction"] == 0.1
    assert results["num_seeds"] >= 5


def test_the_pseudo_label_student_learns_the_teachers_argmax_with_the_kd_recipe(splits, tiny, teacher):
    """The control of "kd": the same images, schedule and initial weights; the targets are
    the teacher's top classes, so a student fitted by hand on them is the same student."""
    run = cs.train_student("pseudo_labels", splits, tiny, seed=3, teacher=teacher)
    X, _ = cs.transfer_set(splits)
    by_hand = cs.new_student(tiny, seed=3)
    train.fit(by_hand, X, extraction.logits(teacher, X).argmax(dim=1), num_epochs=tiny.transfer_epochs,
              lr=tiny.transfer_lr, batch_size=tiny.batch_size, seed=3)
    for (name, a), b in zip(run.model.state_dict().items(), by_hand.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="'teacher' parameter of train_student is required"):
        cs.train_student("pseudo_labels", splits, tiny, seed=0)
