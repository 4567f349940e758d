"""The four steps on several processes (torch.distributed, gloo on the CPU).

Three short runs of benchmarks/distill_distributed.py at α = 0.5 (its default):
1 process, 2 processes under torchrun, and 2 processes that fail after the
student's epoch 4 and are restarted by torchrun (``--max-restarts=1``), which
resume from the checkpoint. The 2-process run must print the same final test
accuracy as the 1-process run, with the same losses to rounding; the restarted
run must end with exactly the weights of the uninterrupted one. The data
pipeline (DistributedSampler, padding, micro-batches) and bad configurations
are checked in this process, without launching anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from kt_helpers import distributed, extraction, train

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "distill_distributed.py"
SMALL = ["--teacher-epochs", "5", "--epochs", "8"]  # as in the appendix
FINAL = re.compile(r"^final: test_accuracy=(\d\.\d{4}) test_correct=(\d+)/450 world_size=(\d)$", re.M)


def _script():
    spec = importlib.util.spec_from_file_location("distill_distributed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _start(args: list[str], processes: int, tmp_path: Path, *launcher: str) -> subprocess.Popen:
    if processes == 1:
        cmd = [sys.executable, str(SCRIPT)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", *launcher, str(SCRIPT)]
    return subprocess.Popen([*cmd, *args, "--out", str(tmp_path / "result.json"),
                             "--checkpoint-dir", str(tmp_path / "ckpt")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # The three runs start together: they share the cores, and each one's start-up
    # and rendezvous waits overlap the others' work.
    started = {}
    for name, processes, extra, launcher in (
        ("one", 1, [], []),
        ("two", 2, [], []),
        ("restarted", 2, ["--fail-after-epoch", "4"], ["--max-restarts=1"]),
    ):
        tmp = tmp_path_factory.mktemp(name)
        started[name] = (tmp, _start([*SMALL, *extra], processes, tmp, *launcher))
    results = {}
    for name, (tmp, proc) in started.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {stderr[-3000:]}"
        student = distributed.load_checkpoint(tmp / "ckpt" / "student.pt")
        results[name] = {"stdout": stdout, "stderr": stderr, "weights": student["model"],
                         "result": json.loads((tmp / "result.json").read_text())}
    return results


def test_two_processes_use_gloo_on_the_cpu(runs):
    assert runs["one"]["result"]["world_size"] == 1 and runs["one"]["result"]["backend"] == "none"
    assert runs["two"]["result"]["world_size"] == 2 and runs["two"]["result"]["backend"] == "gloo"
    assert runs["two"]["result"]["alpha"] == 0.5


def test_one_and_two_processes_print_the_same_final_test_accuracy(runs):
    finals = {name: FINAL.findall(runs[name]["stdout"]) for name in ("one", "two")}
    assert len(finals["one"]) == 1 and len(finals["two"]) == 1, finals
    assert finals["one"][0][:2] == finals["two"][0][:2]


def test_the_distributed_run_takes_the_single_process_steps(runs):
    one, two = runs["one"], runs["two"]
    for key in ("teacher_train_loss", "student_train_loss"):
        a, b = torch.tensor(one["result"][key]), torch.tensor(two["result"][key])
        assert torch.allclose(a, b, rtol=1e-4), f"{key}: {a.tolist()} vs {b.tolist()}"
    # Rounding differences (the processes add in another order) reach the weights
    # amplified: Adam divides each step by the gradient's running scale, so a tiny
    # difference in a near-zero gradient changes that weight's step visibly.
    for name, w in one["weights"].items():
        assert (w - two["weights"][name]).abs().max() <= 1e-2 * w.abs().max(), name


def test_every_sample_is_used_exactly_once_per_epoch(runs):
    assert runs["one"]["result"]["every_sample_once_per_epoch"] is True
    assert runs["two"]["result"]["every_sample_once_per_epoch"] is True


def test_a_run_restarted_by_torchrun_resumes_to_the_same_weights(runs):
    restarted, two = runs["restarted"], runs["two"]
    assert "simulated failure after the student's epoch 4" in restarted["stderr"]
    assert restarted["result"]["resumed_at_epoch"] == 4
    assert restarted["result"]["student_train_loss"] == two["result"]["student_train_loss"]
    for name, w in two["weights"].items():
        assert torch.equal(restarted["weights"][name], w), name


# --- the data pipeline, in this process --------------------------------------------------------


def _steps(script, args, dataset, rank: int, world: int, epoch: int) -> list[list[int]]:
    """The sample indices each optimisation step of this rank uses (micro-batches joined)."""
    loader, sampler = script.loader_for(dataset, args, train.DistributedContext(rank=rank, world_size=world))
    sampler.set_epoch(epoch)
    micro = [index.tolist() for _, _, index in loader]
    return [sum(micro[i : i + args.accumulate], []) for i in range(0, len(micro), args.accumulate)]


@pytest.mark.parametrize(("world", "accumulate"), [(2, 1), (2, 2), (4, 2)])
def test_every_step_over_all_processes_is_the_single_process_global_batch(world, accumulate):
    script = _script()
    dataset = TensorDataset(torch.zeros(200, 1), torch.zeros(200), torch.arange(200))
    args = script.parse_args(["--batch-size", "16", "--accumulate", str(accumulate)])
    single = _steps(script, script.parse_args(["--batch-size", "16"]), dataset, 0, 1, epoch=3)
    ranks = [_steps(script, args, dataset, r, world, epoch=3) for r in range(world)]
    assert [sorted(sum(step, [])) for step in zip(*ranks, strict=True)] == [sorted(s) for s in single]
    assert single != _steps(script, script.parse_args(["--batch-size", "16"]), dataset, 0, 1, epoch=4)


@pytest.mark.parametrize(("drop_last", "seen"), [(False, 1144), (True, 1142)])
def test_uneven_data_is_padded_or_dropped(drop_last, seen):
    script = _script()
    dataset = TensorDataset(torch.zeros(1143, 1), torch.zeros(1143), torch.arange(1143))
    args = script.parse_args(["--drop-last"] if drop_last else [])
    used = [i for r in range(2) for step in _steps(script, args, dataset, r, 2, epoch=0) for i in step]
    assert len(used) == seen
    assert len(set(used)) == (1143 if not drop_last else 1142)


def test_a_batch_that_the_processes_do_not_divide_fails_clearly():
    script = _script()
    with pytest.raises(ValueError, match=r"divisible by the world size times --accumulate \(2 x 2 = 4\)"):
        script.check_args(script.parse_args(["--batch-size", "66", "--accumulate", "2"]), 2)


# --- joining the process group ------------------------------------------------------------------


def test_a_missing_rendezvous_variable_fails_clearly(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="Missing: MASTER_ADDR, MASTER_PORT"):
        train.init_distributed()


def test_init_distributed_in_one_process_initialises_nothing(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    ctx = train.init_distributed()
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, "none", True)
    assert not torch.distributed.is_initialized()


def test_init_distributed_rejects_a_bad_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE environment variable must be an integer >= 1. Got 'two'"):
        train.init_distributed()


def test_init_distributed_rejects_a_bad_timeout():
    with pytest.raises(ValueError, match="'timeout_s' parameter of init_distributed must be a finite number > 0"):
        train.init_distributed(timeout_s=0)


def test_sharded_in_one_process_is_the_plain_extraction():
    X = torch.arange(6.0).reshape(6, 1)
    assert torch.equal(extraction.sharded(lambda x: x * 3, X), X * 3)
