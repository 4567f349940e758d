"""One optimisation step on 2 gloo processes equals one step of a single process.

This file is also the worker: ``torchrun --nproc_per_node=2 tests/test_distributed_step.py OUT``
computes one step of a ``RowRNN`` under DistributedDataParallel on a global
batch of 16 samples whose 5 labelled samples all sit on rank 0, and rank 0
saves the global loss and the gradients. The tests compare them with the same
step in this process:

- the exact loss (:func:`kt_helpers.distributed.exact_kd_loss`) at α = 0.5
  gives the single-process loss and gradients to float32 rounding
  (rtol 1e-5), with the whole cache and with a top-3 cache;
- the per-process mean of ``fusion.kd_loss`` (the naive loss) does not;
- gradient accumulation (2 micro-batches per process) gives them too (rtol 1e-5);
- bfloat16 autocast gives the loss within 1 % and every gradient within 5 % of
  the largest, with a cosine similarity above 0.999 (measured: 4e-6, 0.3 % and
  0.99999; bfloat16 keeps 8 significant bits, about 0.4 % rounding).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kt_helpers import distributed, fusion, models, train
from kt_helpers.distributed import TeacherCache, exact_kd_loss

ALPHA, TEMPERATURE, B = 0.5, 2.0, 16
CASES = {  # name: (top_k, micro-batches per process, bf16, naive loss)
    "exact": (None, 1, False, False),
    "exact_top3": (3, 1, False, False),
    "naive": (None, 1, False, True),
    "accumulate": (None, 2, False, False),
    "bf16": (None, 1, True, False),
}


def _global_batch():
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(B, 8, 8, generator=gen)  # (B, rows, pixels)
    y = torch.randint(0, 10, (B,), generator=gen)
    y[5:] = -1  # only samples 0-4 are labelled: all on rank 0 of 2
    teacher_logits = 3 * torch.randn(B, 10, generator=gen)  # (B, C)
    return X, y, teacher_logits


def one_step(name: str, rank: int, world: int) -> dict[str, object]:
    """One step of case ``name`` on this process's contiguous slice of the global batch."""
    top_k, accumulate, bf16, naive = CASES[name]
    X, y, teacher_logits = _global_batch()
    cache = TeacherCache.from_logits(teacher_logits, temperature=TEMPERATURE, top_k=top_k)
    train.seed_everything(0, num_threads=1)
    model = models.RowRNN()
    forward_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(model)
    index = torch.arange(B)[rank * B // world : (rank + 1) * B // world]  # (B / world,)
    micro = [(X[i], y[i], i) for i in index.chunk(accumulate)]

    def loss_fn(logits, X_b, y_b, idx, counts):
        if naive:  # each process's kd_loss, a mean over its own slice
            return fusion.kd_loss(logits, teacher_logits[idx], y_b, alpha=ALPHA, temperature=TEMPERATURE)
        return exact_kd_loss(logits, y_b, cache.kl(logits, idx), alpha=ALPHA, temperature=TEMPERATURE,
                             num_labelled=counts[0], num_samples=counts[1], world_size=world)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that keeps the gradients
    share = distributed.train_step(forward_model, micro, optimizer, loss_fn,
                                   autocast_dtype=torch.bfloat16 if bf16 else None)
    return {"loss": float(distributed.global_sum(share)), "grads": [p.grad.detach().clone() for p in model.parameters()]}


def _worker(out: str) -> None:
    ctx = train.init_distributed(timeout_s=30)
    results = {name: one_step(name, ctx.rank, ctx.world_size) for name in CASES}
    if ctx.is_main:
        torch.save(results, out)
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("step") / "step.pt"
    env = {k: v for k, v in os.environ.items() if k not in {"WORLD_SIZE", "RANK", "LOCAL_RANK"}}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           __file__, str(out)], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def one_process():
    return {name: one_step(name, 0, 1) for name in ("exact", "exact_top3")}


def _close(a: dict, b: dict, rtol: float) -> bool:
    same_loss = abs(a["loss"] - b["loss"]) <= rtol * abs(b["loss"])
    return same_loss and all(torch.allclose(g, h, rtol=rtol, atol=rtol * h.abs().max())
                             for g, h in zip(a["grads"], b["grads"], strict=True))


def test_the_single_process_step_is_the_book_kd_loss(one_process):
    X, y, teacher_logits = _global_batch()
    train.seed_everything(0, num_threads=1)
    model = models.RowRNN()
    loss = fusion.kd_loss(model(X), teacher_logits, y, alpha=ALPHA, temperature=TEMPERATURE)
    loss.backward()
    book = {"loss": float(loss.detach()), "grads": [p.grad for p in model.parameters()]}
    assert _close(one_process["exact"], book, rtol=1e-5)


@pytest.mark.parametrize("name", ["exact", "exact_top3"])
def test_two_processes_take_the_single_process_step_at_alpha_one_half(two_processes, one_process, name):
    assert _close(two_processes[name], one_process[name], rtol=1e-5)


def test_the_naive_per_process_mean_takes_another_step(two_processes, one_process):
    # The control: the same step with each process's kd_loss (its own labelled mean) is not exact.
    assert not _close(two_processes["naive"], one_process["exact"], rtol=1e-2)


def test_gradient_accumulation_takes_the_same_step(two_processes, one_process):
    assert _close(two_processes["accumulate"], one_process["exact"], rtol=1e-5)


def test_bf16_autocast_stays_within_its_precision(two_processes, one_process):
    # bfloat16 keeps 8 significant bits (relative rounding 2**-8, about 0.4 %) in the
    # operations autocast lowers; the loss itself is computed in float32.
    bf16, full = two_processes["bf16"], one_process["exact"]
    assert abs(bf16["loss"] - full["loss"]) <= 1e-2 * full["loss"]
    g = torch.cat([t.flatten() for t in bf16["grads"]])
    h = torch.cat([t.flatten() for t in full["grads"]])
    assert (g - h).abs().max() <= 5e-2 * h.abs().max()
    assert F.cosine_similarity(g, h, dim=0) > 0.999
    assert not _close(bf16, full, rtol=1e-6)  # autocast did change the arithmetic

if __name__ == "__main__":
    _worker(sys.argv[1])
