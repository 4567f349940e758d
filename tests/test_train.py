"""Seeding, the training loop and evaluation."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kt_helpers import fusion, models, train


@pytest.fixture(scope="module")
def small(splits):
    """200 training digits and 100 validation digits."""
    return splits.X_train[:200], splits.y_train[:200], splits.X_val[:100], splits.y_val[:100]


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- seed_everything -----------------------------------------------------------------------------


def test_seed_everything_seeds_python_numpy_and_torch():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1)), models.MLP(hidden=(4,))[1].weight

    train.seed_everything(3)
    first = draw()
    train.seed_everything(3)
    second = draw()
    assert first[:3] == second[:3]
    assert torch.equal(first[3], second[3])


def test_seed_everything_returns_a_seeded_generator():
    a, b = train.seed_everything(5), train.seed_everything(5)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))


def test_seed_everything_rejects_a_negative_seed():
    with pytest.raises(ValueError, match=r"'seed' parameter of seed_everything.*integer >= 0\. Got -1"):
        train.seed_everything(-1)


def test_two_runs_with_the_same_seed_train_identical_weights(small):
    X, y, _, _ = small
    runs = []
    for _ in range(2):
        train.seed_everything(0)
        model = models.MLP(hidden=(16,))
        history = train.fit(model, X, y, num_epochs=2, batch_size=32, seed=0)
        runs.append((_weights(model), history.train_loss))
    assert runs[0][1] == runs[1][1]
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])


def test_another_batch_seed_trains_other_weights(small):
    X, y, _, _ = small
    finals = []
    for seed in (0, 1):
        train.seed_everything(0)
        model = models.MLP(hidden=(16,))
        train.fit(model, X, y, num_epochs=1, batch_size=32, seed=seed)
        finals.append(model[1].weight.detach().clone())
    assert not torch.equal(*finals)


# --- fit -----------------------------------------------------------------------------------------


def test_fit_lowers_the_loss_and_records_the_history(small):
    X, y, X_val, y_val = small
    train.seed_everything(0)
    model = models.MLP(hidden=(32,))
    history = train.fit(model, X, y, num_epochs=8, batch_size=16, X_val=X_val, y_val=y_val)
    assert len(history.train_loss) == len(history.val_accuracy) == 8
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_accuracy[-1] == pytest.approx(train.evaluate(model, X_val, y_val))
    assert history.val_accuracy[-1] > 0.5
    assert not model.training  # fit leaves the model in evaluation mode


def test_history_to_frame():
    frame = train.History(train_loss=[0.9, 0.5, 0.3], val_accuracy=[0.5, 0.7, 0.8]).to_frame()
    assert list(frame.columns) == ["train_loss", "val_accuracy"]
    assert frame.index.name == "epoch" and frame.index.tolist() == [1, 2, 3]
    assert frame.loc[2, "train_loss"] == 0.5
    without_val = train.History(train_loss=[0.9, 0.5]).to_frame()
    assert list(without_val.columns) == ["train_loss"]
    assert isinstance(without_val, pd.DataFrame)


def test_fit_gives_the_objective_the_index_of_each_batch(small):
    """``index`` identifies the batch's samples: cached knowledge stays aligned under shuffling."""
    X, y, _, _ = small
    seen: list[torch.Tensor] = []

    def objective(model, X_batch, y_batch, index):
        assert torch.equal(X_batch, X[index])
        assert torch.equal(y_batch, y[index])
        seen.append(index.clone())
        return F.cross_entropy(model(X_batch), y_batch)

    train.fit(models.MLP(hidden=(8,)), X, y, objective=objective, num_epochs=2, batch_size=48)
    epochs = [torch.cat(seen[:5]), torch.cat(seen[5:])]  # ceil(200 / 48) = 5 batches per epoch
    assert len(seen) == 10
    for order in epochs:
        assert torch.equal(order.sort().values, torch.arange(200))  # every sample once per epoch
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert not torch.equal(epochs[0], torch.arange(200))


def test_fit_trains_the_parameters_of_an_objective_module(small):
    X, y, _, _ = small
    torch.manual_seed(0)
    teacher_features = torch.randn(len(y), 5)
    mapping = nn.Linear(8, 5)
    before = mapping.weight.detach().clone()
    objective = fusion.hint_objective(teacher_features, mapping, alpha=0.5)
    train.fit(models.MLP(hidden=(8,)), X, y, objective=objective, num_epochs=1, batch_size=50)
    assert not torch.equal(mapping.weight, before)


def test_fit_trains_extra_parameters(small):
    X, y, _, _ = small
    scale = nn.Parameter(torch.ones(()))

    def objective(model, X_batch, y_batch, index):
        return F.cross_entropy(scale * model(X_batch), y_batch)

    train.fit(models.MLP(hidden=(8,)), X, y, objective=objective, num_epochs=1, extra_parameters=[scale])
    assert float(scale.detach()) != 1.0


def test_fit_learns_from_unlabelled_samples_with_a_teacher(small):
    X, y, _, _ = small
    torch.manual_seed(0)
    teacher = models.MLP(hidden=(16,))
    teacher_logits = train.predict_logits(teacher, X)
    unlabelled = torch.full_like(y, -1)
    student = models.MLP(hidden=(16,))
    history = train.fit(
        student, X, unlabelled, objective=fusion.distillation_objective(teacher_logits, alpha=0.5), num_epochs=3
    )
    assert history.train_loss[-1] < history.train_loss[0]


def test_the_cosine_schedule_takes_smaller_steps_than_the_constant_one(small):
    """Annealed to 0 over the run, the cosine schedule moves the weights less in one epoch."""
    X, y, _, _ = small
    moved = {}
    for schedule in ("constant", "cosine"):
        train.seed_everything(0)
        model = models.MLP(hidden=(8,))
        start = model[1].weight.detach().clone()
        train.fit(model, X, y, num_epochs=1, schedule=schedule, lr=1e-2)
        moved[schedule] = float((model[1].weight.detach() - start).abs().sum())
    assert 0 < moved["cosine"] < moved["constant"]


def test_predict_logits_and_evaluate(small):
    X, y, _, _ = small
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 10))
    model.train()
    logits = train.predict_logits(model, X, batch_size=64)
    assert model.training and not logits.requires_grad
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, model(X))
    assert train.evaluate(model, X, y) == pytest.approx(float((logits.argmax(1) == y).double().mean()))


def test_cross_entropy_objective_is_the_cross_entropy(small):
    X, y, _, _ = small
    model = models.MLP(hidden=(8,))
    torch.testing.assert_close(
        train.cross_entropy_objective(model, X, y, torch.arange(len(y))), F.cross_entropy(model(X), y)
    )


def test_get_device():
    assert train.get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- fit validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_epochs": 0}, r"'num_epochs' parameter of fit must be an integer >= 1\. Got 0"),
        ({"batch_size": 2.5}, r"'batch_size' parameter of fit must be an integer >= 1\. Got 2\.5"),
        ({"lr": 0.0}, r"'lr' parameter of fit must be a finite number > 0\. Got 0\.0"),
        ({"lr": float("inf")}, r"'lr' parameter of fit must be a finite number > 0\. Got inf"),
        ({"schedule": "step"}, r"'schedule' parameter of fit must be one of 'cosine', 'constant'\. Got 'step'"),
        ({"X_val": torch.zeros(2, 64)}, r"'X_val' and 'y_val'.*given together\. Got X_val=set and y_val=None"),
    ],
)
def test_fit_rejects_bad_settings(small, kwargs, pattern):
    X, y, _, _ = small
    with pytest.raises(ValueError, match=pattern):
        train.fit(models.MLP(hidden=(4,)), X, y, **kwargs)


def test_fit_rejects_mismatched_rows(small):
    X, y, _, _ = small
    with pytest.raises(ValueError, match=r"'X' and 'y' parameters of fit.*Got 200 and 199"):
        train.fit(models.MLP(hidden=(4,)), X, y[:-1])


def test_fit_rejects_float_labels(small):
    X, y, _, _ = small
    pattern = r"'y' parameter of fit must hold integer class indices\. Got dtype torch.float32"
    with pytest.raises(ValueError, match=pattern):
        train.fit(models.MLP(hidden=(4,)), X, y.float())


# --- the device fit trains on --------------------------------------------------------------------


def test_fit_trains_on_the_device_it_is_given(small):
    X, y, _, _ = small
    seen = []

    def objective(model, X_batch, y_batch, index):
        seen.append((next(model.parameters()).device, X_batch.device, y_batch.device))
        return F.cross_entropy(model(X_batch), y_batch)

    model = models.MLP(hidden=(8,))
    train.fit(model, X, y, objective=objective, num_epochs=1, device="cpu")
    assert set(seen) == {(torch.device("cpu"),) * 3}
    # By default, get_device(): the GPU on Colab, the CPU here.
    seen.clear()
    train.fit(model, X, y, objective=objective, num_epochs=1)
    device = train.get_device()
    assert {tuple(d.type for d in s) for s in seen} == {(device.type,) * 3}
    assert next(model.parameters()).device.type == "cpu", "fit must give the model back where it was"


def test_fit_gives_the_same_result_with_the_default_device_as_with_cpu_here(small):
    # On a machine without a GPU the default is the CPU: the same run, step for step.
    X, y, _, _ = small
    runs = []
    for device in (None, "cpu"):
        train.seed_everything(0)
        model = models.MLP(hidden=(8,))
        train.fit(model, X, y, num_epochs=2, seed=0, device=device)
        runs.append(_weights(model))
    if train.get_device().type == "cpu":
        for key in runs[0]:
            assert torch.equal(runs[0][key], runs[1][key]), key


def test_fit_rejects_a_device_that_is_not_one(small):
    X, y, _, _ = small
    with pytest.raises(ValueError, match=r"The 'device' parameter of fit must name a torch device.*Got 'gpu please' instead"):
        train.fit(models.MLP(hidden=(8,)), X, y, num_epochs=1, device="gpu please")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fit_trains_on_the_gpu_and_returns_everything_to_the_cpu(small):  # pragma: no cover - GPU only
    X, y, _, _ = small
    teacher_logits = torch.randn(len(y), 10)
    objective = fusion.distillation_objective(teacher_logits, alpha=0.5, temperature=2.0)
    scale = nn.Parameter(torch.ones(()))
    model = models.RowRNN()
    history = train.fit(model, X, y, objective=objective, num_epochs=1, extra_parameters=[scale])
    assert next(model.parameters()).device.type == "cpu"
    assert objective.teacher_logits.device.type == "cpu"
    assert scale.device.type == "cpu"
    assert np.isfinite(history.train_loss[-1])
