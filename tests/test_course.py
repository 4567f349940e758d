"""The course kit on a minimal book in a temporary folder: the repository URL,
Colab badges, setup cells and ``set_repository`` for a fork."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest

from kt_helpers import course

URL = "https://github.com/old-owner/old-book"

CONFIG = f"""\
# A minimal Jupyter Book configuration
title: A test book
author: Someone

repository:
  url: {URL}
  branch: main
  path_to_book: ""

launch_buttons:
  colab_url: https://colab.research.google.com
# url: {URL} (a comment outside the block, left alone)
"""

TOC = """\
format: jb-book
root: intro
chapters:
  - file: chapters/01_first
"""


def _notebook(title: str | None = "# First chapter") -> nbformat.NotebookNode:
    cells = [] if title is None else [nbformat.v4.new_markdown_cell(title)]
    cells += [nbformat.v4.new_markdown_cell("Some prose."), nbformat.v4.new_code_cell("x = 1")]
    return nbformat.v4.new_notebook(cells=cells)


@pytest.fixture()
def book(tmp_path: Path) -> Path:
    (tmp_path / "_config.yml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "_toc.yml").write_text(TOC, encoding="utf-8")
    (tmp_path / "chapters").mkdir()
    nbformat.write(_notebook(), tmp_path / "chapters" / "01_first.ipynb")
    (tmp_path / "appendices" / "sub").mkdir(parents=True)
    nbformat.write(_notebook("# Appendix"), tmp_path / "appendices" / "sub" / "a.ipynb")
    checkpoints = tmp_path / "chapters" / ".ipynb_checkpoints"
    checkpoints.mkdir()
    nbformat.write(_notebook(), checkpoints / "01_first-checkpoint.ipynb")
    return tmp_path


def _tagged(nb, tag):
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


# --- reading the repository ----------------------------------------------------------------------


def test_find_book_root_searches_upwards(book):
    assert course.find_book_root(book / "chapters") == book.resolve()


def test_find_book_root_without_a_book(tmp_path):
    with pytest.raises(ValueError, match=r"No book found.*_config.yml and _toc.yml"):
        course.find_book_root(tmp_path)


def test_read_repository(book):
    assert course.read_repository(book) == (URL, "main")


def test_read_repository_strips_a_trailing_slash_and_defaults_the_branch(book):
    (book / "_config.yml").write_text(f"repository:\n  url: {URL}/\n", encoding="utf-8")
    assert course.read_repository(book) == (URL, "main")


def test_read_repository_needs_a_url(book):
    (book / "_config.yml").write_text("title: no repository\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"must set repository.url"):
        course.read_repository(book)


def test_read_repository_rejects_a_url_that_is_not_github(book):
    (book / "_config.yml").write_text("repository:\n  url: https://gitlab.com/a/b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'url'.*https://github.com/OWNER/NAME\. Got 'https://gitlab.com/a/b'"):
        course.read_repository(book)


def test_notebooks_lists_chapters_and_appendices_without_checkpoints(book):
    assert course.notebooks(book) == [
        book / "appendices" / "sub" / "a.ipynb",
        book / "chapters" / "01_first.ipynb",
    ]


# --- badges and setup cells ----------------------------------------------------------------------


@pytest.mark.parametrize("url", [URL, URL + "/", URL + ".git"])
def test_colab_url(url):
    assert course.colab_url(url, "dev", "chapters/01_first.ipynb") == (
        "https://colab.research.google.com/github/old-owner/old-book/blob/dev/chapters/01_first.ipynb"
    )


@pytest.mark.parametrize(
    "url", ["http://github.com/a/b", "https://github.com/a", "github.com/a/b", "https://github.com/a/b/c"]
)
def test_colab_url_rejects_a_bad_url(url):
    with pytest.raises(ValueError, match=rf"'url' of the repository.*Got '{url}' instead"):
        course.colab_url(url, "main", "x.ipynb")


def test_badge_markdown_links_the_colab_url_of_the_colab_edition():
    target = course.colab_url(URL, "main", "colab/chapters/01_first.ipynb")
    assert course.badge_markdown(URL, "main", "chapters/01_first.ipynb") == (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"
    )
    # edition=None: the notebook itself (a student copy's badge names its own path)
    itself = course.colab_url(URL, "main", "student/chapters/01_first.ipynb")
    assert course.badge_markdown(URL, "main", "student/chapters/01_first.ipynb", edition=None).endswith(f"({itself})")


def test_setup_source_installs_from_the_repository_only_when_missing(monkeypatch):
    source = course.setup_source(URL, "dev")
    assert f'"kt-helpers @ git+{URL}@dev"' in source
    compile(source, "<setup cell>", "exec")  # valid Python

    def refuse(*args, **kwargs):  # kt_helpers is installed here: pip must not run
        raise AssertionError("the setup cell ran pip although kt_helpers is installed")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(source, {})


def test_setup_source_rejects_a_bad_url():
    with pytest.raises(ValueError, match=r"'url'.*Got 'not a url'"):
        course.setup_source("not a url", "main")


# --- sync_notebook -------------------------------------------------------------------------------


def test_sync_notebook_places_badge_and_setup_after_the_title():
    nb = _notebook()
    assert course.sync_notebook(nb, "chapters/01_first.ipynb", URL, "main") is True
    sources = [c.source for c in nb.cells]
    assert sources[0] == "# First chapter"
    assert sources[1] == course.badge_markdown(URL, "main", "chapters/01_first.ipynb")
    assert sources[2] == course.setup_source(URL, "main")
    assert sources[3:] == ["Some prose.", "x = 1"]
    assert [c.cell_type for c in nb.cells[1:3]] == ["markdown", "code"]
    assert nb.cells[1].metadata.tags == [course.BADGE_TAG, "remove-cell"]
    assert nb.cells[2].metadata.tags == [course.SETUP_TAG, "remove-cell"]
    nbformat.validate(nb)


def test_sync_notebook_without_a_title_puts_the_badge_first():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    course.sync_notebook(nb, "x.ipynb", URL, "main")
    assert _tagged(nb, course.BADGE_TAG)[0] is nb.cells[0]
    assert _tagged(nb, course.SETUP_TAG)[0] is nb.cells[1]


def test_sync_notebook_is_idempotent():
    nb = _notebook()
    course.sync_notebook(nb, "chapters/01_first.ipynb", URL, "main")
    nb.cells[2].outputs = []
    nb.cells[2].execution_count = 1  # the setup cell was run
    before = nbformat.writes(nb)
    assert course.sync_notebook(nb, "chapters/01_first.ipynb", URL, "main") is False
    assert nbformat.writes(nb) == before  # same cells, same ids, outputs kept


def test_sync_notebook_updates_the_cells_in_place_for_a_new_url():
    nb = _notebook()
    course.sync_notebook(nb, "chapters/01_first.ipynb", URL, "main")
    ids = [c.id for c in nb.cells[1:3]]
    new_url = "https://github.com/someone/fork"
    assert course.sync_notebook(nb, "chapters/01_first.ipynb", new_url, "spring") is True
    assert len(nb.cells) == 5  # updated, not duplicated
    assert [c.id for c in nb.cells[1:3]] == ids
    assert "someone/fork/blob/spring/colab/chapters/01_first.ipynb" in nb.cells[1].source
    assert f"git+{new_url}@spring" in nb.cells[2].source


def test_sync_notebook_moves_misplaced_cells_back_after_the_title():
    nb = _notebook()
    course.sync_notebook(nb, "chapters/01_first.ipynb", URL, "main")
    nb.cells = nb.cells[:1] + nb.cells[3:] + nb.cells[1:3]  # badge and setup at the end
    assert course.sync_notebook(nb, "chapters/01_first.ipynb", URL, "main") is True
    assert [c.source for c in nb.cells][3:] == ["Some prose.", "x = 1"]


def test_sync_writes_every_notebook_once(book):
    changed = course.sync(book)
    assert sorted(changed) == course.notebooks(book)
    assert course.sync(book) == []
    nb = nbformat.read(book / "appendices" / "sub" / "a.ipynb", as_version=4)
    assert "old-owner/old-book/blob/main/colab/appendices/sub/a.ipynb" in nb.cells[1].source


# --- set_repository ------------------------------------------------------------------------------


def test_set_repository_rewrites_only_the_repository_block(book):
    new_url = "https://github.com/someone/fork"
    changed = course.set_repository(new_url, "spring", root=book)
    text = (book / "_config.yml").read_text(encoding="utf-8")
    expected = CONFIG.replace(f"  url: {URL}\n  branch: main", f"  url: {new_url}\n  branch: spring")
    assert text == expected  # the comment that mentions the old URL is untouched
    assert course.read_repository(book) == (new_url, "spring")
    assert sorted(changed) == course.notebooks(book)  # no README etc. in this book
    for path in course.notebooks(book):
        nb = nbformat.read(path, as_version=4)
        rel = path.relative_to(book).as_posix()
        assert _tagged(nb, course.BADGE_TAG)[0].source == course.badge_markdown(new_url, "spring", rel)
        assert _tagged(nb, course.SETUP_TAG)[0].source == course.setup_source(new_url, "spring")


def test_set_repository_rewrites_the_copies_of_the_url(book):
    copies = {
        "README.md": f"pip install 'kt-helpers @ git+{URL}'\nsee also https://github.com/other/project\n",
        "pyproject.toml": f'[project.urls]\nHomepage = "{URL}"\n',
        "CITATION.cff": f'repository-code: "{URL}"\n',
    }
    assert set(copies) == set(course.URL_COPIES)
    for name, text in copies.items():
        (book / name).write_text(text, encoding="utf-8")
    new_url = "https://github.com/someone/fork"
    changed = course.set_repository(new_url + "/", "spring", root=book)
    assert [p.name for p in changed if p.suffix != ".ipynb"] == list(course.URL_COPIES)
    for name, text in copies.items():
        assert (book / name).read_text(encoding="utf-8") == text.replace(URL, new_url), name
    # setting the same repository again changes no copy
    assert [p for p in course.set_repository(new_url, "spring", root=book) if p.suffix != ".ipynb"] == []


def test_set_repository_adds_a_missing_branch(book):
    (book / "_config.yml").write_text(f"repository:\n  url: {URL}\ntitle: x\n", encoding="utf-8")
    course.set_repository("https://github.com/someone/fork", "spring", root=book)
    assert course.read_repository(book) == ("https://github.com/someone/fork", "spring")
    assert (book / "_config.yml").read_text(encoding="utf-8").endswith("title: x\n")


def test_set_repository_rejects_a_bad_url_and_changes_nothing(book):
    with pytest.raises(ValueError, match=r"'url' of the repository.*Got 'https://example.com/x'"):
        course.set_repository("https://example.com/x", root=book)
    assert (book / "_config.yml").read_text(encoding="utf-8") == CONFIG


def test_set_repository_rejects_a_bad_branch(book):
    with pytest.raises(ValueError, match=r"'branch' must be a git branch name\. Got 'a b'"):
        course.set_repository(URL, "a b", root=book)


def test_set_repository_needs_a_repository_block(book):
    (book / "_config.yml").write_text("title: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no 'repository:' block"):
        course.set_repository(URL, root=book)


def test_command_line_set_repo_and_sync(book, monkeypatch, capsys):
    monkeypatch.chdir(book / "chapters")
    assert course.main(["set-repo", "https://github.com/someone/fork", "--branch", "dev"]) == 0
    assert "2 notebook(s) updated" in capsys.readouterr().out
    assert course.main(["sync"]) == 0
    assert "0 notebook(s) updated" in capsys.readouterr().out
    assert course.read_repository(book) == ("https://github.com/someone/fork", "dev")
