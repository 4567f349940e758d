"""An honest protocol for the case study (chapter 4): a teacher that never saw the student's labels.

The first design of the case study trained the CNN teacher on *every*
training label, those of the "unlabelled" transfer images included; a student
distilled from it receives those labels through the teacher (*label relay*).
This module builds the design that measures knowledge transfer instead:

* :func:`disjoint_indices`, :func:`disjoint_splits` — the teacher learns from
  a labelled split that is disjoint from the student's labelled and transfer
  images; validation and test are disjoint from both;
* :func:`soft_targets`, :func:`one_hot`, :func:`smoothed_to_entropy` — the
  targets of a distilled student and of its controls (the teacher's argmax,
  that argmax smoothed to the same entropy, the true labels);
* :class:`TargetObjective` — one loss for all of them, so that only the
  targets differ between a method and its control;
* :func:`train_with_targets`, :func:`train_hint` — students trained with the
  same images, schedule, initial weights and batch order;
* :class:`StepHintObjective`, :func:`step_hint_targets`, :func:`train_step_hint`,
  :func:`run_step_hint` — the hint applied at every step of the RNN (its state
  after rows 2, 4, 6, 8 toward the matching band of the CNN's feature map), with
  the same controls;
* :func:`paired_ci` — a paired difference over seeds with its t-interval.

The α convention is the book's: α weighs the labels, 1 − α the teacher.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_alpha, check_fraction, check_int, check_non_negative, check_positive, check_tensor
from .data import NUM_CLASSES, TEST_SEED, DigitSplits, load_digits_tensors, train_test_split
from .fusion import TransferObjective
from .models import DigitCNN, RowRNN
from .parallel import map_runs
from .train import fit, seed_everything

__all__ = [
    "DisjointSplits",
    "TargetObjective",
    "disjoint_indices",
    "disjoint_splits",
    "epochs_for_steps",
    "one_hot",
    "mean_entropy",
    "run_honest",
    "select_on_validation",
    "targets_for",
    "HonestConfig",
    "HINT_METHODS",
    "StepHintObjective",
    "run_step_hint",
    "step_hint_targets",
    "train_step_hint",
    "TARGET_METHODS",
    "paired_ci",
    "smoothed_to_entropy",
    "soft_targets",
    "train_disjoint_teacher",
    "train_hint",
    "train_with_targets",
]


def disjoint_indices(
    seed: int,
    *,
    label_fraction: float = 0.05,
    teacher_fraction: float = 0.5,
    test_fraction: float = 0.25,
    val_fraction: float = 0.15,
    exclude_classes: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """Indices into the 1,797 digits of five disjoint sets: test, val, teacher, labelled, transfer.

    The test and validation splits are those of :func:`kt_helpers.data.make_splits`
    (the same fixed 450 test images; validation seeded by ``seed``). The rest
    (1,144 images) is cut into the student's labelled set (``label_fraction`` of
    it, at least one image per class), the teacher's labelled set
    (``teacher_fraction`` of what remains) and the student's transfer pool (the
    rest), all stratified by class. The teacher never sees an image, let alone
    a label, of the student's sets. The transfer pool is returned in a seeded
    random order, so that ``transfer[:n]`` are nested transfer sets of growing size.

    Args:
        seed: seed of every split but the test split.
        label_fraction: fraction of the 1,144 training images labelled for the student, in (0, 1).
        teacher_fraction: fraction of the remaining images given (with labels) to the teacher, in (0, 1).
        test_fraction, val_fraction: as in :func:`~kt_helpers.data.make_splits`.
        exclude_classes: classes of which the *student* gets no image and no
            label (removed from its labelled and transfer sets); the teacher
            keeps them (Hinton et al.'s omitted class, chapter 4).

    Returns:
        A dict of int64 arrays ``"test"``, ``"val"``, ``"teacher"``,
        ``"labelled"``, ``"transfer"``; pairwise disjoint.

    Example:
        >>> idx = disjoint_indices(0)
        >>> {k: len(v) for k, v in idx.items()}
        {'test': 450, 'val': 203, 'teacher': 544, 'labelled': 57, 'transfer': 543}
    """
    func = "disjoint_indices"
    check_int(seed, func, "seed", minimum=0)
    check_fraction(label_fraction, func, "label_fraction")
    check_fraction(teacher_fraction, func, "teacher_fraction")
    bad = [c for c in exclude_classes if c not in range(NUM_CLASSES)]
    if bad:
        raise ValueError(
            f"The 'exclude_classes' parameter of {func} must hold digit classes 0-9. "
            f"Got {list(exclude_classes)!r} instead."
        )
    _, y = load_digits_tensors()
    y = y.numpy()
    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=y, random_state=TEST_SEED)
    train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest], random_state=seed)
    num_labelled = max(NUM_CLASSES, math.floor(label_fraction * len(train)))
    labelled, others = train_test_split(train, train_size=num_labelled, stratify=y[train], random_state=seed)
    pool, teacher = train_test_split(others, test_size=teacher_fraction, stratify=y[others], random_state=seed)
    transfer = np.random.default_rng(seed).permutation(np.sort(pool))
    if exclude_classes:
        hidden = list(exclude_classes)
        labelled = labelled[~np.isin(y[labelled], hidden)]
        transfer = transfer[~np.isin(y[transfer], hidden)]
    return {
        "test": np.sort(test), "val": np.sort(val), "teacher": np.sort(teacher),
        "labelled": np.sort(labelled), "transfer": transfer,
    }


@dataclass(frozen=True)
class DisjointSplits:
    """The data of the honest protocol: a teacher's labelled set disjoint from the student's data.

    Attributes:
        X_teacher, y_teacher: the teacher's labelled training set.
        X_labelled, y_labelled: the student's labelled set.
        X_transfer, y_transfer: the student's transfer pool, in a seeded random
            order (``y_transfer`` only diagnoses; no student of transfer trains on it,
            except the oracle control that is meant to).
        X_val, y_val, X_test, y_test: validation and the fixed test set.
        indices: the indices of each set into the 1,797 digits (:func:`disjoint_indices`).
    """

    X_teacher: Tensor
    y_teacher: Tensor
    X_labelled: Tensor
    y_labelled: Tensor
    X_transfer: Tensor
    y_transfer: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor
    indices: dict

    def student(self, transfer_size: int | None = None) -> DigitSplits:
        """The student's view, with the first ``transfer_size`` transfer images (default all).

        Returns:
            A :class:`~kt_helpers.data.DigitSplits` (the teacher's set is not in it).
        """
        n = len(self.y_transfer) if transfer_size is None else check_int(
            transfer_size, "DisjointSplits.student", "transfer_size", minimum=0)
        if n > len(self.y_transfer):
            raise ValueError(
                "The 'transfer_size' parameter of DisjointSplits.student must be at most the pool's "
                f"{len(self.y_transfer)} images. Got {n} instead."
            )
        return DigitSplits(self.X_labelled, self.y_labelled, self.X_transfer[:n], self.y_transfer[:n],
                           self.X_val, self.y_val, self.X_test, self.y_test)

    def sizes(self) -> dict[str, int]:
        """Number of images in each set."""
        return {k: len(v) for k, v in self.indices.items()}


def disjoint_splits(seed: int, **options) -> DisjointSplits:
    """:func:`disjoint_indices` as tensors (same arguments).

    Example:
        >>> s = disjoint_splits(0)
        >>> tuple(s.X_teacher.shape), len(s.student(150).y_transfer)
        ((544, 1, 8, 8), 150)
    """
    idx = disjoint_indices(seed, **options)
    X, y = load_digits_tensors()

    def take(name: str) -> tuple[Tensor, Tensor]:
        i = torch.as_tensor(idx[name], dtype=torch.int64)
        return X[i], y[i]

    return DisjointSplits(*take("teacher"), *take("labelled"), *take("transfer"), *take("val"),
                          *take("test"), indices=idx)


def train_disjoint_teacher(splits: DisjointSplits, *, seed: int, epochs: int = 40, lr: float = 3e-3,
                           batch_size: int = 64) -> DigitCNN:
    """The CNN teacher of the honest design, trained on its own labelled set only.

    It sees no image of the student's labelled, transfer, validation or test
    sets (:func:`disjoint_indices`); chapter 4, notebook 6.

    Args:
        splits: the data (:func:`disjoint_splits`); only ``X_teacher``, ``y_teacher`` are used.
        seed: seed of the initial weights and of the batch order.
        epochs, lr, batch_size: the schedule (Adam, cosine-annealed), as for the label-relay teacher.

    Returns:
        The trained :class:`~kt_helpers.models.DigitCNN`, in evaluation mode.
    """
    check_int(epochs, "train_disjoint_teacher", "epochs")
    seed_everything(seed, num_threads=THREADS)
    teacher = DigitCNN()
    fit(teacher, splits.X_teacher, splits.y_teacher, num_epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return teacher.eval()


# --- targets -----------------------------------------------------------------------------------


def soft_targets(logits: Tensor, temperature: float) -> Tensor:
    """The teacher's softened probabilities softmax(z / T).

    Shape:
        logits (N, C) -> (N, C), rows summing to 1.

    Example:
        >>> soft_targets(torch.tensor([[0.0, 0.0]]), 2.0)
        tensor([[0.5000, 0.5000]])
    """
    check_tensor(logits, "soft_targets", "logits", ndim=2)
    temperature = check_positive(temperature, "soft_targets", "temperature")
    return F.softmax(logits / temperature, dim=1)


def one_hot(labels: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """Labels as one-hot rows of floats, (N,) -> (N, C)."""
    check_tensor(labels, "one_hot", "labels", ndim=1)
    return F.one_hot(labels, num_classes).float()


def _smoothing_entropy(eps: float, C: int) -> float:
    top, rest = 1.0 - eps + eps / C, eps / C
    return -(top * math.log(top) + (C - 1) * (rest * math.log(rest) if rest > 0 else 0.0))


def smoothed_to_entropy(labels: Tensor, entropy: float, num_classes: int = NUM_CLASSES) -> Tensor:
    """Label smoothing of hard labels, with ε chosen so that each row has entropy ``entropy`` (nats).

    .. math::
        p = (1 - \\varepsilon)\\,\\mathrm{onehot}(y) + \\varepsilon / C

    with ε ∈ [0, 1] found by bisection (the entropy grows with ε from 0 to
    log C). It is the control of soft targets (Szegedy et al.'s smoothing, at
    the soft targets' mean entropy): as uncertain, but with the wrong-class
    mass spread evenly instead of where the teacher puts it.

    Shape:
        labels (N,) -> (N, C).

    Example:
        >>> p = smoothed_to_entropy(torch.tensor([0]), 0.5, num_classes=3)
        >>> round(float(-(p * p.log()).sum()), 4)
        0.5
    """
    check_tensor(labels, "smoothed_to_entropy", "labels", ndim=1)
    if not 0.0 <= entropy <= math.log(num_classes):
        raise ValueError(
            f"The 'entropy' parameter of smoothed_to_entropy must lie in [0, log C = "
            f"{math.log(num_classes):.4f}]. Got {entropy!r} instead."
        )
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _smoothing_entropy(mid, num_classes) < entropy:
            lo = mid
        else:
            hi = mid
    eps = (lo + hi) / 2
    return (1.0 - eps) * one_hot(labels, num_classes) + eps / num_classes


def mean_entropy(probs: Tensor) -> float:
    """Mean entropy (nats) of the rows of ``probs`` (N, C)."""
    return float(-(torch.special.xlogy(probs, probs)).sum(1).mean())


class TargetObjective(nn.Module):
    """α·CE on the labelled images + (1 − α)·τ²·KL(p ‖ softmax(z / τ)) on every image.

    .. math::
        L = \\alpha\\,\\mathrm{CE}(z, y)\\big|_{y \\ne -1}
            + (1 - \\alpha)\\,\\tau^2\\,\\mathrm{KL}\\bigl(p_n \\,\\Vert\\, \\mathrm{softmax}(z / \\tau)\\bigr)

    One objective for a distilled student and all its controls: only the
    target distributions ``targets`` (one row per training image) and τ
    change. With ``targets = soft_targets(v, τ)`` (v the teacher's logits) it
    is Hinton et al.'s distillation loss (:func:`~kt_helpers.fusion.kd_loss`);
    with one-hot rows and τ = 1 it is cross-entropy on those labels.

    Args:
        targets: of shape (N, C), rows summing to 1, row n for training image n.
        alpha: weight of the labels, in [0, 1].
        temperature: τ > 0 on the student's side.
    """

    def __init__(self, targets: Tensor, *, alpha: float, temperature: float = 1.0) -> None:
        super().__init__()
        check_tensor(targets, "TargetObjective", "targets", ndim=2)
        self.alpha = check_alpha(alpha, "TargetObjective")
        self.temperature = check_positive(temperature, "TargetObjective", "temperature")
        self.register_buffer("targets", targets.detach().clone())

    def forward(self, model: nn.Module, X: Tensor, y: Tensor, index: Tensor) -> Tensor:
        logits = model(X)  # (B, C)
        p = self.targets[index.to(X.device)]  # (B, C)
        T = self.temperature
        log_q = F.log_softmax(logits / T, dim=1)
        soft = (torch.special.xlogy(p, p) - p * log_q).sum(1).mean()
        labelled = y >= 0
        hard = F.cross_entropy(logits[labelled], y[labelled]) if self.alpha > 0 and bool(labelled.any()) \
            else logits.new_zeros(())
        return self.alpha * hard + (1.0 - self.alpha) * T**2 * soft


def epochs_for_steps(num_samples: int, steps: int, batch_size: int = 64) -> int:
    """Epochs over ``num_samples`` images that give at least ``steps`` optimiser steps.

    Example:
        >>> epochs_for_steps(207, 600)
        150
    """
    per_epoch = -(-check_int(num_samples, "epochs_for_steps", "num_samples") // batch_size)
    return -(-check_int(steps, "epochs_for_steps", "steps") // per_epoch)


#: CPU threads of every model of this module: the models are so small that a second
#: thread only adds synchronisation; one thread also makes the results reproduce exactly.
THREADS = 1


def _student(seed: int, hidden_size: int) -> RowRNN:
    seed_everything(seed, num_threads=THREADS)
    return RowRNN(hidden_size=hidden_size)


def train_with_targets(
    X: Tensor, y: Tensor, targets: Tensor | None, *, seed: int, alpha: float, temperature: float = 1.0,
    steps: int = 600, lr: float = 3e-2, batch_size: int = 64, hidden_size: int = 64,
) -> RowRNN:
    """Train an RNN student on ``X`` (labels ``y``, ``-1`` where hidden) toward ``targets``.

    The student's initial weights and batch order depend on ``seed`` only, and
    its schedule on ``steps`` only, so two calls that differ only in
    ``targets`` compare the targets (the controls of chapter 4, notebook 6).
    With ``targets=None`` the student trains by cross-entropy on the labelled
    rows (labels alone; pass only those rows).

    Args:
        X: images of shape (N, 1, 8, 8).
        y: labels of shape (N,), ``-1`` for a transfer image.
        targets: of shape (N, C) for :class:`TargetObjective`, or None.
        seed: seed of the initial weights and the batch order.
        alpha, temperature: of :class:`TargetObjective`.
        steps: optimiser steps (:func:`epochs_for_steps` epochs, cosine-annealed ``lr``).
        lr, batch_size, hidden_size: the rest of the schedule and the student's width.

    Returns:
        The trained :class:`~kt_helpers.models.RowRNN`.
    """
    if targets is not None and targets.shape[0] != len(y):
        raise ValueError(
            "The 'targets' parameter of train_with_targets must have one row per image of 'X'. "
            f"Got {targets.shape[0]} rows for {len(y)} images instead."
        )
    model = _student(seed, hidden_size)
    epochs = epochs_for_steps(len(y), steps, batch_size)
    objective = None if targets is None else TargetObjective(targets, alpha=alpha, temperature=temperature)
    fit(model, X, y, objective=objective, num_epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return model


def train_hint(
    X: Tensor, y: Tensor, hint_targets: Tensor, *, seed: int, alpha: float = 0.5, hint_weight: float = 1.0,
    steps: int = 600, lr: float = 3e-2, batch_size: int = 64, hidden_size: int = 64,
) -> RowRNN:
    """α·CE on the labelled rows + (1 − α)·β·hint toward ``hint_targets`` (N, d) through a learned linear map.

    .. math::
        L = \\alpha\\,\\mathrm{CE}(z, y) + (1-\\alpha)\\,\\beta\\,\\lVert W h + b - k \\rVert^2 / d

    ``hint_targets`` are standardised first (:func:`kt_helpers.case_study.standardise`):
    a trained teacher's features, an untrained one's, or the raw pixels, for the
    controls of chapter 4, notebook 6 (FitNets' hint, Romero et al., 2015).

    Args:
        X, y: as for :func:`train_with_targets`.
        hint_targets: of shape (N, d), one row per image.
        seed, alpha, hint_weight (β), steps, lr, batch_size, hidden_size: as for :func:`train_with_targets`.

    Returns:
        The trained :class:`~kt_helpers.models.RowRNN` (the map is discarded).
    """
    if hint_targets.ndim != 2 or hint_targets.shape[0] != len(y):
        raise ValueError(
            "The 'hint_targets' parameter of train_hint must have shape (N, d), one row per image. "
            f"Got {tuple(hint_targets.shape)} for {len(y)} images instead."
        )
    from .case_study import standardise

    model = _student(seed, hidden_size)
    torch.manual_seed(seed)
    mapping = nn.Linear(hidden_size, hint_targets.shape[1])
    objective = TransferObjective(teacher_features=standardise(hint_targets), mapping=mapping,
                                  alpha=alpha, hint_weight=hint_weight)
    fit(model, X, y, objective=objective, num_epochs=epochs_for_steps(len(y), steps, batch_size),
        lr=lr, batch_size=batch_size, seed=seed)
    return model


# --- the per-step hint: the RNN's state after each row band toward the CNN's matching band -----


class StepHintObjective(nn.Module):
    """α·CE + (1 − α)·β·(per-step hint), one linear map shared by every step.

    .. math::
        L = \\alpha\\,\\mathrm{CE}(z, y)\\big|_{y \\ne -1}
            + (1-\\alpha)\\,\\beta\\,\\frac{1}{S\\,d}\\sum_{\\ell=1}^{S} \\lVert W h_\\ell + b - k_\\ell \\rVert^2

    with :math:`z` the student's logits, :math:`h_\\ell` its state after
    ``rows[ℓ]`` rows (:meth:`~kt_helpers.models.RowRNN.states`) and
    :math:`k_\\ell` the ℓ-th per-step target (a band of a teacher's feature map, or of the pixels). The
    map ``(W, b)`` is an ``nn.Linear`` trained with the student — the learned
    counterpart of :func:`kt_helpers.mapping.fit_step_map` (FitNets' hint,
    Romero et al., 2015, applied at every step; chapter 4, notebook 4).

    Args:
        step_targets: of shape (N, S, d), row n for training image n.
        hidden_size: the student's state width p.
        alpha: weight of the labels, in [0, 1].
        hint_weight: β ≥ 0.
        rows: the S row counts after which the state is read.
        seed: seed of the map's initial weights.
    """

    def __init__(self, step_targets: Tensor, *, hidden_size: int, alpha: float = 0.5, hint_weight: float = 1.0,
                 rows: Sequence[int] = (2, 4, 6, 8), seed: int = 0) -> None:
        super().__init__()
        func = "StepHintObjective"
        check_tensor(step_targets, func, "step_targets", ndim=3)
        if step_targets.shape[1] != len(rows):
            raise ValueError(
                f"The 'step_targets' parameter of {func} must have one target per step of 'rows' "
                f"({len(rows)}) on its second axis. Got shape {tuple(step_targets.shape)} instead."
            )
        self.alpha = check_alpha(alpha, func)
        self.hint_weight = check_non_negative(hint_weight, func, "hint_weight")
        self.rows = [check_int(r, func, "rows") - 1 for r in rows]
        self.register_buffer("step_targets", step_targets.detach().clone())
        torch.manual_seed(seed)
        self.mapping = nn.Linear(check_int(hidden_size, func, "hidden_size"), step_targets.shape[2])

    def forward(self, model: nn.Module, X: Tensor, y: Tensor, index: Tensor) -> Tensor:
        states = model.states(X)  # (B, L, p)
        logits = model.head(states[:, -1])  # (B, C), as model(X)
        labelled = y >= 0
        hard = F.cross_entropy(logits[labelled], y[labelled]) if self.alpha > 0 and bool(labelled.any()) \
            else logits.new_zeros(())
        mapped = self.mapping(states[:, self.rows])  # (B, S, d)
        hint = F.mse_loss(mapped, self.step_targets[index.to(X.device)])
        return self.alpha * hard + (1.0 - self.alpha) * self.hint_weight * hint


def step_hint_targets(method: str, X: Tensor, *, teacher: nn.Module | None = None, seed: int = 0) -> Tensor:
    """The per-step targets of one method of :data:`HINT_METHODS`, as (N, 4, d), standardised.

    ``"trained_teacher"``: the four row bands of the trained CNN's pooled feature
    map (N, 4, 128); ``"untrained_teacher"``: those of a CNN freshly initialised
    from ``seed`` (the same architecture, no knowledge); ``"pixels"``: the
    image's own rows, two per band (N, 4, 16) (:func:`kt_helpers.mapping.row_bands`).
    Each is centred per (step, feature) and scaled to unit overall variance
    (:func:`kt_helpers.case_study.standardise` on the flattened steps), so that
    the three controls weigh the same in the loss.

    Args:
        method: one of :data:`HINT_METHODS`.
        X: images of shape (N, 1, 8, 8).
        teacher: the trained teacher (``"trained_teacher"`` only).
        seed: seed of the untrained teacher.

    Shape:
        - X: (N, 1, 8, 8). Output: (N, 4, d).
    """
    from .case_study import standardise
    from .extraction import features
    from .mapping import row_bands

    check_tensor(X, "step_hint_targets", "X", ndim=4)
    if method == "trained_teacher":
        if teacher is None:
            raise ValueError("The 'teacher' parameter of step_hint_targets is required for "
                             "method 'trained_teacher'. Got None.")
        bands = row_bands(features(teacher, X, "body.pool"))  # (N, 4, 128)
    elif method == "untrained_teacher":
        seed_everything(seed, num_threads=THREADS)
        bands = row_bands(features(DigitCNN().eval(), X, "body.pool"))  # (N, 4, 128)
    elif method == "pixels":
        bands = row_bands(X)  # (N, 4, 16)
    else:
        raise ValueError(f"The 'method' parameter of step_hint_targets must be one of {HINT_METHODS}. "
                         f"Got {method!r} instead.")
    N, S, d = bands.shape
    return standardise(bands.reshape(N, S * d)).reshape(N, S, d)


def train_step_hint(
    X: Tensor, y: Tensor, step_targets: Tensor, *, seed: int, alpha: float = 0.5, hint_weight: float = 1.0,
    steps: int = 600, lr: float = 3e-2, batch_size: int = 64, hidden_size: int = 64,
) -> RowRNN:
    """Train an RNN student with :class:`StepHintObjective` toward ``step_targets`` (N, 4, d).

    The same initial weights, batch order and schedule as :func:`train_with_targets`
    and :func:`train_hint` for the same ``seed`` and ``steps``, so only the targets
    differ between a per-step hint and its controls (chapter 4, notebook 4).

    Returns:
        The trained :class:`~kt_helpers.models.RowRNN` (the map is discarded).
    """
    if step_targets.ndim != 3 or step_targets.shape[0] != len(y):
        raise ValueError(
            "The 'step_targets' parameter of train_step_hint must have shape (N, S, d), one row per image. "
            f"Got {tuple(step_targets.shape)} for {len(y)} images instead."
        )
    model = _student(seed, hidden_size)
    objective = StepHintObjective(step_targets, hidden_size=hidden_size, alpha=alpha, hint_weight=hint_weight,
                                  seed=seed)
    fit(model, X, y, objective=objective, num_epochs=epochs_for_steps(len(y), steps, batch_size),
        lr=lr, batch_size=batch_size, seed=seed)
    return model


def run_step_hint(seeds: Sequence[int] = (0, 1, 2), *, transfer_size: int = 543, steps: int = 150,
                  teacher_epochs: int = 20, alpha: float = 0.5, hint_weight: float = 1.0, ridge: float = 1e-3,
                  lr: float = 3e-2, batch_size: int = 64, hidden_size: int = 64, labels_alone: bool = True,
                  split_seed: int | None = None) -> dict:
    """The per-step mapping and the per-step hint with its controls, over seeds, with the honest teacher.

    For every seed: the splits and the teacher of :func:`disjoint_splits` and
    :func:`train_disjoint_teacher` (the teacher never sees an image of the
    student's sets); the student's 57 labelled images plus ``transfer_size``
    transfer images; then one student per method, with the same initial
    weights, batch order and number of steps: labels alone
    (``"labels_alone"``, the labelled images only; skipped with
    ``labels_alone=False``, to save time) and the per-step hint
    (:func:`train_step_hint`) toward each target of :data:`HINT_METHODS`.
    Every student, and an untrained one (``"untrained_student"``), is then
    mapped step by step to the *trained* teacher's row bands: one shared map
    (:func:`kt_helpers.mapping.fit_step_map`) fitted on the student's training
    images, CKA and R² per step on the test images
    (:func:`kt_helpers.mapping.step_scores`).

    With ``split_seed`` given, every seed shares the splits and the teacher of
    that seed (trained once), and a seed varies only the students' initial
    weights, their batch order and the untrained teacher: cheaper, but the
    spread over seeds then leaves out the split's and the teacher's.

    Returns:
        ``{"teacher": [...], "errors": [...], "scores": [...]}``: the teacher's
        ``test_error`` per seed; one row per (seed, method) with ``val_error``,
        ``test_error``; one row per (seed, student, rows) with ``cka``, ``r2``.
    """
    from .mapping import STEP_ROWS, fit_step_map, row_bands, step_scores, step_states
    from .extraction import features

    check_int(transfer_size, "run_step_hint", "transfer_size")
    if not seeds:
        raise ValueError("The 'seeds' parameter of run_step_hint must hold at least one seed. Got none.")
    options = dict(steps=steps, lr=lr, batch_size=batch_size, hidden_size=hidden_size)

    def teach(data_seed: int) -> tuple[DisjointSplits, nn.Module, dict]:
        splits = disjoint_splits(data_seed)
        teacher = train_disjoint_teacher(splits, seed=data_seed, epochs=teacher_epochs, batch_size=batch_size)
        return splits, teacher, {"seed": data_seed, "test_error": _error(teacher, splits.X_test, splits.y_test)}

    def one_seed(seed: int, splits: DisjointSplits, teacher: nn.Module) -> tuple[list[dict], list[dict]]:
        errors, scores = [], []
        student = splits.student(transfer_size)
        X, y = student.X_train, student.y_student  # (57 + n, 1, 8, 8), (57 + n,) with -1 for transfer images
        models = {"untrained_student": _student(seed, hidden_size).eval()}
        if labels_alone:
            models["labels_alone"] = train_with_targets(splits.X_labelled, splits.y_labelled, None, seed=seed,
                                                        alpha=1.0, **options)
        for method in HINT_METHODS:
            targets = step_hint_targets(method, X, teacher=teacher, seed=seed)  # (N, 4, d)
            models[method] = train_step_hint(X, y, targets, seed=seed, alpha=alpha, hint_weight=hint_weight,
                                             **options)
        bands_fit = row_bands(features(teacher, X, "body.pool"))  # (N, 4, 128)
        bands_test = row_bands(features(teacher, splits.X_test, "body.pool"))  # (450, 4, 128)
        for method, model in models.items():
            if method != "untrained_student":
                errors.append({"seed": seed, "method": method,
                               "val_error": _error(model, splits.X_val, splits.y_val),
                               "test_error": _error(model, splits.X_test, splits.y_test)})
            T = fit_step_map(step_states(model, X), bands_fit, ridge=ridge)
            for row in step_scores(T, step_states(model, splits.X_test), bands_test, STEP_ROWS):
                scores.append({"seed": seed, "student": method, **row})
        return errors, scores

    if split_seed is None:  # every seed its own split and teacher: independent, two at a time
        def whole(seed: int) -> tuple[dict, list[dict], list[dict]]:
            splits, teacher, row = teach(seed)
            return (row, *one_seed(seed, splits, teacher))

        per_seed = map_runs(whole, seeds)
    else:  # one split and one teacher for every seed
        splits, teacher, row = teach(split_seed)
        per_seed = [(row if i == 0 else None, *one_seed(seed, splits, teacher)) for i, seed in enumerate(seeds)]
    teachers = [row for row, _, _ in per_seed if row is not None]
    errors = [e for _, seed_errors, _ in per_seed for e in seed_errors]
    scores = [r for _, _, seed_scores in per_seed for r in seed_scores]
    return {"teacher": teachers, "errors": errors, "scores": scores}


# --- statistics --------------------------------------------------------------------------------


def paired_ci(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> dict:
    """Mean of the paired differences a − b over seeds and its t-interval.

    .. math::
        \\bar d \\pm t_{(1+c)/2,\\,k-1}\\, s_d / \\sqrt{k}

    with k seeds, s_d the sample standard deviation (ddof = 1) of the differences.

    Args:
        a, b: one value per seed, paired (same seed, same order), at least 2.
        confidence: c in (0, 1).

    Returns:
        ``{"mean": d̄, "ci95": [lo, hi], "std": s_d, "seeds": k, "differences": [...]}``
        (the key is ``ci95`` whatever ``confidence``).

    Example:
        >>> r = paired_ci([0.10, 0.12, 0.11], [0.13, 0.14, 0.15])
        >>> round(r["mean"], 4), [round(x, 4) for x in r["ci95"]]
        (-0.03, [-0.0548, -0.0052])
    """
    from scipy.stats import t

    check_fraction(confidence, "paired_ci", "confidence")
    d = [float(x) - float(z) for x, z in zip(a, b, strict=True)]
    k = len(d)
    if k < 2:
        raise ValueError(f"The 'a' and 'b' parameters of paired_ci must hold at least 2 seeds. Got {k} instead.")
    mean = sum(d) / k
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (k - 1))
    half = float(t.ppf((1 + confidence) / 2, k - 1)) * std / math.sqrt(k)
    return {"mean": mean, "ci95": [mean - half, mean + half], "std": std, "seeds": k, "differences": d}


# --- the honest study, as the benchmark runs it --------------------------------------------------

#: The student's training targets compared at every transfer size, in the order of the tables:
#: the teacher's soft labels, its argmax, that argmax smoothed to the soft labels' mean entropy,
#: the true labels of the transfer images (an oracle no real student has), labels alone.
TARGET_METHODS = ("soft", "argmax", "smoothed", "oracle", "labels_alone")
#: The hint targets compared: a trained teacher's features, an untrained teacher's, the raw pixels.
HINT_METHODS = ("trained_teacher", "untrained_teacher", "pixels")


@dataclass(frozen=True)
class HonestConfig:
    """Settings of the honest protocol (teacher on a disjoint labelled split).

    Every student has the same schedule (``steps`` Adam steps, cosine-annealed
    learning rate ``lr``, batches of ``batch_size``), the same initial weights
    and batch order for a seed; α and T of the soft targets are chosen on the
    validation split over ``selection_seeds`` (:func:`select_on_validation`).
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # one split, one teacher and one initialisation per seed
    sizes: tuple[int, ...] = (50, 150, 543)  # transfer-set sizes (543 = the whole pool)
    label_fraction: float = 0.05  # the student's labelled set: 57 of the 1,144 training images
    teacher_fraction: float = 0.5  # of the other 1,087: 544 for the teacher, 543 for the transfer pool
    teacher_epochs: int = 40  # 360 steps of Adam on the teacher's 544 images
    teacher_lr: float = 3e-3
    steps: int = 400  # optimiser steps of every student, whatever its data
    lr: float = 3e-2
    batch_size: int = 64
    hidden_size: int = 64
    selection_seeds: tuple[int, ...] = (0, 1, 2)  # seeds of the choice of alpha and T (validation only)
    selection_size: int = 150  # transfer size at which alpha and T are chosen
    alphas: tuple[float, ...] = (0.0, 0.5)  # weight of the labels
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    omitted_class: int = 3
    omitted_seeds: tuple[int, ...] = (0, 1, 2)
    omitted_temperatures: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    hint_alpha: float = 0.5  # the hint-only student needs labels for its head
    hint_weight: float = 1.0
    hint_size: int = 543  # transfer size of the hint controls

    def as_dict(self) -> dict:
        import dataclasses

        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _error(model: nn.Module, X: Tensor, y: Tensor) -> float:
    from .train import predict_logits

    return float((predict_logits(model, X).argmax(1) != y).float().mean())


def targets_for(method: str, teacher_logits: Tensor, y_true: Tensor, temperature: float) -> tuple[Tensor, float]:
    """The targets of one method of :data:`TARGET_METHODS` and the temperature its student matches them at.

    ``"soft"``: softmax(v / τ) of the teacher's logits v, at τ; ``"argmax"``: one-hot of the teacher's top class, at 1
    (cross-entropy); ``"smoothed"``: that one-hot smoothed to the soft targets' mean entropy
    (:func:`smoothed_to_entropy`), at τ; ``"oracle"``: one-hot of ``y_true``, at 1.

    Args:
        method: one of ``"soft"``, ``"argmax"``, ``"smoothed"``, ``"oracle"``.
        teacher_logits: of shape (N, C), the teacher's logits on the student's training images.
        y_true: of shape (N,), their true labels (used by ``"oracle"`` only).
        temperature: τ > 0 of the soft targets.

    Returns:
        ``(targets, T_student)``: targets of shape (N, C) for :class:`TargetObjective`, and its temperature.
    """
    check_positive(temperature, "targets_for", "temperature")
    if method == "soft":
        return soft_targets(teacher_logits, temperature), temperature
    if method == "argmax":
        return one_hot(teacher_logits.argmax(1)), 1.0
    if method == "smoothed":
        entropy = mean_entropy(soft_targets(teacher_logits, temperature))
        return smoothed_to_entropy(teacher_logits.argmax(1), entropy), temperature
    if method == "oracle":
        return one_hot(y_true), 1.0
    raise ValueError(f"The 'method' parameter of _targets must be one of {TARGET_METHODS[:-1]}. Got {method!r}.")


class _Seed:
    """One seed's splits, teacher and cached teacher logits on the student's pool."""

    def __init__(self, config: HonestConfig, seed: int) -> None:
        from .extraction import logits

        self.seed = seed
        self.splits = disjoint_splits(seed, label_fraction=config.label_fraction,
                                      teacher_fraction=config.teacher_fraction)
        self.teacher = train_disjoint_teacher(self.splits, seed=seed, epochs=config.teacher_epochs,
                                              lr=config.teacher_lr, batch_size=config.batch_size)
        full = self.splits.student()
        self.logits = logits(self.teacher, full.X_train)  # (57 + 543, 10): labelled rows, then the pool
        self.cache: dict[tuple, dict] = {}

    def data(self, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = self.splits.student(n)
        k = len(s.y_labelled) + n
        return s.X_train, s.y_student, s.y_train, self.logits[:k]


def _train_method(config: HonestConfig, state: _Seed, method: str, n: int, alpha: float, temperature: float) -> dict:
    key = (method, n, alpha, temperature if method in ("soft", "smoothed") else None)
    if method == "labels_alone":
        key = (method,)
    if key in state.cache:
        return state.cache[key]
    s = state.splits
    options = dict(seed=state.seed, steps=config.steps, lr=config.lr, batch_size=config.batch_size,
                   hidden_size=config.hidden_size)
    if method == "labels_alone":
        model = train_with_targets(s.X_labelled, s.y_labelled, None, alpha=1.0, **options)
    else:
        X, y, y_true, z = state.data(n)
        targets, T = targets_for(method, z, y_true, temperature)
        model = train_with_targets(X, y, targets, alpha=alpha, temperature=T, **options)
    row = {"seed": state.seed, "method": method, "transfer_size": 0 if method == "labels_alone" else n,
           "val_error": _error(model, s.X_val, s.y_val), "test_error": _error(model, s.X_test, s.y_test)}
    state.cache[key] = row
    return row


def select_on_validation(grid: list[dict], *, tolerance: float = 1e-9) -> dict:
    """The (α, τ) of lowest mean validation error; ties (within ``tolerance``) reported, and broken
    toward the setting that teaches distillation: the highest T, then the lowest α.

    Args:
        grid: rows with keys ``alpha``, ``temperature``, ``val_error_mean``.

    Returns:
        ``{"alpha", "temperature", "val_error_mean", "ties": [[alpha, T], ...], "rule"}``.

    Example:
        >>> g = [{"alpha": 0.0, "temperature": 1.0, "val_error_mean": 0.1},
        ...      {"alpha": 0.0, "temperature": 4.0, "val_error_mean": 0.1}]
        >>> select_on_validation(g)["temperature"], select_on_validation(g)["ties"]
        (4.0, [[0.0, 1.0], [0.0, 4.0]])
    """
    best = min(r["val_error_mean"] for r in grid)
    ties = [r for r in grid if r["val_error_mean"] <= best + tolerance]
    chosen = sorted(ties, key=lambda r: (-r["temperature"], r["alpha"]))[0]
    return {"alpha": chosen["alpha"], "temperature": chosen["temperature"], "val_error_mean": best,
            "ties": [[r["alpha"], r["temperature"]] for r in ties],
            "rule": "lowest mean validation error over the selection seeds; a tie goes to the highest "
                    "temperature, then the lowest alpha (the setting that relies most on the soft labels)"}


def _mean(values: Sequence[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def _omitted_rows(config: HonestConfig, state: _Seed, alpha: float) -> list[dict]:
    """Hinton et al.'s omitted class for one seed: soft targets at each T and the argmax control."""
    from .case_study import bias_shift
    from .extraction import logits as extract
    from .train import predict_logits

    cls = config.omitted_class
    s = disjoint_splits(state.seed, label_fraction=config.label_fraction,
                        teacher_fraction=config.teacher_fraction, exclude_classes=(cls,))
    if not np.array_equal(s.indices["teacher"], state.splits.indices["teacher"]):  # the same teacher serves
        raise RuntimeError("the omitted-class split changed the teacher's set")
    student = s.student()
    X, y = student.X_train, student.y_student
    z = extract(state.teacher, X)
    options = dict(seed=state.seed, steps=config.steps, lr=config.lr, batch_size=config.batch_size,
                   hidden_size=config.hidden_size)
    runs = [("argmax", 1.0)] + [("soft", T) for T in config.omitted_temperatures]
    rows = []
    for method, T in runs:
        targets, T_student = targets_for(method, z, y, T)
        model = train_with_targets(X, y, targets, alpha=alpha, temperature=T_student, **options)
        val_logits, test_logits = predict_logits(model, s.X_val), predict_logits(model, s.X_test)
        shift = bias_shift(val_logits, s.y_val, cls)
        row = {"seed": state.seed, "method": method, "temperature": T, "bias_shift": shift}
        for name, logits_, labels in (("val", val_logits, s.y_val), ("test", test_logits, s.y_test)):
            shifted = logits_.clone()
            shifted[:, cls] += shift
            mask = labels == cls
            for suffix, z_ in (("", logits_), ("_shifted", shifted)):
                row[f"{name}_error{suffix}"] = float((z_.argmax(1) != labels).float().mean())
                row[f"{name}_recall{suffix}"] = float((z_[mask].argmax(1) == cls).float().mean())
        rows.append(row)
    return rows


def run_honest(config: HonestConfig = HonestConfig(), *, log=None) -> dict:
    """Every experiment of the honest protocol; the results as a JSON-ready dict.

    1. α and T of the soft targets chosen on validation (``selection_seeds``, ``selection_size``);
    2. the transfer-size sweep: every method of :data:`TARGET_METHODS` at every size, every seed,
       and paired differences with 95 % t-intervals (:func:`paired_ci`);
    3. the omitted class (no image and no label of it in the student's data);
    4. the hint controls (:data:`HINT_METHODS`) at ``hint_size``.

    Only validation errors choose anything; test errors are only reported.
    """
    from .extraction import features

    say = log or (lambda message: None)
    states: dict[int, _Seed] = {}

    def state(seed: int) -> _Seed:
        if seed not in states:
            states[seed] = _Seed(config, seed)
        return states[seed]

    # 1. selection on validation
    grid = []
    for alpha in config.alphas:
        for T in config.temperatures:
            vals = [_train_method(config, state(seed), "soft", config.selection_size, alpha, T)["val_error"]
                    for seed in config.selection_seeds]
            grid.append({"alpha": alpha, "temperature": T, "val_errors": vals, "val_error_mean": _mean(vals)})
    choice = select_on_validation(grid)
    alpha, T = choice["alpha"], choice["temperature"]
    say(f"chosen on validation: alpha={alpha}, T={T} (ties {choice['ties']})")

    # 2. the sweep
    rows = []
    for seed in config.seeds:
        st = state(seed)
        rows.append(_train_method(config, st, "labels_alone", 0, alpha, T))
        for n in config.sizes:
            for method in TARGET_METHODS[:-1]:
                rows.append(_train_method(config, st, method, n, alpha, T))
        say(f"sweep, seed {seed} done")
    teacher_rows = [{"seed": s, "val_error": _error(state(s).teacher, state(s).splits.X_val, state(s).splits.y_val),
                     "test_error": _error(state(s).teacher, state(s).splits.X_test, state(s).splits.y_test)}
                    for s in config.seeds]

    def errors(method: str, n: int) -> list[float]:
        n = 0 if method == "labels_alone" else n
        return [next(r["test_error"] for r in rows if r["seed"] == s and r["method"] == method
                     and r["transfer_size"] == n) for s in config.seeds]

    paired = []
    for n in config.sizes:
        for other in ("argmax", "smoothed", "oracle", "labels_alone"):
            paired.append({"transfer_size": n, "comparison": f"soft - {other}", **paired_ci(errors("soft", n), errors(other, n))})
        paired.append({"transfer_size": n, "comparison": "argmax - labels_alone",
                       **paired_ci(errors("argmax", n), errors("labels_alone", n))})

    # 3. the omitted class
    omitted = [r for seed in config.omitted_seeds for r in _omitted_rows(config, state(seed), alpha)]
    by_T = [{"temperature": t, "val_error_shifted_mean": _mean(r["val_error_shifted"] for r in omitted
                                                               if r["method"] == "soft" and r["temperature"] == t)}
            for t in config.omitted_temperatures]
    best = min(r["val_error_shifted_mean"] for r in by_T)
    omitted_ties = [r["temperature"] for r in by_T if r["val_error_shifted_mean"] <= best + 1e-9]
    omitted_T = max(omitted_ties)
    say(f"omitted class done; T chosen on validation: {omitted_T} (ties {omitted_ties})")

    # 4. the hint controls
    hint_rows = []
    for seed in config.seeds:
        st = state(seed)
        X, y, _, _ = st.data(config.hint_size)
        seed_everything(seed, num_threads=THREADS)
        untrained = DigitCNN().eval()
        targets = {
            "trained_teacher": features(st.teacher, X, "body.relu3"),  # (N, 64)
            "untrained_teacher": features(untrained, X, "body.relu3"),  # (N, 64)
            "pixels": X.flatten(1),  # (N, 64)
        }
        for method, target in targets.items():
            model = train_hint(X, y, target, seed=seed, alpha=config.hint_alpha, hint_weight=config.hint_weight,
                               steps=config.steps, lr=config.lr, batch_size=config.batch_size,
                               hidden_size=config.hidden_size)
            hint_rows.append({"seed": seed, "method": method, "transfer_size": config.hint_size,
                              "val_error": _error(model, st.splits.X_val, st.splits.y_val),
                              "test_error": _error(model, st.splits.X_test, st.splits.y_test)})
        say(f"hint controls, seed {seed} done")
    hint_errors = {m: [r["test_error"] for r in hint_rows if r["method"] == m] for m in HINT_METHODS}

    small = min(config.sizes, key=lambda n: (n > 150, -n if n <= 150 else n))  # the largest size <= 150
    head = next(p for p in paired if p["transfer_size"] == small and p["comparison"] == "soft - argmax")

    def omitted_mean(method: str, temperature: float, key: str) -> float:
        return _mean(r[key] for r in omitted if r["method"] == method and r["temperature"] == temperature)

    headline = {
        "soft_vs_argmax_small_transfer": {
            "transfer_size": small, "temperature": T, "alpha": alpha, "seeds": head["seeds"],
            "mean_paired_difference": head["mean"], "ci95": head["ci95"]},
        "omitted_class": {
            "class": config.omitted_class, "temperature": omitted_T, "seeds": len(config.omitted_seeds),
            "soft_recall": omitted_mean("soft", omitted_T, "test_recall"),
            "soft_recall_bias_shifted": omitted_mean("soft", omitted_T, "test_recall_shifted"),
            "argmax_recall": omitted_mean("argmax", 1.0, "test_recall"),
            "argmax_recall_bias_shifted": omitted_mean("argmax", 1.0, "test_recall_shifted")},
        "hint_controls": {
            "seeds": len(config.seeds), "transfer_size": config.hint_size,
            "trained_teacher_error": _mean(hint_errors["trained_teacher"]),
            "untrained_teacher_error": _mean(hint_errors["untrained_teacher"]),
            "pixels_error": _mean(hint_errors["pixels"])},
        "teacher_saw_transfer_labels": False,
    }
    sizes0 = state(config.seeds[0]).splits.sizes()
    return {
        "headline": headline,
        "honest": {
            "teacher_saw_transfer_labels": False,
            "design": {"sizes_seed0": sizes0, **{k: v for k, v in config.as_dict().items()}},
            "teacher": {"per_seed": teacher_rows, "test_error_mean": _mean(r["test_error"] for r in teacher_rows)},
            "selection": {"seeds": list(config.selection_seeds), "transfer_size": config.selection_size,
                          "grid": grid, **choice},
            "sweep": rows,
            "paired": paired,
            "omitted_class": {"class": config.omitted_class, "alpha": alpha, "rows": omitted,
                              "temperature_selection": by_T, "chosen_temperature": omitted_T,
                              "ties": omitted_ties},
            "hint_controls": {"rows": hint_rows, "alpha": config.hint_alpha, "hint_weight": config.hint_weight,
                              "paired": [
                                  {"comparison": "trained_teacher - untrained_teacher",
                                   **paired_ci(hint_errors["trained_teacher"], hint_errors["untrained_teacher"])},
                                  {"comparison": "trained_teacher - pixels",
                                   **paired_ci(hint_errors["trained_teacher"], hint_errors["pixels"])},
                                  {"comparison": "trained_teacher - labels_alone",
                                   **paired_ci(hint_errors["trained_teacher"], errors("labels_alone", 0))}]},
        },
    }
