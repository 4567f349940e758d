"""Course kit: Colab badges and setup cells, a fork's repository URL, student notebooks.

The book's repository URL is written in exactly one place, ``_config.yml``
(``repository.url`` and ``repository.branch``). Everything else that names the
repository — each notebook's "Open in Colab" badge and its setup cell, which
installs ``kt_helpers`` on Colab — is generated from it by this module::

    python -m kt_helpers.course set-repo https://github.com/me/my-fork [--branch main]
    python -m kt_helpers.course sync            # regenerate badges and setup cells
    python -m kt_helpers.course colab colab     # the Colab edition (committed under colab/)
    python -m kt_helpers.course student OUTDIR  # student copies, without solutions

The book has three editions from one source (:mod:`kt_helpers.editions`):
the website; the Colab edition, every notebook with its MyST markup rendered
to plain Jupyter Markdown and its solutions collapsed, committed under
``colab/`` so that every "Open in Colab" badge and launch button opens it;
and student copies, the same rendering without solutions (the sphinx-exercise
``{solution}`` blocks and the code cells tagged ``solution``) and with an
empty answer cell after each exercise. Introduced in the appendix "For
instructors".
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "BADGE_TAG",
    "SETUP_TAG",
    "URL_COPIES",
    "badge_markdown",
    "colab_url",
    "find_book_root",
    "gated_solutions",
    "notebooks",
    "read_repository",
    "set_repository",
    "setup_source",
    "solution_cells",
    "strip_solutions",
    "student_notebook",
    "sync_notebook",
    "write_student_notebooks",
]

#: Cell tag of code cells that only a solution needs (student notebooks drop them).
SOLUTION_TAG = "solution"
#: Cell tag of each notebook's generated "Open in Colab" badge.
BADGE_TAG = "colab-badge"
#: Cell tag of each notebook's generated setup cell (installs kt_helpers when missing).
SETUP_TAG = "colab-setup"
_REPO_RE = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def find_book_root(start: Path | None = None) -> Path:
    """The folder holding ``_config.yml``, searched upwards from ``start`` (default: here)."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "_config.yml").is_file() and (folder / "_toc.yml").is_file():
            return folder
    raise ValueError(
        f"No book found: expected a folder holding _config.yml and _toc.yml at or above {start}."
    )


def _parse_repo(url: str) -> tuple[str, str]:
    match = _REPO_RE.match(url.strip())
    if not match:
        raise ValueError(
            "The 'url' of the repository must look like https://github.com/OWNER/NAME. "
            f"Got {url!r} instead."
        )
    return match.group(1), match.group(2)


def read_repository(root: Path | None = None) -> tuple[str, str]:
    """``(url, branch)`` of the book's repository, read from ``_config.yml``."""
    import yaml

    root = root or find_book_root()
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    repo = config.get("repository") or {}
    url, branch = repo.get("url"), repo.get("branch", "main")
    if not url:
        raise ValueError("_config.yml must set repository.url. Got nothing.")
    _parse_repo(url)
    return url.rstrip("/"), branch


def colab_url(url: str, branch: str, notebook_path: str) -> str:
    """Colab's address of a notebook of the repository, e.g. ``chapters/01_x.ipynb``."""
    owner, name = _parse_repo(url)
    return f"https://colab.research.google.com/github/{owner}/{name}/blob/{branch}/{notebook_path}"


def badge_markdown(url: str, branch: str, notebook_path: str, edition: str | None = "colab") -> str:
    """The "Open in Colab" badge of a notebook, as Markdown (shown in Jupyter and Colab;
    the website uses its own launch button, which opens the same copy).

    Args:
        url, branch: the book's repository.
        notebook_path: the notebook's path in the book, e.g. ``chapters/01_x.ipynb``.
        edition: the edition the badge opens: ``"colab"`` (default), whose copy of
            the notebook is ``colab/chapters/01_x.ipynb``, or None for
            ``notebook_path`` itself.
    """
    if edition is not None:
        from kt_helpers import editions

        notebook_path = editions.edition_path(edition, notebook_path)
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(url, branch, notebook_path)})"
    )


def setup_source(url: str, branch: str) -> str:
    """The setup cell: install ``kt_helpers`` when it is missing, then pin the CPU kernels.

    ``pip`` is asked for the helper package alone; its dependencies carry
    loose lower bounds, so the torch, numpy and matplotlib that Colab already
    has are kept. Outside Colab, where ``kt_helpers`` is installed, it does nothing.
    """
    _parse_repo(url)
    return (
        "# Setup: on Colab (or anywhere kt_helpers is missing), install the book's helper\n"
        "# package from its repository. Packages already installed, such as torch, are kept.\n"
        "import importlib.util, subprocess, sys\n"
        "\n"
        'if importlib.util.find_spec("kt_helpers") is None:\n'
        "    subprocess.run(\n"
        f'        [sys.executable, "-m", "pip", "install", "--quiet", "kt-helpers @ git+{url}@{branch}"],\n'
        "        check=True,\n"
        "    )\n"
        "\n"
        "# Pin the CPU kernels before the first computation, so that this notebook prints\n"
        "# the book's digits on any x86-64 processor (appendix 'How to run'), and keep each\n"
        "# model trained here for the next notebook that trains it again (kt_helpers.cache).\n"
        "from kt_helpers import cache, reproducibility\n"
        "\n"
        "_ = reproducibility.pin_cpu_kernels()\n"
        "cache.enable()"
    )


def notebooks(root: Path | None = None) -> list[Path]:
    """Every notebook of the book (under ``chapters/`` and ``appendices/``), sorted."""
    root = root or find_book_root()
    found: list[Path] = []
    for folder in ("chapters", "appendices"):
        found += [
            p for p in (root / folder).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
        ]
    return sorted(found)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def sync_notebook(nb, notebook_path: str, url: str, branch: str) -> bool:
    """Insert or update a notebook's badge and setup cells; return whether it changed.

    The badge follows the title cell, the setup cell follows the badge. Both
    are tagged ``remove-cell`` so the website shows neither (it has its own
    launch button); Jupyter and Colab show both.
    """
    import nbformat

    badge = badge_markdown(url, branch, notebook_path)
    setup = setup_source(url, branch)
    cells = nb.cells
    old = [c for c in cells if BADGE_TAG in _tags(c) or SETUP_TAG in _tags(c)]
    rest = [c for c in cells if c not in old]
    badge_cell = nbformat.v4.new_markdown_cell(badge, metadata={"tags": [BADGE_TAG, "remove-cell"]})
    setup_cell = nbformat.v4.new_code_cell(setup, metadata={"tags": [SETUP_TAG, "remove-cell"]})
    for new, tag in ((badge_cell, BADGE_TAG), (setup_cell, SETUP_TAG)):
        prev = next((c for c in old if tag in _tags(c)), None)
        if prev is not None:
            new["id"] = prev.get("id", new.get("id"))
            if prev.get("source") == new["source"] and prev.get("cell_type") == "code":
                new["outputs"] = prev.get("outputs", [])
                new["execution_count"] = prev.get("execution_count")
    first = 1 if rest and rest[0].cell_type == "markdown" else 0
    new_cells = rest[:first] + [badge_cell, setup_cell] + rest[first:]
    changed = [(c.cell_type, c.source) for c in new_cells] != [(c.cell_type, c.source) for c in cells]
    nb.cells = new_cells
    return changed


def sync(root: Path | None = None) -> list[Path]:
    """Regenerate every notebook's badge and setup cell from ``_config.yml``; return the changed ones."""
    import nbformat

    root = root or find_book_root()
    url, branch = read_repository(root)
    changed = []
    for path in notebooks(root):
        nb = nbformat.read(path, as_version=4)
        if sync_notebook(nb, path.relative_to(root).as_posix(), url, branch):
            nbformat.write(nb, path)
            changed.append(path)
    return changed


#: Files that hold a copy of the repository URL because they cannot read
#: ``_config.yml``; :func:`set_repository` rewrites the URL in them too.
URL_COPIES = ("README.md", "pyproject.toml", "CITATION.cff")


def set_repository(url: str, branch: str = "main", root: Path | None = None) -> list[Path]:
    """Point the book at another repository (e.g. an instructor's fork).

    Rewrites ``repository.url`` and ``repository.branch`` in ``_config.yml`` —
    the one place the URL is written — and regenerates every badge and setup
    cell, and the copies of the URL in the files that cannot read it from
    there (:data:`URL_COPIES`: the README's install line, the package's
    homepage, the citation).

    Returns:
        The files changed: the notebooks, then those copies.
    """
    _parse_repo(url)
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
        raise ValueError(f"The 'branch' must be a git branch name. Got {branch!r} instead.")
    root = root or find_book_root()
    config_path = root / "_config.yml"
    text = config_path.read_text(encoding="utf-8")
    block = re.search(r"^repository:\n((?:[ \t]+.*\n)+)", text, flags=re.M)
    if block is None:
        raise ValueError("_config.yml has no 'repository:' block to rewrite.")
    old_url, _ = read_repository(root)
    body = block.group(1)
    indent = re.match(r"[ \t]+", body).group(0)
    for key, value in (("url", url.rstrip("/")), ("branch", branch)):
        body, found = re.subn(rf"^([ \t]+{key}:).*$", rf"\1 {value}", body, flags=re.M)
        if not found:  # e.g. no 'branch:' line yet: add one, else the branch would stay "main"
            body += f"{indent}{key}: {value}\n"
    config_path.write_text(text[: block.start(1)] + body + text[block.end(1) :], encoding="utf-8")
    changed = sync(root)
    colab = root / "colab"
    if colab.is_dir():  # the Colab edition's badges and setup cells name the repository too
        from kt_helpers import editions

        editions.write_edition(colab, root, "colab")
        changed += sorted(colab.rglob("*.ipynb"))
    new_url = url.rstrip("/")
    for name in URL_COPIES:
        path = root / name
        if old_url == new_url or not path.is_file():
            continue
        copy = path.read_text(encoding="utf-8")
        if old_url in copy:
            path.write_text(copy.replace(old_url, new_url), encoding="utf-8")
            changed.append(path)
    return changed


# --- student versions ------------------------------------------------------------------------

_EXERCISE_OPEN = re.compile(r"^[ \t]*(?:`{3,}|:{3,})\{exercise(?:-start)?\}", flags=re.M)
_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z-]+)\}")


def strip_solutions(markdown: str) -> tuple[str, int]:
    r"""Remove every sphinx-exercise ``{solution}`` block from a Markdown text.

    Handles backtick and colon fences of any length (a block closes at a line
    holding the same fence, or a longer one, alone).

    Returns:
        ``(text, count)``: the text without solutions and how many were removed.

    Example:
        >>> text = "Before\n```{solution} ex-1\n:class: dropdown\n\nSecret\n```\nAfter"
        >>> strip_solutions(text)
        ('Before\nAfter', 1)
    """
    lines = markdown.split("\n")
    out: list[str] = []
    removed = 0
    i = 0
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i])
        if match and match.group("name") == "solution":
            fence = match.group("fence")
            closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
            i += 1
            while i < len(lines) and not closing.match(lines[i]):
                i += 1
            i += 1  # skip the closing fence
            removed += 1
            continue
        out.append(lines[i])
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") if removed else text, removed


_GATE = re.compile(r"^[ \t]*(?:`{3,}|:{3,})\{solution-(?P<which>start|end)\}[ \t]*(?P<label>\S*)", flags=re.M)


def gated_solutions(cells) -> list[tuple[int, int, str]]:
    """The gated solutions of a notebook: ``(start, end, label)`` for each.

    A gated solution (sphinx-exercise's ``{solution-start}`` ... ``{solution-end}``)
    spans several cells: a Markdown cell that opens it, the solution's Markdown
    and code cells, and a Markdown cell that closes it; ``start`` and ``end`` are
    the indices of those two cells, ``label`` the exercise it solves.

    Raises:
        ValueError: a start without its end, an end without its start, or two
            starts in a row (sphinx-exercise fails the build on each).
    """
    spans: list[tuple[int, int, str]] = []
    open_at: tuple[int, str] | None = None
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "markdown":
            continue
        for match in _GATE.finditer(cell.get("source", "")):
            if match.group("which") == "start":
                if open_at is not None:
                    raise ValueError(
                        f"A {{solution-start}} in cell {index} opens a gated solution while the one "
                        f"opened in cell {open_at[0]} ({open_at[1]}) is not closed: expected a "
                        "{solution-end} first."
                    )
                open_at = (index, match.group("label"))
            else:
                if open_at is None:
                    raise ValueError(
                        f"The {{solution-end}} in cell {index} closes no gated solution: expected a "
                        "{solution-start} before it."
                    )
                spans.append((open_at[0], index, open_at[1]))
                open_at = None
    if open_at is not None:
        raise ValueError(
            f"The {{solution-start}} in cell {open_at[0]} ({open_at[1]}) is never closed: expected "
            "a {solution-end} after it."
        )
    return spans


def solution_cells(nb) -> set[int]:
    """Indices of the cells that belong to a solution: every cell of a gated
    solution (its opening and closing cells included) and every cell tagged
    ``solution``. Plain ``{solution}`` blocks inside other Markdown cells are
    not cells of their own (:func:`strip_solutions` removes them)."""
    found = {k for start, end, _ in gated_solutions(nb.cells) for k in range(start, end + 1)}
    return found | {k for k, cell in enumerate(nb.cells) if SOLUTION_TAG in _tags(cell)}


def student_notebook(nb) -> tuple[object, dict[str, int]]:
    """A copy of a notebook without solutions and without outputs.

    Returns:
        ``(notebook, counts)`` with counts of ``exercises`` kept and
        ``solutions`` removed (Markdown blocks, gated solutions and
        solution-tagged code cells outside them).
    """
    import copy as _copy

    nb = _copy.deepcopy(nb)
    spans = gated_solutions(nb.cells)
    in_gated = {k for start, end, _ in spans for k in range(start, end + 1)}
    kept = []
    counts = {"exercises": 0, "solutions": len(spans)}
    for index, cell in enumerate(nb.cells):
        if index in in_gated:
            continue
        if SOLUTION_TAG in _tags(cell):
            counts["solutions"] += 1
            continue
        source = cell.source
        if cell.cell_type == "markdown":
            counts["exercises"] += len(_EXERCISE_OPEN.findall(source))
            cell.source, removed = strip_solutions(source)
            counts["solutions"] += removed
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        kept.append(cell)
    nb.cells = kept
    return nb, counts


def write_student_notebooks(outdir: Path, root: Path | None = None, prefix: str | None = None) -> dict[str, dict[str, int]]:
    """Write the student copy of every notebook under ``outdir``, keeping the book's layout.

    A student copy is the Colab edition's rendering (:mod:`kt_helpers.editions`)
    without solutions and without outputs, with an empty code cell tagged
    ``answer`` after each exercise, and a badge that opens the copy itself:
    ``prefix`` is the copies' folder in the repository (default: ``outdir``
    relative to the book, e.g. ``student``).

    Returns:
        For each notebook (path relative to the book), its counts of exercises
        kept and solutions removed.
    """
    from kt_helpers import editions

    return editions.write_edition(Path(outdir), root or find_book_root(), "student", prefix)


def no_solutions_config(out: Path, root: Path | None = None) -> Path:
    """Write a copy of ``_config.yml`` that hides every solution, for a student
    build of the site, whose launch buttons open the student copies under ``student/``.

    sphinx-exercise's ``hide_solutions`` removes the ``{solution}`` blocks but
    not a gated solution's cells (it drops the ``{solution-start}`` and leaves
    the cells after it); with this setting the book's extension
    (``_ext/book_config.py``) also leaves out every cell of
    :func:`solution_cells` before the page is parsed."""
    import yaml

    root = root or find_book_root()
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    # No Chinese edition is built next to this site: no link to one (_ext/book_config.py).
    config["sphinx"]["config"]["book_language_switch"] = {}
    # Its launch buttons open the student copies (``make student``, committed to the fork).
    config.setdefault("repository", {})["path_to_book"] = "student"
    # Jupyter Book resolves these paths against the folder of the config file,
    # which is no longer the book's root: make them absolute.
    config["bibtex_bibfiles"] = [str((root / b).resolve()) for b in config.get("bibtex_bibfiles", [])]
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, folder in extensions.items():
        extensions[name] = str((root / folder).resolve())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kt_helpers.course", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_repo = sub.add_parser("set-repo", help="point the book (badges, setup cells, launch buttons) at a repository")
    p_repo.add_argument("url")
    p_repo.add_argument("--branch", default="main")
    sub.add_parser("sync", help="regenerate every notebook's Colab badge and setup cell from _config.yml")
    p_colab = sub.add_parser("colab", help="write the Colab edition (MyST rendered to Jupyter Markdown, "
                             "solutions collapsed) to OUTDIR, normally colab/")
    p_colab.add_argument("outdir", type=Path)
    p_student = sub.add_parser("student", help="write student notebooks (exercises kept, solutions removed, "
                               "answer cells added)")
    p_student.add_argument("outdir", type=Path)
    p_student.add_argument("--prefix", default=None, help="the copies' folder in the repository, for their "
                           "badges (default: OUTDIR relative to the book)")
    p_config = sub.add_parser("no-solutions-config", help="write a _config.yml that hides solutions")
    p_config.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "set-repo":
        changed = set_repository(args.url, args.branch)
        notebooks = [p for p in changed if p.suffix == ".ipynb"]
        others = [p.name for p in changed if p.suffix != ".ipynb"]
        also = f", and the URL in {', '.join(others)}" if others else ""
        print(f"repository set to {args.url} ({args.branch}); {len(notebooks)} notebook(s) updated{also}")
    elif args.command == "sync":
        changed = sync()
        print(f"{len(changed)} notebook(s) updated")
    elif args.command == "colab":
        from kt_helpers import editions

        report = editions.write_edition(args.outdir, find_book_root(), "colab")
        exercises = sum(c["exercises"] for c in report.values())
        print(f"{len(report)} Colab notebook(s) written to {args.outdir}: {exercises} exercise(s), "
              "their solutions collapsed")
    elif args.command == "student":
        report = write_student_notebooks(args.outdir, prefix=args.prefix)
        exercises = sum(c["exercises"] for c in report.values())
        solutions = sum(c["solutions"] for c in report.values())
        print(
            f"{len(report)} student notebook(s) written to {args.outdir}: "
            f"{exercises} exercise(s) kept, {solutions} solution(s) removed"
        )
    elif args.command == "no-solutions-config":
        print(no_solutions_config(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
