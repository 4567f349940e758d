"""Distillation on several processes, exactly: the pieces of ``benchmarks/distill_distributed.py``.

:func:`kt_helpers.train.fit` gives each process its slice of every global batch
and lets DistributedDataParallel (DDP) *average* the processes' gradients. That
average is the single-process gradient only if every process's loss is a mean
over the same number of samples. The distillation loss is not: its label term
is a mean over the *labelled* samples of the batch, and two slices of one batch
hold different numbers of them. This module computes the loss that is exact on
any number of processes (:func:`exact_kd_loss`, with the counts of the global
batch from :func:`global_sum`), trains with it (:func:`train_step`, with
gradient accumulation and bfloat16 autocast), caches only the teacher's top-k
probabilities (:class:`TeacherCache`), evaluates on shards
(:func:`sharded_accuracy`) and checkpoints atomically
(:func:`save_checkpoint`, :func:`load_checkpoint`). Appendix "Scaling up".

Everything also runs in one process without ``torchrun``: the collectives are
then skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_alpha, check_int, check_positive, check_tensor
from .train import distributed_context

__all__ = [
    "LossFn",
    "TeacherCache",
    "exact_kd_loss",
    "gather_rows",
    "global_sum",
    "load_checkpoint",
    "per_sample_kl",
    "save_checkpoint",
    "sharded_accuracy",
    "train_step",
]

#: ``loss_fn(student_logits, X, y, index, counts) -> this process's loss``, where
#: ``counts`` holds (labelled samples, samples) of the whole global batch.
LossFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def _is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def global_sum(values: Tensor) -> Tensor:
    """The sum of ``values`` over all processes (``values`` itself in one process).

    Returns a new tensor of the same shape, dtype and device; the input is not
    modified. With nccl the values travel through this process's GPU.
    """
    check_tensor(values, "global_sum", "values")
    if not _is_distributed():
        return values.clone()
    import torch.distributed as dist

    ctx = distributed_context()
    total = values.detach().to(ctx.device, copy=True)
    dist.all_reduce(total)
    return total.to(values.device)


def per_sample_kl(student_logits: Tensor, teacher_log_probs: Tensor, temperature: float) -> Tensor:
    """KL(p_t ‖ q_s) per sample, with the student softened by ``temperature``.

    .. math::
        \\mathrm{KL}_n = \\sum_c p_{nc} \\,(\\log p_{nc} - \\log q_{nc}),
        \\qquad q_n = \\mathrm{softmax}(z_n / T)

    Shape:
        - student_logits: (B, C); teacher_log_probs: (B, C), the teacher's
          log-probabilities at the same temperature. Output: (B,).
    """
    log_q = F.log_softmax(student_logits / temperature, dim=1)  # (B, C)
    p = teacher_log_probs.exp()  # (B, C)
    return (p * (teacher_log_probs - log_q)).sum(dim=1)  # (B,)


def exact_kd_loss(
    student_logits: Tensor,
    targets: Tensor,
    soft_kl: Tensor | None,
    *,
    alpha: float,
    temperature: float,
    num_labelled: int | float | Tensor,
    num_samples: int | float | Tensor,
    world_size: int = 1,
) -> Tensor:
    """This process's share of the distillation loss of the *global* batch.

    The loss of the global batch :math:`\\mathcal{B}` (all processes together)
    with labelled part :math:`\\mathcal{L}` is :func:`~kt_helpers.fusion.kd_loss`:

    .. math::
        L = \\frac{\\alpha}{|\\mathcal{L}|} \\sum_{n \\in \\mathcal{L}} \\mathrm{CE}(z_n, y_n)
          + \\frac{(1-\\alpha)\\,\\tau^2}{|\\mathcal{B}|} \\sum_{n \\in \\mathcal{B}} \\mathrm{KL}_n

    Process r holds the samples :math:`\\mathcal{B}_r` and returns
    :math:`W \\cdot L_r`, with :math:`L_r` the same formula summed over
    :math:`\\mathcal{B}_r` only but divided by the *global* counts. DDP
    averages the W processes' gradients, so the update is
    :math:`\\frac{1}{W}\\sum_r W\\,\\nabla L_r = \\nabla L`: exactly the
    single-process gradient, for any α and any split of the labelled samples.
    (Dividing each process's label term by its own labelled count, as
    ``kd_loss`` does, weighs a labelled sample more on a process with fewer.)

    Args:
        student_logits: of shape (B_r, C), this process's samples.
        targets: of shape (B_r,), class indices, ``-1`` for unlabelled samples.
        soft_kl: of shape (B_r,), :math:`\\mathrm{KL}_n` per sample (from
            :func:`per_sample_kl` or :meth:`TeacherCache.kl`); None when
            ``alpha == 1`` (plain cross-entropy, e.g. to train the teacher).
        alpha: weight of the labels, in [0, 1] (the book's convention).
        temperature: τ > 0.
        num_labelled: labelled samples in the global batch (a term with none
            contributes 0, as in ``kd_loss``).
        num_samples: samples in the global batch, > 0.
        world_size: W, the number of processes whose gradients DDP averages.

    Returns:
        A scalar tensor; :func:`global_sum` of it divided by W is L.
    """
    alpha = check_alpha(alpha, "exact_kd_loss")
    temperature = check_positive(temperature, "exact_kd_loss", "temperature")
    check_tensor(student_logits, "exact_kd_loss", "student_logits", ndim=2)
    check_int(world_size, "exact_kd_loss", "world_size")
    if soft_kl is None and alpha < 1:
        raise ValueError(
            "The 'soft_kl' parameter of exact_kd_loss is required when alpha < 1. "
            f"Got None with alpha={alpha}."
        )
    if float(num_samples) <= 0:
        raise ValueError(
            f"The 'num_samples' parameter of exact_kd_loss must be > 0. Got {num_samples!r} instead."
        )
    loss = student_logits.new_zeros(())
    labelled = targets >= 0
    if alpha > 0 and float(num_labelled) > 0 and bool(labelled.any()):
        hard_sum = F.cross_entropy(student_logits[labelled], targets[labelled], reduction="sum")
        loss = loss + alpha * hard_sum / num_labelled
    if alpha < 1 and soft_kl is not None:
        loss = loss + (1.0 - alpha) * temperature**2 * soft_kl.sum() / num_samples
    return world_size * loss


@dataclass
class TeacherCache:
    """The teacher's softened probabilities, cached once per training sample, whole or top-k.

    With ``top_k=None`` every class's log-probability is kept (N·C numbers).
    With ``top_k=k`` only the k largest are kept, with their class indices,
    plus the log of the mass of all the other classes together: the
    distillation term is then the KL divergence between the teacher's and the
    student's distributions over k + 1 outcomes (the k classes and "any other
    class"), which is never larger than the full KL (merging outcomes cannot
    increase a KL divergence) and equals it when k = C. Caching the top-k
    probabilities alone and renormalising them is the naive sparse scheme that
    Anshumann et al. (2025) show to be biased; keeping the tail's mass as one
    outcome is a simple correction, not theirs (they sample classes instead).

    Attributes:
        log_probs: (N, k) the teacher's log-probabilities at ``temperature``.
        indices: (N, k) their classes (int16 when C < 32768, else int32), or None when whole.
        log_rest: (N,) log of the remaining mass, or None when whole.
        temperature: T at which the probabilities were softened.
    """

    log_probs: Tensor
    indices: Tensor | None
    log_rest: Tensor | None
    temperature: float

    @classmethod
    def from_logits(cls, logits: Tensor, *, temperature: float, top_k: int | None = None) -> TeacherCache:
        """Cache the teacher's ``logits`` (N, C), whole (``top_k=None``) or its top ``top_k`` classes."""
        check_tensor(logits, "TeacherCache.from_logits", "logits", ndim=2)
        temperature = check_positive(temperature, "TeacherCache.from_logits", "temperature")
        N, C = logits.shape
        log_p = F.log_softmax(logits.float() / temperature, dim=1)  # (N, C)
        if top_k is None or top_k == C:
            return cls(log_p, None, None, temperature)
        check_int(top_k, "TeacherCache.from_logits", "top_k")
        if top_k > C:
            raise ValueError(
                f"The 'top_k' parameter of TeacherCache.from_logits must be at most the number of "
                f"classes {C}. Got {top_k} instead."
            )
        values, indices = log_p.topk(top_k, dim=1)  # (N, k), (N, k)
        rest = log_p.scatter(1, indices, float("-inf"))  # (N, C), the top k masked out
        log_rest = rest.logsumexp(dim=1)  # (N,)
        index_dtype = torch.int16 if C < 2**15 else torch.int32
        return cls(values, indices.to(index_dtype), log_rest, temperature)

    @property
    def nbytes_per_sample(self) -> int:
        """Bytes stored per training sample."""
        total = self.log_probs[0].nbytes
        for extra in (self.indices, self.log_rest):
            if extra is not None:
                total += extra[0].nbytes
        return total

    def kl(self, student_logits: Tensor, index: Tensor) -> Tensor:
        """KL per sample between the cached teacher and the student, over k + 1 outcomes when top-k.

        Shape:
            - student_logits: (B, C); index: (B,) the samples' rows in the cache.
              Output: (B,).
        """
        index = index.to(self.log_probs.device)
        log_p = self.log_probs[index].to(student_logits.device)  # (B, k)
        if self.indices is None:
            return per_sample_kl(student_logits, log_p, self.temperature)
        classes = self.indices[index].to(student_logits.device, torch.int64)  # (B, k)
        log_q = F.log_softmax(student_logits / self.temperature, dim=1)  # (B, C)
        log_q_top = log_q.gather(1, classes)  # (B, k)
        log_q_rest = log_q.scatter(1, classes, float("-inf")).logsumexp(dim=1)  # (B,)
        log_p_rest = self.log_rest[index].to(student_logits.device)  # (B,)
        top = (log_p.exp() * (log_p - log_q_top)).sum(dim=1)  # (B,)
        return top + log_p_rest.exp() * (log_p_rest - log_q_rest)  # (B,)

    def state(self) -> dict[str, object]:
        """A dict of tensors and floats (loadable with ``torch.load(weights_only=True)``)."""
        return {"log_probs": self.log_probs, "indices": self.indices, "log_rest": self.log_rest,
                "temperature": self.temperature}


def gather_rows(local: Tensor, num_rows: int) -> Tensor:
    """Gather rows computed on strided shards into one tensor, on every process.

    Process r holds the rows of samples r, r + W, r + 2W, ... (the shard
    ``range(r, num_rows, W)``, which needs no padding of the data); the result
    holds row i for sample i, on the CPU. In one process it returns ``local``.

    Shape:
        - local: (ceil((num_rows - r) / W), ...). Output: (num_rows, ...).
    """
    check_tensor(local, "gather_rows", "local")
    if not _is_distributed():
        return local.cpu()
    import torch.distributed as dist

    ctx = distributed_context()
    W = ctx.world_size
    per = -(-num_rows // W)  # rows of the largest shard
    padded = local.new_zeros((per, *local.shape[1:])).to(ctx.device)  # (per, ...)
    padded[: len(local)] = local.to(ctx.device)
    shards = [torch.empty_like(padded) for _ in range(W)]
    dist.all_gather(shards, padded)
    stacked = torch.stack(shards, dim=1)  # (per, W, ...): row j of shard r is sample j·W + r
    return stacked.reshape(per * W, *local.shape[1:])[:num_rows].cpu()  # (num_rows, ...)


def sharded_accuracy(model: nn.Module, X: Tensor, y: Tensor, *, batch_size: int = 1024) -> tuple[int, float]:
    """Evaluate on this process's shard ``range(rank, N, W)``; sum the correct counts over processes.

    No sample is padded or counted twice, whatever N and W.

    Returns:
        ``(correct, accuracy)`` over all N samples, the same on every process.
    """
    check_tensor(X, "sharded_accuracy", "X")
    ctx = distributed_context()
    shard = torch.arange(ctx.rank, len(y), ctx.world_size)  # (N / W,) roughly
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, len(shard), batch_size):
            rows = shard[start : start + batch_size]
            logits = model(X[rows].to(ctx.device))
            correct += (logits.argmax(1).cpu() == y[rows]).sum()
    model.train(was_training)
    total = int(global_sum(correct))
    return total, total / len(y)


def train_step(
    model: nn.Module,
    micro_batches: Sequence[tuple[Tensor, Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """One optimisation step on this process's part of a global batch, in micro-batches.

    The counts of the global batch (labelled samples, samples) are summed over
    processes first, so that ``loss_fn`` can normalise by them
    (:func:`exact_kd_loss`); the micro-batches' gradients accumulate, and DDP
    synchronises only after the last one (``no_sync`` before). With one
    micro-batch per process this is a plain step. ``autocast_dtype`` (e.g.
    ``torch.bfloat16``) runs the model's forward pass under
    :func:`torch.autocast` on its device; the loss is computed in float32.

    Args:
        model: the model, wrapped in DDP on several processes.
        micro_batches: this process's ``(X, y, index)`` micro-batches of the step.
        optimizer: steps once, after the last micro-batch.
        loss_fn: see :data:`LossFn`.
        autocast_dtype: None (full precision) or a lower-precision dtype.

    Returns:
        This process's share of the global batch's loss (a detached scalar):
        :func:`global_sum` of it is the loss of the global batch.
    """
    if not micro_batches:
        raise ValueError("The 'micro_batches' parameter of train_step must not be empty. Got [].")
    device = next(model.parameters()).device
    counts = torch.zeros(2, dtype=torch.float64)
    for _, y, _ in micro_batches:
        counts += torch.tensor([int((y >= 0).sum()), len(y)], dtype=torch.float64)
    counts = global_sum(counts)  # (labelled, samples) of the whole global batch
    world = distributed_context().world_size
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), dtype=torch.float64)
    last = len(micro_batches) - 1
    for i, (X, y, index) in enumerate(micro_batches):
        X, y = X.to(device, non_blocking=True), y.to(device, non_blocking=True)
        no_sync = getattr(model, "no_sync", None)
        sync = no_sync() if (no_sync is not None and i < last) else nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                logits = model(X)
            loss = loss_fn(logits.float(), X, y, index, counts)
            loss.backward()
        total += float(loss.detach()) / world
    optimizer.step()
    return total


def save_checkpoint(path: str | Path, state: dict[str, object]) -> None:
    """Write ``state`` to ``path`` on rank 0, atomically; every process waits until it is written.

    The file is written next to ``path`` under a temporary name and renamed
    (:func:`os.replace`), so that a crash while writing leaves the previous
    checkpoint whole. ``state`` must hold only tensors, numbers, strings,
    ``None`` and containers of them, so that :func:`load_checkpoint` can read it
    with ``weights_only=True``.
    """
    path = Path(path)
    if distributed_context().is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    if _is_distributed():
        import torch.distributed as dist

        dist.barrier()


def load_checkpoint(path: str | Path) -> dict[str, object] | None:
    """The state saved by :func:`save_checkpoint` (on the CPU), or None if there is none.

    Loaded with ``torch.load(weights_only=True)``: a checkpoint cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
