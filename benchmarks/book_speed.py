"""How fast the book runs: every notebook in a fresh kernel, and the site build.

    python benchmarks/book_speed.py                   # notebooks and build
    python benchmarks/book_speed.py --skip-notebooks  # only the site build
    python benchmarks/book_speed.py --skip-build      # only the notebooks
    python benchmarks/book_speed.py chapters/02_four_steps.ipynb   # some notebooks
    python benchmarks/book_speed.py --compare-kernels --skip-build   # what pinning costs

Targets, on a quiet 2-core CPU (issue 18, CONTRIBUTING.md's speed section):
every notebook runs top to bottom in at most 30 s (so that a machine twice as
slow stays under a minute), all of them together in at most 240 s (the sum
of their times, one after another, as a learner or CI runs them), and
``jupyter-book build`` of the English site from the stored outputs takes at
most 20 s. A missed target is printed as NO
and makes the script exit with 1; it is reported, not hidden.

Each notebook runs with nbclient in its own fresh kernel, inside a temporary
copy of the book (the notebook's folder is the working directory, as in
``scripts/execute_notebooks.py``), so the committed notebooks and anything
they read stay untouched; its time is what a reader waits for, from starting
the kernel to the last cell's output. The kernel's shut-down after that
(Python's clean-up on exit, about 0.7 s once torch and ``torch._dynamo`` are
loaded) is printed apart, with the total it would add. The build writes into a
temporary folder. Prints each figure and whether each target
holds, and writes the figures to ``benchmarks/results/book_speed.json`` (a run
that skips a part keeps that part's earlier figures), with the machine they
were measured on (processor, vector instructions, torch's CPU capability,
threads, library versions: :func:`kt_helpers.reproducibility.machine_info`).
Notebooks run with the book's pinned CPU kernels, as everywhere else;
``--compare-kernels`` also runs each one with the kernels the processor
chooses by itself (``KT_KERNELS=native``), alternating the order, and prints
the ratio measured in the same run. A short fixed reference workload (10
epochs of the book's CNN) is timed before and after the notebooks, and each
notebook's time is also given as a multiple of it, so that two machines can be
compared. Exits with 1 when a target is missed or a
notebook fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from execute_notebooks import notebook_client  # noqa: E402
from kt_helpers import cache, course, reproducibility  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "book_speed.json"
#: The cost of the pinned kernels, as a Markdown table the "How to run" appendix includes.
PINNING_COST = ROOT / "benchmarks" / "results" / "pinning_cost.md"
#: Where each notebook's time goes (``--profile``), included by CONTRIBUTING.md's speed section.
PROFILE = ROOT / "benchmarks" / "results" / "profile.md"
NOTEBOOK_TARGET_S = 30.0  # so that a machine twice as slow stays under a minute
TOTAL_TARGET_S = 240.0
BUILD_TARGET_S = 20.0
#: What the temporary copy of the book leaves out: environments, builds, history.
IGNORE = shutil.ignore_patterns(
    ".venv", "_build", ".git", "student", "__pycache__", ".ipynb_checkpoints",
    ".pytest_cache", ".hypothesis", "*.egg-info", "build",
)


def _mark(ok: bool) -> str:
    return "yes" if ok else "NO"


def copy_book(dest: Path) -> Path:
    """A copy of the book's sources (no .venv, builds or git) under ``dest``."""
    book = dest / "book"
    shutil.copytree(ROOT, book, ignore=IGNORE, symlinks=True)
    return book


#: Per-cell times of the last notebook run by :func:`time_notebook` (``--profile``).
LAST_CELLS: list[dict] = []


def _cell_seconds(cell) -> float | None:
    """A code cell's run time from nbclient's timing metadata (None when it did not run)."""
    timing = cell.get("metadata", {}).get("execution", {})
    began, ended = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (began and ended):
        return None
    parse = datetime.datetime.fromisoformat
    return (parse(ended.replace("Z", "+00:00")) - parse(began.replace("Z", "+00:00"))).total_seconds()


def _cell_label(cell, index: int) -> str:
    """A short name for a code cell: its first line of code that is not a comment."""
    for line in cell.source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return f"cell {index}: {line[:70]}"
    return f"cell {index}"


#: The last notebook's kernel shut-down, in seconds (:func:`time_notebook`).
LAST_TEARDOWN = 0.0
#: Cells that ``--profile`` adds around a notebook: cProfile over all its cells.
_PROFILE_START = "import cProfile as _kt_cprofile\n_kt_profile = _kt_cprofile.Profile()\n_kt_profile.enable()"
_PROFILE_STOP = "_kt_profile.disable()\n_kt_profile.dump_stats({path!r})"
#: kt_helpers' functions that only wrap another one the table names (their time is its time).
_WRAPPERS = {"cache.memoised_fit", "train.run", "train._fit_on", "parallel._call", "train._move"}
#: Functions whose cumulative time the profile table names (besides kt_helpers' own).
_PROFILED_ALSO = {
    "backward": "torch backward",
    "print_figure": "drawing figures",
    "_find_and_load": "imports",
}


def summarise_profile(stats_path: Path, top: int = 4) -> list[dict]:
    """The ``top`` kt_helpers functions by cumulative time, plus imports, backward and drawing."""
    import pstats

    stats = pstats.Stats(str(stats_path)).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    mine, also = {}, {}
    for (filename, _line, name), (_cc, _nc, _tt, cumulative, _callers) in stats.items():
        if "kt_helpers" in filename and not name.startswith("<") and "__editable__" not in filename:
            if f"{Path(filename).stem}.{name}" in _WRAPPERS:
                continue
            key = f"{Path(filename).stem}.{name}"
            mine[key] = max(mine.get(key, 0.0), cumulative)
        elif name in _PROFILED_ALSO:
            label = _PROFILED_ALSO[name]
            also[label] = max(also.get(label, 0.0), cumulative)
    ranked = sorted(mine.items(), key=lambda kv: -kv[1])[:top]
    return ([{"function": k, "seconds": round(v, 2)} for k, v in ranked]
            + [{"function": k, "seconds": round(v, 2)} for k, v in sorted(also.items())])


def time_notebook(path: Path, timeout: int, profile: Path | None = None) -> tuple[float, str | None]:
    """Run one notebook top to bottom in a fresh kernel; return (seconds, error or None).

    ``seconds`` is what a reader waits for: from asking for a fresh kernel to
    the last cell's output. The kernel's shut-down after it (Python's own
    clean-up on exit: about 0.7 s with torch and torch._dynamo, nothing a reader
    waits for, and nothing the outputs depend on) is timed apart and left in
    :data:`LAST_TEARDOWN`. The code cells' own times are left in
    :data:`LAST_CELLS` (the rest of ``seconds`` is the kernel's start and the
    messages between cells).
    """
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    if profile is not None:
        nb.cells.insert(1, nbformat.v4.new_code_cell(_PROFILE_START))
        nb.cells.append(nbformat.v4.new_code_cell(_PROFILE_STOP.format(path=str(profile))))
    client = notebook_client(nb, path, timeout)  # the same kernel set-up as `make execute`
    client.record_timing = True
    done: list[float] = []  # when each cell finished, outputs included
    client.on_cell_executed = lambda **_: done.append(time.perf_counter())
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]
    end = time.perf_counter()
    last = done[-1] if done and error is None else end  # a failed run counts to its end
    elapsed = last - start
    global LAST_TEARDOWN
    LAST_TEARDOWN = end - last
    LAST_CELLS[:] = []
    code = [c for c in nb.cells if c.cell_type == "code" and "_kt_profile" not in c.source]
    for index, cell in enumerate(code, start=1):
        seconds = _cell_seconds(cell)
        if seconds is not None:
            tags = cell.get("metadata", {}).get("tags", [])
            LAST_CELLS.append({"cell": _cell_label(cell, index), "seconds": round(seconds, 2),
                               "tags": list(tags)})
    return elapsed, error


#: A short fixed workload, timed in a fresh process before and after the notebooks: the
#: machine's speed in the same run, so that notebook times can be compared across machines
#: as ratios to it. It trains the book's CNN as the notebooks do (pinned kernels, one thread).
REFERENCE = r"""
import time
t0 = time.perf_counter()
from kt_helpers import data, models, train
splits = data.make_splits(1.0, seed=0)
t1 = time.perf_counter()
train.seed_everything(0)
train.fit(models.DigitCNN(), splits.X_train, splits.y_train, num_epochs=10)
print(time.perf_counter() - t1, t1 - t0)
"""


def reference_seconds() -> dict:
    """Time :data:`REFERENCE` in a fresh process: training seconds and import seconds."""
    out = subprocess.run([sys.executable, "-c", REFERENCE], cwd=ROOT, capture_output=True,
                         text=True, check=True, env=reproducibility.pinned_env()).stdout.split()
    return {"train_s": round(float(out[0]), 2), "import_s": round(float(out[1]), 2)}


def _native_capability() -> str:
    """PyTorch's CPU capability on this processor when nothing is pinned (a fresh process)."""
    env = {k: v for k, v in os.environ.items() if k not in reproducibility.PINNED_ENV}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def _timed(path: Path, timeout: int, native: bool, profile: Path | None = None) -> tuple[float, str | None]:
    """``time_notebook`` with the kernels pinned, or left to the processor (``native``)."""
    saved = os.environ.get(reproducibility.SWITCH)
    try:
        if native:
            os.environ[reproducibility.SWITCH] = "native"
            for key in reproducibility.PINNED_ENV:
                os.environ.pop(key, None)
        else:
            os.environ.pop(reproducibility.SWITCH, None)
            os.environ.update(reproducibility.pinned_env())
        return time_notebook(path, timeout, profile)
    finally:
        os.environ.pop(reproducibility.SWITCH, None)
        if saved is not None:
            os.environ[reproducibility.SWITCH] = saved
        os.environ.update(reproducibility.pinned_env())


def bench_notebooks(selected: list[Path], timeout: int, compare_kernels: bool = False,
                    profile: bool = False, cold: bool = False) -> dict:
    """Time each notebook in a temporary copy of the book; print a table.

    Each row keeps the notebook's code cells' times; with ``profile`` each
    notebook also runs under cProfile and its row names the functions that
    took the time (:func:`summarise_profile`).

    The training cache (:mod:`kt_helpers.cache`) starts empty, as in
    ``make execute`` and the tests: a notebook that trains a model an earlier
    one trained reads it back, as for a reader who reads the book in order.
    With ``cold`` every notebook starts with an empty cache, as when a learner
    opens one notebook alone in Colab.
    """
    notebooks = selected or course.notebooks(ROOT)
    rows = []
    print(f"Notebooks ({len(notebooks)}), each in a fresh kernel, target ≤ {NOTEBOOK_TARGET_S:.0f} s:")
    if compare_kernels:
        print("  (pinned kernels | the processor's own kernels | ratio pinned / own)")
    before = reference_seconds()
    print(f"  reference workload (10 epochs of the CNN, fresh process): {before['train_s']:.2f} s "
          f"training, {before['import_s']:.2f} s imports")
    with tempfile.TemporaryDirectory(prefix="kt-speed-") as tmp:
        book = copy_book(Path(tmp))
        for i, original in enumerate(notebooks):
            rel = original.resolve().relative_to(ROOT).as_posix()
            native_s = None
            if compare_kernels and i % 2:  # alternate which runs first
                native_s, _ = _timed(book / rel, timeout, native=True)
            fresh = Path(tmp) / "cache" / (str(i) if cold else "shared")
            os.environ[cache.DIR_VARIABLE] = str(fresh)
            stats = Path(tmp) / f"profile-{i}.prof" if profile else None
            seconds, error = _timed(book / rel, timeout, native=False, profile=stats)
            cells, teardown = list(LAST_CELLS), LAST_TEARDOWN
            if compare_kernels and native_s is None:
                native_s, _ = _timed(book / rel, timeout, native=True)
            ok = error is None and seconds <= NOTEBOOK_TARGET_S
            row = {"notebook": rel, "seconds": round(seconds, 1), "error": error, "ok": ok,
                   "kernel_start_s": round(seconds - sum(c["seconds"] for c in cells), 1),
                   "teardown_s": round(teardown, 1), "cells": cells}
            if stats is not None and stats.is_file():
                row["profile"] = summarise_profile(stats)
            extra = ""
            if native_s is not None:
                row["native_seconds"] = round(native_s, 1)
                extra = f"  | {native_s:6.1f} s | {seconds / native_s:4.2f}"
            rows.append(row)
            note = f"  FAILED: {error}" if error else ("" if ok else "  over the target")
            print(f"  {seconds:7.1f} s{extra}  {rel}{note}", flush=True)
    after = reference_seconds()
    reference = (before["train_s"] + after["train_s"]) / 2
    print(f"  reference workload again: {after['train_s']:.2f} s (the machine's speed held "
          f"within {abs(after['train_s'] - before['train_s']) / reference:.0%} over the run)")
    for r in rows:
        r["reference_ratio"] = round(r["seconds"] / reference, 1)
    total = sum(r["seconds"] for r in rows)
    slowest = max(rows, key=lambda r: r["seconds"]) if rows else None
    every_ok = all(r["ok"] for r in rows)
    total_ok = total <= TOTAL_TARGET_S
    teardown_total = sum(r["teardown_s"] for r in rows)
    print(f"  {total:7.1f} s  all together (target ≤ {TOTAL_TARGET_S:.0f} s), "
          f"{total / reference:.0f} reference workloads")
    print(f"  {total + teardown_total:7.1f} s  all together with each kernel's shut-down after its last "
          f"output ({teardown_total:.1f} s in all; a reader does not wait for it)")
    result = {
        "measured": datetime.date.today().isoformat(),
        "complete": not selected,
        "kernels": "pinned",
        "cache": "cold" if cold else "in book order",
        "reference_workload": {"before": before, "after": after, "mean_train_s": round(reference, 2)},
        "notebooks": rows,
        "total_seconds": round(total, 1),
        "teardown_seconds": round(teardown_total, 1),
        "targets": {
            "every_notebook_under_s": NOTEBOOK_TARGET_S,
            "every_notebook_ok": every_ok,
            "total_under_s": TOTAL_TARGET_S,
            "total_ok": total_ok,
        },
    }
    if compare_kernels and rows:
        native_total = sum(r["native_seconds"] for r in rows)
        result["native_total_seconds"] = round(native_total, 1)
        result["pinned_over_native"] = round(total / native_total, 3)
        print(f"  {native_total:7.1f} s  all together with the processor's own kernels: "
              f"pinning costs x{total / native_total:.2f} in this run")
    print(f"  every notebook in at most {NOTEBOOK_TARGET_S:.0f} s, without error: {_mark(every_ok)}"
          + (f" (slowest: {slowest['notebook']}, {slowest['seconds']} s)" if slowest else ""))
    print(f"  all together in at most {TOTAL_TARGET_S:.0f} s: {_mark(total_ok)}")
    return result


def write_profile(result: dict, machine: dict) -> None:
    """Write where each notebook's time goes as the Markdown table :data:`PROFILE` holds."""
    lines = [
        "| notebook | total | kernel start | setup cell | slowest cells | functions (cumulative) | shut-down |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for row in result["notebooks"]:
        cells = row.get("cells", [])
        setup = sum(c["seconds"] for c in cells if "colab-setup" in c["tags"])
        slowest = sorted((c for c in cells if "colab-setup" not in c["tags"]),
                         key=lambda c: -c["seconds"])[:3]
        shown = "<br>".join(f"{c['seconds']:.1f} s `{c['cell'].replace('|', '/')}`" for c in slowest)
        functions = "<br>".join(f"{f['function']} {f['seconds']:.1f} s" for f in row.get("profile", []))
        lines.append(f"| `{row['notebook']}` | {row['seconds']:.1f} s | {row['kernel_start_s']:.1f} s "
                     f"| {setup:.1f} s | {shown} | {functions} | {row.get('teardown_s', 0.0):.1f} s |")
    lines += [
        "",
        f"Measured on {result['measured']} by `python benchmarks/book_speed.py --profile` on "
        f"{machine['cpu_count']} cores of this processor: {machine['processor']} (torch "
        f"{machine['torch']}, pinned kernels), the notebooks in the book's order with "
        f"{'an empty training cache for each notebook' if result.get('cache') == 'cold' else 'one training cache, empty at the start'}. "
        "*Total* runs from starting the kernel to the last cell's output; *kernel start* is the "
        "part of it outside the code cells; *shut-down* is the kernel's exit after the last output, "
        "not counted in the total; "
        "the setup cell imports kt_helpers, torch and matplotlib. Function times are cumulative "
        "and overlap (a training call includes its backward passes); cProfile slows the "
        "notebooks down (by about a sixth), so the totals here are above the plain run's "
        "(`book_speed.json`).",
    ]
    PROFILE.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_pinning_cost(result: dict, machine: dict) -> None:
    """Write the pinned-vs-own-kernels figures of ``result`` as the appendix's Markdown table."""
    rows = result["notebooks"]
    ratios = [r["seconds"] / r["native_seconds"] for r in rows if r.get("native_seconds")]
    lines = [
        "| | pinned kernels | the processor's own kernels | ratio |",
        "|---|---|---|---|",
        f"| {'all ' if result['complete'] else ''}{len(rows)} notebooks, one after another "
        f"| {result['total_seconds']:.0f} s "
        f"| {result['native_total_seconds']:.0f} s | {result['pinned_over_native']:.2f} |",
        f"| per notebook, range of the ratio | | | {min(ratios):.2f} to {max(ratios):.2f} |",
        "",
        f"Measured on {result['measured']} on {machine['cpu_count']} cores of this processor: "
        f"{machine['processor']} (its own kernels: {machine.get('native_cpu_capability', '?')}; "
        f"torch {machine['torch']}). Notebooks: "
        + ", ".join(f"`{r['notebook']}`" for r in rows) + ".",
    ]
    PINNING_COST.write_text("\n".join(lines) + "\n", encoding="utf-8")


def jupyter_book() -> list[str]:
    """The jupyter-book command of this environment."""
    script = Path(sys.executable).with_name("jupyter-book")
    if script.is_file():
        return [str(script)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise SystemExit("jupyter-book is not installed in this environment (see requirements.txt).")


def bench_build() -> dict:
    """Time ``jupyter-book build -W -n`` from the stored outputs into a temporary folder."""
    print(f"Site build from the stored outputs (jupyter-book build -W -n), target ≤ {BUILD_TARGET_S:.0f} s:")
    with tempfile.TemporaryDirectory(prefix="kt-build-") as tmp:
        command = jupyter_book() + ["build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", tmp]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        pages = len(list((Path(tmp) / "_build" / "html").rglob("*.html")))
    built = result.returncode == 0
    fast = seconds <= BUILD_TARGET_S
    ok = built and fast
    status = "" if built else f"  FAILED (exit {result.returncode})"
    print(f"  {seconds:7.1f} s  {pages} HTML pages{status}")
    if not built:
        log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
        problems = [line for line in log.splitlines() if re.search(r"WARNING|ERROR|Error", line)]
        print("\n".join("    " + line[:300] for line in (problems or log.strip().splitlines())[-15:]))
    print(f"  build in at most {BUILD_TARGET_S:.0f} s: {_mark(fast)}; build succeeded (-W -n): {_mark(built)}")
    return {
        "measured": datetime.date.today().isoformat(),
        "seconds": round(seconds, 1),
        "succeeded": built,
        "html_pages": pages,
        "target_under_s": BUILD_TARGET_S,
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of the book")
    parser.add_argument("--skip-notebooks", action="store_true", help="do not run the notebooks")
    parser.add_argument("--skip-build", action="store_true", help="do not build the site")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    parser.add_argument(
        "--compare-kernels", action="store_true",
        help="also time each notebook with the processor's own kernels (what pinning costs)",
    )
    parser.add_argument(
        "--cold", action="store_true",
        help="give every notebook an empty training cache (as when one is opened alone), "
             "instead of one cache filled in the book's order",
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="run each notebook under cProfile and write where its time goes to "
             "benchmarks/results/profile.md",
    )
    parser.add_argument(
        "--threads", type=int, default=None,
        help="limit each kernel to this many CPU threads (OMP/MKL), e.g. 2 to mimic a 2-core laptop",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    native = _native_capability()
    os.environ.update(reproducibility.pinned_env())
    if args.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    results["machine"] = {
        **reproducibility.machine_info(),
        "native_cpu_capability": native,
        "platform": platform.platform(),
        "threads_limit": args.threads,
    }
    ok = True
    if not args.skip_notebooks:
        selected = [p.resolve() for p in args.notebooks]
        results["notebooks"] = bench_notebooks(selected, args.timeout, args.compare_kernels,
                                               args.profile, args.cold)
        if args.profile:
            write_profile(results["notebooks"], results["machine"])
        if args.compare_kernels:
            write_pinning_cost(results["notebooks"], results["machine"])
        ok &= results["notebooks"]["targets"]["every_notebook_ok"]
        ok &= results["notebooks"]["targets"]["total_ok"] or bool(selected)
        print()
    if not args.skip_build:
        results["build"] = bench_build()
        ok &= results["build"]["ok"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    shown = RESULTS.relative_to(ROOT) if RESULTS.is_relative_to(ROOT) else RESULTS
    print(f"\nAll targets hold: {_mark(ok)}. Figures written to {shown}.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
