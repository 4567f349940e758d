"""Every solution is an answer key whose code runs (issue 14, item 1).

A solution with code is a *gated* solution (sphinx-exercise's
``{solution-start}`` ... ``{solution-end}``): its cells are tagged ``solution``,
its code cells are executed with the notebook (so nbval runs them, and their
outputs are stored), and a claim cell checks the result its text states. A
solution without code stays a plain ``{solution}`` block, with no code in it
that nothing runs. No solution leaves the answer to the reader ("the printout
answers it").

The rules are checked on every notebook of the book, and shown to fail on
small notebooks written here. ``TO_CONVERT`` lists the notebooks whose
solutions are still being converted: they are only checked for well-formed
gated solutions until they leave the list.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from markdown_it import MarkdownIt

from kt_helpers import course

ROOT = Path(__file__).resolve().parent.parent

#: Notebooks whose solutions are still to be converted to the pattern above (by
#: other branches); the lead empties this set when merging them.
TO_CONVERT: set[str] = set()

#: Phrases of a solution that leaves the answer to the reader.
NO_ANSWER = [
    r"print-?out answers", r"output answers", r"(?:table|printout|output) (?:above |below )?(?:tells|gives) you",
    r"run (?:it|the cell|the code) and see", r"answers it\b", r"see for yourself",
]
_NO_ANSWER = re.compile("|".join(NO_ANSWER), flags=re.I)
_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z-]+)\}[ \t]*(?P<arg>[^\n]*)$", re.M)
_LABEL = re.compile(r"^[ \t]*:label:[ \t]*(\S+)", re.M)
_MD = MarkdownIt("commonmark")
_CODE_INFO = re.compile(r"^\s*(?:python|py|ipython3?|pycon|\{code-cell\}|\{code\}\s*python|\{code-block\}\s*python)\b")


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _directives(text: str, name: str) -> list[tuple[str, str]]:
    """``(argument, body)`` of each top-level ``{name}`` directive of a Markdown text."""
    found, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i])
        if not match:
            i += 1
            continue
        fence = match.group("fence")
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        if match.group("name") == name:
            found.append((match.group("arg").strip(), "\n".join(lines[i + 1 : j])))
        i = j + 1
    return found


def _unrun_code(text: str) -> list[str]:
    """Code that a Markdown text shows for running: Python fences and indented code blocks."""
    found = []
    for tok in _MD.parse(text):
        if tok.type == "code_block":
            found.append(tok.content.strip().split("\n")[0])
        elif tok.type == "fence" and _CODE_INFO.match(tok.info or ""):
            found.append(tok.content.strip().split("\n")[0])
    return found


def exercise_labels(nb) -> set[str]:
    labels = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for name in ("exercise", "exercise-start"):
                for _, body in _directives(cell.source, name):
                    labels.update(_LABEL.findall(body))
    return labels


def solution_problems(nb, *, converted: bool = True) -> list[str]:
    """What is wrong with a notebook's solutions (empty when nothing is).

    Args:
        nb: the notebook.
        converted: check the answer-key rules too (no code that nothing runs,
            no "the printout answers it"); when False, only that every gated
            solution is well formed.
    """
    problems = []
    try:
        spans = course.gated_solutions(nb.cells)
    except ValueError as error:
        return [f"malformed gated solution: {error}"]
    labels = exercise_labels(nb)
    for start, end, label in spans:
        where = f"gated solution {label!r} (cells {start}-{end})"
        if label not in labels:
            problems.append(f"{where}: no exercise of this notebook has the label {label!r}")
        untagged = [k for k in range(start, end + 1) if course.SOLUTION_TAG not in _tags(nb.cells[k])]
        if untagged:
            problems.append(f"{where}: cells {untagged} are not tagged {course.SOLUTION_TAG!r}")
        inner = nb.cells[start + 1 : end]
        code = [c for c in inner if c.cell_type == "code" and "claim" not in _tags(c)]
        ran = [c for c in code if c.get("execution_count") is not None and c.get("outputs")]
        if not ran:
            problems.append(f"{where}: no executed code cell with outputs (a solution without code is a "
                            "plain {solution} block)")
        if not [c for c in inner if c.cell_type == "code" and {"claim", "remove-cell"} <= set(_tags(c))]:
            problems.append(f"{where}: no claim cell (tags claim, remove-cell) checks the result it states")
        if converted:
            text = "\n".join(c.source for c in nb.cells[start : end + 1] if c.cell_type == "markdown")
            problems += [f"{where}: code in its text that nothing runs: {line!r}" for line in _unrun_code(text)]
            problems += [f"{where}: leaves the answer to the reader: {m.group(0)!r}" for m in _NO_ANSWER.finditer(text)]
    gated = {k for start, end, _ in spans for k in range(start, end + 1)}
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown" or k in gated:
            continue
        for label, body in _directives(cell.source, "solution"):
            where = f"solution {label!r} (cell {k})"
            if label not in labels:
                problems.append(f"{where}: no exercise of this notebook has the label {label!r}")
            if converted:
                problems += [f"{where}: code that nothing runs (make it a gated solution): {line!r}"
                             for line in _unrun_code(body)]
                problems += [f"{where}: leaves the answer to the reader: {m.group(0)!r}"
                             for m in _NO_ANSWER.finditer(body)]
    return problems


# --------------------------------------------------------------------------- the book


NOTEBOOKS = {p.relative_to(ROOT).as_posix(): p for p in course.notebooks(ROOT)}


@pytest.mark.parametrize("rel", sorted(NOTEBOOKS))
def test_every_solution_is_an_answer_key_whose_code_runs(rel):
    nb = nbformat.read(NOTEBOOKS[rel], as_version=4)
    problems = solution_problems(nb, converted=rel not in TO_CONVERT)
    assert not problems, f"{rel}:\n" + "\n".join(problems)


def test_the_notebooks_to_convert_exist_and_still_need_it():
    """The list cannot rot: a notebook that now passes must leave it."""
    missing = sorted(TO_CONVERT - set(NOTEBOOKS))
    assert not missing, f"not notebooks of the book: {missing}"
    done = sorted(rel for rel in TO_CONVERT
                  if not solution_problems(nbformat.read(NOTEBOOKS[rel], as_version=4)))
    assert not done, f"these notebooks pass now: remove them from TO_CONVERT: {done}"


def test_the_book_has_gated_solutions():
    count = sum(len(course.gated_solutions(nbformat.read(p, as_version=4).cells)) for p in NOTEBOOKS.values())
    assert count >= 5, count


# --------------------------------------------------------------------------- the check can fail


def _nb(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for k, cell in enumerate(cells):
        kind, source, tags = cell[0], cell[1], (cell[2] if len(cell) > 2 else [])
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source, id=f"c{k}", metadata={"tags": tags}))
        else:
            outputs = [] if kind == "unrun" else [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
            nb.cells.append(nbformat.v4.new_code_cell(
                source, id=f"c{k}", metadata={"tags": tags},
                execution_count=None if kind == "unrun" else k, outputs=outputs))
    return nb


EXERCISE = ("md", "```{exercise} A\n:label: ex-a\n\nDo it.\n```")
START = ("md", "```{solution-start} ex-a\n:class: dropdown\n```", ["solution"])
ANSWER = ("md", "It prints 1: the student is about 3 points better.", ["solution"])
CODE = ("code", "print(1)", ["solution"])
CLAIM = ("code", "claims.claim('one', True)", ["solution", "claim", "remove-cell"])
END = ("md", "```{solution-end}\n```", ["solution"])
GOOD = [EXERCISE, START, CODE, ANSWER, CLAIM, END,
        ("md", "```{exercise} B\n:label: ex-b\n\nWhy?\n```\n\n```{solution} ex-b\n:class: dropdown\n\nBecause.\n```")]


def test_a_well_formed_notebook_passes():
    assert solution_problems(_nb(*GOOD)) == []


@pytest.mark.parametrize("cells, expected", [
    ([EXERCISE, ("md", "```{solution} ex-a\n:class: dropdown\n\n```python\nprint(1)\n```\n```")], "nothing runs"),
    ([EXERCISE, ("md", "````{solution} ex-a\n:class: dropdown\n\n```python\nprint(1)\n```\n````")], "nothing runs"),
    ([EXERCISE, ("md", "```{solution} ex-a\n:class: dropdown\n\nRun:\n\n    print(1)\n\nDone.\n```")], "nothing runs"),
    ([EXERCISE, ("md", "```{solution} ex-a\n:class: dropdown\n\nThe printout answers it.\n```")], "to the reader"),
    ([EXERCISE, ("md", "```{solution} ex-b\n:class: dropdown\n\nYes.\n```")], "label 'ex-b'"),
    ([EXERCISE, START, ("unrun", "print(1)", ["solution"]), ANSWER, CLAIM, END], "no executed code cell"),
    ([EXERCISE, START, ANSWER, CLAIM, END], "no executed code cell"),
    ([EXERCISE, START, CODE, ANSWER, END], "no claim cell"),
    ([EXERCISE, START, ("code", "print(1)"), ANSWER, CLAIM, END], "not tagged 'solution'"),
    ([EXERCISE, ("md", START[1]), CODE, ANSWER, CLAIM, END], "not tagged 'solution'"),
    ([EXERCISE, START, CODE, ("md", "The output answers it.", ["solution"]), CLAIM, END], "to the reader"),
    ([EXERCISE, START, CODE, ("md", "```python\nx = 1\n```", ["solution"]), CLAIM, END], "nothing runs"),
    ([EXERCISE, ("md", START[1].replace("ex-a", "ex-z"), ["solution"]), CODE, ANSWER, CLAIM, END], "label 'ex-z'"),
    ([EXERCISE, START, CODE, ANSWER, CLAIM], "never closed"),
    ([EXERCISE, CODE, END], "closes no gated solution"),
    ([EXERCISE, START, CODE, START, CLAIM, END, END], "is not closed"),
])
def test_the_check_finds_each_problem(cells, expected):
    problems = solution_problems(_nb(*cells))
    assert any(expected in p for p in problems), problems


def test_notebooks_to_convert_are_only_checked_for_well_formed_gates():
    unrun = _nb(EXERCISE, ("md", "```{solution} ex-a\n:class: dropdown\n\n```python\nprint(1)\n```\n```"))
    assert solution_problems(unrun, converted=False) == []
    assert solution_problems(_nb(EXERCISE, START, CODE, ANSWER, CLAIM), converted=False)


# --------------------------------------------------------------------------- the site without solutions


def _hook(hide: bool, path: str = "chapters/x.ipynb"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("book_config", ROOT / "_ext" / "book_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = SimpleNamespace(config=SimpleNamespace(hide_solutions=hide),
                          env=SimpleNamespace(doc2path=lambda docname: ROOT / path))
    return module._hide_solution_cells, app


def test_the_site_without_solutions_leaves_out_every_solution_cell():
    """sphinx-exercise's hide_solutions drops a {solution-start} but not the cells
    after it (and the build then fails on the orphan {solution-end}); the book's
    extension leaves every solution cell out of the page before it is parsed."""
    nb = _nb(*GOOD, ("code", "print('after')"), ("code", "print(2)", ["solution"]))
    hook, app = _hook(hide=True)
    source = [nbformat.writes(nb)]
    hook(app, "chapters/x", source)
    kept = nbformat.reads(source[0], as_version=4).cells
    assert [c.source for c in kept] == [EXERCISE[1], GOOD[-1][1], "print('after')"]
    hook, app = _hook(hide=False)  # the normal site: untouched
    source = [nbformat.writes(nb)]
    hook(app, "chapters/x", source)
    assert source[0] == nbformat.writes(nb)
    hook, app = _hook(hide=True, path="intro.md")  # a Markdown page: untouched
    source = ["# Intro\n"]
    hook(app, "intro", source)
    assert source == ["# Intro\n"]
