"""Seeding, training and evaluation, shared by every chapter.

:func:`fit` is one small training loop for every experiment in the book. What
changes from one experiment to the next is only the *objective*: plain
cross-entropy, the distillation loss, a hint loss. An objective is a callable
``objective(model, X_batch, y_batch, index) -> loss``; ``index`` holds the
positions of the batch's samples in the training set, so knowledge extracted
once per sample (a teacher's logits, its features) stays aligned with its
sample however the batches are shuffled. Introduced in chapter 1.

The same loop scales to several processes (appendix "Scaling up"): started
under ``torchrun``, call :func:`init_distributed` first; :func:`fit` then wraps
the model in :class:`~torch.nn.parallel.DistributedDataParallel` and gives
each process its slice of every global batch, so that a run on N processes
takes the same optimisation steps as a run on one process with the same
global batch and seed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # for annotations only
    import pandas as pd

from . import cache, reproducibility
from ._validation import check_int, check_labels, check_positive, check_same_rows, check_tensor

__all__ = [
    "MAX_THREADS",
    "DistributedContext",
    "History",
    "Objective",
    "cross_entropy_objective",
    "distributed_context",
    "evaluate",
    "fit",
    "get_device",
    "init_distributed",
    "predict_logits",
    "seed_everything",
]

#: ``objective(model, X_batch, y_batch, index) -> scalar loss``
Objective = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]


#: PyTorch's CPU results depend (in the last bits, which training can amplify)
#: on the number of threads. The book's outputs were computed with exactly this
#: many, on every machine (see :mod:`kt_helpers.reproducibility`). One: the
#: book's models are so small that a second thread mostly adds synchronisation,
#: and on a busy machine OpenMP's waiting threads make a run several times slower.
MAX_THREADS = 1
_threads = MAX_THREADS  # the count seed_everything sets when none is given


def seed_everything(seed: int = 0, *, num_threads: int | None = None) -> torch.Generator:
    """Seed Python, NumPy and PyTorch so that a notebook reproduces exactly.

    Every notebook calls this once at the top and again before each model is
    created, so that each experiment starts from the same weights whatever ran
    before it. It also fixes the thread count and keeps convolutions off
    oneDNN where the kernels are pinned (:mod:`kt_helpers.reproducibility`),
    so that the same code gives the same bits on any x86-64 processor with AVX2.
    Introduced in chapter 1.

    Args:
        seed: the seed.
        num_threads: the number of CPU threads PyTorch uses, whatever the
            number of cores, so that every machine adds in the same order as
            the book's. By default the count an earlier call chose, else
            :data:`MAX_THREADS`.

    Returns:
        A :class:`torch.Generator` seeded with ``seed``, for code that wants
        its own stream of random numbers.
    """
    check_int(seed, "seed_everything", "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    global _threads
    if num_threads is not None:
        _threads = check_int(num_threads, "seed_everything", "num_threads")
    torch.set_num_threads(_threads)
    reproducibility.pin_torch_backends()  # no oneDNN where the kernels are pinned
    return torch.Generator().manual_seed(seed)


def get_device() -> torch.device:
    """The GPU where one is present (e.g. on Colab), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- several processes -----------------------------------------------------------------------

_RENDEZVOUS_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: this process's index, 0 .. world_size - 1.
        world_size: number of processes.
        local_rank: index on this machine (selects the GPU).
        backend: ``"nccl"`` (GPUs), ``"gloo"`` (CPUs) or ``"none"`` (one process).
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"
    device: torch.device = field(default_factory=get_device)

    @property
    def is_main(self) -> bool:
        """True on the process that should print and save (rank 0)."""
        return self.rank == 0


def distributed_context() -> DistributedContext:
    """The context of the current process: that of an initialised process group,
    or a single process on :func:`get_device`."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = dist.get_backend()
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def init_distributed(*, timeout_s: float = 60.0) -> DistributedContext:
    """Join the process group that ``torchrun`` set up, or run as one process.

    Reads the environment that ``torchrun`` sets (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Without ``WORLD_SIZE``
    (or with ``WORLD_SIZE=1``) nothing is initialised and training behaves
    exactly as in a single process. The backend is ``nccl`` when GPUs are
    present, ``gloo`` on CPUs. Every collective operation fails after
    ``timeout_s`` seconds instead of hanging.

    Args:
        timeout_s: timeout of the rendezvous and of every collective, > 0.

    Returns:
        The :class:`DistributedContext` of this process.

    Raises:
        ValueError: if ``WORLD_SIZE`` > 1 but a rendezvous variable is missing
            or malformed.
    """
    import torch.distributed as dist

    timeout_s = check_positive(timeout_s, "init_distributed", "timeout_s")
    if dist.is_available() and dist.is_initialized():
        return distributed_context()
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 1:
        raise ValueError(
            f"The WORLD_SIZE environment variable must be an integer >= 1. Got {world!r} instead."
        )
    if int(world) == 1:
        return DistributedContext()
    missing = [name for name in _RENDEZVOUS_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is {world}, so the rendezvous variables {', '.join(_RENDEZVOUS_VARIABLES)} "
            f"must all be set. Missing: {', '.join(missing)}. Start the script with torchrun "
            "(e.g. torchrun --nproc_per_node=2 script.py), which sets them."
        )
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    timeout = timedelta(seconds=timeout_s)
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and restart != "0":
        # torchrun restarted the workers (--max-restarts): its store still holds the
        # addresses the failed workers published, and gloo would try to connect to
        # them. A key prefix per restart keeps each attempt's keys apart.
        store = dist.PrefixStore(f"restart-{restart}/", dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(world),
            is_master=False, timeout=timeout))
        dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]),
                                world_size=int(world), timeout=timeout)
    else:
        dist.init_process_group(backend=backend, timeout=timeout)
    return distributed_context()


def cross_entropy_objective(model: nn.Module, X: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """The plain objective: cross-entropy of the model's logits against the labels
    (samples labelled ``-1`` are ignored)."""
    return F.cross_entropy(model(X), y, ignore_index=-1)


@dataclass
class History:
    """What :func:`fit` records: the mean training loss and, if a validation
    set was given, the validation accuracy after each epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
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
    device: str | torch.device | None = None,
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
        device: where to train. By default the GPU when there is one (as on
            Colab) and the CPU otherwise (:func:`get_device`); under
            ``torchrun``, this process's device. The model, an objective that
            is an :class:`torch.nn.Module` and ``extra_parameters`` are moved
            there for training and moved back afterwards, so the caller finds
            them where they were (the CPU, in the book); the data are copied.

    Under ``torchrun`` (after :func:`init_distributed`), ``batch_size`` is the
    *global* batch: each of the N processes computes the loss on its slice of
    ``batch_size / N`` samples of the same shuffled batch, and
    DistributedDataParallel averages the gradients. With a loss that is a mean
    over samples, the steps equal those of one process with the same global
    batch and seed, up to floating-point rounding. (With unlabelled samples,
    ``kd_loss`` averages the hard term over each slice's labelled samples, so
    the two agree only approximately; :func:`kt_helpers.distributed.exact_kd_loss`
    and ``benchmarks/distill_distributed.py`` are exact for any α, and train
    from a ``DataLoader`` with a ``DistributedSampler`` instead of copying the
    data to every process.)

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
    if objective is None:
        objective = cross_entropy_objective
    ctx = distributed_context()
    world = ctx.world_size
    if world > 1:
        if batch_size % world or len(y) % world:
            raise ValueError(
                f"With {world} processes, the 'batch_size' (the global batch) and the number of "
                f"samples of fit must both be divisible by the world size {world}. "
                f"Got batch_size={batch_size} and {len(y)} samples instead."
            )
    if device is None:
        device = ctx.device
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            "The 'device' parameter of fit must name a torch device, such as 'cpu' or 'cuda'. "
            f"Got {device!r} instead."
        ) from None
    # Train on `device`; put the model, the objective and the extra parameters
    # back where they were afterwards.
    extra = list(extra_parameters)
    trained = [model, *([objective] if isinstance(objective, nn.Module) else []), *extra]
    homes = [(thing, _device_of(thing) if isinstance(thing, nn.Module) else thing.device) for thing in trained]

    def run() -> History:
        try:
            _move([(thing, device) for thing in trained])
            return _fit_on(
                model, X, y, objective, ctx, device, extra, num_epochs=num_epochs, lr=lr,
                batch_size=batch_size, weight_decay=weight_decay, seed=seed, X_val=X_val,
                y_val=y_val, schedule=schedule, progress=progress,
            )
        finally:
            _move(homes)

    if progress or world > 1 or device.type != "cpu" or any(d.type != "cpu" for _, d in homes):
        return run()
    # A run trained before with the same everything is read back from the cache,
    # when a notebook's setup cell turned it on (kt_helpers.cache).
    settings = {"X": X, "y": y, "X_val": X_val, "y_val": y_val, "num_epochs": num_epochs, "lr": lr,
                "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed,
                "schedule": schedule}
    return cache.memoised_fit(run, model, objective, extra, settings)


def _move(placements: list[tuple[nn.Module | nn.Parameter, torch.device]]) -> None:
    """Move each module or parameter to its device (a parameter in place, so that
    an optimiser holding it still does)."""
    for thing, device in placements:
        if isinstance(thing, nn.Module):
            thing.to(device)
        else:
            thing.data = thing.data.to(device)


def _fit_on(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    objective: Objective,
    ctx: DistributedContext,
    device: torch.device,
    extra: list[nn.Parameter],
    *,
    num_epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
    X_val: Tensor | None,
    y_val: Tensor | None,
    schedule: str,
    progress: bool,
) -> History:
    """The training loop of :func:`fit`, on ``device`` (arguments already checked)."""
    world = ctx.world_size
    if isinstance(objective, nn.Module):
        extra = extra + list(objective.parameters())
    optimizer = torch.optim.Adam(list(model.parameters()) + extra, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(y) // batch_size)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs * steps_per_epoch)
        if schedule == "cosine"
        else None
    )
    forward_model: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.local_rank] if ctx.backend == "nccl" else None
        forward_model = DistributedDataParallel(model, device_ids=ids)
    gen = torch.Generator().manual_seed(seed)
    X, y = X.to(device), y.to(device)
    history = History()

    epochs: Iterable[int] = range(num_epochs)
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="epochs", leave=False)
    for _ in epochs:
        model.train()
        if isinstance(objective, nn.Module):
            objective.train()
        # The same shuffle on every process (same generator, same seed).
        order = torch.randperm(len(y), generator=gen)  # (N,) a fresh shuffle per epoch
        total = torch.zeros(2, dtype=torch.float64)  # (sum of losses, number of samples)
        for start in range(0, len(y), batch_size):
            index = order[start : start + batch_size]  # (B,) positions in the training set
            if world > 1:  # this process's slice of the global batch
                local = len(index) // world
                index = index[ctx.rank * local : (ctx.rank + 1) * local]  # (B / world,)
            index_dev = index.to(device)
            loss = objective(forward_model, X[index_dev], y[index_dev], index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1 and extra:
                _average_gradients(extra, world)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += torch.tensor([float(loss.detach()) * len(index), len(index)], dtype=torch.float64)
        if world > 1:
            import torch.distributed as dist

            total = total.to(ctx.device)
            dist.all_reduce(total)
            total = total.cpu()
        history.train_loss.append(float(total[0] / total[1]))
        if X_val is not None and y_val is not None:
            history.val_accuracy.append(evaluate(model, X_val, y_val))
    model.eval()
    return history


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Average the gradients of parameters that DistributedDataParallel does not
    manage (e.g. a learned map held by the objective) over all processes."""
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


@torch.no_grad()
def predict_logits(model: nn.Module, X: Tensor, *, batch_size: int = 1024) -> Tensor:
    """The model's logits for ``X`` in evaluation mode, on the CPU.

    Shape:
        - X: (N, ...). Output: (N, num_classes).
    """
    check_tensor(X, "predict_logits", "X")
    was_training = model.training
    model.eval()
    device = _device_of(model)
    try:
        return torch.cat(
            [model(X[i : i + batch_size].to(device)).cpu() for i in range(0, len(X), batch_size)]
        )
    finally:
        model.train(was_training)


def _device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU if it has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def evaluate(model: nn.Module, X: Tensor, y: Tensor) -> float:
    """Accuracy of ``model`` on ``(X, y)``, a float in [0, 1]."""
    from .metrics import accuracy

    check_same_rows(X, y, "evaluate", ("X", "y"))
    return accuracy(predict_logits(model, X), y)
