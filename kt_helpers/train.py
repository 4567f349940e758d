"""Seeding, training and evaluation, shared by every chapter.

:func:`fit` is one small training loop for every experiment in the book. What
changes from one experiment to the next is only the *objective*: plain
cross-entropy, the distillation loss, a hint loss. An objective is a callable
``objective(model, X_batch, y_batch, index) -> loss``; ``index`` holds the
positions of the batch's samples in the training set, so knowledge extracted
once per sample (a teacher's logits, its features) stays aligned with its
sample however the batches are shuffled. Introduced in chapter 1.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_int, check_labels, check_positive, check_same_rows, check_tensor

__all__ = [
    "History",
    "Objective",
    "cross_entropy_objective",
    "evaluate",
    "fit",
    "get_device",
    "predict_logits",
    "seed_everything",
]

#: ``objective(model, X_batch, y_batch, index) -> scalar loss``
Objective = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]


def seed_everything(seed: int = 0, *, num_threads: int | None = None) -> torch.Generator:
    """Seed Python, NumPy and PyTorch so that a notebook reproduces exactly.

    Every notebook calls this once at the top and again before each model is
    created, so that each experiment starts from the same weights whatever ran
    before it. On the CPU, PyTorch is then deterministic for a given thread
    count; printed numbers are rounded so that they reproduce across runs.

    Args:
        seed: the seed.
        num_threads: if given, the number of CPU threads PyTorch uses.

    Returns:
        A :class:`torch.Generator` seeded with ``seed``, for code that wants
        its own stream of random numbers.
    """
    check_int(seed, "seed_everything", "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if num_threads is not None:
        torch.set_num_threads(check_int(num_threads, "seed_everything", "num_threads"))
    return torch.Generator().manual_seed(seed)


def get_device() -> torch.device:
    """The GPU where one is present (e.g. on Colab), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cross_entropy_objective(model: nn.Module, X: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """The plain objective: cross-entropy of the model's logits against the labels."""
    return F.cross_entropy(model(X), y)


@dataclass
class History:
    """What :func:`fit` records: the mean training loss and, if a validation
    set was given, the validation accuracy after each epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def to_frame(self):  # -> pandas.DataFrame
        """The history as a :class:`pandas.DataFrame`, one row per epoch."""
        import pandas as pd

        data = {"train_loss": self.train_loss}
        if self.val_accuracy:
            data["val_accuracy"] = self.val_accuracy
        frame = pd.DataFrame(data)
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="epoch")
        return frame


def fit(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    objective: Objective | None = None,
    num_epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    X_val: Tensor | None = None,
    y_val: Tensor | None = None,
    extra_parameters: Iterable[nn.Parameter] = (),
    schedule: str = "cosine",
    progress: bool = False,
) -> History:
    """Train ``model`` on ``(X, y)`` with Adam, in mini-batches of shuffled samples.

    Args:
        model: the model to train, in place.
        X: inputs of shape (N, ...).
        y: labels of shape (N,); ``-1`` marks an unlabelled sample, which only
            objectives that use extracted knowledge can learn from.
        objective: ``objective(model, X_batch, y_batch, index) -> loss``;
            defaults to :func:`cross_entropy_objective`. If it is an
            :class:`torch.nn.Module` (e.g. a hint objective holding a learned
            map), its parameters are trained too.
        num_epochs: passes over the data.
        lr: learning rate of Adam.
        batch_size: samples per mini-batch.
        weight_decay: L2 penalty of Adam.
        seed: seed of the batch order, so that two runs see the same batches.
        X_val, y_val: optional validation set, scored after every epoch.
        extra_parameters: more parameters to train alongside the model.
        schedule: ``"cosine"`` (learning rate annealed to 0) or ``"constant"``.
        progress: show a progress bar (:mod:`tqdm.auto`).

    Returns:
        The :class:`History` of the run.
    """
    check_tensor(X, "fit", "X")
    check_labels(y, "fit", "y", allow_unlabelled=True)
    check_same_rows(X, y, "fit", ("X", "y"))
    check_int(num_epochs, "fit", "num_epochs")
    check_int(batch_size, "fit", "batch_size")
    check_positive(lr, "fit", "lr")
    if schedule not in ("cosine", "constant"):
        raise ValueError(
            "The 'schedule' parameter of fit must be one of 'cosine', 'constant'. "
            f"Got {schedule!r} instead."
        )
    if (X_val is None) != (y_val is None):
        raise ValueError(
            "The 'X_val' and 'y_val' parameters of fit must be given together. "
            f"Got X_val={'set' if X_val is not None else None} and "
            f"y_val={'set' if y_val is not None else None} instead."
        )
    objective = objective or cross_entropy_objective
    device = next(model.parameters()).device
    params = list(model.parameters()) + list(extra_parameters)
    if isinstance(objective, nn.Module):
        objective.to(device)
        params += list(objective.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(y) // batch_size)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs * steps_per_epoch)
        if schedule == "cosine"
        else None
    )
    gen = torch.Generator().manual_seed(seed)
    X, y = X.to(device), y.to(device)
    history = History()

    epochs: Iterable[int] = range(num_epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="epochs", leave=False)
    for _ in epochs:
        model.train()
        if isinstance(objective, nn.Module):
            objective.train()
        order = torch.randperm(len(y), generator=gen)  # (N,) a fresh shuffle per epoch
        total, count = 0.0, 0
        for start in range(0, len(y), batch_size):
            index = order[start : start + batch_size]  # (B,) positions in the training set
            index_dev = index.to(device)
            loss = objective(model, X[index_dev], y[index_dev], index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(index)
            count += len(index)
        history.train_loss.append(total / count)
        if X_val is not None and y_val is not None:
            history.val_accuracy.append(evaluate(model, X_val, y_val))
    model.eval()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, X: Tensor, *, batch_size: int = 1024) -> Tensor:
    """The model's logits for ``X`` in evaluation mode, on the CPU.

    Shape:
        - X: (N, ...). Output: (N, num_classes).
    """
    check_tensor(X, "predict_logits", "X")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat(
        [model(X[i : i + batch_size].to(device)).cpu() for i in range(0, len(X), batch_size)]
    )
    model.train(was_training)
    return out


def evaluate(model: nn.Module, X: Tensor, y: Tensor) -> float:
    """Accuracy of ``model`` on ``(X, y)``, a float in [0, 1]."""
    from .metrics import accuracy

    check_same_rows(X, y, "evaluate", ("X", "y"))
    return accuracy(predict_logits(model, X), y)
