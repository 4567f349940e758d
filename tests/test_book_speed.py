"""The speed benchmark's bookkeeping: cell times, cell names and the profile summary."""

from __future__ import annotations

import cProfile
import importlib.util
import sys
from pathlib import Path

import nbformat
import torch

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("book_speed", ROOT / "benchmarks" / "book_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("book_speed", module)
    spec.loader.exec_module(module)
    return module


book_speed = _load()


def test_a_cells_time_is_read_from_nbclients_timestamps():
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["execution"] = {"iopub.execute_input": "2026-12-03T10:00:00.250Z",
                                  "shell.execute_reply": "2026-12-03T10:00:02.000Z"}
    assert book_speed._cell_seconds(cell) == 1.75
    assert book_speed._cell_seconds(nbformat.v4.new_code_cell("y = 2")) is None


def test_a_cell_is_named_by_its_first_line_of_code():
    cell = nbformat.v4.new_code_cell("# a comment\n\nmodel = train(x)\nmore()")
    assert book_speed._cell_label(cell, 3) == "cell 3: model = train(x)"
    assert book_speed._cell_label(nbformat.v4.new_code_cell("# only a comment"), 4) == "cell 4"


def test_the_profile_names_the_helpers_that_took_the_time(tmp_path):
    from kt_helpers import metrics, train

    profile = cProfile.Profile()
    profile.enable()
    train.seed_everything(0)
    a, b = torch.randn(200, 20), torch.randn(200, 30)
    for _ in range(5):
        metrics.linear_cka(a, b)
    profile.disable()
    stats = tmp_path / "run.prof"
    profile.dump_stats(str(stats))
    rows = book_speed.summarise_profile(stats, top=3)
    names = [r["function"] for r in rows]
    assert "metrics.linear_cka" in names[:3]
    assert all(r["seconds"] >= 0 for r in rows)
    assert len([n for n in names if "." in n and not n.startswith(("torch", "drawing", "imports"))]) <= 3


def test_a_notebooks_time_stops_at_its_last_output_and_the_shutdown_is_timed_apart(tmp_path):
    # The kernel takes 2 s to exit (an atexit handler): a reader does not wait for that, so it
    # must not be in the notebook's time, but it must be measured.
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import atexit, time\natexit.register(time.sleep, 2.0)\nprint('done')")]
    path = tmp_path / "slow_exit.ipynb"
    nbformat.write(nb, path)
    seconds, error = book_speed.time_notebook(path, timeout=60)
    assert error is None
    assert book_speed.LAST_TEARDOWN >= 1.5
    assert seconds < book_speed.LAST_TEARDOWN
    assert len(book_speed.LAST_CELLS) == 1
