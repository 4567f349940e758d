"""Step 4 of 4, applied to many models: merging fine-tuned models with task vectors.

Several models fine-tuned from one shared base model can be merged into one
model that does all their tasks, without training, by arithmetic on their
*task vectors*, the differences between each fine-tuned model's weights and
the base model's (Ilharco et al., 2023):

.. math::
    \\tau_i = \\theta_i - \\theta_0, \\qquad
    \\theta_\\text{merged} = \\theta_0 + \\lambda \\, M(\\tau_1, \\dots, \\tau_n).

The methods differ in the combination M: the sum (:func:`task_arithmetic`),
a trimmed, sign-elected mean (:func:`ties_merge`, Yadav et al., 2023), either
of them after randomly dropping and rescaling each task vector's entries
(:func:`dare`, Yu et al., 2024). :func:`sign_conflicts` measures the
interference that TIES is built to resolve.

All of them are the source document's fusion rule of :mod:`kt_helpers.fusion`,

.. math::
    K_t' = \\alpha \\cdot K_t + (1 - \\alpha) \\cdot T(K_s),

with the base model's weights as the target's own knowledge
:math:`K_t = \\theta_0`: the fine-tuned models share the base's coordinates,
so no permutation has to line their units up, and the mapping T is what each
method does to the task vectors before they are added. With one fine-tuned
model, task arithmetic is exactly ``fuse(theta_0, theta_1, alpha=1 - lambda)``;
with n models and :math:`\\lambda = 1/n` it is the plain average of the
fine-tuned models, :func:`kt_helpers.fusion.uniform_soup`. Introduced in
chapter 5 (merging fine-tuned models).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ._validation import check_fraction, check_int, check_same_keys

__all__ = ["dare", "sign_conflicts", "task_arithmetic", "task_vectors", "ties_merge"]

State = Mapping[str, Tensor]
B = TypeVar("B", nn.Module, Mapping[str, Tensor])
V = TypeVar("V", Tensor, Mapping[str, Tensor])


# --- private checks, in the formula of kt_helpers._validation -----------------------------------


def _state(value: Any, func: str, name: str) -> State:
    """The state dict of a model, or the state dict itself."""
    if isinstance(value, nn.Module):
        return value.state_dict()
    if isinstance(value, Mapping) and all(isinstance(v, Tensor) for v in value.values()):
        return value
    raise ValueError(
        f"The '{name}' parameter of {func} must be a torch.nn.Module or a state dict "
        f"(a mapping of names to tensors). Got {type(value).__name__} instead."
    )


def _check_scale(scale: Any, func: str) -> float:
    """Return ``scale`` as a float after checking that it is a finite number."""
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(float(scale)):
        raise ValueError(
            f"The 'scale' parameter of {func} must be a finite number (lambda). Got {scale!r} instead."
        )
    return float(scale)


def _check_drop_rate(drop_rate: Any, func: str) -> float:
    """Return ``drop_rate`` as a float after checking that it lies in [0, 1)."""
    ok = not isinstance(drop_rate, bool) and isinstance(drop_rate, Real)
    if ok:
        ok = 0.0 <= float(drop_rate) < 1.0
    if not ok:
        raise ValueError(
            f"The 'drop_rate' parameter of {func} must be a float in [0, 1). Got {drop_rate!r} instead."
        )
    return float(drop_rate)


def _check_vectors(vectors: Any, base: State, func: str) -> list[State]:
    """Check a non-empty sequence of task vectors, each with the base's floating-point keys."""
    if not isinstance(vectors, (list, tuple)) or len(vectors) == 0:
        got = "an empty sequence" if isinstance(vectors, (list, tuple)) else type(vectors).__name__
        raise ValueError(
            f"The 'task_vectors' parameter of {func} must be a non-empty list or tuple of task "
            f"vectors (state dicts, from task_vectors). Got {got} instead."
        )
    floats = {k: v for k, v in base.items() if torch.is_floating_point(v)}
    out = []
    for i, vector in enumerate(vectors):
        vector = _state(vector, func, f"task_vectors[{i}]")
        check_same_keys(floats, vector, func, ("base (its floating-point entries)", f"task_vectors[{i}]"))
        out.append(vector)
    return out


def _rebuild(base: B, state: dict[str, Tensor]) -> B:
    """Return ``state`` as a model like ``base`` (if ``base`` is a model) or as a dict."""
    if isinstance(base, nn.Module):
        model = copy.deepcopy(base)
        model.load_state_dict(state)
        return model
    return state


def _apply(base: B, base_state: State, delta: Mapping[str, Tensor], scale: float) -> B:
    """``theta_0 + scale * delta`` for floating-point entries; the others copied from the base."""
    merged = {}
    for key, value in base_state.items():
        if torch.is_floating_point(value):
            merged[key] = value + scale * delta[key].to(value)
        else:
            merged[key] = value.clone()
    return _rebuild(base, merged)


# --- task vectors and task arithmetic -----------------------------------------------------------


def task_vectors(base: nn.Module | State, finetuned: Sequence[nn.Module | State]) -> list[dict[str, Tensor]]:
    """The task vectors of fine-tuned models: their weights minus the base model's.

    .. math::
        \\tau_i = \\theta_i - \\theta_0

    A task vector is the knowledge that fine-tuning on task i added to the
    base model, written in the base model's own coordinates (Ilharco et al.,
    2023). Only floating-point entries of the state dicts are kept (a
    batch-norm layer's ``num_batches_tracked`` counter is not a weight).
    Introduced in chapter 5.

    Args:
        base: the shared base (pretrained) model θ_0, or its state dict.
        finetuned: the fine-tuned models θ_1 … θ_n (or their state dicts), a
            non-empty list or tuple, each with the base's keys and shapes.

    Returns:
        A list of n state dicts (``dict[str, Tensor]``), one per fine-tuned model.

    Shape:
        Each task vector has the keys and shapes of the base's floating-point entries.

    Example:
        >>> base = {"w": torch.tensor([1.0, 2.0])}
        >>> task_vectors(base, [{"w": torch.tensor([1.5, 1.0])}])
        [{'w': tensor([ 0.5000, -1.0000])}]
    """
    func = "task_vectors"
    base_state = _state(base, func, "base")
    if not isinstance(finetuned, (list, tuple)) or len(finetuned) == 0:
        got = "an empty sequence" if isinstance(finetuned, (list, tuple)) else type(finetuned).__name__
        raise ValueError(
            f"The 'finetuned' parameter of {func} must be a non-empty list or tuple of models or "
            f"state dicts. Got {got} instead."
        )
    vectors = []
    for i, model in enumerate(finetuned):
        state = _state(model, func, f"finetuned[{i}]")
        check_same_keys(base_state, state, func, ("base", f"finetuned[{i}]"))
        vectors.append(
            {
                key: state[key].detach().to(value) - value.detach()
                for key, value in base_state.items()
                if torch.is_floating_point(value)
            }
        )
    return vectors


def task_arithmetic(base: B, task_vectors: Sequence[State], scale: float) -> B:
    """Task arithmetic: add the scaled sum of the task vectors to the base model.

    .. math::
        \\theta = \\theta_0 + \\lambda \\sum_{i=1}^{n} \\tau_i

    (Ilharco et al., 2023, "Editing models with task arithmetic"; λ is chosen
    on validation data; a negative λ, or a negated task vector, *removes* a
    task.) In the source document's fusion rule this is
    :math:`K_t' = \\alpha\\,\\theta_0 + (1-\\alpha)\\,\\bar\\theta` with
    :math:`\\bar\\theta` the average of the n fine-tuned models and
    :math:`\\alpha = 1 - n\\lambda`: :math:`\\lambda = 1/n` is the plain average
    of the fine-tuned models (:func:`kt_helpers.fusion.uniform_soup`), and with
    one model, ``fuse(theta_0, theta_1, alpha=1 - scale)``. A λ above 1/n is
    α < 0, an extrapolation beyond the fine-tuned models, outside the range
    the document allows α. Introduced in chapter 5.

    Args:
        base: the base model θ_0 (an :class:`torch.nn.Module` or a state dict).
        task_vectors: the task vectors τ_1 … τ_n, from :func:`task_vectors`.
        scale: λ, a finite number.

    Returns:
        A new model (a copy of ``base``) if ``base`` is a model, otherwise a
        state dict. Entries that are not floating point are copied from the base.

    Shape:
        Every task vector has the keys and shapes of the base's floating-point entries.

    Example:
        >>> base = {"w": torch.tensor([1.0, 1.0])}
        >>> tvs = [{"w": torch.tensor([2.0, 0.0])}, {"w": torch.tensor([0.0, -4.0])}]
        >>> task_arithmetic(base, tvs, scale=0.5)
        {'w': tensor([ 2., -1.])}
    """
    func = "task_arithmetic"
    scale = _check_scale(scale, func)
    base_state = _state(base, func, "base")
    vectors = _check_vectors(task_vectors, base_state, func)
    total = {key: sum(v[key] for v in vectors) for key in vectors[0]}
    return _apply(base, base_state, total, scale)


# --- TIES -----------------------------------------------------------------------------------------


def _flat(vector: State, keys: Sequence[str]) -> Tensor:
    """All entries of a task vector as one 1-D tensor, in the order of ``keys``."""
    return torch.cat([vector[k].reshape(-1) for k in keys])  # (P,)


def _unflat(flat: Tensor, like: State, keys: Sequence[str]) -> dict[str, Tensor]:
    """Cut a 1-D tensor back into a task vector shaped like ``like``, in the order of ``keys``."""
    out, start = {}, 0
    for key in keys:
        value = like[key]
        out[key] = flat[start : start + value.numel()].reshape(value.shape).to(value)
        start += value.numel()
    return out


def _trim(flat: Tensor, density: float) -> Tensor:
    """Keep the ``density`` fraction of entries of largest magnitude (ties at the threshold kept)."""
    if density >= 1.0:
        return flat.clone()
    P = flat.numel()
    k = max(1, math.ceil(density * P))  # entries to keep
    threshold = flat.abs().kthvalue(P - k + 1).values  # the k-th largest magnitude
    return torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))


def ties_merge(base: B, task_vectors: Sequence[State], *, density: float = 0.2, scale: float = 1.0) -> B:
    """TIES-merging: trim, elect sign, disjoint mean (Yadav et al., 2023).

    1. **Trim**: in each task vector, keep the ``density`` fraction of entries
       with the largest magnitude over the whole model (the top-k %) and set
       the others to 0 (entries tied with the threshold are kept).
    2. **Elect sign**: for every parameter p, the sign of the total mass of
       the trimmed values, :math:`\\gamma_p = \\operatorname{sgn}(\\sum_i \\hat\\tau_{i,p})`.
    3. **Disjoint mean**: average only the trimmed values that agree with the
       elected sign, :math:`A_p = \\{i : \\operatorname{sgn}\\hat\\tau_{i,p} = \\gamma_p\\}`,

    .. math::
        \\tau_{m,p} = \\frac{1}{|A_p|} \\sum_{i \\in A_p} \\hat\\tau_{i,p}, \\qquad
        \\theta = \\theta_0 + \\lambda \\, \\tau_m .

    A parameter that no task changed (or whose trimmed values sum to exactly
    0, where the reference code falls back to the majority sign) stays at θ_0.
    In the fusion rule :math:`K_t' = \\alpha K_t + (1-\\alpha) T(K_s)`, TIES is a
    mapping T applied to the transferred knowledge before it is fused: it
    removes the small, redundant changes and the changes that disagree in
    sign with the majority, the interference :func:`sign_conflicts`
    measures. With ``density=1`` and no sign conflict, the disjoint mean is
    the mean of the non-zero entries of each parameter. Introduced in chapter 5.

    Args:
        base: the base model θ_0 (an :class:`torch.nn.Module` or a state dict).
        task_vectors: the task vectors τ_1 … τ_n, from :func:`task_vectors`.
        density: the fraction k of entries each task vector keeps, in (0, 1]
            (the paper's default is 0.2).
        scale: λ, a finite number (the paper's default is 1, or chosen on validation data).

    Returns:
        A new model (a copy of ``base``) if ``base`` is a model, otherwise a state dict.

    Shape:
        Every task vector has the keys and shapes of the base's floating-point entries.

    Example:
        >>> base = {"w": torch.zeros(3)}
        >>> tvs = [{"w": torch.tensor([3.0, -1.0, 2.0])}, {"w": torch.tensor([1.0, 2.0, -4.0])}]
        >>> ties_merge(base, tvs, density=1.0, scale=1.0)  # signs elected: +, +, -
        {'w': tensor([ 2.,  2., -4.])}
    """
    func = "ties_merge"
    density = check_fraction(density, func, "density", closed=True)
    scale = _check_scale(scale, func)
    base_state = _state(base, func, "base")
    vectors = _check_vectors(task_vectors, base_state, func)
    keys = list(vectors[0])
    trimmed = torch.stack([_trim(_flat(v, keys), density) for v in vectors])  # (n, P)
    elected = torch.sign(trimmed.sum(dim=0))  # (P,): +1, -1, or 0
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)  # (n, P)
    count = agree.sum(dim=0)  # (P,)
    total = (trimmed * agree).sum(dim=0)  # (P,)
    merged = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))  # (P,)
    return _apply(base, base_state, _unflat(merged, vectors[0], keys), scale)


# --- DARE -----------------------------------------------------------------------------------------


def dare(task_vector: V, drop_rate: float, *, seed: int = 0) -> V:
    """DARE: drop each entry of a task vector with probability p, rescale the rest by 1/(1 − p).

    .. math::
        \\tilde\\tau = \\frac{m \\odot \\tau}{1 - p}, \\qquad m_j \\sim \\text{Bernoulli}(1 - p)

    (Yu et al., 2024, "Language models are Super Mario": Drop And REscale.)
    The rescaling makes the sparse vector right *in expectation*,
    :math:`\\mathbb{E}[\\tilde\\tau] = \\tau`, so that a layer's output moves,
    on average, as with the full task vector. DARE does not merge by itself:
    it sparsifies each task vector before :func:`task_arithmetic` or
    :func:`ties_merge`, a random mapping T applied to the transferred knowledge
    before the fusion :math:`K_t' = \\alpha K_t + (1-\\alpha) T(K_s)`.
    Introduced in chapter 5.

    Args:
        task_vector: one task vector, a tensor or a state dict (from :func:`task_vectors`).
        drop_rate: p, the probability of dropping an entry, in [0, 1)
            (``drop_rate=0`` returns a copy).
        seed: seed of the random mask, an integer >= 0; the same seed drops
            the same entries.

    Returns:
        A tensor or a ``dict``, like ``task_vector``.

    Shape:
        The output has the shape (or the keys and shapes) of ``task_vector``.

    Example:
        >>> tau = torch.ones(8)
        >>> out = dare(tau, 0.5, seed=0)
        >>> sorted(set(out.tolist())) in ([0.0, 2.0], [2.0], [0.0])
        True
    """
    func = "dare"
    p = _check_drop_rate(drop_rate, func)
    seed = check_int(seed, func, "seed", minimum=0)
    gen = torch.Generator().manual_seed(seed)

    def drop(value: Tensor) -> Tensor:
        keep = torch.rand(value.shape, generator=gen) >= p  # (same shape), True with prob. 1 - p
        return value * keep.to(value) / (1.0 - p)

    if isinstance(task_vector, Tensor):
        return drop(task_vector)
    vector = _state(task_vector, func, "task_vector")
    return {key: drop(value) for key, value in vector.items()}


# --- the statistic TIES is built on ---------------------------------------------------------------


def sign_conflicts(task_vectors: Sequence[State], *, density: float = 1.0) -> float:
    """The fraction of parameters on which the task vectors disagree in sign.

    A parameter p has a *sign conflict* when, after each task vector is
    trimmed to its ``density`` fraction of largest entries (as in
    :func:`ties_merge`), one task vector moves it up and another moves it down:

    .. math::
        \\text{conflicts} = \\frac{1}{P} \\bigl|\\{p : \\exists\\, i, j \\;
        \\hat\\tau_{i,p} > 0 > \\hat\\tau_{j,p}\\}\\bigr|,

    over all P floating-point entries. Averaging such a parameter cancels the
    tasks' changes against each other; this disagreement in sign is one of
    the two sources of interference that TIES-merging resolves (Yadav et al.,
    2023). Introduced in chapter 5.

    Args:
        task_vectors: two or more task vectors with the same keys and shapes
            (from :func:`task_vectors`).
        density: the fraction of entries each task vector keeps before
            counting, in (0, 1]; 1 counts every entry.

    Returns:
        A float in [0, 1].

    Example:
        >>> tvs = [{"w": torch.tensor([1.0, -1.0, 2.0, 0.0])}, {"w": torch.tensor([2.0, 1.0, -1.0, 3.0])}]
        >>> sign_conflicts(tvs)
        0.5
    """
    func = "sign_conflicts"
    density = check_fraction(density, func, "density", closed=True)
    if not isinstance(task_vectors, (list, tuple)) or len(task_vectors) < 2:
        got = f"{len(task_vectors)} of them" if isinstance(task_vectors, (list, tuple)) else type(task_vectors).__name__
        raise ValueError(
            f"The 'task_vectors' parameter of {func} must be a list or tuple of at least 2 task "
            f"vectors. Got {got} instead."
        )
    vectors = [_state(v, func, f"task_vectors[{i}]") for i, v in enumerate(task_vectors)]
    for i, vector in enumerate(vectors[1:], start=1):
        check_same_keys(vectors[0], vector, func, ("task_vectors[0]", f"task_vectors[{i}]"))
    keys = list(vectors[0])
    trimmed = torch.stack([_trim(_flat(v, keys), density) for v in vectors])  # (n, P)
    up, down = (trimmed > 0).any(dim=0), (trimmed < 0).any(dim=0)  # (P,), (P,)
    return float((up & down).float().mean())

