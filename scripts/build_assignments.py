"""Build the graded assignments with otter-grader, and grade a notebook locally.

Each master notebook ``assignments/src/<name>.ipynb`` is in otter-assign's format
(``# ASSIGNMENT CONFIG``, ``# BEGIN QUESTION``, ``# BEGIN SOLUTION``, ``# BEGIN TESTS``).
``otter assign`` turns it into::

    assignments/dist/<name>/autograder/<name>.ipynb   the solution notebook (instructors only)
    assignments/dist/<name>/autograder/autograder.zip  the autograder: Gradescope, otter run/grade
    assignments/dist/<name>/student/<name>.ipynb      the student notebook (publish this)

``assignments/dist`` is not committed: it holds hidden tests and solutions, and
is rebuilt by ``make assignments``. The student notebooks carry their public
tests in their metadata, so each is a single file to publish.

Before building, the setup cell of each master (tagged ``kt-setup``) is
rewritten from the repository URL in ``_config.yml``, as the chapters' setup
cells are, so that a fork's assignments install its own ``kt_helpers``.

Usage::

    python scripts/build_assignments.py                 # build every assignment
    python scripts/build_assignments.py ch02_four_steps # build one
    python scripts/build_assignments.py --sync          # rewrite the masters' setup cells
    python scripts/build_assignments.py --grade         # build, then grade each assignment's
                                                        # solution and blank student notebook
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kt_helpers import course  # noqa: E402

SRC = ROOT / "assignments" / "src"
DIST = ROOT / "assignments" / "dist"
SETUP_TAG = course.SETUP_TAG  # "colab-setup": a generated cell, like the chapters' setup cells
OTTER_VERSION = "7.0.0"


def setup_cell_source(url: str, branch: str) -> str:
    """The assignments' setup cell: the chapters' setup cell, plus the grader.

    It installs ``kt_helpers`` and otter-grader where they are missing (Colab),
    and on Colab writes the public tests stored in the notebook's metadata to
    ``tests/``: there the notebook is not a file the grader could read them from.
    """
    chapter = course.setup_source(url, branch)
    head, tail = chapter.split("\n# Pin the CPU kernels", 1)
    head = head.replace(
        "# Setup: on Colab (or anywhere kt_helpers is missing), install the book's helper\n"
        "# package from its repository. Packages already installed, such as torch, are kept.\n",
        "# Setup: on Colab (or anywhere they are missing), install the book's helper package\n"
        "# and the grader, otter-grader. Packages already installed, such as torch, are kept.\n",
    )
    otter = (
        'if importlib.util.find_spec("otter") is None:\n'
        "    subprocess.run(\n"
        f'        [sys.executable, "-m", "pip", "install", "--quiet", "otter-grader=={OTTER_VERSION}"],\n'
        "        check=True,\n"
        "    )\n"
    )
    colab = (
        "\n# On Colab the notebook is not a file the grader can read its tests from:\n"
        "# write the public tests stored in the notebook to tests/ instead.\n"
        'if "google.colab" in sys.modules:\n'
        "    import os, pprint\n"
        "    from google.colab import _message\n"
        "\n"
        '    _nb = _message.blocking_request("get_ipynb", timeout_sec=60)["ipynb"]\n'
        '    os.makedirs("tests", exist_ok=True)\n'
        '    for _q, _test in _nb["metadata"].get("otter", {}).get("tests", {}).items():\n'
        '        with open(f"tests/{_q}.py", "w") as _f:\n'
        '            _f.write("OK_FORMAT = True\\n\\ntest = " + pprint.pformat(_test))\n'
    )
    return head.rstrip("\n") + "\n" + otter + colab + "\n# Pin the CPU kernels" + tail


def requirements(url: str, branch: str) -> str:
    """The autograder's requirements.txt: the helper package from the repository.

    An archive URL rather than ``git+``, so that the grading image needs no git.
    Otter adds its own defaults (otter-grader and friends); torch and numpy come
    with ``kt_helpers``'s dependencies.
    """
    return f"kt-helpers @ {url.rstrip('/')}/archive/refs/heads/{branch}.zip\n"


def masters(src: Path = SRC) -> list[Path]:
    """Every master notebook, sorted by name."""
    return sorted(p for p in src.glob("*.ipynb") if not p.name.startswith("."))


def sync_master(path: Path, url: str, branch: str) -> bool:
    """Rewrite a master's setup cell from the repository URL; return whether it changed."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(
            f"The master notebook {path.name} must have exactly one code cell tagged "
            f"{SETUP_TAG!r}. Got {len(cells)} instead."
        )
    new = setup_cell_source(url, branch)
    if cells[0].source == new:
        return False
    cells[0].source = new
    nbformat.write(nb, path)
    return True


@dataclass(frozen=True)
class Built:
    """Where ``otter assign`` wrote one assignment."""

    name: str
    solution: Path  # the autograder's copy of the master, with solutions
    student: Path  # the blank student notebook
    autograder_zip: Path


def _otter(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otter", *args], cwd=cwd, capture_output=True, text=True, env=env
    )


def build(master: Path, out: Path, url: str, branch: str) -> Built:
    """Run ``otter assign`` on one master into ``out/<name>/{autograder,student}``."""
    name = master.stem
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(master, work / master.name)
        sync_master(work / master.name, url, branch)
        (work / "requirements.txt").write_text(requirements(url, branch))
        done = _otter("assign", "--no-pdfs", master.name, str(dest.resolve()), cwd=work)
    if done.returncode != 0:
        raise RuntimeError(f"otter assign failed on {master.name}:\n{done.stdout}\n{done.stderr}")
    zips = sorted((dest / "autograder").glob("*.zip"))
    if len(zips) != 1:
        raise RuntimeError(f"otter assign wrote {len(zips)} autograder zips for {name}, expected 1")
    stable = dest / "autograder" / "autograder.zip"
    zips[0].rename(stable)
    # A loose copy of what the zip's environment.yml already lists; the repository URL
    # is written in _config.yml and generated cells only (tests/test_course_kit.py).
    (dest / "autograder" / "requirements.txt").unlink(missing_ok=True)
    return Built(name, dest / "autograder" / master.name, dest / "student" / master.name, stable)


def build_all(names: list[str] | None = None, *, src: Path = SRC, out: Path = DIST) -> list[Built]:
    """Build the named assignments (every one when ``names`` is empty)."""
    url, branch = course.read_repository(ROOT)
    found = {p.stem: p for p in masters(src)}
    unknown = sorted(set(names or []) - set(found))
    if unknown:
        raise ValueError(f"Unknown assignment(s) {unknown}. Known: {sorted(found)}.")
    chosen = [found[n] for n in (names or sorted(found))]
    out.mkdir(parents=True, exist_ok=True)
    return [build(p, out, url, branch) for p in chosen]


@dataclass(frozen=True)
class Grade:
    """The autograded score of one notebook (questions graded by hand not included)."""

    score: float
    possible: float
    by_question: dict[str, tuple[float, float]]


def grade(autograder_zip: Path, notebook: Path, out: Path) -> Grade:
    """Grade a notebook with ``otter run`` (no Docker: it runs in this Python)."""
    out.mkdir(parents=True, exist_ok=True)
    # The setup cell turns kt_helpers' training cache on: grade from an empty one, so that
    # every model the notebook trains is trained in this run.
    env = {**os.environ, "KT_CACHE_DIR": str((out / "kt_cache").resolve())}
    done = _otter(
        "run", "--no-logo", "-a", str(autograder_zip.resolve()), "-o", str(out.resolve()),
        str(notebook.resolve()), cwd=out, env=env,
    )
    results = out / "results.json"
    if done.returncode != 0 or not results.exists():
        raise RuntimeError(f"otter run failed on {notebook}:\n{done.stdout}\n{done.stderr}")
    tests = json.loads(results.read_text())["tests"]
    by_question = {
        t["name"]: (float(t.get("score") or 0.0), float(t.get("max_score") or 0.0))
        for t in tests
        if t.get("name") != "Public Tests"
    }
    score = sum(s for s, _ in by_question.values())
    possible = sum(p for _, p in by_question.values())
    return Grade(score, possible, by_question)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="assignments to build (default: all)")
    parser.add_argument("--out", type=Path, default=DIST, help="output folder")
    parser.add_argument("--sync", action="store_true", help="rewrite the masters' setup cells and stop")
    parser.add_argument("--grade", action="store_true",
                        help="grade each solution (must score full marks) and blank student notebook")
    args = parser.parse_args(argv)
    if args.sync:
        url, branch = course.read_repository(ROOT)
        changed = [p.name for p in masters() if sync_master(p, url, branch)]
        print(f"setup cells rewritten: {changed or 'none'}")
        return 0
    failed = False
    for built in build_all(args.names, out=args.out):
        print(f"{built.name}: {built.student}")
        if args.grade:
            with tempfile.TemporaryDirectory() as tmp:
                full = grade(built.autograder_zip, built.solution, Path(tmp) / "solution")
                blank = grade(built.autograder_zip, built.student, Path(tmp) / "student")
            ok = full.score == full.possible > blank.score
            failed |= not ok
            print(f"  solution {full.score:g}/{full.possible:g}, blank {blank.score:g}/{blank.possible:g}"
                  f"{'' if ok else '  <-- FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
