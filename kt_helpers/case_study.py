"""The CNN → RNN case study of chapter 4: its configuration and its runners.

Every notebook of chapter 4 and the benchmark ``benchmarks/case_study.py``
run the same code from here, so that no experiment is written twice and the
numbers of the book and of the benchmark come from one place:

* :class:`CaseStudyConfig` — the study's settings (splits, models, training
  schedules, α, temperature), each default commented;
* :func:`train_teacher`, :func:`train_student` — one model of the study,
  trained one way (labels alone, distillation, a feature hint, both, or all
  labels);
* :func:`run_seed`, :func:`run_study`, :func:`summarise` — every method over
  several seeds, as a long table and as mean ± spread;
* :func:`dark_knowledge` — Hinton et al.'s experiment of a class the student
  never sees labelled;
* :func:`epoch_costs` — the cost of one epoch of distillation against one
  epoch of plain training;
* :func:`run_benchmark` — all of the above over every seed, as the benchmark
  ``benchmarks/case_study.py`` runs it, and :func:`load_results` to read its JSON.

The α convention is the book's: α weighs the student's own knowledge (the
labels), 1 − α the knowledge transferred from the teacher.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # for annotations only: pandas is imported where it is used
    from pathlib import Path

    import pandas as pd

from . import extraction
from ._validation import check_alpha, check_int, check_non_negative, check_option, check_positive
from .data import DigitSplits, make_splits
from .fusion import TransferObjective, kd_loss
from .models import DigitCNN, RowRNN
from .train import _device_of, cross_entropy_objective, fit, predict_logits, seed_everything

__all__ = [
    "METHODS",
    "HEADLINE",
    "FRACTIONS",
    "HIDDEN_CLASS",
    "AUGMENTED_EPOCHS",
    "PACKAGED_RESULTS_PATH",
    "RESULTS_PATH",
    "CaseStudyConfig",
    "LiveTeacherObjective",
    "StudentRun",
    "as_percent",
    "bias_shift",
    "dark_knowledge",
    "dark_knowledge_rows",
    "epoch_costs",
    "error_rate",
    "load_results",
    "packaged_results_file",
    "new_student",
    "run_benchmark",
    "run_seed",
    "run_study",
    "shift_images",
    "standardise",
    "summarise",
    "train_student",
    "train_teacher",
    "transfer_set",
]

#: The ways of training the RNN student, in the order of the tables:
#: ``"labelled"`` labels alone (a), ``"kd"`` the teacher's soft labels (b),
#: ``"pseudo_labels"`` the control of (b), the teacher's top class instead of its
#: soft labels (b′), ``"hint"`` a feature hint through a learned linear map (c),
#: ``"kd+hint"`` both (d), and ``"all_labels"`` the reference trained on every
#: training label.
METHODS = ("labelled", "kd", "pseudo_labels", "hint", "kd+hint", "all_labels")

_TEACHER_METHODS = ("kd", "pseudo_labels", "hint", "kd+hint")

#: The layer of :class:`~kt_helpers.models.DigitCNN` whose output are its penultimate features.
TEACHER_FEATURE_LAYER = "body.relu3"


@dataclass
class CaseStudyConfig:
    """Settings of the case study (chapter 4).

    The schedules of the two references were chosen on the validation split in
    notebook 2 (model selection), α, the temperature, the transfer learning
    rate and the hint's weights in notebook 5 (fusion); never on the test set.

    Example:
        >>> CaseStudyConfig(seeds=(0, 1)).label_fraction
        0.1
    """

    label_fraction: float = 0.1  # fraction of the training images that keep their label
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # one split and one initialisation per seed
    batch_size: int = 64  # samples per mini-batch, for every model
    # --- the CNN teacher, trained on every training label -------------------------------------
    teacher_epochs: int = 30  # passes over the 1,144 training images
    teacher_lr: float = 3e-3  # Adam learning rate, cosine-annealed to 0 (as for every model)
    # --- the RNN student ----------------------------------------------------------------------
    cell: str = "gru"  # recurrent cell: "gru" (Cho et al., 2014) or "lstm"
    hidden_size: int = 64  # width of the RNN's state, its feature vector
    labelled_epochs: int = 300  # labels alone: 300 passes over the 114 images = 600 steps (nb. 2)
    labelled_lr: float = 3e-2  # labels alone: chosen on validation (notebook 2)
    transfer_epochs: int = 30  # distillation / hint: passes over labelled + transfer images
    transfer_lr: float = 3e-2  # distillation / hint: chosen on validation (notebook 5)
    alpha: float = 0.0  # weight of the labels, 1 - alpha that of the teacher (notebook 5)
    temperature: float = 1.0  # softmax temperature T of the distillation term (notebook 5)
    hint_weight: float = 1.0  # beta, weight of the hint next to the KL term (notebook 5)
    hint_alpha: float = 0.5  # alpha of the hint-only student, whose head needs labels (nb. 5)
    hint_standardise: bool = True  # centre and scale the teacher's features for the hint (nb. 3)
    full_epochs: int = 30  # all-labels reference: as many epochs over the same images as KD
    full_lr: float = 3e-2  # all-labels reference: chosen on validation (notebook 2)
    augment: bool = False  # add 1-pixel shifted copies (teacher-labelled for KD), see run_benchmark

    def __post_init__(self) -> None:
        func = "CaseStudyConfig"
        check_alpha(self.alpha, func)
        check_alpha(self.hint_alpha, func, "hint_alpha")
        check_positive(self.temperature, func, "temperature")
        check_option(self.cell, func, "cell", ("gru", "lstm"))
        for name in (
            "batch_size", "teacher_epochs", "hidden_size", "labelled_epochs",
            "transfer_epochs", "full_epochs",
        ):
            check_int(getattr(self, name), func, name)
        for name in ("teacher_lr", "labelled_lr", "transfer_lr", "full_lr"):
            check_positive(getattr(self, name), func, name)
        check_non_negative(self.hint_weight, func, "hint_weight")
        self.seeds = tuple(self.seeds)
        if not self.seeds:
            raise ValueError(f"The 'seeds' parameter of {func} must hold at least one seed. Got none.")
        for seed in self.seeds:
            check_int(seed, func, "seeds", minimum=0)

    def replace(self, **changes) -> "CaseStudyConfig":
        """A copy with some settings changed, e.g. ``config.replace(alpha=0.5)``."""
        return dataclasses.replace(self, **changes)

    def for_fraction(self, label_fraction: float) -> "CaseStudyConfig":
        """The same study at another fraction of labels.

        The labels-alone student keeps the same number of gradient steps: its
        epochs scale as ``labelled_epochs * self.label_fraction / label_fraction``
        (a labelled set five times larger gets a fifth of the epochs).

        Example:
            >>> CaseStudyConfig(labelled_epochs=300).for_fraction(0.5).labelled_epochs
            60
        """
        epochs = max(1, round(self.labelled_epochs * self.label_fraction / label_fraction))
        return self.replace(label_fraction=label_fraction, labelled_epochs=epochs)

    def as_dict(self) -> dict:
        """The settings as a plain dict (for a JSON file or a table)."""
        out = dataclasses.asdict(self)
        out["seeds"] = list(self.seeds)
        return out


# --- data ------------------------------------------------------------------------------------


def shift_images(X: Tensor, shifts: Sequence[tuple[int, int]] = ((0, 1), (0, -1), (1, 0), (-1, 0))) -> Tensor:
    """Copies of the images moved by whole pixels, the empty border filled with 0 (white).

    Args:
        X: images of shape (N, 1, H, W).
        shifts: ``(down, right)`` displacements in pixels, one copy per shift.

    Returns:
        The shifted copies, of shape (len(shifts) * N, 1, H, W), shift by shift.

    Example:
        >>> X = torch.zeros(1, 1, 3, 3); X[0, 0, 1, 1] = 1.0
        >>> shift_images(X, [(0, 1)])[0, 0]
        tensor([[0., 0., 0.],
                [0., 0., 1.],
                [0., 0., 0.]])
    """
    if not isinstance(X, Tensor) or X.ndim != 4:
        raise ValueError(
            "The 'X' parameter of shift_images must be a tensor of shape (N, 1, H, W). "
            f"Got {tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__} instead."
        )
    H, W = X.shape[-2:]
    copies = []
    for down, right in shifts:
        if abs(down) >= H or abs(right) >= W:
            raise ValueError(
                f"The 'shifts' parameter of shift_images must hold shifts smaller than the image "
                f"({H}x{W}). Got {(down, right)} instead."
            )
        moved = torch.roll(X, shifts=(down, right), dims=(-2, -1))  # (N, 1, H, W)
        if down > 0:
            moved[..., :down, :] = 0.0
        elif down < 0:
            moved[..., down:, :] = 0.0
        if right > 0:
            moved[..., :, :right] = 0.0
        elif right < 0:
            moved[..., :, right:] = 0.0
        copies.append(moved)
    return torch.cat(copies)


def transfer_set(splits: DigitSplits, *, augment: bool = False) -> tuple[Tensor, Tensor]:
    """The student's training set for transfer: labelled images, then the transfer set.

    The labels of the transfer set are hidden (``-1``): only the teacher's
    knowledge speaks for those images. With ``augment``, 1-pixel shifts of
    every image follow, all unlabelled.

    Returns:
        ``(X, y)``: X of shape (N, 1, 8, 8), y of shape (N,) with ``-1`` for unlabelled images.
    """
    X, y = splits.X_train, splits.y_student  # labelled rows first, then the transfer set (-1)
    if augment:
        extra = shift_images(X)
        X = torch.cat([X, extra])
        y = torch.cat([y, torch.full((len(extra),), -1, dtype=y.dtype)])
    return X, y


def _all_labels_set(splits: DigitSplits, *, augment: bool = False) -> tuple[Tensor, Tensor]:
    """Every training image with its label (and its shifted copies, with the same label)."""
    X, y = splits.X_train, splits.y_train
    if augment:
        extra = shift_images(X)
        X = torch.cat([X, extra])
        y = torch.cat([y, y.repeat(len(extra) // len(y))])
    return X, y


# --- models ------------------------------------------------------------------------------------


def train_teacher(splits: DigitSplits, config: CaseStudyConfig, *, seed: int) -> DigitCNN:
    """The CNN teacher, trained on every training label (labelled + transfer set).

    The validation and test images are never used.
    """
    seed_everything(seed)
    teacher = DigitCNN()
    fit(
        teacher, splits.X_train, splits.y_train,
        num_epochs=config.teacher_epochs, lr=config.teacher_lr,
        batch_size=config.batch_size, seed=seed,
    )
    return teacher


def new_student(config: CaseStudyConfig, *, seed: int) -> RowRNN:
    """A freshly initialised RNN student: the same weights for the same seed, whatever the method."""
    seed_everything(seed)
    return RowRNN(hidden_size=config.hidden_size, cell=config.cell)


@dataclass
class StudentRun:
    """A trained student and what trained it.

    Attributes:
        method: one of :data:`METHODS`.
        model: the trained :class:`~kt_helpers.models.RowRNN`.
        mapping: the learned map T from the student's state to the teacher's
            features (``"hint"`` and ``"kd+hint"`` only), else None.
        history: the :class:`~kt_helpers.train.History` of ``fit``.
    """

    method: str
    model: RowRNN
    mapping: nn.Linear | None = None
    history: object = None


def standardise(features: Tensor, *, like: Tensor | None = None) -> Tensor:
    """Centre features per dimension and scale them to unit overall variance.

    The CNN's penultimate features are ReLU outputs of arbitrary scale (tens,
    for some units): a hint loss against them raw is dominated by the largest
    units and can swamp every other term. Centring and one global scale keep
    the geometry of the representation (its CKA with anything is unchanged)
    while putting the hint on the scale of the other losses.

    Args:
        features: of shape (N, d).
        like: features of shape (M, d) whose mean and scale to use, e.g. the
            training features when standardising held-out ones; default ``features``.

    Shape:
        - features: (N, d). Output: (N, d).

    Example:
        >>> z = standardise(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> round(float(z.pow(2).mean()), 4)
        1.0
    """
    reference = features if like is None else like
    for name, value in (("features", features), ("like", reference)):
        if not isinstance(value, Tensor) or value.ndim != 2:
            raise ValueError(
                f"The '{name}' parameter of standardise must be a tensor of shape (N, d). "
                f"Got {tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__} instead."
            )
    if reference.shape[1] != features.shape[1]:
        raise ValueError(
            "The 'like' parameter of standardise must have as many columns as 'features'. "
            f"Got {reference.shape[1]} and {features.shape[1]} instead."
        )
    mean = reference.mean(dim=0, keepdim=True)  # (1, d)
    scale = (reference - mean).pow(2).mean().sqrt()
    if float(scale) == 0.0:
        raise ValueError("The 'like' parameter of standardise must vary across samples. Got constant features.")
    return (features - mean) / scale


def train_student(
    method: str,
    splits: DigitSplits,
    config: CaseStudyConfig,
    *,
    seed: int,
    teacher: nn.Module | None = None,
    X_val: Tensor | None = None,
    y_val: Tensor | None = None,
) -> StudentRun:
    """Train the RNN student one way.

    Args:
        method: ``"labelled"`` (cross-entropy on the labelled set alone),
            ``"kd"`` (distillation, eq. of chapter 3: α·CE + (1 − α)·T²·KL on
            labelled + transfer set), ``"hint"`` (α·CE + (1 − α)·β·hint through a
            learned linear map to the teacher's penultimate features, with
            α = ``config.hint_alpha``), ``"kd+hint"`` (both transferred terms)
            or ``"all_labels"`` (cross-entropy on every training label);
            ``"pseudo_labels"``, the control of ``"kd"``: the same images,
            schedule and initial weights, but cross-entropy on the teacher's
            predicted class (its argmax) instead of its soft labels, so that it
            learns the teacher's labels without the rest of its distribution.
        splits: the data.
        config: the settings.
        seed: seed of the student's initial weights and of the batch order.
        teacher: the trained teacher, needed by every method but ``"labelled"``
            and ``"all_labels"``. Its knowledge is extracted once, before training.
        X_val, y_val: optional validation set, scored after every epoch (into
            the history).

    Returns:
        A :class:`StudentRun`.
    """
    check_option(method, "train_student", "method", METHODS)
    needs_teacher = method in _TEACHER_METHODS
    if needs_teacher and teacher is None:
        raise ValueError(
            f"The 'teacher' parameter of train_student is required for method {method!r}. Got None."
        )
    student = new_student(config, seed=seed)
    common = dict(batch_size=config.batch_size, seed=seed, X_val=X_val, y_val=y_val)
    if method == "labelled":
        history = fit(
            student, splits.X_labelled, splits.y_labelled,
            num_epochs=config.labelled_epochs, lr=config.labelled_lr, **common,
        )
        return StudentRun(method, student, None, history)
    if method == "all_labels":
        X, y = _all_labels_set(splits, augment=config.augment)
        history = fit(student, X, y, num_epochs=config.full_epochs, lr=config.full_lr, **common)
        return StudentRun(method, student, None, history)

    X, y = transfer_set(splits, augment=config.augment)
    if method == "pseudo_labels":
        # The teacher labels every training image with its top class; no label of the split is used.
        pseudo = extraction.logits(teacher, X).argmax(dim=1)  # (N,)
        history = fit(student, X, pseudo, num_epochs=config.transfer_epochs, lr=config.transfer_lr, **common)
        return StudentRun(method, student, None, history)
    # Step 2, extraction: the teacher runs once over the training set; its knowledge is cached.
    teacher_logits = extraction.logits(teacher, X) if method in ("kd", "kd+hint") else None  # (N, 10)
    teacher_features = None
    if method in ("hint", "kd+hint"):
        teacher_features = extraction.features(teacher, X, TEACHER_FEATURE_LAYER)  # (N, 64)
        if config.hint_standardise:
            teacher_features = standardise(teacher_features)
    mapping = None
    if teacher_features is not None:
        # Step 3, mapping: a learned linear map T from the RNN's state to the CNN's features.
        torch.manual_seed(seed)
        mapping = nn.Linear(config.hidden_size, teacher_features.shape[1])
    objective = TransferObjective(
        teacher_logits=teacher_logits,
        teacher_features=teacher_features,
        mapping=mapping,
        alpha=config.hint_alpha if method == "hint" else config.alpha,
        temperature=config.temperature,
        hint_weight=config.hint_weight,
    )
    # Step 4, fusion: the objective weighs the labels by alpha and the teacher by 1 - alpha.
    history = fit(
        student, X, y, objective=objective,
        num_epochs=config.transfer_epochs, lr=config.transfer_lr, **common,
    )
    return StudentRun(method, student, mapping, history)


def error_rate(model: nn.Module, splits: DigitSplits, split: str = "test") -> float:
    """Fraction of a split's images that ``model`` gets wrong.

    Args:
        model: a trained model.
        splits: the data.
        split: ``"test"`` (the fixed test set) or ``"val"`` (the validation split).
    """
    check_option(split, "error_rate", "split", ("test", "val"))
    X, y = (splits.X_test, splits.y_test) if split == "test" else (splits.X_val, splits.y_val)
    logits = predict_logits(model, X)
    return float((logits.argmax(1) != y).float().mean())


def as_percent(
    frame: pd.DataFrame | pd.Series, columns: Sequence[str] | None = None, *, decimals: int = 1
) -> pd.DataFrame | pd.Series:
    """A copy of a table with some columns shown as percentages, for display.

    Args:
        frame: a :class:`pandas.DataFrame` (or Series) of fractions.
        columns: the columns to format; default every column.
        decimals: digits after the decimal point.

    Returns:
        A copy in which those columns hold strings such as ``"12.5%"``.

    Example:
        >>> import pandas as pd
        >>> as_percent(pd.DataFrame({"error": [0.125], "epochs": [30]}), ["error"])
           error  epochs
        0  12.5%      30
    """
    out = frame.copy()
    if getattr(out, "ndim", 1) == 1:
        return out.map(f"{{:.{decimals}%}}".format)
    for column in out.columns if columns is None else columns:
        if column not in out.columns:
            raise ValueError(
                f"The 'columns' parameter of as_percent must name columns of 'frame', from "
                f"{list(out.columns)}. Got {column!r} instead."
            )
        out[column] = out[column].map(f"{{:.{decimals}%}}".format)
    return out


# --- many seeds --------------------------------------------------------------------------------


def run_seed(
    config: CaseStudyConfig,
    seed: int,
    methods: Iterable[str] = METHODS,
    *,
    splits: DigitSplits | None = None,
    teacher: nn.Module | None = None,
) -> list[dict]:
    """Train the teacher and one student per method for one seed; score them.

    Args:
        config: the settings (``config.seeds`` is ignored: ``seed`` is used).
        seed: seed of the split, the teacher and the students.
        methods: which students to train, from :data:`METHODS`.
        splits, teacher: reuse a split and a trained teacher instead of making them.

    Returns:
        One dict per model (the teacher first) with keys ``seed``, ``method``,
        ``val_error`` and ``test_error``.
    """
    methods = [check_option(m, "run_seed", "methods", METHODS) for m in methods]
    splits = splits or make_splits(config.label_fraction, seed=seed)
    needs_teacher = any(m in _TEACHER_METHODS for m in methods)
    rows = []
    if teacher is None and needs_teacher:
        teacher = train_teacher(splits, config, seed=seed)
    if teacher is not None:
        rows.append(
            {"seed": seed, "method": "teacher",
             "val_error": error_rate(teacher, splits, "val"), "test_error": error_rate(teacher, splits)}
        )
    for method in methods:
        run = train_student(method, splits, config, seed=seed, teacher=teacher)
        rows.append(
            {"seed": seed, "method": method,
             "val_error": error_rate(run.model, splits, "val"), "test_error": error_rate(run.model, splits)}
        )
    return rows


def run_study(
    config: CaseStudyConfig,
    methods: Iterable[str] = METHODS,
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`run_seed` for every seed of ``config``, as one long table.

    Returns:
        A :class:`pandas.DataFrame` with one row per (seed, model) and columns
        ``seed``, ``method``, ``val_error``, ``test_error``.
    """
    import pandas as pd

    methods = list(methods)
    seeds: Iterable[int] = config.seeds
    if progress:
        from tqdm.auto import tqdm

        seeds = tqdm(seeds, desc="seeds", leave=False)
    rows = [row for seed in seeds for row in run_seed(config, seed, methods)]
    return pd.DataFrame(rows)


def summarise(results: pd.DataFrame, *, value: str = "test_error") -> pd.DataFrame:
    """Mean, standard deviation (over seeds, ``ddof=1``), min and max of ``value`` per method.

    Args:
        results: a long table as returned by :func:`run_study`.
        value: the column to summarise.

    Returns:
        A :class:`pandas.DataFrame` indexed by method (in the order of
        :data:`METHODS`, the teacher first) with columns ``mean``, ``std``,
        ``min``, ``max`` and ``seeds``.
    """
    if value not in results.columns:
        raise ValueError(
            f"The 'value' parameter of summarise must be a column of 'results', one of "
            f"{list(results.columns)}. Got {value!r} instead."
        )
    table = results.groupby("method")[value].agg(["mean", "std", "min", "max", "count"])
    table = table.rename(columns={"count": "seeds"})
    order = [m for m in ("teacher", *METHODS) if m in table.index]
    order += [m for m in table.index if m not in order]
    return table.loc[order]


# --- dark knowledge ------------------------------------------------------------------------------


def dark_knowledge(
    config: CaseStudyConfig,
    *,
    seed: int,
    hidden_class: int = 3,
    drop_from_transfer: bool = False,
    teacher: nn.Module | None = None,
) -> dict:
    """Hinton et al.'s experiment: a class the student never sees labelled.

    The labelled set holds no image of ``hidden_class`` (``make_splits(...,
    exclude_classes=(hidden_class,))``). With ``drop_from_transfer`` the images
    of that class are removed from the transfer set too, so the student never
    sees one at all and can learn about the class only from the soft labels the
    teacher gives *other* digits (Hinton et al., 2015, section 3). The teacher
    is trained on every training label, as in the rest of the study.

    Returns:
        A dict with the trained ``"teacher"``, the students ``"labelled"`` and
        ``"kd"`` (trained by :func:`train_student`), and ``"splits"`` (the
        splits the students saw).
    """
    full = make_splits(config.label_fraction, seed=seed, exclude_classes=(hidden_class,))
    if teacher is None:
        teacher = train_teacher(full, config, seed=seed)
    splits = full
    if drop_from_transfer:
        keep = full.y_transfer != hidden_class
        splits = dataclasses.replace(full, X_transfer=full.X_transfer[keep], y_transfer=full.y_transfer[keep])
    labelled = train_student("labelled", splits, config, seed=seed).model
    kd = train_student("kd", splits, config, seed=seed, teacher=teacher).model
    return {"teacher": teacher, "labelled": labelled, "kd": kd, "splits": splits}


def bias_shift(
    logits: Tensor, y: Tensor, cls: int, shifts: Sequence[float] = tuple(x / 2 for x in range(0, 21))
) -> float:
    """The shift of one class's logit that maximises accuracy (Hinton et al.'s bias adjustment).

    A student that never saw a class labelled tends to under-predict it;
    adding a constant to that class's logit (equivalently, to its bias in the
    head) corrects the prior. Choose the shift on held-out data — the
    validation split, never the test set. Ties go to the smallest shift.

    Args:
        logits: of shape (N, C), e.g. the student's logits on the validation split.
        y: labels of shape (N,).
        cls: the class whose logit is shifted.
        shifts: the candidate shifts.

    Returns:
        The best shift, a float.

    Example:
        >>> z = torch.tensor([[2.0, 1.0], [2.0, 1.5]])
        >>> bias_shift(z, torch.tensor([1, 1]), cls=1)
        1.5
    """
    if not 0 <= cls < logits.shape[1]:
        raise ValueError(
            f"The 'cls' parameter of bias_shift must be a class index in [0, {logits.shape[1] - 1}]. "
            f"Got {cls!r} instead."
        )
    best, best_acc = 0.0, -1.0
    for shift in shifts:
        shifted = logits.clone()
        shifted[:, cls] += shift
        acc = float((shifted.argmax(1) == y).float().mean())
        if acc > best_acc + 1e-12:
            best, best_acc = float(shift), acc
    return best


# --- cost of an epoch ---------------------------------------------------------------------------


class LiveTeacherObjective:
    """The distillation objective as most tutorials write it: the teacher runs inside the loop.

    Every batch runs the teacher forward (in evaluation mode, without
    gradients) before the student, so every epoch pays for the teacher again.
    It computes the same loss as :func:`~kt_helpers.fusion.distillation_objective`
    with logits extracted once; it is here only to measure what caching saves.

    It is deliberately not an :class:`torch.nn.Module`, so that
    :func:`~kt_helpers.train.fit` does not hand the teacher's weights to the optimiser;
    the teacher follows the batches to their device (a GPU, when ``fit`` trains there).
    """

    def __init__(self, teacher: nn.Module, *, alpha: float = 0.5, temperature: float = 4.0) -> None:
        self.teacher = teacher.eval()
        self.alpha = check_alpha(alpha, "LiveTeacherObjective")
        self.temperature = check_positive(temperature, "LiveTeacherObjective", "temperature")

    def __call__(self, model: nn.Module, X: Tensor, y: Tensor, index: Tensor) -> Tensor:
        if _device_of(self.teacher) != X.device:
            self.teacher.to(X.device)
        with torch.no_grad():
            teacher_logits = self.teacher(X)  # (B, C), recomputed at every step
        return kd_loss(model(X), teacher_logits, y, alpha=self.alpha, temperature=self.temperature)


def epoch_costs(
    splits: DigitSplits,
    config: CaseStudyConfig,
    teacher: nn.Module,
    *,
    repeats: int = 7,
    seed: int = 0,
    timer: Callable[[], float] = time.perf_counter,
) -> dict:
    """Time one training epoch of plain cross-entropy, of cached and of live distillation.

    All three train the same student architecture on the same samples (the
    labelled + transfer set, so the comparison measures the cost of the loss,
    not of more data): plain cross-entropy uses all their labels, distillation
    the teacher's logits — extracted once before timing (*cached*) or
    recomputed at every batch (*live*). The three are run in turn, ``repeats``
    times, so that a busy machine slows them alike; each is a fresh student
    trained for one epoch by :func:`~kt_helpers.train.fit`. The cached
    variant's one-off extraction is timed separately.

    Returns:
        A dict with the median seconds ``plain_epoch_s``, ``kd_epoch_s``,
        ``live_epoch_s``, ``extraction_s``, the ratios ``kd_epoch_cost_ratio``
        (cached / plain) and ``live_teacher_epoch_cost_ratio`` (live / plain),
        and ``repeats``.
    """
    check_int(repeats, "epoch_costs", "repeats")
    X, y_hidden = transfer_set(splits)
    y_all = splits.y_train
    start = timer()
    teacher_logits = extraction.logits(teacher, X)  # (N, 10), extracted once
    extraction_s = timer() - start
    cached = TransferObjective(teacher_logits=teacher_logits, alpha=config.alpha, temperature=config.temperature)
    live = LiveTeacherObjective(teacher, alpha=config.alpha, temperature=config.temperature)
    runs = {
        "plain": (y_all, cross_entropy_objective),
        "kd": (y_hidden, cached),
        "live": (y_hidden, live),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (y, objective) in runs.items():
            student = new_student(config, seed=seed)
            start = timer()
            fit(student, X, y, objective=objective, num_epochs=1, lr=config.transfer_lr,
                batch_size=config.batch_size, seed=seed, schedule="constant")
            times[name].append(timer() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "plain_epoch_s": median["plain"],
        "kd_epoch_s": median["kd"],
        "live_epoch_s": median["live"],
        "extraction_s": extraction_s,
        "kd_epoch_cost_ratio": median["kd"] / median["plain"],
        "live_teacher_epoch_cost_ratio": median["live"] / median["plain"],
        "repeats": repeats,
    }


# --- the whole study, as the benchmark runs it ---------------------------------------------------

#: The distilled student of the headline numbers: soft labels from the teacher.
HEADLINE = "kd"
#: Fractions of labels of the sweep.
FRACTIONS = (0.05, 0.1, 0.2, 0.5)
#: The digit of the dark-knowledge experiment.
HIDDEN_CLASS = 3
#: Epochs of the students trained on shifted copies (5x more images per epoch).
AUGMENTED_EPOCHS = 10
#: Where the benchmark writes its results, relative to the book's root.
RESULTS_PATH = "benchmarks/results/case_study.json"
#: The copy of those results shipped inside the package (relative to it), so
#: that a notebook on Colab, where only the package is installed, reads them too.
PACKAGED_RESULTS_PATH = "results/case_study.json"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _errors_and_class_accuracy(logits: Tensor, y: Tensor, cls: int) -> tuple[float, float]:
    error = float((logits.argmax(1) != y).float().mean())
    mask = y == cls
    return error, float((logits[mask].argmax(1) == cls).float().mean())


def dark_knowledge_rows(config: CaseStudyConfig, seed: int, teacher: nn.Module) -> list[dict]:
    """:func:`dark_knowledge` for one seed, scored: one row per student.

    Students: ``"labelled"`` (no label of :data:`HIDDEN_CLASS`), ``"kd"`` (its
    images in the transfer set, unlabelled) and ``"kd_never_sees_class"`` (no
    image of it at all). Each row holds the test error and the accuracy on the
    hidden class, before and after the bias shift of that class's logit chosen
    on the validation split by :func:`bias_shift`.
    """
    rows = []
    for drop in (False, True):
        out = dark_knowledge(config, seed=seed, hidden_class=HIDDEN_CLASS, drop_from_transfer=drop, teacher=teacher)
        splits = out["splits"]
        students = {"kd_never_sees_class": out["kd"]} if drop else {"labelled": out["labelled"], "kd": out["kd"]}
        for name, model in students.items():
            test_logits = predict_logits(model, splits.X_test)  # (450, 10)
            shift = bias_shift(predict_logits(model, splits.X_val), splits.y_val, HIDDEN_CLASS)
            shifted = test_logits.clone()
            shifted[:, HIDDEN_CLASS] += shift
            error, class_acc = _errors_and_class_accuracy(test_logits, splits.y_test, HIDDEN_CLASS)
            error_s, class_acc_s = _errors_and_class_accuracy(shifted, splits.y_test, HIDDEN_CLASS)
            rows.append({
                "seed": seed, "student": name, "test_error": error, "class_accuracy": class_acc,
                "bias_shift": shift, "test_error_shifted": error_s, "class_accuracy_shifted": class_acc_s,
            })
    return rows


def run_benchmark(
    config: CaseStudyConfig,
    *,
    repeats: int = 9,
    fractions: Sequence[float] = FRACTIONS,
    augmented_epochs: int = AUGMENTED_EPOCHS,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Every experiment of the case study, over ``config.seeds``; the results as a JSON-ready dict.

    Per seed: the teacher; the students of :data:`METHODS`; the
    ``"labelled"`` and ``"kd"`` students at each fraction of ``fractions``
    (the teacher of a seed serves every fraction: its training images are the
    same set); ``"kd"`` and ``"all_labels"`` trained on 1-pixel shifted copies
    too (``augmented_epochs`` epochs); the dark-knowledge experiment. Then
    :func:`epoch_costs` on the first seed. Run by ``benchmarks/case_study.py``;
    the keys are described in the ``"notes"`` entry of the result.
    """
    check_int(repeats, "run_benchmark", "repeats")
    start, cpu_start = time.perf_counter(), time.process_time()
    rows, sweep, dark = [], [], []
    costs = None
    augmented = config.replace(augment=True, transfer_epochs=augmented_epochs, full_epochs=augmented_epochs)
    for seed in config.seeds:
        splits = make_splits(config.label_fraction, seed=seed)
        teacher = train_teacher(splits, config, seed=seed)
        seed_rows = run_seed(config, seed, METHODS, splits=splits, teacher=teacher)
        for method in ("kd", "all_labels"):
            run = train_student(method, splits, augmented, seed=seed, teacher=teacher)
            seed_rows.append({"seed": seed, "method": f"{method} (shifted copies)",
                              "val_error": error_rate(run.model, splits, "val"), "test_error": error_rate(run.model, splits)})
        rows += seed_rows
        for fraction in fractions:
            if fraction == config.label_fraction:
                sweep += [dict(r, label_fraction=fraction) for r in seed_rows if r["method"] in ("labelled", "kd")]
                continue
            for r in run_seed(config.for_fraction(fraction), seed, ("labelled", "kd"), teacher=teacher):
                if r["method"] != "teacher":
                    sweep.append(dict(r, label_fraction=fraction))
        dark += dark_knowledge_rows(config, seed, teacher)
        if costs is None:
            costs = epoch_costs(splits, config, teacher, repeats=repeats, seed=seed)
        if log is not None:
            log(f"seed {seed} done after {time.perf_counter() - start:.0f} s")

    methods = list(dict.fromkeys(r["method"] for r in rows))
    errors = {m: [r["test_error"] for r in rows if r["method"] == m] for m in methods}
    summary = {m: _mean_std(v) for m, v in errors.items()}
    student, distilled = summary["labelled"][0], summary[HEADLINE][0]
    per_seed_reduction = [1 - d / s for s, d in zip(errors["labelled"], errors[HEADLINE])]
    return {
        "label_fraction": config.label_fraction,
        "seeds": list(config.seeds),
        "num_seeds": len(config.seeds),
        "teacher_error": summary["teacher"][0],
        "teacher_error_std": summary["teacher"][1],
        "student_error": student,
        "student_error_std": summary["labelled"][1],
        "distilled_error": distilled,
        "distilled_error_std": summary[HEADLINE][1],
        "relative_error_reduction": 1 - distilled / student,
        "relative_error_reduction_per_seed": per_seed_reduction,
        "full_label_student_error": summary["all_labels"][0],
        "full_label_student_error_std": summary["all_labels"][1],
        "kd_epoch_cost_ratio": costs["kd_epoch_cost_ratio"],
        "live_teacher_epoch_cost_ratio": costs["live_teacher_epoch_cost_ratio"],
        "epoch_costs": costs,
        "methods": {m: {"mean": mu, "std": sd} for m, (mu, sd) in summary.items()},
        "hyperparameters": {**config.as_dict(), "augmented_epochs": augmented_epochs},
        "per_seed": rows,
        "label_fraction_sweep": sweep,
        "dark_knowledge": dark,
        "notes": {
            "errors": "test error = fraction of the fixed 450 test images misclassified; mean and "
                      "sample standard deviation (ddof=1) over the seeds.",
            "student_error": "the RNN trained with cross-entropy on the labelled images alone, with "
                             "its own schedule chosen on validation (labelled_epochs, labelled_lr).",
            "distilled_error": f"the RNN trained by distillation (method {HEADLINE!r}): alpha * CE on "
                               "the labelled images + (1 - alpha) * T^2 * KL to the CNN teacher's "
                               "cached logits, on labelled + transfer images.",
            "pseudo_labels": "the control of the distilled student: the same images, epochs, learning "
                             "rate, initial weights and batch order, trained with cross-entropy on "
                             "the teacher's predicted class (argmax of its logits) for every "
                             "training image instead of its soft labels; no label of the split.",
            "relative_error_reduction": "1 - distilled_error / student_error, both means over seeds; "
                                        "relative_error_reduction_per_seed gives it seed by seed.",
            "full_label_student_error": "the same RNN trained with cross-entropy on every training "
                                        "label (labelled + transfer set), same epochs and learning "
                                        "rate as the distilled student, no augmentation.",
            "shifted copies": "methods ending in '(shifted copies)': the training images plus 4 copies "
                              "shifted by one pixel (up, down, left, right); for kd the copies are "
                              "unlabelled and labelled by the teacher, for all_labels they keep their "
                              "label; augmented_epochs epochs.",
            "kd_epoch_cost_ratio": "median time of one epoch of distillation with the teacher's "
                                   "logits extracted once and cached, divided by the median time of "
                                   "one epoch of plain cross-entropy on the same samples (labelled + "
                                   "transfer set, all labels); both by kt_helpers.train.fit, fresh "
                                   "students, interleaved plain/cached/live, 'repeats' times.",
            "live_teacher_epoch_cost_ratio": "the same, with the teacher run on every batch inside "
                                             "the training loop instead of cached.",
            "label_fraction_sweep": "labelled and kd students at each fraction; the labels-alone "
                                    "student keeps the same number of gradient steps "
                                    "(CaseStudyConfig.for_fraction); a seed's teacher serves every "
                                    "fraction (same training images).",
            "dark_knowledge": f"digit {HIDDEN_CLASS} has no label in the labelled set; 'kd' still "
                              "sees its images unlabelled in the transfer set, "
                              "'kd_never_sees_class' sees no image of it. The shift of its logit "
                              "is chosen on the validation split.",
            "hyperparameters": "chosen on the validation split (chapter 4, notebooks 2 and 5), never "
                               "on the test set.",
        },
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "wall_time_s": round(time.perf_counter() - start, 1),
            "cpu_time_s": round(time.process_time() - cpu_start, 1),
        },
    }


def load_results(path: str | None = None) -> dict | None:
    """The benchmark's stored results, or None when they are not there.

    Args:
        path: the JSON file. By default :data:`RESULTS_PATH` in the book's
            repository, found upwards from the working directory, and else
            the copy shipped in the package (:data:`PACKAGED_RESULTS_PATH`),
            which is what a notebook on Colab reads.

    Returns:
        The dict written by ``benchmarks/case_study.py``, or None.
    """
    import json
    from pathlib import Path

    if path is None:
        from .course import find_book_root

        try:
            file = find_book_root() / RESULTS_PATH
        except ValueError:
            file = packaged_results_file()
    else:
        file = Path(path)
    if not file.is_file():
        return None
    return json.loads(file.read_text())


def packaged_results_file() -> Path:
    """Where the package's copy of the benchmark's results lies (it may be missing)."""
    from pathlib import Path

    return Path(__file__).resolve().parent / PACKAGED_RESULTS_PATH
