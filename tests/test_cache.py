"""The training cache: a hit leaves exactly what training leaves, and it only hits when it should."""

from __future__ import annotations

import torch
from torch import nn

import pytest

from kt_helpers import cache, data, fusion, models, train


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.DIR_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.delenv(cache.SWITCH_VARIABLE, raising=False)
    cache.enable()
    before = cache.stats()
    yield lambda: {k: cache.stats()[k] - before[k] for k in before}
    cache.disable()


@pytest.fixture(scope="module")
def splits():
    return data.make_splits(1.0, seed=0)


def _train_mlp(splits, *, lr=1e-2, epochs=2):
    train.seed_everything(0)
    model = models.MLP()
    history = train.fit(model, splits.X_train[:200].flatten(1), splits.y_train[:200],
                        num_epochs=epochs, lr=lr,
                        X_val=splits.X_val.flatten(1), y_val=splits.y_val)
    after = torch.rand(3)  # what the generators give next
    return model, history, after


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_hit_restores_weights_history_mode_and_random_state(cache_on, splits):
    cache.disable()
    trained, history, after = _train_mlp(splits)  # no cache: the reference
    cache.enable()
    first = _train_mlp(splits)
    second = _train_mlp(splits)
    assert cache_on() == {"hits": 1, "misses": 1, "uncacheable": 0}
    for model, hist, nxt in (first, second):
        assert _same_state(model, trained)
        assert hist.train_loss == history.train_loss
        assert hist.val_accuracy == history.val_accuracy
        assert torch.equal(nxt, after)
        assert not model.training  # fit leaves the model in eval mode


def test_a_different_setting_or_initial_weight_is_a_miss(cache_on, splits):
    _train_mlp(splits)
    _train_mlp(splits, lr=5e-3)
    _train_mlp(splits, epochs=3)
    train.seed_everything(1)  # other initial weights
    train.fit(models.MLP(), splits.X_train[:200].flatten(1), splits.y_train[:200], num_epochs=2)
    assert cache_on()["hits"] == 0
    assert cache_on()["misses"] == 4


def test_other_data_is_a_miss(cache_on, splits):
    for rows in (slice(0, 200), slice(200, 400)):
        train.seed_everything(0)
        train.fit(models.MLP(), splits.X_train[rows].flatten(1), splits.y_train[rows], num_epochs=1)
    assert cache_on() == {"hits": 0, "misses": 2, "uncacheable": 0}


def test_a_learned_objective_gets_its_trained_weights_back(cache_on, splits):
    X = splits.X_train[:128].flatten(1)
    features = torch.randn(128, 8, generator=torch.Generator().manual_seed(0))
    results = []
    for _ in range(2):
        train.seed_everything(0)
        student = models.MLP(hidden=(32,))
        hint = fusion.TransferObjective(teacher_features=features, mapping=nn.Linear(32, 8), alpha=0.5)
        train.fit(student, X, splits.y_train[:128], objective=hint, num_epochs=1)
        results.append((student, hint))
    assert cache_on()["hits"] == 1
    (s1, h1), (s2, h2) = results
    assert _same_state(s1, s2)
    assert _same_state(h1, h2)  # the hint's learned map too


def test_a_class_defined_outside_the_library_is_never_cached(cache_on, splits):
    class Local(nn.Module):  # a notebook's class: its forward() is not in the key
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    for _ in range(2):
        train.seed_everything(0)
        train.fit(Local(), splits.X_train[:64], splits.y_train[:64], num_epochs=1)
    assert cache_on() == {"hits": 0, "misses": 0, "uncacheable": 2}


def test_a_closure_objective_is_never_cached(cache_on, splits):
    scale = 2.0

    def objective(model, X, y, index):
        return scale * nn.functional.cross_entropy(model(X), y)

    for _ in range(2):
        train.seed_everything(0)
        train.fit(models.MLP(), splits.X_train[:64].flatten(1), splits.y_train[:64],
                  objective=objective, num_epochs=1)
    assert cache_on()["uncacheable"] == 2


def test_off_by_default_and_switched_off_by_the_environment(tmp_path, monkeypatch, splits):
    monkeypatch.setenv(cache.DIR_VARIABLE, str(tmp_path / "c"))
    assert not cache.enabled()
    _train_mlp(splits, epochs=1)
    assert not (tmp_path / "c").exists()
    cache.enable()
    try:
        monkeypatch.setenv(cache.SWITCH_VARIABLE, "off")
        assert not cache.enabled()
        _train_mlp(splits, epochs=1)
        assert not (tmp_path / "c").exists()
    finally:
        cache.disable()


def test_a_broken_entry_is_retrained_and_replaced(cache_on, splits):
    reference = _train_mlp(splits, epochs=1)
    for entry in cache.cache_dir().rglob("*.pt"):
        entry.write_bytes(b"not a torch file")
    again = _train_mlp(splits, epochs=1)
    assert cache_on()["misses"] == 2 and cache_on()["hits"] == 0
    assert _same_state(reference[0], again[0])
    _train_mlp(splits, epochs=1)
    assert cache_on()["hits"] == 1


def test_fingerprint_tells_tensors_apart_by_bits_shape_and_dtype():
    a = torch.zeros(4)
    assert cache.fingerprint(a) == cache.fingerprint(torch.zeros(4))
    assert cache.fingerprint(a) != cache.fingerprint(torch.zeros(2, 2))
    assert cache.fingerprint(a) != cache.fingerprint(torch.zeros(4, dtype=torch.float64))
    b = a.clone()
    b[3] = 1e-30
    assert cache.fingerprint(a) != cache.fingerprint(b)
    with pytest.raises(cache.Uncacheable):
        cache.fingerprint(lambda: 0)


def test_notebooks_turn_the_cache_on_and_the_execute_script_starts_it_empty(monkeypatch, tmp_path):
    import importlib.util
    import os
    import sys
    from pathlib import Path

    from kt_helpers import course

    root = Path(__file__).resolve().parent.parent
    assert "cache.enable()" in course.setup_source(*course.read_repository(root))
    spec = importlib.util.spec_from_file_location("execute_notebooks_for_cache",
                                                  root / "scripts" / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root / "scripts"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(root / "scripts"))
    seen = []
    monkeypatch.setattr(module, "execute", lambda path, timeout: seen.append(
        (os.environ[cache.DIR_VARIABLE], list(Path(os.environ[cache.DIR_VARIABLE]).iterdir()))) or 1.0)
    monkeypatch.setenv(cache.DIR_VARIABLE, str(tmp_path))  # the user's cache, which must not be used
    (tmp_path / "stale.pt").write_bytes(b"x")
    times = root / "benchmarks" / "results" / "notebook_times.json"
    before = times.read_text()
    try:
        module.main([str(root / "chapters" / "05_applications" / "03_new_models.ipynb"), "--skip-appendices"])
    finally:
        times.write_text(before)
    assert seen and all(folder != str(tmp_path) and files == [] for folder, files in seen)
    assert os.environ[cache.DIR_VARIABLE] == str(tmp_path)


def test_a_frozen_layer_is_a_different_run(cache_on, splits):
    # Freezing the body changes what training does; the weights alone do not show it.
    results = []
    for freeze in (False, True):
        train.seed_everything(0)
        model = models.MLP(hidden=(32,))
        for p in model[1].parameters():
            p.requires_grad_(not freeze)
        before = model[1].weight.detach().clone()
        train.fit(model, splits.X_train[:128].flatten(1), splits.y_train[:128], num_epochs=1)
        results.append(torch.equal(before, model[1].weight))
    assert cache_on() == {"hits": 0, "misses": 2, "uncacheable": 0}
    assert results == [False, True]  # the frozen body did not move
