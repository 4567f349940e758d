"""The Colab edition and the student copies (kt_helpers.editions).

- On a small book written here, each piece of MyST markup is rendered to the
  Markdown expected by hand (citations, cross-references with numbers,
  tagged equations, exercises, collapsed solutions, admonitions, figures).
- On the real book: the committed ``colab/`` is what the generator writes
  now (else: the stale files and the command to regenerate them); every
  generated notebook, rendered by a CommonMark renderer as Jupyter renders it,
  shows no MyST role, directive fence, label or option; the student copies
  have answer cells and no solution; every badge opens the right copy.
- The numbers (sections, figures, equations, exercises) are computed from
  ``_toc.yml`` as Sphinx numbers them; when the site is built (``make test``
  builds it first), they are compared with every page of it.
- Two quick Colab notebooks run under nbval.

The browser checks of the generated notebooks are in
``tests/test_editions_browser.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import nbformat
import pytest
import yaml

from kt_helpers import course, editions

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("KT_SITE_DIR", ROOT / "_build" / "html"))
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
REGENERATE = "make colab  (or: python -m kt_helpers.course colab colab)"


# --------------------------------------------------------------------------- a small book


BIB = """
@article{hinton2015distilling,
  title = {Distilling the Knowledge in a Neural Network},
  author = {Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
  journal = {arXiv preprint arXiv:1503.02531},
  year = {2015}
}
@inproceedings{ba2014deep,
  title = {Do Deep Nets Really Need to be Deep?},
  author = {Ba, Jimmy and Caruana, Rich},
  booktitle = {Advances in Neural Information Processing Systems},
  year = {2014}
}
"""

CHAPTER_ONE = [
    "# First chapter\n\nSee {doc}`sub/second` and {numref}`fig-one`.",
    "(sec-one-part)=\n## A part\n\nText citing {cite:t}`hinton2015distilling` and {cite}`hinton2015distilling,ba2014deep`."
    " The role `{cite}` in code stays.\n\n$$\na = b\n$$ (eq-one)\n\nBy {eq}`eq-one`.",
    ("code", {"mystnb": {"figure": {"caption": "A figure with $x$.", "name": "fig-one"}}}),
    ":::{admonition} Careful\n:class: note\nMind {ref}`sec-one-part`.\n\n$$\nm\n= n\n$$\n:::\n\n```{note}\nA note.\n```",
    "## Exercises\n\n````{exercise} First\n:label: ex-one\n\nDo {eq}`eq-one`.\n\n```python\nx = 1\n```\n````\n\n"
    "```{solution} ex-one\n:class: dropdown\n\nAnswer with $y$.\n```\n\n"
    "```{exercise} Second\n:label: ex-two\n\nAgain.\n```\n\n```{solution} ex-two\n:class: dropdown\n\nNo.\n```",
]
CHAPTER_TWO = [
    "# Second\n\n## Inner\n\nBack to {numref}`Section %s <sec-one-part>`, {ref}`ex-two`, {ref}`the part <sec-one-part>`.",
    "$$\nc = d\n$$ (eq-two)\n\n{eq}`eq-two` follows {eq}`eq-one`; {doc}`../ch1`.",
    ("code", {"mystnb": {"figure": {"caption": "Second figure.", "name": "fig-two"}}}),
    ("code", {"tags": ["solution"]}),
]


def _notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for k, cell in enumerate(cells):
        if isinstance(cell, tuple):
            nb.cells.append(nbformat.v4.new_code_cell("print(1)", id=f"c{k}", metadata=cell[1]))
        else:
            nb.cells.append(nbformat.v4.new_markdown_cell(cell, id=f"m{k}"))
    return nb


@pytest.fixture(scope="module")
def small_book(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["html"]["baseurl"] = "https://example.org/book"
    (root / "_config.yml").write_text(yaml.safe_dump(config))
    (root / "_toc.yml").write_text(textwrap.dedent("""\
        format: jb-book
        root: intro
        parts:
          - caption: Chapters
            numbered: true
            chapters:
              - file: chapters/ch1
                sections:
                  - file: chapters/sub/second
          - caption: Back
            chapters:
              - file: refs
        """))
    (root / "intro.md").write_text("# Intro\n")
    (root / "refs.md").write_text("# References\n\n```{bibliography}\n```\n")
    (root / "references.bib").write_text(BIB)
    (root / "chapters" / "sub").mkdir(parents=True)
    nbformat.write(_notebook(CHAPTER_ONE), root / "chapters" / "ch1.ipynb")
    nbformat.write(_notebook(CHAPTER_TWO), root / "chapters" / "sub" / "second.ipynb")
    return root


def _markdown(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


SITE_URL = "https://example.org/book/"


def test_small_book_colab_rendering(small_book):
    book = editions.Book(small_book)
    nb, counts = editions.edition_notebook(book, "chapters/ch1.ipynb", "colab")
    assert counts == {"exercises": 2, "solutions": 2}
    md = _markdown(nb)
    assert md[0] == (f"# 1. First chapter\n\nSee [Second]({SITE_URL}chapters/sub/second.html) and "
                     f"[Fig. 1.1]({SITE_URL}chapters/ch1.html#fig-one).")
    refs = f"{SITE_URL}refs.html"
    assert md[1] == (
        f"## 1.1. A part\n\nText citing Hinton *et al.* [[2015]({refs})] and "
        f"[[Hinton *et al.*, 2015]({refs}), [Ba and Caruana, 2014]({refs})]. The role `{{cite}}` in code stays."
        f"\n\n$$\na = b\n\\tag{{1.1}}\n$$\n\nBy [(1.1)]({SITE_URL}chapters/ch1.html#equation-eq-one)."
    )
    # the figure's number and caption, in a cell of its own under the figure
    figure = nb.cells[3]
    assert figure.cell_type == "markdown" and figure.metadata["tags"] == [editions.CAPTION_TAG]
    assert figure.source == "**Fig. 1.1** A figure with $x$."
    # (display maths in a block quote on one line: Jupyter would read the ">" of
    # the next lines as TeX)
    assert md[3] == (f"> **Careful**\n>\n> Mind [A part]({SITE_URL}chapters/ch1.html#sec-one-part).\n>\n"
                     "> $$ m = n $$\n\n> **Note**\n>\n> A note.")
    assert md[4] == (
        "## 1.2. Exercises\n\n### Exercise 1.1 (First)\n\n"
        f"Do [(1.1)]({SITE_URL}chapters/ch1.html#equation-eq-one).\n\n```python\nx = 1\n```\n\n"
        "<details>\n<summary>Solution to Exercise 1.1 (First)</summary>\n\nAnswer with $y$.\n\n</details>\n\n"
        "### Exercise 1.2 (Second)\n\nAgain.\n\n"
        "<details>\n<summary>Solution to Exercise 1.2 (Second)</summary>\n\nNo.\n\n</details>"
    )


def test_small_book_numbers_run_on_across_a_chapter_and_its_sections(small_book):
    """A chapter's sub-pages are numbered after the chapter page's own sections
    (1.1 "A part", 1.2 "Exercises", so the sub-page is 1.3), as Sphinx numbers
    them; checked against a Jupyter Book build of this small book."""
    book = editions.Book(small_book)
    nb, _ = editions.edition_notebook(book, "chapters/sub/second.ipynb", "colab")
    md = _markdown(nb)
    assert md[0] == (
        f"# 1.3. Second\n\n## 1.3.1. Inner\n\nBack to [Section 1.1]({SITE_URL}chapters/ch1.html#sec-one-part), "
        f"[Exercise 1.2]({SITE_URL}chapters/ch1.html#ex-two), [the part]({SITE_URL}chapters/ch1.html#sec-one-part)."
    )
    # equations and figures are counted per chapter, on from the chapter's own page
    assert md[1] == (f"$$\nc = d\n\\tag{{1.2}}\n$$\n\n[(1.2)]({SITE_URL}chapters/sub/second.html#equation-eq-two) follows "
                     f"[(1.1)]({SITE_URL}chapters/ch1.html#equation-eq-one); [First chapter]({SITE_URL}chapters/ch1.html).")
    assert md[2] == "**Fig. 1.2** Second figure."


def test_small_book_student_copy(small_book):
    book = editions.Book(small_book)
    nb, counts = editions.edition_notebook(book, "chapters/ch1.ipynb", "student")
    assert counts == {"exercises": 2, "solutions": 2}
    kinds = [(c.cell_type, c.metadata.get("tags", [])) for c in nb.cells]
    answers = [k for k, c in enumerate(nb.cells) if editions.ANSWER_TAG in c.metadata.get("tags", [])]
    assert len(answers) == 2, kinds
    for k in answers:  # an empty code cell right after each exercise
        assert nb.cells[k].cell_type == "code" and nb.cells[k].source == ""
        assert nb.cells[k - 1].cell_type == "markdown" and "### Exercise 1." in nb.cells[k - 1].source
    text = "\n".join(_markdown(nb))
    assert "<details>" not in text and "Answer with" not in text and "Solution" not in text
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    second, counts = editions.edition_notebook(book, "chapters/sub/second.ipynb", "student")
    assert counts["solutions"] == 1  # the code cell tagged "solution"
    assert not [c for c in second.cells if "solution" in c.metadata.get("tags", [])]


GATED = [
    "## More exercises\n\n```{exercise} Third\n:label: ex-three\n\nCompute {eq}`eq-two`.\n```",
    ("markdown", ["solution"], "```{solution-start} ex-three\n:class: dropdown\n```"),
    ("markdown", ["solution"], "Run this; see {eq}`eq-one`:"),
    ("code", ["solution"], "print(3)"),
    ("code", ["solution", "claim", "remove-cell"], "assert True"),
    ("markdown", ["solution"], "It prints 3.\n\n```{solution-end}\n```"),
    "Text after it.",
]


def _book_with_gated_solution(small_book, tmp_path, cells=GATED):
    import shutil

    root = tmp_path / "book"
    shutil.copytree(small_book, root)
    path = root / "chapters" / "sub" / "second.ipynb"
    nb = nbformat.read(path, as_version=4)
    for k, cell in enumerate(cells):
        if isinstance(cell, str):
            nb.cells.append(nbformat.v4.new_markdown_cell(cell, id=f"g{k}"))
        elif cell[0] == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(cell[2], id=f"g{k}", metadata={"tags": cell[1]}))
        else:
            out = nbformat.v4.new_output("stream", name="stdout", text="3\n")
            nb.cells.append(nbformat.v4.new_code_cell(cell[2], id=f"g{k}", metadata={"tags": cell[1]},
                                                      outputs=[out], execution_count=k))
    nbformat.write(nb, path)
    return root


def test_small_book_gated_solution_in_the_colab_edition(small_book, tmp_path):
    """A gated solution: a heading, folded in JupyterLab; its Markdown in a
    <details> block; its code cells kept with their outputs, the code hidden in
    Jupyter and, as a form, in Colab; the closing directive dropped."""
    root = _book_with_gated_solution(small_book, tmp_path)
    nb, counts = editions.edition_notebook(editions.Book(root), "chapters/sub/second.ipynb", "colab")
    assert counts == {"exercises": 1, "solutions": 2}  # the gated one and the code cell of CHAPTER_TWO
    start = next(k for k, c in enumerate(nb.cells) if c.get("id") == "g1")
    heading, text, code, claim = nb.cells[start : start + 4]
    assert heading.source == "#### Solution to Exercise 1.3 (Third)"
    assert heading.metadata["jp-MarkdownHeadingCollapsed"] is True
    assert text.source == ("<details>\n<summary>Solution to Exercise 1.3 (Third) (continued)</summary>\n\n"
                           f"Run this; see [(1.1)]({SITE_URL}chapters/ch1.html#equation-eq-one):\n\n</details>")
    for cell, body in ((code, "print(3)"), (claim, "assert True")):
        assert cell.source == f"{editions.SOLUTION_CODE_TITLE}\n{body}"
        assert cell.metadata["jupyter"]["source_hidden"] is True and cell.metadata["cellView"] == "form"
        assert cell.outputs[0]["text"] == "3\n"
    assert claim.metadata["tags"] == ["solution", "claim", "remove-cell"]
    end = nb.cells[start + 4]
    assert end.source == "<details>\n<summary>Solution to Exercise 1.3 (Third) (continued)</summary>\n\nIt prints 3.\n\n</details>"
    assert nb.cells[-1].source == "Text after it."
    assert not [f for f in _leftovers(nb)], _leftovers(nb)


def test_small_book_gated_solution_in_the_student_copy(small_book, tmp_path):
    root = _book_with_gated_solution(small_book, tmp_path)
    nb, counts = editions.edition_notebook(editions.Book(root), "chapters/sub/second.ipynb", "student")
    assert counts == {"exercises": 1, "solutions": 2}
    text = "\n".join(c.source for c in nb.cells)
    assert "solution" not in text.lower() and "print(3)" not in text and "It prints 3" not in text
    assert not [c for c in nb.cells if course.SOLUTION_TAG in _tags(c)]
    # the exercise keeps its answer cell, and what follows the solution stays
    assert nb.cells[-2].metadata["tags"] == [editions.ANSWER_TAG] and nb.cells[-1].source == "Text after it."


@pytest.mark.parametrize("cells, message", [
    (GATED[:5], r"never closed"),
    ([GATED[0], GATED[5]], r"closes no gated solution"),
    ([GATED[0], GATED[1], GATED[1], GATED[5]], r"is not closed"),
])
def test_small_book_malformed_gated_solution_is_refused(small_book, tmp_path, cells, message):
    root = _book_with_gated_solution(small_book, tmp_path, cells)
    for edition in ("colab", "student"):
        with pytest.raises(editions.EditionError, match=message):
            editions.edition_notebook(editions.Book(root), "chapters/sub/second.ipynb", edition)


def test_small_book_unresolved_reference_is_reported_not_left_raw(small_book, tmp_path):
    import shutil

    root = tmp_path / "book"
    shutil.copytree(small_book, root)
    nb = nbformat.read(root / "chapters" / "ch1.ipynb", as_version=4)
    nb.cells[0].source += " Also {numref}`fig-missing`."
    nbformat.write(nb, root / "chapters" / "ch1.ipynb")
    with pytest.warns(editions.UnresolvedReferenceWarning, match="fig-missing"):
        out, _ = editions.edition_notebook(editions.Book(root), "chapters/ch1.ipynb", "colab")
    assert out.cells[0].source.endswith("Also *fig-missing*.")


def test_small_book_refuses_a_directive_it_cannot_render(small_book, tmp_path):
    import shutil

    root = tmp_path / "book"
    shutil.copytree(small_book, root)
    nb = nbformat.read(root / "chapters" / "ch1.ipynb", as_version=4)
    nb.cells[0].source += "\n\n```{list-table}\n* - a\n```"
    nbformat.write(nb, root / "chapters" / "ch1.ipynb")
    with pytest.raises(editions.EditionError, match=r"\{list-table\}"):
        editions.edition_notebook(editions.Book(root), "chapters/ch1.ipynb", "colab")


def test_website_url_defaults_to_the_repositorys_github_pages(small_book, tmp_path):
    config = yaml.safe_load((small_book / "_config.yml").read_text())
    config["html"]["baseurl"] = ""
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    url, _ = course.read_repository(ROOT)
    owner, name = url.removeprefix("https://github.com/").split("/")
    assert editions.website_url(tmp_path) == f"https://{owner.lower()}.github.io/{name}/"
    assert editions.website_url(small_book) == SITE_URL


def test_set_repo_regenerates_the_colab_edition_of_a_fork(small_book, tmp_path):
    import shutil

    root = tmp_path / "book"
    shutil.copytree(small_book, root)
    editions.write_edition(root / "colab", root, "colab")
    course.set_repository("https://github.com/someone/fork", "spring", root)
    copy = nbformat.read(root / "colab" / "chapters" / "ch1.ipynb", as_version=4)
    assert _badge_target(copy) == course.colab_url("https://github.com/someone/fork", "spring", "colab/chapters/ch1.ipynb")
    setup = [c for c in copy.cells if course.SETUP_TAG in _tags(c)]
    assert "git+https://github.com/someone/fork@spring" in setup[0].source


def test_edition_notebook_validates_its_arguments(small_book):
    book = editions.Book(small_book)
    with pytest.raises(ValueError, match=r"'edition' must be one of \['colab', 'student'\]\. Got 'web'"):
        editions.edition_notebook(book, "chapters/ch1.ipynb", "web")
    with pytest.raises(ValueError, match=r"'nope.ipynb' is not a page of _toc.yml"):
        editions.edition_notebook(book, "nope.ipynb", "colab")


# --------------------------------------------------------------------------- the real book


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[str, Path]:
    """Both editions of the book, written now (the Colab one with the committed copy's prefix)."""
    out = tmp_path_factory.mktemp("editions")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", editions.UnresolvedReferenceWarning)
        editions.write_edition(out / "colab", ROOT, "colab", prefix="colab")
        editions.write_edition(out / "student", ROOT, "student", prefix="student")
    return {"colab": out / "colab", "student": out / "student",
            "unresolved": sorted({str(w.message) for w in caught})}


def _stale(committed: Path, fresh_dir: Path) -> list[str]:
    new = {p.relative_to(fresh_dir).as_posix(): p.read_bytes() for p in fresh_dir.rglob("*.ipynb")}
    old = {p.relative_to(committed).as_posix(): p.read_bytes() for p in committed.rglob("*.ipynb")}
    return sorted(n for n in new.keys() | old.keys() if new.get(n) != old.get(n))


def test_the_committed_colab_edition_is_fresh(fresh):
    stale = _stale(ROOT / "colab", fresh["colab"])
    assert not stale, (
        f"{len(stale)} file(s) of colab/ differ from what the generator writes now "
        f"(stale, missing or extra): {', '.join('colab/' + s for s in stale)}. Regenerate with: {REGENERATE}"
    )


def test_every_notebook_has_a_colab_copy(fresh):
    expected = {p.relative_to(ROOT).as_posix() for p in course.notebooks(ROOT)}
    assert {p.relative_to(fresh["colab"]).as_posix() for p in fresh["colab"].rglob("*.ipynb")} == expected


def test_every_reference_of_the_book_resolves(fresh):
    assert not fresh["unresolved"], "references the editions could not resolve:\n" + "\n".join(fresh["unresolved"])


# What MyST leaves behind when Jupyter's CommonMark renderer does not understand it.
LEFTOVERS = {
    "a role": re.compile(r"\{[a-z][\w:.-]*\}<code>"),
    "a directive fence": re.compile(r'class="language-\{|^\s*(?:`{3,}|:{3,})\{[a-z]', re.M),
    "a label": re.compile(r"^\s*\([\w.:-]+\)=\s*$", re.M),
    "a directive option": re.compile(r"^\s*:(?:label|class|name|nonumber|caption):", re.M),
    "an equation label": re.compile(r"\$\$\s*\([\w.:-]+\)"),
}


def _leftovers(nb) -> list[str]:
    """MyST markup visible in a notebook rendered as Jupyter renders it (code and
    preformatted text excepted: they show markup on purpose)."""
    from bs4 import BeautifulSoup

    page = BeautifulSoup(editions.preview_html(nb, "mathjax.js"), "html.parser")
    for cell in page.select("div.cell.code"):
        cell.decompose()
    found = []
    for code in page.select("pre > code"):  # a directive's fence read as a code block
        if any(c.startswith("language-{") for c in code.get("class", [])):
            found.append(f"a directive fence: {code['class'][0]!r}")
        code.parent.decompose()
    for cell in page.select("div.cell.markdown"):
        rendered, text = str(cell), cell.get_text()
        for what, pattern in LEFTOVERS.items():
            for match in list(pattern.finditer(rendered)) + list(pattern.finditer(text)):
                found.append(f"{what}: {match.group(0).strip()!r}")
    return found


def test_the_leftover_check_finds_myst_markup_in_the_source_notebooks():
    """The check below can fail: on a chapter notebook itself, and on a cell with
    the other kinds of markup, it finds every kind."""
    found = _leftovers(nbformat.read(ROOT / "chapters" / "03_mathematics" / "02_fusion_outputs.ipynb", as_version=4))
    found += _leftovers(_notebook(["(sec-x)=\n# Title\n\n:::{note}\n:class: dropdown\nBody\n:::"]))
    kinds = {f.split(":")[0] for f in found}
    assert kinds == set(LEFTOVERS), found


@pytest.mark.parametrize("edition", ["colab", "student"])
def test_no_myst_markup_is_left_in_any_generated_notebook(fresh, edition):
    failures = []
    for path in sorted(fresh[edition].rglob("*.ipynb")):
        found = _leftovers(nbformat.read(path, as_version=4))
        failures += [f"{edition}/{path.relative_to(fresh[edition]).as_posix()}: {f}" for f in found]
    assert not failures, f"{len(failures)} piece(s) of MyST markup left:\n" + "\n".join(failures[:40])


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_colab_copies_collapse_every_solution_and_keep_the_code(fresh):
    for source in course.notebooks(ROOT):
        rel = source.relative_to(ROOT).as_posix()
        original = nbformat.read(source, as_version=4)
        copy = nbformat.read(fresh["colab"] / rel, as_version=4)
        n_solutions = sum(len(re.findall(r"^[ \t]*(?:`{3,}|:{3,})\{solution\}", c.source, re.M))
                          for c in original.cells if c.cell_type == "markdown")
        spans = course.gated_solutions(original.cells)
        gated = {k for start, end, _ in spans for k in range(start, end + 1)}
        n_folded = sum(1 for k in gated if original.cells[k].cell_type == "markdown"  # each text of a solution
                       and k not in {start for start, _, _ in spans} and re.split(
                           r"^[ \t]*(?:`{3,}|:{3,})\{solution-end\}", original.cells[k].source, flags=re.M)[0].strip())
        text = "\n".join(c.source for c in copy.cells if c.cell_type == "markdown")
        assert text.count("<details>") == n_solutions + n_folded == text.count("</details>"), rel
        assert len(re.findall(r"<details>\n<summary>Solution to Exercise \d", text)) == n_solutions + n_folded, rel
        assert len(re.findall(r"^#+ Solution to Exercise \d", text, re.M)) == len(spans), rel
        # code cells (with their outputs, for nbval and for the reader) are the book's own;
        # a gated solution's code has a form title first, and its code hidden
        hidden = [c for c in copy.cells if c.cell_type == "code" and c.metadata.get("cellView") == "form"]
        assert len(hidden) == sum(1 for k in gated if original.cells[k].cell_type == "code"), rel
        assert all(c.source.startswith(editions.SOLUTION_CODE_TITLE + "\n") and c.metadata["jupyter"]["source_hidden"]
                   for c in hidden), rel
        assert [(c.source.removeprefix(editions.SOLUTION_CODE_TITLE + "\n"), c.get("outputs"))
                for c in copy.cells if c.cell_type == "code"] == [
            (c.source, c.get("outputs")) for c in original.cells if c.cell_type == "code"], rel


def test_student_copies_have_answer_cells_and_no_solutions(fresh):
    for source in course.notebooks(ROOT):
        rel = source.relative_to(ROOT).as_posix()
        original = nbformat.read(source, as_version=4)
        student = nbformat.read(fresh["student"] / rel, as_version=4)
        n_exercises = sum(len(re.findall(r"^[ \t]*(?:`{3,}|:{3,})\{exercise\}", c.source, re.M))
                          for c in original.cells if c.cell_type == "markdown")
        answers = [k for k, c in enumerate(student.cells) if editions.ANSWER_TAG in _tags(c)]
        assert len(answers) == n_exercises, rel
        for k in answers:
            assert student.cells[k].cell_type == "code" and student.cells[k].source == "", rel
            assert re.search(r"^#+ Exercise \d", student.cells[k - 1].source, re.M), rel
        text = "\n".join(c.source for c in student.cells if c.cell_type == "markdown")
        assert not re.search(r"<details>\s*<summary>Solution", text), rel
        assert not [c for c in student.cells if course.SOLUTION_TAG in _tags(c)], rel
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code"), rel
        kept = [c.source for c in original.cells if c.cell_type == "code" and course.SOLUTION_TAG not in _tags(c)]
        assert [c.source for c in student.cells if c.cell_type == "code" and editions.ANSWER_TAG not in _tags(c)] == kept


def _badge_target(nb) -> str:
    badge = [c for c in nb.cells if course.BADGE_TAG in _tags(c)]
    assert len(badge) == 1
    return re.search(r"\]\((https://colab[^)]+)\)$", badge[0].source).group(1)


def test_every_badge_and_launch_button_opens_the_colab_copy(fresh):
    url, branch = course.read_repository(ROOT)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    # the website's launch buttons open <path_to_book>/<page>.ipynb
    assert config["repository"]["path_to_book"] == editions.EDITIONS["colab"]
    for source in course.notebooks(ROOT):
        rel = source.relative_to(ROOT).as_posix()
        in_colab = course.colab_url(url, branch, f"colab/{rel}")
        assert (ROOT / "colab" / rel).is_file(), f"colab/{rel} is missing: {REGENERATE}"
        assert _badge_target(nbformat.read(source, as_version=4)) == in_colab, rel
        assert _badge_target(nbformat.read(fresh["colab"] / rel, as_version=4)) == in_colab, rel
        assert _badge_target(nbformat.read(fresh["student"] / rel, as_version=4)) == course.colab_url(
            url, branch, f"student/{rel}"), rel


def test_the_site_without_solutions_launches_the_student_copies(tmp_path):
    config = yaml.safe_load(course.no_solutions_config(tmp_path / "config.yml", ROOT).read_text())
    assert config["repository"]["path_to_book"] == editions.EDITIONS["student"]
    assert config["repository"]["url"] == course.read_repository(ROOT)[0]


def test_the_student_command_writes_copies_whose_badges_open_themselves(tmp_path):
    out = tmp_path / "handout"
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "kt_helpers.course", "student", str(out), "--prefix", "handout"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert re.search(r"\d+ student notebook\(s\) written .* \d+ exercise\(s\) kept, \d+ solution\(s\) removed",
                     result.stdout)
    url, branch = course.read_repository(ROOT)
    nb = nbformat.read(out / "chapters" / "02_four_steps.ipynb", as_version=4)
    assert _badge_target(nb) == course.colab_url(url, branch, "handout/chapters/02_four_steps.ipynb")


# --------------------------------------------------------------------------- numbers vs the built site


def _site_number(page, target) -> str | None:
    """The number the built page shows for a target, or None when it shows none."""
    element = page.find(id=target.anchor)
    if element is None:
        return None
    if target.kind == "section":
        section = element if element.name == "section" else element.find_parent("section")
        heading = section.find(re.compile(r"^h[1-6]$")) if section else None
        number = heading.find(class_="section-number") if heading else None
        return number.get_text().strip().rstrip(".") if number else None
    if target.kind == "equation":
        eqno = element.find(class_="eqno")
        return re.sub(r"[^\d.()]", "", eqno.get_text()).strip("()") if eqno else None
    number = element.find(class_="caption-number")
    if number is None:
        return None
    return re.sub(r"^\D*", "", number.get_text().strip()).rstrip(".")


def test_numbers_are_those_of_the_built_site():
    """Every numbered target (section with a label, figure, equation, exercise)
    carries the number that the built website shows for it."""
    from bs4 import BeautifulSoup

    if not (SITE / "index.html").is_file():
        if IN_CI:
            pytest.fail(f"No built site at {SITE}: `make test` builds it before the tests.", pytrace=False)
        pytest.skip(f"No built site at {SITE} (make build)")
    book = editions.Book(ROOT)
    pages, failures, compared = {}, [], 0
    for label, target in sorted(book.targets.items()):
        if target.kind not in ("section", "figure", "equation", "exercise") or target.anchor is None:
            continue
        if target.doc not in pages:
            pages[target.doc] = BeautifulSoup((SITE / f"{target.doc}.html").read_text(encoding="utf-8"), "html.parser")
        shown = _site_number(pages[target.doc], target)
        compared += 1
        if shown != target.number:
            failures.append(f"{target.doc}: {target.kind} {label}: the site shows {shown}, the editions {target.number}")
    assert compared > 100, f"only {compared} targets compared"
    assert not failures, f"{len(failures)} number(s) differ from the site:\n" + "\n".join(failures[:40])


# --------------------------------------------------------------------------- the copies run


QUICK = ["colab/chapters/05_applications/03_new_models.ipynb", "colab/chapters/04_case_study/01_data.ipynb"]


def test_two_colab_notebooks_run_under_nbval():
    """Two quick Colab copies run top to bottom and print the stored outputs (as
    their sources do under `make test`)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
         "-p", "no:cacheprovider", "-q", *QUICK],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)

