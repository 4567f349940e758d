"""The four steps on several processes (torch.distributed, gloo on the CPU).

A 2-process run of benchmarks/distill_distributed.py under torchrun must take
the same steps as a 1-process run with the same global batch and seed, use
every cached teacher target exactly once per epoch, and fail fast and clearly
on a bad configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kt_helpers import extraction, train

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "distill_distributed.py"
SMALL = ["--teacher-epochs", "3", "--epochs", "3"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    env.update(extra)
    return env


def _run(args: list[str], processes: int, tmp_path: Path, timeout: int = 300, **env: str):
    out = tmp_path / f"result-{processes}.json"
    if processes == 1:
        cmd = [sys.executable, str(SCRIPT)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", str(SCRIPT)]
    proc = subprocess.run([*cmd, *args, "--out", str(out)], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=_env(**env))
    return proc, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    results = {}
    for processes in (1, 2):
        proc, out = _run(SMALL, processes, tmp)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[processes] = json.loads(out.read_text())
    return results


def test_two_processes_use_gloo_on_the_cpu(runs):
    assert runs[1]["world_size"] == 1 and runs[1]["backend"] == "none"
    assert runs[2]["world_size"] == 2 and runs[2]["backend"] == "gloo"


def test_the_distributed_run_matches_the_single_process_run(runs):
    for key in ("teacher_train_loss", "student_train_loss"):
        one, two = torch.tensor(runs[1][key]), torch.tensor(runs[2][key])
        assert torch.allclose(one, two, rtol=1e-4, atol=1e-5), f"{key}: {one.tolist()} vs {two.tolist()}"
    assert abs(runs[1]["student_test_correct"] - runs[2]["student_test_correct"]) <= 1


def test_every_cached_target_is_used_exactly_once_per_epoch(runs):
    assert runs[1]["every_sample_once_per_epoch"] is True
    assert runs[2]["every_sample_once_per_epoch"] is True


def test_a_world_size_that_does_not_divide_the_data_fails_clearly(tmp_path):
    proc, _ = _run([*SMALL, "--num-samples", "1143", "--timeout", "20"], 2, tmp_path, timeout=180)
    assert proc.returncode != 0
    assert "divisible by the world size 2" in proc.stderr


def test_a_missing_rendezvous_variable_fails_clearly(tmp_path):
    proc, _ = _run(SMALL, 1, tmp_path, timeout=120, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    assert proc.returncode == 2
    assert "Missing: MASTER_ADDR, MASTER_PORT" in proc.stderr


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
