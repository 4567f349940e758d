"""The course kit: Colab badges and setup cells in step with _config.yml,
student notebooks without solutions, and the Colab install path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

from kt_helpers import course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = course.notebooks(ROOT)
IDS = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]
EXERCISE = re.compile(r"^[ \t]*(?:`{3,}|:{3,})\{exercise(?:-start)?\}", flags=re.M)
SOLUTION = re.compile(r"^[ \t]*(?:`{3,}|:{3,})\{solution(?:-start)?\}", flags=re.M)


def _cells_with_tag(nb, tag):
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_badge_and_setup_cell_match_the_configured_repository(path):
    url, branch = course.read_repository(ROOT)
    rel = path.relative_to(ROOT).as_posix()
    nb = nbformat.read(path, as_version=4)
    badges = _cells_with_tag(nb, course.BADGE_TAG)
    setups = _cells_with_tag(nb, course.SETUP_TAG)
    assert len(badges) == 1 and len(setups) == 1, f"{rel}: expected one badge and one setup cell"
    assert badges[0].source == course.badge_markdown(url, branch, rel), (
        f"{rel}: the Colab badge disagrees with _config.yml; run `python -m kt_helpers.course sync`"
    )
    assert setups[0].source == course.setup_source(url, branch), (
        f"{rel}: the setup cell disagrees with _config.yml; run `python -m kt_helpers.course sync`"
    )
    # The badge comes right after the title cell, the setup cell right after the badge.
    assert nb.cells[0].cell_type == "markdown" and re.search(r"^# ", nb.cells[0].source, flags=re.M)
    assert nb.cells[1] is badges[0] and nb.cells[2] is setups[0]


def test_the_repository_url_is_written_in_one_place_only():
    url, _ = course.read_repository(ROOT)
    owner_name = re.sub(r"^https://github\.com/", "", url)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["html"]["use_repository_button"] is True
    # Outside _config.yml, the URL may appear only in generated cells and in
    # documentation about the package itself.
    allowed = {"_config.yml", "README.md", "CITATION.cff", "pyproject.toml", "CHANGELOG.md"}
    offenders = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if not path.is_file() or rel.split("/")[0] in {".git", ".venv", "_build", "student", "tests"}:
            continue
        if path.suffix not in {".py", ".md", ".yml", ".yaml", ".ipynb", ".toml", ".cfg", ".txt"}:
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        if owner_name not in text or rel in allowed:
            continue
        if path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            generated = {id(c) for tag in (course.BADGE_TAG, course.SETUP_TAG) for c in _cells_with_tag(nb, tag)}
            if any(owner_name in c.source for c in nb.cells if id(c) not in generated):
                offenders.append(rel)
        else:
            offenders.append(rel)
    assert not offenders, f"the repository URL is hard-coded in {offenders}; read it from _config.yml"


def test_the_copies_of_the_repository_url_agree_with_the_config():
    """README, pyproject and CITATION cannot read _config.yml; set-repo rewrites them,
    and they must name the same repository."""
    url, _ = course.read_repository(ROOT)
    for name in course.URL_COPIES:
        text = (ROOT / name).read_text(encoding="utf-8")
        found = set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", text))
        found = {f.removesuffix(".git") for f in found}
        assert found == {url}, f"{name} names {sorted(found)}, _config.yml says {url}"


def _book_config_extension():
    import importlib.util

    spec = importlib.util.spec_from_file_location("book_config", ROOT / "_ext" / "book_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _App:
    def __init__(self, theme_options):
        self.config = type("Config", (), {"html_theme_options": theme_options})()


def test_pages_show_the_configured_repository_url_through_the_extension():
    ext = _book_config_extension()
    source = ["```console\n$ git clone {{ repository_url }} book\n```\nthen {{ repository_url }}\n"]
    ext._replace(_App({"repository_url": "https://github.com/someone/fork"}), "appendices/how_to_run", source)
    assert source[0] == ("```console\n$ git clone https://github.com/someone/fork book\n```\n"
                         "then https://github.com/someone/fork\n")
    with pytest.raises(ValueError, match=r"how_to_run uses \{\{ repository_url \}\}.*no repository url\. Got None"):
        ext._replace(_App({}), "how_to_run", ["{{ repository_url }}"])
    # The extension is loaded by the build, and the clone command uses it.
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "book_config" in config["sphinx"]["config"]["extensions"]
    assert config["sphinx"]["local_extensions"] == {"book_config": "_ext"}
    assert "git clone {{ repository_url }}" in (ROOT / "appendices" / "how_to_run.md").read_text()


def test_no_page_shows_a_placeholder_repository():
    pages = [*ROOT.glob("*.md"), *(ROOT / "chapters").rglob("*.md"), *(ROOT / "appendices").rglob("*.md"),
             *NOTEBOOKS]
    offenders = [p.relative_to(ROOT).as_posix() for p in pages
                 if re.search(r"OWNER/REPOSITORY|github\.com/OWNER|YOUR[-_ ]?(NAME|USER)", p.read_text())]
    assert not offenders, f"placeholder repository URLs in {offenders}: write {{{{ repository_url }}}}"


@pytest.mark.skipif(not (ROOT / "_build" / "html" / "appendices" / "how_to_run.html").is_file(),
                    reason="the site has not been built (make build)")
def test_the_built_how_to_run_page_clones_the_configured_repository():
    url, _ = course.read_repository(ROOT)
    html = (ROOT / "_build" / "html" / "appendices" / "how_to_run.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert f"git clone {url} " in text
    assert "{{ repository_url }}" not in text


def test_set_repo_rewrites_the_config_and_every_notebook(tmp_path):
    import shutil

    book = tmp_path / "book"
    book.mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, book / name)
    for path in NOTEBOOKS[:2]:
        target = book / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    subprocess.run(
        [sys.executable, "-m", "kt_helpers.course", "set-repo", "https://github.com/someone/fork", "--branch", "spring"],
        cwd=book, check=True, capture_output=True,
    )
    assert course.read_repository(book) == ("https://github.com/someone/fork", "spring")
    for path in course.notebooks(book):
        nb = nbformat.read(path, as_version=4)
        badge = _cells_with_tag(nb, course.BADGE_TAG)[0].source
        assert "someone/fork/blob/spring/colab/" + path.relative_to(book).as_posix() in badge
        assert "git+https://github.com/someone/fork@spring" in _cells_with_tag(nb, course.SETUP_TAG)[0].source


def test_student_versions_keep_exercises_and_drop_solutions(tmp_path):
    """write_student_notebooks writes the student edition (kt_helpers.editions):
    every exercise kept as a numbered heading, every solution removed. The
    rendering itself is checked in tests/test_editions.py."""
    report = course.write_student_notebooks(tmp_path, ROOT, prefix="student")
    assert set(report) == set(IDS)
    for rel, counts in report.items():
        original = nbformat.read(ROOT / rel, as_version=4)
        student = nbformat.read(tmp_path / rel, as_version=4)
        text = "\n".join(c.source for c in original.cells if c.cell_type == "markdown")
        n_exercises = len(EXERCISE.findall(text))
        # a gated solution counts once, whatever its cells; a code cell tagged
        # "solution" outside one counts once
        gated = {k for start, end, _ in course.gated_solutions(original.cells) for k in range(start, end + 1)}
        n_solutions = len(SOLUTION.findall(text)) + sum(
            1 for k, c in enumerate(original.cells) if course.SOLUTION_TAG in c.metadata.get("tags", []) and k not in gated
        )
        assert counts == {"exercises": n_exercises, "solutions": n_solutions}, rel
        student_text = "\n".join(c.source for c in student.cells)
        assert len(re.findall(r"^#+ Exercise \d", student_text, flags=re.M)) == n_exercises, rel
        assert not SOLUTION.findall(student_text), f"{rel}: a solution is left in the student version"
        assert not re.search(r"<details>\s*<summary>Solution", student_text), rel
        assert not _cells_with_tag(student, course.SOLUTION_TAG)
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
        # Every code cell but the solutions is kept, unchanged, plus an empty answer
        # cell per exercise: so the student notebook runs wherever the original does
        # (nbval runs the original).
        kept_code = [c.source for c in original.cells
                     if c.cell_type == "code" and course.SOLUTION_TAG not in c.metadata.get("tags", [])]
        assert [c.source for c in student.cells
                if c.cell_type == "code" and "answer" not in c.metadata.get("tags", [])] == kept_code, rel
        assert len(_cells_with_tag(student, "answer")) == n_exercises, rel


def _assigned_and_loaded(source: str) -> tuple[set[str], set[str]]:
    """Names a cell's code binds at top level, and names it reads (IPython magics dropped)."""
    import ast

    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return bound, read


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_cell_a_student_keeps_reads_a_name_only_a_solution_defines(path):
    """Statically, for every notebook: a student copy drops the solution cells, so no
    kept cell may read a name that only solution cells bind (a fast stand-in for
    running every student copy, which the next test does for two notebooks)."""
    problem = _reads_a_solution_name(nbformat.read(path, as_version=4))
    assert problem is None, f"{path.name}: {problem}"


def _reads_a_solution_name(nb) -> str | None:
    """The first kept cell that reads a name only solution cells bind, described; else None."""
    kept_bound: set[str] = set()
    only_solutions: set[str] = set()
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        bound, read = _assigned_and_loaded(cell.source)
        if course.SOLUTION_TAG in cell.metadata.get("tags", []):
            only_solutions |= bound - kept_bound
            continue
        missing = (read & only_solutions) - kept_bound - bound
        if missing:
            return (f"a cell the student copy keeps reads {sorted(missing)}, which only a "
                    f"solution cell defines:\n{cell.source[:300]}")
        kept_bound |= bound
        only_solutions -= bound
    return None


def test_the_static_check_finds_a_kept_cell_that_needs_a_solution():
    cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("answer = x + 1"),
             nbformat.v4.new_code_cell("print(answer)")]
    cells[1].metadata["tags"] = [course.SOLUTION_TAG]
    nb = nbformat.v4.new_notebook(cells=cells)
    assert "answer" in _reads_a_solution_name(nb)
    cells[2].source = "answer = 3\nprint(answer)"  # defines it again: fine
    assert _reads_a_solution_name(nb) is None


def test_a_student_notebook_without_its_solution_cells_still_runs(tmp_path):
    """Execute the student copies of the two quickest notebooks that have solution code
    cells (the static test above covers every notebook; nbval runs the originals)."""
    import json

    from nbclient import NotebookClient

    from kt_helpers import editions

    times = json.loads((ROOT / "benchmarks" / "results" / "notebook_times.json").read_text())
    with_solutions = [p for p in NOTEBOOKS
                      if _cells_with_tag(nbformat.read(p, as_version=4), course.SOLUTION_TAG)]
    assert with_solutions, "no notebook has solution code cells"
    chosen = sorted(with_solutions, key=lambda p: times.get(p.relative_to(ROOT).as_posix(), 1e9))[:2]
    book = editions.Book(ROOT)
    for path in chosen:
        nb, counts = editions.edition_notebook(book, path.relative_to(ROOT).as_posix(), "student")
        assert counts["solutions"] > 0, f"{path.name}: no solution removed, so this runs nothing new"
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: the student version fails: {errors[0]}"
        assert any(c.outputs for c in nb.cells if c.cell_type == "code"), f"{path.name}: nothing ran"


def test_strip_solutions_handles_colon_fences_and_longer_backticks():
    text = "A\n::::{solution} ex-a\n:class: dropdown\nhidden\n::::\nB\n````{solution} ex-b\n```python\nx=1\n```\n````\nC"
    stripped, count = course.strip_solutions(text)
    assert count == 2
    assert stripped == "A\nB\nC"


def test_no_solutions_config_hides_solutions(tmp_path):
    out = course.no_solutions_config(tmp_path / "config.yml", ROOT)
    config = yaml.safe_load(out.read_text())
    assert config["sphinx"]["config"]["hide_solutions"] is True
    assert all(Path(b).is_file() for b in config["bibtex_bibfiles"])
    # No Chinese edition is built next to the students' site, so its pages link to none.
    assert not config["sphinx"]["config"]["book_language_switch"]


def test_the_no_solutions_config_finds_the_books_own_extension(tmp_path):
    """Jupyter Book puts local_extensions' folders on sys.path relative to the config
    file's folder (here _build/, not the book): the copy must still import them."""
    out = course.no_solutions_config(tmp_path / "elsewhere" / "config.yml", ROOT)
    code = (
        "import importlib, sys\n"
        "from pathlib import Path\n"
        "from jupyter_book.config import get_final_config\n"
        f"config, _ = get_final_config(user_yaml=Path({str(out)!r}), cli_config={{'latex_individualpages': False}}, sourcedir=Path({str(ROOT)!r}))\n"
        "local = [e for e in config['extensions'] if e == 'book_config']\n"
        "assert local, config['extensions']\n"
        "importlib.import_module('book_config')\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_package_declares_only_lower_bounds():
    """Installing kt_helpers must never replace the torch (or numpy...) Colab already has."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+>=[0-9.]+", dep), f"{dep!r} is not a loose lower bound"


def _local_torch_available() -> bool:
    return Path("/opt/wheels").is_dir() and any(Path("/opt/wheels").glob("torch-2.13.0*.whl"))


@pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("KT_TEST_COLAB_INSTALL") or _local_torch_available()),
    reason="needs a torch wheel to install quickly (set KT_TEST_COLAB_INSTALL=1 to run it anyway)",
)
def test_setup_cell_installs_kt_helpers_and_keeps_the_existing_torch(tmp_path):
    """The Colab path, without Colab: a fresh environment that already holds a torch
    runs the setup cell (pointed at this checkout) and keeps that torch."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("the setup cell installs from git: this checkout has no commit")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    version = lambda: subprocess.run(  # noqa: E731
        [python, "-c", "import torch; print(torch.__version__)"], check=True, capture_output=True, text=True
    ).stdout.strip()
    before = version()

    branch = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD"],
                            check=True, capture_output=True, text=True).stdout.strip()
    setup = course.setup_source("https://github.com/kt-book/knowledge-transfer-book", "main")
    # A file URL needs a host ("localhost") to be a valid PEP 508 direct reference:
    # pip rejects "git+file:///path" with "Invalid requirement".
    local = f"git+file://localhost{ROOT.resolve().as_posix()}@{branch}"
    setup = setup.replace("git+https://github.com/kt-book/knowledge-transfer-book@main", local)
    assert local in setup, "the setup cell no longer installs from the configured repository URL"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    subprocess.run([python, "-c", setup], check=True, cwd=outside)
    assert version() == before, "installing kt_helpers replaced the torch that was already there"
    where = subprocess.run([python, "-c", "import kt_helpers; print(kt_helpers.__file__)"],
                           check=True, capture_output=True, text=True, cwd=outside).stdout
    assert str(venv) in where
    # Chapter 4 reads the case study's results from the installed package: there is no repository here.
    read = subprocess.run([python, "-c", "from kt_helpers import case_study as cs; print(cs.load_results()['seeds'])"],
                          check=True, capture_output=True, text=True, cwd=outside).stdout
    expected = yaml.safe_load((ROOT / "benchmarks" / "results" / "case_study.json").read_text())["seeds"]
    assert read.strip() == str(expected), "the installed package does not ship the case study's results"
    # Running the setup cell again does nothing: kt_helpers is found.
    again = subprocess.run([python, "-c", setup + "\nprint('ok')"], check=True, capture_output=True, text=True, cwd=outside)
    assert again.stdout.strip() == "ok"
