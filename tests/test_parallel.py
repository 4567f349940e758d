"""map_runs: the same results as a plain loop, in order, and the random state left as it was."""

from __future__ import annotations

import pytest
import torch

from kt_helpers import data, models, parallel, train


def _run(seed):
    splits = data.make_splits(1.0, seed=0)
    train.seed_everything(seed)
    model = models.MLP(hidden=(16,))
    train.fit(model, splits.X_train[:200].flatten(1), splits.y_train[:200], num_epochs=2, seed=seed)
    return model.state_dict(), torch.rand(2)  # the weights and what the generator gives next


def test_the_runs_give_the_same_bits_as_a_loop_and_leave_the_random_state(monkeypatch):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    together = parallel.map_runs(_run, [0, 1, 2])
    assert torch.equal(torch.get_rng_state(), before)
    monkeypatch.setenv(parallel.SWITCH_VARIABLE, "off")
    assert parallel.workers() == 1
    alone = parallel.map_runs(_run, [0, 1, 2])
    assert torch.equal(torch.get_rng_state(), before)  # a loop leaves it as it was too
    for (w1, r1), (w2, r2) in zip(together, alone, strict=True):
        assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
        assert torch.equal(r1, r2)
    assert not torch.equal(together[0][1], together[1][1])  # each run seeded itself


def test_results_come_back_in_order_and_a_local_function_works():
    offset = 10
    assert parallel.map_runs(lambda x: x + offset, range(7)) == list(range(10, 17))
    assert parallel.map_runs(lambda x: x, []) == []


def test_two_workers_on_this_machine_when_it_has_two_cores():
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert parallel.workers() == min(2, cores)
    assert parallel.workers(1) == 1


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="'fn' parameter of map_runs"):
        parallel.map_runs(3, [1])
    with pytest.raises(ValueError, match="max_workers"):
        parallel.workers(0)


def test_items_need_not_be_picklable():
    jobs = [lambda: 1, lambda: 2, lambda: 3]  # lambdas cannot be pickled; the workers inherit them
    assert parallel.map_runs(lambda job: job(), jobs) == [1, 2, 3]


@pytest.mark.skipif(parallel.workers() < 2, reason="needs two cores and fork")
def test_workers_inherit_the_optimisers_lazy_imports():
    # torch imports torch._dynamo on a process's first optimiser; map_runs imports it before it
    # forks, so that no worker pays for it again. Checked in a fresh interpreter, where nothing
    # has imported it yet.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kt_helpers import parallel\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "print(parallel.map_runs(lambda _: 'torch._dynamo' in sys.modules, [0, 1]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[True, True]"
