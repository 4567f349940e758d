"""Execute the book's notebooks deterministically and store their outputs.

    python scripts/execute_notebooks.py                 # every notebook
    python scripts/execute_notebooks.py chapters/01_*.ipynb

For each notebook: regenerate its Colab badge and setup cell from
``_config.yml`` (see :mod:`kt_helpers.course`), run it top to bottom in a fresh
kernel with the notebook's folder as working directory, then store it with
clean metadata — no execution timestamps, no widget state, no Python patch
version — so that re-running it changes nothing but what the code computes.
Kernels run with the CPU kernels pinned (:mod:`kt_helpers.reproducibility`),
so the stored digits reproduce on other x86-64 processors. Prints each notebook's run time, writes it into the notebook's own "Run
time" sentence (``RUN_TIME``), and writes the chapters' times to
``benchmarks/results/notebook_times.json``, which the instructors' guide
(an appendix notebook, re-executed after any chapter) reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kt_helpers import cache, course, reproducibility  # noqa: E402

#: Mime types of live widgets: meaningless on a static page or in a diff.
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

#: The sentence near the top of a notebook that tells the reader its run time.
#: Its numbers are written here, after each execution, never by hand.
RUN_TIME = re.compile(r"(\*\*Run time:\*\* )\d+ s on a \d+-core CPU( when the book was last executed)")


def clean(nb: nbformat.NotebookNode) -> None:
    """Strip what varies between runs without being a result."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
        cell.metadata.pop("scrolled", None)
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            output.get("metadata", {}).pop("execution", None)
            data = output.get("data")
            if data and WIDGET_MIME in data:
                del data[WIDGET_MIME]


def stamp_run_time(nb: nbformat.NotebookNode, seconds: float) -> bool:
    """Write the measured run time into the notebook's run-time sentence, if it has one."""
    # Rounded as notebook_times.json rounds it, so that the two always agree.
    stamp = rf"\g<1>{max(1, round(round(seconds, 1)))} s on a {os.cpu_count()}-core CPU\g<2>"
    for cell in nb.cells:
        if cell.cell_type == "markdown" and RUN_TIME.search(cell.source):
            cell.source = RUN_TIME.sub(stamp, cell.source, count=1)
            return True
    return False


def notebook_client(nb: nbformat.NotebookNode, path: Path, timeout: int) -> NotebookClient:
    """A client that runs ``nb`` in a fresh Python 3 kernel in the notebook's folder."""
    return NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )


def execute(path: Path, timeout: int) -> float:
    """Run one notebook in place; return its run time in seconds.

    The run time is what a reader waits for, as ``benchmarks/book_speed.py``
    measures it: from starting the kernel to the last cell's output (the
    kernel's shut-down afterwards is not counted).
    """
    nb = nbformat.read(path, as_version=4)
    url, branch = course.read_repository(ROOT)
    course.sync_notebook(nb, path.relative_to(ROOT).as_posix(), url, branch)
    client = notebook_client(nb, path, timeout)
    done: list[float] = []  # when each cell finished
    client.on_cell_executed = lambda **_: done.append(time.perf_counter())
    start = time.perf_counter()
    client.execute()
    elapsed = (done[-1] if done else time.perf_counter()) - start
    clean(nb)
    stamp_run_time(nb, elapsed)
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of the book")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--skip-appendices", action="store_true",
                        help="do not re-execute the appendices after the chapters (drafting only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    # The kernels inherit this environment: the pinned CPU kernels are in force
    # from their first computation (kt_helpers.reproducibility).
    os.environ.update(reproducibility.pinned_env())
    # An empty training cache for this run (kt_helpers.cache): every stored number
    # comes from code that ran in this execution; a notebook that trains a model an
    # earlier one trained reads the same bits back instead of training it again.
    saved = os.environ.get(cache.DIR_VARIABLE)
    try:
        with tempfile.TemporaryDirectory(prefix="kt-cache-") as fresh:
            os.environ[cache.DIR_VARIABLE] = fresh
            return _run(args)
    finally:
        if saved is None:
            os.environ.pop(cache.DIR_VARIABLE, None)
        else:
            os.environ[cache.DIR_VARIABLE] = saved


def _run(args: argparse.Namespace) -> int:
    """Execute the requested notebooks (see :func:`main`)."""
    requested = [p.resolve() for p in args.notebooks] or course.notebooks(ROOT)
    # Chapters first; then the appendices, whose pages report the chapters'
    # run times (the instructors' guide reads notebook_times.json), so they are
    # re-executed whenever a chapter is.
    chapters = [p for p in requested if "appendices" not in p.relative_to(ROOT).parts]
    appendices = [p for p in course.notebooks(ROOT) if "appendices" in p.relative_to(ROOT).parts]
    appendices = [p for p in appendices if p in requested or (chapters and not args.skip_appendices)]
    times_path = ROOT / "benchmarks" / "results" / "notebook_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for path in chapters:
        seconds = execute(path, args.timeout)
        key = path.relative_to(ROOT).as_posix()
        times[key] = round(seconds, 1)
        print(f"{seconds:6.1f} s  {key}", flush=True)
    known = {p.relative_to(ROOT).as_posix() for p in course.notebooks(ROOT)}
    times = {k: v for k, v in sorted(times.items()) if k in known and not k.startswith("appendices/")}
    times_path.parent.mkdir(parents=True, exist_ok=True)
    times_path.write_text(json.dumps(times, indent=2) + "\n")
    for path in appendices:
        seconds = execute(path, args.timeout)
        print(f"{seconds:6.1f} s  {path.relative_to(ROOT).as_posix()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
