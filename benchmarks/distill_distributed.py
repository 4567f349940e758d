"""Distil the case study's CNN into the RNN on several processes with torch.distributed.

The four steps of the book, unchanged, on PyTorch's own distributed engine:

1. selection — the teacher, a ``DigitCNN``, is trained with :func:`kt_helpers.train.fit`
   (DistributedDataParallel when there are several processes);
2. extraction — each process extracts the teacher's logits for *its shard* of
   the transfer set, once, and the shards are gathered in sample order
   (:func:`kt_helpers.extraction.sharded`);
3. mapping — the knowledge lives in the shared output space (class logits);
4. fusion — the ``RowRNN`` student is trained with the distillation loss
   against the cached logits, each process on its slice of every global batch.

One process (CPU or one GPU)::

    python benchmarks/distill_distributed.py

N processes on one machine (gloo on CPUs, nccl on GPUs)::

    torchrun --standalone --nproc_per_node=2 benchmarks/distill_distributed.py

Several machines: the same command on every machine, with HOST:PORT the
address of any one of them, which hosts the c10d rendezvous; the rendezvous
assigns each machine its rank, so no --node_rank is given::

    torchrun --nnodes=2 --nproc_per_node=4 \\
        --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --rdzv_id=kt-book \\
        benchmarks/distill_distributed.py

``--out FILE`` writes the run's figures as JSON (rank 0 only). The global
batch (``--batch-size``) and the number of training samples must be divisible
by the number of processes; every collective times out after ``--timeout``
seconds rather than hanging.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kt_helpers import data, extraction, fusion, models, train  # noqa: E402


class RecordingObjective(nn.Module):
    """Wraps an objective and counts, per epoch, how often each training sample is used.

    A :class:`torch.nn.Module`, so that ``fit`` moves the wrapped objective (and
    its cached teacher logits) to the device it trains on; the counts stay on the CPU.
    """

    def __init__(self, inner: nn.Module, num_samples: int, num_epochs: int, world_size: int) -> None:
        super().__init__()
        self.inner = inner
        self.counts = torch.zeros(num_epochs, num_samples, dtype=torch.int64)
        self.per_epoch = num_samples // world_size  # samples this process sees per epoch
        self.seen = 0

    def forward(self, model, X, y, index):
        epoch = self.seen // self.per_epoch
        self.counts[epoch].index_add_(0, index.cpu(), torch.ones_like(index.cpu()))
        self.seen += len(index)
        return self.inner(model, X, y, index)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the student")
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--alpha", type=float, default=0.0, help="weight of the labels in the KD loss")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--num-samples", type=int, default=None,
                        help="use only the first N training samples (to test bad configurations)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a collective fails")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = train.init_distributed(timeout_s=args.timeout)
    torch.set_num_threads(args.threads)
    splits = data.make_splits(args.label_fraction, seed=args.seed)
    X_train, y_train = splits.X_train, splits.y_train  # labelled + transfer, all labels
    if args.num_samples is not None:
        X_train, y_train = X_train[: args.num_samples], y_train[: args.num_samples]
    # The student sees labels only on the labelled part; -1 marks the transfer set.
    num_labelled = min(len(splits.y_labelled), len(y_train))
    y_student = torch.cat([y_train[:num_labelled], torch.full_like(y_train[num_labelled:], -1)])

    # Step 1: the teacher (trained on all training labels).
    train.seed_everything(args.seed)
    teacher = models.DigitCNN().to(ctx.device)
    start = time.perf_counter()
    teacher_history = train.fit(teacher, X_train, y_train, num_epochs=args.teacher_epochs,
                                lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    teacher_seconds = time.perf_counter() - start

    # Step 2: extraction, sharded over the processes, gathered in sample order.
    start = time.perf_counter()
    teacher_logits = extraction.sharded(lambda X: extraction.logits(teacher, X), X_train)
    extraction_seconds = time.perf_counter() - start

    # Steps 3-4: distil into the RNN against the cached logits.
    train.seed_everything(args.seed)
    student = models.RowRNN().to(ctx.device)
    objective = RecordingObjective(
        fusion.distillation_objective(teacher_logits, alpha=args.alpha, temperature=args.temperature),
        len(y_train), args.epochs, ctx.world_size,
    )

    start = time.perf_counter()
    history = train.fit(student, X_train, y_student, objective=objective,
                        num_epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    student_seconds = time.perf_counter() - start

    counts = objective.counts.to(ctx.device)
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(counts)
    logits = extraction.logits(student, splits.X_test)
    correct = int((logits.argmax(1) == splits.y_test).sum())
    result = {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "global_batch": args.batch_size,
        "num_samples": len(y_train),
        "teacher_train_loss": teacher_history.train_loss,
        "student_train_loss": history.train_loss,
        "teacher_test_accuracy": train.evaluate(teacher, splits.X_test, splits.y_test),
        "student_test_correct": correct,
        "student_test_accuracy": correct / len(splits.y_test),
        "every_sample_once_per_epoch": bool((counts == 1).all()),
        "teacher_seconds_per_epoch": teacher_seconds / args.teacher_epochs,
        "extraction_seconds": extraction_seconds,
        "student_seconds_per_epoch": student_seconds / args.epochs,
    }
    if ctx.is_main:
        print(
            f"{ctx.world_size} process(es), backend {ctx.backend}: teacher "
            f"{result['teacher_test_accuracy']:.1%}, distilled RNN {result['student_test_accuracy']:.1%} "
            f"({correct}/{len(splits.y_test)}); every cached target used once per epoch: "
            f"{result['every_sample_once_per_epoch']}; student epoch "
            f"{1000 * result['student_seconds_per_epoch']:.0f} ms"
        )
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
