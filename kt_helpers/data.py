"""The digits, seen as images (for a CNN) and as sequences of rows (for an RNN).

The book's default data set is scikit-learn's 8×8 handwritten digits
(:func:`sklearn.datasets.load_digits`, 1,797 images, 10 classes), which ships
inside scikit-learn: nothing is downloaded. Introduced in chapter 1; the splits
that model "few labels, many unlabelled images" are the setting of the case
study in chapter 4, and :func:`shift_domain` makes the shifted domains of
chapter 5.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import cache
from ._validation import check_fraction, check_option, check_tensor

__all__ = [
    "TEST_SEED",
    "DigitSplits",
    "as_images",
    "as_sequences",
    "load_digits_tensors",
    "make_splits",
    "shift_domain",
    "train_test_split",
]

NUM_CLASSES = 10
IMAGE_SIZE = 8

#: Seed of the test split. It never changes, so every experiment in the book is
#: scored on the same 450 test images whatever its own seed.
TEST_SEED = 0


def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """Load the 1,797 digits as images scaled to [0, 1] and their labels.

    Returns:
        ``(X, y)``: ``X`` of shape (1797, 1, 8, 8), float32 in [0, 1]
        (the raw pixel values 0–16 divided by 16); ``y`` of shape (1797,), int64.

    Example:
        >>> X, y = load_digits_tensors()
        >>> tuple(X.shape), tuple(y.shape), float(X.max())
        ((1797, 1, 8, 8), (1797,), 1.0)
    """
    images, target = _digits_arrays()
    X = torch.tensor(images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(target, dtype=torch.int64)  # (N,)
    return X, y


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits' images (N, 8, 8) and labels (N,), as :func:`sklearn.datasets.load_digits` gives them.

    Read from the file that ships inside scikit-learn, the way ``load_digits``
    reads it, without importing scikit-learn (about a second per notebook, for
    a 1,797-row table); ``tests/test_data.py`` checks that both agree.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("The digits ship with scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # another layout: ask scikit-learn itself
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    table = np.loadtxt(path, delimiter=",")  # (N, 65): 64 pixels, then the label
    return table[:, :-1].reshape(-1, IMAGE_SIZE, IMAGE_SIZE), table[:, -1].astype(int)


def train_test_split(index: np.ndarray, *, stratify: np.ndarray, random_state: int,
                     test_size: float | None = None, train_size: float | None = None) -> list[np.ndarray]:
    """:func:`sklearn.model_selection.train_test_split` of ``index``, stratified: the same two parts.

    The parts are computed once and kept in the training cache when a notebook
    turned it on (:mod:`kt_helpers.cache`), so that the next notebook that makes
    the same split does not import scikit-learn again (about a second).
    """

    def split() -> list[np.ndarray]:
        from sklearn.model_selection import train_test_split as sk_split

        return sk_split(index, test_size=test_size, train_size=train_size, stratify=stratify,
                        random_state=random_state)

    key = (index, stratify, random_state, test_size, train_size, _sklearn_version())
    return cache.memoised("splits", key, split)


def _sklearn_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scikit-learn")
    except PackageNotFoundError:
        return "?"


def as_sequences(X: Tensor) -> Tensor:
    """View images as sequences of rows: (N, 1, H, W) -> (N, H, W).

    Step ``t`` of the sequence is row ``t`` of the image, so an RNN reads the
    digit top to bottom, one row of ``W`` pixels per step.
    """
    check_tensor(X, "as_sequences", "X")
    if X.ndim == 3:
        return X
    if X.ndim != 4 or X.shape[1] != 1:
        raise ValueError(
            "The 'X' parameter of as_sequences must have shape (N, 1, H, W) or (N, H, W). "
            f"Got {tuple(X.shape)} instead."
        )
    return X.squeeze(1)  # (N, H, W)


def as_images(X: Tensor) -> Tensor:
    """View sequences of rows as one-channel images: (N, H, W) -> (N, 1, H, W)."""
    check_tensor(X, "as_images", "X")
    if X.ndim == 4:
        return X
    if X.ndim != 3:
        raise ValueError(
            "The 'X' parameter of as_images must have shape (N, H, W) or (N, 1, H, W). "
            f"Got {tuple(X.shape)} instead."
        )
    return X.unsqueeze(1)  # (N, 1, H, W)


@dataclass(frozen=True)
class DigitSplits:
    """The splits of the case study: few labels, many unlabelled images.

    Attributes:
        X_labelled, y_labelled: the small labelled training set.
        X_transfer, y_transfer: the rest of the training images. Treat them as
            unlabelled: ``y_transfer`` is kept only to *diagnose* transfer
            (e.g. how often the teacher is right on them), never to train a student.
        X_val, y_val: a validation split carved from the training data, used to
            choose hyperparameters (alpha, temperature, epochs).
        X_test, y_test: the fixed test set (the same 450 images for every seed).
        X_train, y_train: labelled + transfer, with all their labels, as used to
            train the teacher and the "all labels" reference student.
        y_student: the labels of ``X_train`` as a student of transfer sees them:
            ``y_labelled``, then ``-1`` (unlabelled) for every transfer image.
    """

    X_labelled: Tensor
    y_labelled: Tensor
    X_transfer: Tensor
    y_transfer: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor

    @property
    def X_train(self) -> Tensor:
        return torch.cat([self.X_labelled, self.X_transfer])

    @property
    def y_train(self) -> Tensor:
        return torch.cat([self.y_labelled, self.y_transfer])

    @property
    def y_student(self) -> Tensor:
        return torch.cat([self.y_labelled, torch.full_like(self.y_transfer, -1)])

    def sizes(self) -> dict[str, int]:
        """Number of images in each split."""
        return {
            "labelled": len(self.y_labelled),
            "transfer": len(self.y_transfer),
            "val": len(self.y_val),
            "test": len(self.y_test),
        }

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.sizes().items())
        return f"DigitSplits({parts})"


def make_splits(
    label_fraction: float = 0.1,
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
    val_fraction: float = 0.15,
    exclude_classes: Sequence[int] = (),
) -> DigitSplits:
    """Split the digits into labelled, transfer (unlabelled), validation and test sets.

    The test set is fixed (seeded by :data:`TEST_SEED`); the rest depends on
    ``seed``. All splits are stratified by class. Introduced in chapter 1 and
    used throughout the case study (chapter 4).

    Args:
        label_fraction: fraction of the training images that keep their label,
            in (0, 1]. The rest form the transfer set.
        seed: seed of the validation and labelled/transfer splits.
        test_fraction: fraction of all images held out for testing, in (0, 1).
        val_fraction: fraction of the non-test images held out for validation, in (0, 1).
        exclude_classes: digit classes removed from the labelled set (they are
            moved to the transfer set), for the "dark knowledge" experiment in
            which the student never sees a label of these classes.

    Returns:
        A :class:`DigitSplits`.

    Example:
        >>> make_splits(0.1, seed=0)
        DigitSplits(labelled=114, transfer=1030, val=203, test=450)
    """
    label_fraction = check_fraction(label_fraction, "make_splits", "label_fraction", closed=True)
    check_fraction(test_fraction, "make_splits", "test_fraction")
    check_fraction(val_fraction, "make_splits", "val_fraction")
    bad = [c for c in exclude_classes if c not in range(NUM_CLASSES)]
    if bad:
        raise ValueError(
            "The 'exclude_classes' parameter of make_splits must hold digit classes 0-9. "
            f"Got {list(exclude_classes)!r} instead."
        )

    X, y = load_digits_tensors()
    index = np.arange(len(y))
    rest, test = train_test_split(
        index, test_size=test_fraction, stratify=y.numpy(), random_state=TEST_SEED
    )
    train, val = train_test_split(
        rest, test_size=val_fraction, stratify=y[rest].numpy(), random_state=seed
    )
    if label_fraction == 1.0:
        labelled, transfer = train, train[:0]
    else:
        num_labelled = max(NUM_CLASSES, math.floor(label_fraction * len(train)))
        labelled, transfer = train_test_split(
            train, train_size=num_labelled, stratify=y[train].numpy(), random_state=seed
        )
    if exclude_classes:
        hidden = np.isin(y[labelled].numpy(), list(exclude_classes))
        transfer = np.concatenate([transfer, labelled[hidden]])
        labelled = labelled[~hidden]

    def take(idx: np.ndarray) -> tuple[Tensor, Tensor]:
        idx_t = torch.as_tensor(np.sort(idx), dtype=torch.int64)
        return X[idx_t], y[idx_t]

    return DigitSplits(*take(labelled), *take(transfer), *take(val), *take(test))


SHIFTS = ("rotate", "invert", "noise", "flip")


def shift_domain(
    X: Tensor, kind: str, *, severity: float = 1.0, seed: int = 0
) -> Tensor:
    """Return a shifted copy of a batch of images: a new *domain* of the same task.

    Used in chapter 5 (cross-domain knowledge sharing).

    Args:
        X: images of shape (N, 1, H, W) in [0, 1].
        kind: one of ``"rotate"`` (by ``45 * severity`` degrees), ``"invert"``
            (``1 - X``, severity ignored), ``"noise"`` (Gaussian noise of
            standard deviation ``0.3 * severity``, clipped to [0, 1]) or
            ``"flip"`` (mirrored left to right, severity ignored).
        severity: strength of the shift, > 0.
        seed: seed of the noise.

    Returns:
        A tensor of the same shape as ``X``.
    """
    check_tensor(X, "shift_domain", "X", ndim=4)
    check_option(kind, "shift_domain", "kind", SHIFTS)
    if not severity > 0:
        raise ValueError(
            f"The 'severity' parameter of shift_domain must be > 0. Got {severity!r} instead."
        )
    if kind == "invert":
        return 1.0 - X
    if kind == "flip":
        return X.flip(-1)
    if kind == "noise":
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(X.shape, generator=gen) * (0.3 * severity)
        return (X + noise.to(X.device)).clamp(0.0, 1.0)
    # rotate about the image centre with bilinear resampling
    angle = math.radians(45.0 * severity)
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=X.dtype, device=X.device)
    grid = F.affine_grid(theta.expand(X.shape[0], 2, 3), list(X.shape), align_corners=False)
    return F.grid_sample(X, grid, align_corners=False, padding_mode="zeros")
