"""Distil the case study's CNN into the RNN on several processes with torch.distributed.

A template of the pipeline a practitioner keeps when the run outgrows one
device, on the book's four steps:

1. selection — the teacher, a ``DigitCNN``, is trained on all training labels;
2. extraction — each process extracts the teacher's knowledge for its strided
   shard of the training set, once, and the shards are gathered in sample
   order; ``--top-k K`` keeps only each sample's K most probable classes and the
   mass of the rest, ``--teacher online`` runs the teacher on every batch instead;
3. mapping — the knowledge lives in the shared output space (class logits);
4. fusion — the ``RowRNN`` student is trained with the distillation loss,
   ``alpha·CE + (1 − alpha)·T²·KL``.

Both models train from a ``DataLoader`` over a ``DistributedSampler`` (a new
shuffle each epoch through ``set_epoch``; each process loads only its own
samples) inside DistributedDataParallel. The loss is exact on any number of
processes: its label term is divided by the number of labelled samples of the
*global* batch, summed over processes
(:func:`kt_helpers.distributed.exact_kd_loss`), so N processes take the steps
one process takes with the same global batch and seed, for any ``--alpha``.
``--accumulate K`` splits each process's part of the global batch into K
micro-batches (gradients accumulated, synchronised once); ``--bf16`` runs the
forward passes under ``torch.autocast`` with bfloat16. ``--checkpoint-dir DIR``
saves the model, optimiser, scheduler, epoch and sampler state after every
epoch (rank 0, atomically) and resumes from there when restarted. The test set
is evaluated on shards, each sample once.

Data that the world size W does not divide: the sampler pads each epoch by
repeating a few samples (``DistributedSampler(drop_last=False)``, the default
here) or drops them (``--drop-last``); either way the epoch then differs from a
single process's by those few samples, so the steps are identical to one
process's only when W divides the number of training samples (it does for the
case study: 1,144 samples, W = 1, 2, 4, 8).

One process (CPU or one GPU)::

    python benchmarks/distill_distributed.py

N processes on one machine (gloo on CPUs, nccl on GPUs)::

    torchrun --standalone --nproc_per_node=2 benchmarks/distill_distributed.py

Several machines: the same command on every machine, with HOST:PORT the
address of any one of them, which hosts the c10d rendezvous; the rendezvous
assigns each machine its rank, so no --node_rank is given::

    torchrun --nnodes=2 --nproc_per_node=4 \\
        --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --rdzv_id=kt-book \\
        benchmarks/distill_distributed.py --checkpoint-dir ckpt

With ``--checkpoint-dir`` and ``torchrun --max-restarts=3``, a failed process
restarts the whole group, which resumes from the last epoch saved. The last
line rank 0 prints is ``final: test_accuracy=0.xxxx test_correct=n/450 ...``;
``--out FILE`` writes the run's figures as JSON (rank 0 only). Every collective
times out after ``--timeout`` seconds rather than hanging.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kt_helpers import cache as training_cache, data, distributed, models, reproducibility, train  # noqa: E402
from kt_helpers.distributed import TeacherCache, exact_kd_loss, per_sample_kl  # noqa: E402


class SimulatedFailure(RuntimeError):
    """Raised by ``--fail-after-epoch``, to test restarting from a checkpoint."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the student")
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, all processes together")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the labels in the KD loss")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--teacher", choices=("cached", "online"), default="cached",
                        help="cache the teacher's knowledge once, or run the teacher on every batch")
    parser.add_argument("--top-k", type=int, default=None,
                        help="cache only the K most probable classes per sample (and the rest's mass)")
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per step and process")
    parser.add_argument("--bf16", action="store_true", help="forward passes under bfloat16 autocast")
    parser.add_argument("--drop-last", action="store_true",
                        help="drop the samples that the world size does not divide (default: pad)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes per process")
    parser.add_argument("--num-samples", type=int, default=None, help="use only the first N training samples")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="save every epoch here; resume from it")
    parser.add_argument("--fail-after-epoch", type=int, default=None,
                        help="(testing) fail once after saving the student's epoch N")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a collective fails")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace, world: int) -> None:
    """Refuse a configuration that cannot run, on every process, before any collective."""
    if args.batch_size % (world * args.accumulate):
        raise ValueError(
            f"The global batch --batch-size must be divisible by the world size times --accumulate "
            f"({world} x {args.accumulate} = {world * args.accumulate}). Got {args.batch_size} instead."
        )
    if args.top_k is not None and args.teacher == "online":
        raise ValueError("--top-k applies to a cached teacher. Got --top-k with --teacher online.")


def loader_for(dataset: TensorDataset, args: argparse.Namespace, ctx: train.DistributedContext,
               ) -> tuple[DataLoader, DistributedSampler]:
    """Each process's loader: its 1/W of every epoch's shuffle, in micro-batches.

    The sampler draws the same permutation on every process (seeded by
    ``seed + epoch``) and gives process r the positions r, r + W, ...; the
    loader cuts them into micro-batches of ``batch_size / (W · accumulate)``,
    so that one step's micro-batches, over all processes, are exactly the
    global batch one process would take.
    """
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=args.seed, drop_last=args.drop_last)
    micro = args.batch_size // (ctx.world_size * args.accumulate)
    loader = DataLoader(dataset, batch_size=micro, sampler=sampler, num_workers=args.workers,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=args.workers > 0)
    return loader, sampler


def train_phase(name: str, model: nn.Module, dataset: TensorDataset, loss_fn: distributed.LossFn,
                num_epochs: int, args: argparse.Namespace, ctx: train.DistributedContext,
                on_batch: Callable[[int, Tensor], None] | None = None) -> dict[str, object]:
    """Train ``model`` for ``num_epochs`` with Adam and a cosine schedule, resuming from a checkpoint."""
    loader, sampler = loader_for(dataset, args, ctx)
    steps_per_epoch = -(-len(loader) // args.accumulate)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs * steps_per_epoch)
    path = None if args.checkpoint_dir is None else args.checkpoint_dir / f"{name}.pt"
    state = None if path is None else distributed.load_checkpoint(path)
    start_epoch, losses = 0, []
    if state is not None and state["sampler"]["seed"] != args.seed:
        raise ValueError(f"The checkpoint {path} was written with --seed {state['sampler']['seed']}, so its "
                         f"shuffles differ from this run's. Got --seed {args.seed}; use another --checkpoint-dir.")
    if state is not None:  # resume: the weights, Adam's moments, the schedule, the epoch
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, losses = state["epoch"], list(state["train_loss"])
    forward_model: nn.Module = model
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None)
    autocast = torch.bfloat16 if args.bf16 else None
    start = time.perf_counter()
    for epoch in range(start_epoch, num_epochs):
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every process
        model.train()
        total = torch.zeros((), dtype=torch.float64)  # this process's shares of the steps' losses
        micro: list[tuple[Tensor, Tensor, Tensor]] = []
        for i, (X, y, index) in enumerate(loader):
            if on_batch is not None:
                on_batch(epoch, index)
            micro.append((X, y, index))
            if len(micro) == args.accumulate or i == len(loader) - 1:
                total += distributed.train_step(forward_model, micro, optimizer, loss_fn, autocast_dtype=autocast)
                scheduler.step()
                micro = []
        losses.append(float(distributed.global_sum(total)) / steps_per_epoch)
        if path is not None:
            distributed.save_checkpoint(path, {
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "sampler": {"seed": args.seed, "epoch": epoch + 1},
                "train_loss": losses, "world_size": ctx.world_size,
            })
        if name == "student" and args.fail_after_epoch == epoch + 1 and start_epoch < epoch + 1:
            raise SimulatedFailure(f"simulated failure after the student's epoch {epoch + 1}")
    model.eval()
    trained = num_epochs - start_epoch
    return {"train_loss": losses, "resumed_at_epoch": start_epoch,
            "seconds_per_epoch": (time.perf_counter() - start) / trained if trained else None}


def cache_teacher(teacher: nn.Module, X: Tensor, args: argparse.Namespace,
                  ctx: train.DistributedContext) -> TeacherCache:
    """Each process extracts its strided shard once; the (top-k) rows are gathered in sample order."""
    shard = torch.arange(ctx.rank, len(X), ctx.world_size)
    logits = train.predict_logits(teacher, X[shard])  # (len(shard), C)
    local = TeacherCache.from_logits(logits, temperature=args.temperature, top_k=args.top_k)
    gathered = {key: None if value is None else distributed.gather_rows(value, len(X))
                for key, value in local.state().items() if key != "temperature"}
    return TeacherCache(gathered["log_probs"], gathered["indices"], gathered["log_rest"], args.temperature)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reproducibility.pin_cpu_kernels()  # the book's CPU kernels, before the first computation
    ctx = train.init_distributed(timeout_s=args.timeout)
    check_args(args, ctx.world_size)
    # The splits' indices come from the book's cache when a run made them before (importing
    # scikit-learn to make them costs each process about a second); nothing here trains through it.
    training_cache.enable()
    splits = data.make_splits(args.label_fraction, seed=args.seed)
    X_train, y_train = splits.X_train, splits.y_train  # labelled + transfer, all labels
    if args.num_samples is not None:
        X_train, y_train = X_train[: args.num_samples], y_train[: args.num_samples]
    N = len(y_train)
    # The student sees labels only on the labelled part; -1 marks the transfer set.
    num_labelled = min(len(splits.y_labelled), N)
    y_student = torch.cat([y_train[:num_labelled], torch.full_like(y_train[num_labelled:], -1)])
    index = torch.arange(N)  # each sample's row in the teacher's cache

    # Step 1: the teacher (trained on all training labels): plain cross-entropy (alpha = 1).
    def teacher_loss(logits, X, y, idx, counts):
        return exact_kd_loss(logits, y, None, alpha=1.0, temperature=1.0, num_labelled=counts[0],
                             num_samples=counts[1], world_size=ctx.world_size)

    train.seed_everything(args.seed, num_threads=args.threads)
    teacher = models.DigitCNN().to(ctx.device)
    teacher_run = train_phase("teacher", teacher, TensorDataset(X_train, y_train, index), teacher_loss,
                              args.teacher_epochs, args, ctx)
    teacher.eval()

    # Step 2: extraction, sharded over the processes, gathered in sample order (or online).
    start = time.perf_counter()
    cache = cache_teacher(teacher, X_train, args, ctx) if args.teacher == "cached" else None
    extraction_seconds = time.perf_counter() - start

    # Steps 3-4: distil into the RNN with the exact loss.
    def student_loss(logits, X, y, idx, counts):
        if cache is not None:
            soft_kl = cache.kl(logits, idx)
        else:
            with torch.no_grad():
                teacher_log_p = F.log_softmax(teacher(X) / args.temperature, dim=1)
            soft_kl = per_sample_kl(logits, teacher_log_p, args.temperature)
        return exact_kd_loss(logits, y, soft_kl, alpha=args.alpha, temperature=args.temperature,
                             num_labelled=counts[0], num_samples=counts[1], world_size=ctx.world_size)

    uses = torch.zeros(args.epochs, N, dtype=torch.int64)  # uses of each sample per epoch

    def count_uses(epoch: int, idx: Tensor) -> None:
        uses[epoch].index_add_(0, idx, torch.ones_like(idx))

    train.seed_everything(args.seed, num_threads=args.threads)
    student = models.RowRNN().to(ctx.device)
    student_run = train_phase("student", student, TensorDataset(X_train, y_student, index), student_loss,
                              args.epochs, args, ctx, on_batch=count_uses)

    uses = distributed.global_sum(uses)[student_run["resumed_at_epoch"]:]
    teacher_correct, teacher_accuracy = distributed.sharded_accuracy(teacher, splits.X_test, splits.y_test)
    correct, accuracy = distributed.sharded_accuracy(student, splits.X_test, splits.y_test)
    C = data.NUM_CLASSES
    result = {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "global_batch": args.batch_size,
        "alpha": args.alpha,
        "temperature": args.temperature,
        "accumulate": args.accumulate,
        "bf16": args.bf16,
        "teacher_mode": args.teacher,
        "top_k": args.top_k,
        "num_samples": N,
        "teacher_train_loss": teacher_run["train_loss"],
        "student_train_loss": student_run["train_loss"],
        "resumed_at_epoch": student_run["resumed_at_epoch"],
        "teacher_test_accuracy": teacher_accuracy,
        "student_test_correct": correct,
        "student_test_accuracy": accuracy,
        "every_sample_once_per_epoch": bool((uses == 1).all()),
        "cache_bytes_per_sample": None if cache is None else cache.nbytes_per_sample,
        "full_logits_bytes_per_sample": 4 * C,
        "teacher_seconds_per_epoch": teacher_run["seconds_per_epoch"],
        "extraction_seconds": extraction_seconds,
        "student_seconds_per_epoch": student_run["seconds_per_epoch"],
        "machine": reproducibility.machine_info(),
    }
    if ctx.is_main:
        print(
            f"{ctx.world_size} process(es), backend {ctx.backend}, alpha {args.alpha}: teacher "
            f"{teacher_accuracy:.1%}, distilled RNN {accuracy:.1%} ({correct}/{len(splits.y_test)}); "
            f"every sample used once per epoch: {result['every_sample_once_per_epoch']}"
        )
        print(f"final: test_accuracy={accuracy:.4f} test_correct={correct}/{len(splits.y_test)} "
              f"world_size={ctx.world_size}", flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as error:  # a bad configuration: say what, exit non-zero, never hang
        # Every process finds the same error; only the first says it, so that the
        # launcher's merged stderr holds one whole line rather than interleaved copies.
        if os.environ.get("RANK", "0") == "0":
            os.write(2, f"error: {error}\n".encode())
        sys.exit(2)
    except SimulatedFailure as failure:
        if os.environ.get("RANK", "0") == "0":
            os.write(2, f"{failure}\n".encode())
        sys.exit(3)
