"""Step 4 of 4 — knowledge fusion: merge mapped knowledge with the target's own.

The source document's fusion rule is a weighted sum,

.. math::
    K_t' = \\alpha \\cdot K_t + (1 - \\alpha) \\cdot T(K_s),

with **α weighing the target's own knowledge and 1 − α the transferred
knowledge**, the convention of the whole book. It applies in three spaces:

* weights — :func:`fuse` on state dicts, :func:`interpolate` and
  :func:`interpolation_curve` for whole networks (chapters 3 and 5), and
  :func:`uniform_soup` / :func:`greedy_soup` for many fine-tuned models (chapter 5);
* outputs — :func:`kd_loss`, the distillation loss, in which the target's own
  knowledge is the labels and the transferred knowledge the teacher's soft
  labels (Hinton et al., 2015);
* features — :func:`hint_loss` through a learned map (Romero et al., 2015).

:class:`TransferObjective` packs the output and feature losses into an
objective for :func:`kt_helpers.train.fit`, with the teacher's knowledge
extracted once and indexed per sample. Introduced in chapter 2, derived in chapter 3.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # for annotations only
    import pandas as pd

from ._validation import (
    check_alpha,
    check_labels,
    check_non_negative,
    check_positive,
    check_same_keys,
    check_same_rows,
    check_same_shape,
    check_tensor,
)

__all__ = [
    "TransferObjective",
    "distillation_objective",
    "fuse",
    "greedy_soup",
    "hint_loss",
    "hint_objective",
    "interpolate",
    "interpolation_curve",
    "kd_loss",
    "uniform_soup",
]

K = TypeVar("K", Tensor, Mapping[str, Tensor])


def fuse(k_target: K, k_mapped: K, alpha: float) -> K:
    """The source document's fusion rule: ``alpha * k_target + (1 - alpha) * k_mapped``.

    Works on tensors and on dicts of tensors (state dicts) with the same keys
    and shapes. For a state dict, entries that are not floating point (such as
    a batch-norm layer's ``num_batches_tracked`` counter) are taken from
    ``k_target``.

    Args:
        k_target: the target's own knowledge K_t (a tensor or a state dict).
        k_mapped: the mapped source knowledge T(K_s), of the same shape or keys.
        alpha: the weight of the target's own knowledge, in [0, 1]:
            ``alpha=1`` returns ``k_target``, ``alpha=0`` returns ``k_mapped``.

    Returns:
        The fused knowledge: a tensor for tensors, a ``dict`` for state dicts
        (which :meth:`~torch.nn.Module.load_state_dict` accepts).

    Example:
        >>> fuse(torch.tensor([1.0, 1.0]), torch.tensor([3.0, 5.0]), alpha=0.5)
        tensor([2., 3.])
    """
    alpha = check_alpha(alpha, "fuse")
    if isinstance(k_target, Tensor) and isinstance(k_mapped, Tensor):
        check_same_shape(k_target, k_mapped, "fuse", ("k_target", "k_mapped"))
        return alpha * k_target + (1.0 - alpha) * k_mapped
    if isinstance(k_target, Mapping) and isinstance(k_mapped, Mapping):
        check_same_keys(k_target, k_mapped, "fuse", ("k_target", "k_mapped"))
        fused = {}
        for key, value in k_target.items():
            if torch.is_floating_point(value):
                fused[key] = alpha * value + (1.0 - alpha) * k_mapped[key].to(value)
            else:
                fused[key] = value.clone()
        return fused
    raise ValueError(
        "The 'k_target' and 'k_mapped' parameters of fuse must both be tensors or both be "
        f"state dicts. Got {type(k_target).__name__} and {type(k_mapped).__name__} instead."
    )


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 4.0,
) -> Tensor:
    """The knowledge-distillation loss: fusion in the space of outputs.

    .. math::
        L = \\alpha \\, \\mathrm{CE}(z, y)
            + (1 - \\alpha) \\, \\tau^2 \\,
            \\mathrm{KL}\\bigl(\\mathrm{softmax}(v / \\tau) \\,\\Vert\\, \\mathrm{softmax}(z / \\tau)\\bigr)

    with z the student's logits, v the teacher's and τ the temperature (the
    notation of chapter 1).

    The KL term is averaged over the batch (PyTorch's ``reduction="batchmean"``,
    the true KL divergence; ``"mean"`` would also divide by the number of
    classes). Its gradient with respect to the student's logits is
    :math:`(1-\\alpha)\\,\\tau\\,(q - p)/N`, with q and p the student's and the
    teacher's softened probabilities: the factor :math:`\\tau^2` keeps the soft
    term's gradient on the same scale whatever the temperature (Hinton et al.,
    2015, section 2; derived and checked with autograd in chapter 3).

    Note:
        :class:`torch.nn.KLDivLoss` takes the *student's log-probabilities*
        first and the teacher's probabilities second — the reverse order of
        the textbook KL(p ‖ q). This function takes care of it.

        No gradient reaches ``teacher_logits``: the teacher is detached.

        A target of ``-1`` marks an unlabelled sample: it contributes only the
        soft term, and the cross-entropy is averaged over the labelled samples
        of the batch (0 if there are none). With all samples labelled this is
        exactly the formula above.

    Args:
        student_logits: of shape (N, C).
        teacher_logits: of shape (N, C), for the same samples.
        targets: class indices of shape (N,), ``-1`` for unlabelled samples.
        alpha: weight of the target's own knowledge (the labels), in [0, 1].
        temperature: τ > 0.

    Returns:
        A scalar tensor.

    Example:
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> kd_loss(z, z, torch.tensor([0]), alpha=0.0, temperature=3.0).abs() < 1e-6
        tensor(True)
    """
    alpha = check_alpha(alpha, "kd_loss")
    temperature = check_positive(temperature, "kd_loss", "temperature")
    check_tensor(student_logits, "kd_loss", "student_logits", ndim=2)
    check_tensor(teacher_logits, "kd_loss", "teacher_logits", ndim=2)
    check_same_shape(student_logits, teacher_logits, "kd_loss", ("student_logits", "teacher_logits"))
    check_labels(targets, "kd_loss", "targets", allow_unlabelled=True, num_classes=student_logits.shape[1])
    check_same_rows(student_logits, targets, "kd_loss", ("student_logits", "targets"))

    labelled = targets >= 0
    if alpha > 0 and bool(labelled.any()):
        hard = F.cross_entropy(student_logits[labelled], targets[labelled])
    else:
        hard = student_logits.new_zeros(())
    teacher_p = F.softmax(teacher_logits.detach() / temperature, dim=1)  # (N, C)
    student_log_q = F.log_softmax(student_logits / temperature, dim=1)  # (N, C)
    soft = F.kl_div(student_log_q, teacher_p, reduction="batchmean")
    return alpha * hard + (1.0 - alpha) * temperature**2 * soft


def hint_loss(student_features: Tensor, teacher_features: Tensor, mapping: nn.Module) -> Tensor:
    """The hint loss: fusion in the space of features (FitNets).

    The student's features are carried into the teacher's feature space by a
    learned map T (the "regressor" of Romero et al., 2015) and compared with
    the teacher's:

    .. math::
        L_\\text{hint} = \\frac{1}{N d} \\sum_n \\lVert T(s_n) - t_n \\rVert_2^2

    Args:
        student_features: of shape (N, p).
        teacher_features: of shape (N, d).
        mapping: a module from p to d features, e.g. ``nn.Linear(p, d)``,
            trained together with the student.

    Returns:
        A scalar tensor; gradients reach the student and the map, not the teacher.
    """
    check_tensor(student_features, "hint_loss", "student_features", ndim=2)
    check_tensor(teacher_features, "hint_loss", "teacher_features", ndim=2)
    check_same_rows(student_features, teacher_features, "hint_loss", ("student_features", "teacher_features"))
    mapped = mapping(student_features)  # (N, d)
    if mapped.shape != teacher_features.shape:
        raise ValueError(
            "The 'mapping' parameter of hint_loss must map the student's features to the "
            f"teacher's shape {tuple(teacher_features.shape)}. Got {tuple(mapped.shape)} instead."
        )
    return F.mse_loss(mapped, teacher_features.detach())


class TransferObjective(nn.Module):
    """An objective for :func:`~kt_helpers.train.fit` that fuses a teacher's knowledge.

    .. math::
        L = \\alpha\\,\\mathrm{CE}(z, y) + (1-\\alpha)\\bigl[\\,\\tau^2\\,\\mathrm{KL}(p \\Vert q)
            + \\beta \\, L_\\text{hint}\\bigr]

    with the KL term present when ``teacher_logits`` are given and the hint
    term when ``teacher_features`` are. The teacher's knowledge is extracted
    *once* (see :mod:`kt_helpers.extraction`), one row per training sample;
    ``fit`` passes each batch's sample indices, so the cached rows stay aligned
    with their samples however the batches are shuffled.

    Args:
        teacher_logits: of shape (N, C), row n for training sample n.
        teacher_features: of shape (N, d), row n for training sample n.
        mapping: the learned map from the student's features to the teacher's,
            required with ``teacher_features``; trained with the student.
        alpha: weight of the labels (the target's own knowledge), in [0, 1].
        temperature: τ > 0 for the KL term.
        hint_weight: β ≥ 0, weight of the hint term.

    Shape:
        The student must accept ``model(X, return_features=True)`` and return
        ``(logits, features)`` (every model in :mod:`kt_helpers.models` does).
    """

    def __init__(
        self,
        *,
        teacher_logits: Tensor | None = None,
        teacher_features: Tensor | None = None,
        mapping: nn.Module | None = None,
        alpha: float = 0.5,
        temperature: float = 4.0,
        hint_weight: float = 1.0,
    ) -> None:
        super().__init__()
        func = "TransferObjective"
        if teacher_logits is None and teacher_features is None:
            raise ValueError(
                f"{func} needs knowledge to transfer: give 'teacher_logits', 'teacher_features' "
                "or both. Got neither."
            )
        if teacher_logits is not None:
            check_tensor(teacher_logits, func, "teacher_logits", ndim=2)
        if teacher_features is not None:
            check_tensor(teacher_features, func, "teacher_features", ndim=2)
            if mapping is None:
                raise ValueError(
                    f"The 'mapping' parameter of {func} is required with 'teacher_features'. "
                    "Got None; pass e.g. nn.Linear(student_dim, teacher_dim)."
                )
        if teacher_logits is not None and teacher_features is not None:
            check_same_rows(teacher_logits, teacher_features, func, ("teacher_logits", "teacher_features"))
        self.alpha = check_alpha(alpha, func)
        self.temperature = check_positive(temperature, func, "temperature")
        self.hint_weight = check_non_negative(hint_weight, func, "hint_weight")
        self.register_buffer("teacher_logits", None if teacher_logits is None else teacher_logits.detach().clone())
        self.register_buffer("teacher_features", None if teacher_features is None else teacher_features.detach().clone())
        self.mapping = mapping

    def forward(self, model: nn.Module, X: Tensor, y: Tensor, index: Tensor) -> Tensor:
        index = index.to(X.device)
        # One forward call through `model` itself (not model.features + model.head),
        # so that a DistributedDataParallel wrapper sees it and syncs gradients.
        student_logits, student_features = model(X, return_features=True)  # (B, C), (B, p)
        if self.teacher_logits is not None:
            loss = kd_loss(
                student_logits,
                self.teacher_logits[index],
                y,
                alpha=self.alpha,
                temperature=self.temperature,
            )
        else:
            labelled = y >= 0
            hard = (
                F.cross_entropy(student_logits[labelled], y[labelled])
                if bool(labelled.any())
                else student_logits.new_zeros(())
            )
            loss = self.alpha * hard
        if self.teacher_features is not None:
            hint = hint_loss(student_features, self.teacher_features[index], self.mapping)
            loss = loss + (1.0 - self.alpha) * self.hint_weight * hint
        return loss


def distillation_objective(
    teacher_logits: Tensor, *, alpha: float = 0.5, temperature: float = 4.0
) -> TransferObjective:
    """An objective for :func:`~kt_helpers.train.fit` that minimises :func:`kd_loss`
    against cached teacher logits (one row per training sample)."""
    return TransferObjective(teacher_logits=teacher_logits, alpha=alpha, temperature=temperature)


def hint_objective(
    teacher_features: Tensor, mapping: nn.Module, *, alpha: float = 0.5, hint_weight: float = 1.0
) -> TransferObjective:
    """An objective for :func:`~kt_helpers.train.fit`: α·CE + (1 − α)·β·:func:`hint_loss`
    through the learned ``mapping``, against cached teacher features."""
    return TransferObjective(
        teacher_features=teacher_features, mapping=mapping, alpha=alpha, hint_weight=hint_weight
    )


def interpolate(model_target: nn.Module, model_mapped: nn.Module, alpha: float) -> nn.Module:
    """A copy of ``model_target`` whose weights are ``fuse(target, mapped, alpha)``.

    ``alpha=1`` gives back ``model_target``, ``alpha=0`` the weights of
    ``model_mapped``. The two models must have the same architecture.
    """
    alpha = check_alpha(alpha, "interpolate")
    state = fuse(model_target.state_dict(), model_mapped.state_dict(), alpha)
    out = copy.deepcopy(model_target)
    out.load_state_dict(state)
    return out


@torch.no_grad()
def interpolation_curve(
    model_target: nn.Module,
    model_mapped: nn.Module,
    X: Tensor,
    y: Tensor,
    alphas: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Loss and accuracy along the straight line between two networks' weights.

    For each α, evaluates ``interpolate(model_target, model_mapped, α)`` on
    ``(X, y)``. A bump in the loss in the middle of the path is the *loss
    barrier* (see :func:`kt_helpers.metrics.loss_barrier`). Chapter 3.

    Args:
        model_target, model_mapped: two models of the same architecture.
        X, y: the evaluation data.
        alphas: the weights to evaluate, each in [0, 1]; 11 evenly spaced by default.

    Returns:
        A :class:`pandas.DataFrame` with columns ``alpha``, ``loss`` (mean
        cross-entropy) and ``accuracy``.
    """
    import pandas as pd

    from .train import predict_logits

    check_same_rows(X, y, "interpolation_curve", ("X", "y"))
    alphas = list(np.linspace(0.0, 1.0, 11)) if alphas is None else list(alphas)
    rows = []
    for a in alphas:
        model = interpolate(model_target, model_mapped, float(a))
        logits = predict_logits(model, X)
        rows.append(
            {
                "alpha": float(a),
                "loss": float(F.cross_entropy(logits, y)),
                "accuracy": float((logits.argmax(1) == y).float().mean()),
            }
        )
    return pd.DataFrame(rows)


# --- model soups: fusing many fine-tuned models in weight space (chapter 5) -------------------


def _check_models(models: object, func: str) -> None:
    """Raise unless ``models`` is a non-empty list or tuple of modules."""
    if not isinstance(models, (list, tuple)) or len(models) == 0:
        got = "an empty sequence" if isinstance(models, (list, tuple)) else type(models).__name__
        raise ValueError(
            f"The 'models' parameter of {func} must be a non-empty list or tuple of models. "
            f"Got {got} instead."
        )
    bad = [type(m).__name__ for m in models if not isinstance(m, nn.Module)]
    if bad:
        raise ValueError(
            f"The 'models' parameter of {func} must hold torch.nn.Module objects only. "
            f"Got {bad} among them instead."
        )


def uniform_soup(models: Sequence[nn.Module]) -> nn.Module:
    """Average the weights of several models of one architecture: a *uniform model soup*.

    .. math::
        \\theta_\\text{soup} = \\frac{1}{M} \\sum_{m=1}^{M} \\theta_m

    It is the fusion rule :func:`fuse` generalised from two models to M with
    equal weights. Averaging works when the models lie in one basin of the
    loss, as models fine-tuned from one shared pretrained initialisation
    usually do (Wortsman et al., 2022, "Model soups"); for independently
    trained networks, align them first (:func:`kt_helpers.mapping.match_weights`).
    Entries of the state dict that are not floating point (such as a
    batch-norm counter) are taken from the first model. Introduced in chapter 5.

    Args:
        models: the ingredients, a non-empty list or tuple of models with the same
            state-dict keys and shapes.

    Returns:
        A new model (a copy of ``models[0]``) holding the averaged weights;
        the ingredients are unchanged.

    Example:
        >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
        >>> soup = uniform_soup([a, b])
        >>> torch.allclose(soup.weight, (a.weight + b.weight) / 2)
        True
    """
    _check_models(models, "uniform_soup")
    states = [m.state_dict() for m in models]
    for i, state in enumerate(states[1:], start=1):
        check_same_keys(states[0], state, "uniform_soup", ("models[0]", f"models[{i}]"))
    averaged = {}
    for key, value in states[0].items():
        if torch.is_floating_point(value):
            averaged[key] = torch.stack([s[key].to(value) for s in states]).mean(dim=0)
        else:
            averaged[key] = value.clone()
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(averaged)
    return soup


def greedy_soup(
    models: Sequence[nn.Module], X_val: Tensor, y_val: Tensor
) -> tuple[nn.Module, list[int]]:
    """A *greedy model soup*: add ingredients while the validation accuracy does not drop.

    The recipe of Wortsman et al. (2022, Algorithm 1): sort the models by
    validation accuracy, best first; start the soup with the best one; try
    each next model in turn and keep it in the soup if the :func:`uniform_soup`
    of the kept models plus this one is at least as accurate on the
    validation set as the soup without it. Choosing on the validation set
    and reporting on a test set keeps the test set honest. At worst the soup
    is the best single model. Introduced in chapter 5.

    Args:
        models: the ingredients (see :func:`uniform_soup`).
        X_val: validation inputs of shape (N, ...).
        y_val: validation labels of shape (N,).

    Returns:
        ``(soup, chosen)``: the soup model and the indices (into ``models``)
        of its ingredients, in the order they were added.
    """
    from .train import evaluate

    _check_models(models, "greedy_soup")
    check_tensor(X_val, "greedy_soup", "X_val")
    check_labels(y_val, "greedy_soup", "y_val")
    check_same_rows(X_val, y_val, "greedy_soup", ("X_val", "y_val"))
    scores = [evaluate(m, X_val, y_val) for m in models]
    order = sorted(range(len(models)), key=lambda i: -scores[i])  # stable: ties keep their order
    chosen = [order[0]]
    soup, best = models[order[0]], scores[order[0]]
    for i in order[1:]:
        candidate = uniform_soup([models[j] for j in chosen + [i]])
        score = evaluate(candidate, X_val, y_val)
        if score >= best:
            chosen.append(i)
            soup, best = candidate, score
    if len(chosen) == 1:
        soup = uniform_soup([models[order[0]]])  # a copy, never the ingredient itself
    return soup, chosen
