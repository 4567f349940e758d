"""Every notebook is committed executed: with outputs, in order, without errors.

nbval re-executes notebooks and compares outputs, but it passes a notebook that
has no stored outputs at all; these checks close that gap.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from kt_helpers import course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = course.notebooks(ROOT)
IDS = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def test_the_book_has_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_code_cell_was_executed_in_order(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in _code_cells(nb)]
    assert counts, f"{path.name} has no code cells"
    assert None not in counts, f"{path.name}: {counts.count(None)} code cells were never executed"
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name} was not executed top to bottom in one fresh kernel: {counts}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_stored_error_or_warning(path):
    nb = nbformat.read(path, as_version=4)
    for cell in _code_cells(nb):
        for output in cell.outputs:
            assert output.output_type != "error", f"{path.name}: stored error {output.get('ename')}"
            if output.output_type == "stream" and output.name == "stderr":
                assert not re.search(r"\b\w*Warning\b", output.text), (
                    f"{path.name}: a warning is stored in the outputs:\n{output.text}"
                )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_shows_results(path):
    """Most code cells of a chapter produce visible output (a number, a table, a figure)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in _code_cells(nb) if "colab-setup" not in c.metadata.get("tags", [])]
    with_output = [c for c in cells if c.outputs]
    assert len(with_output) >= max(1, len(cells) // 3), (
        f"{path.name}: only {len(with_output)} of {len(cells)} code cells have stored outputs"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_clean_metadata(path):
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state"
    for cell in nb.cells:
        assert "execution" not in cell.metadata, f"{path.name} stores execution timestamps"


def _run_time_pattern():
    import importlib.util

    spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RUN_TIME


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_run_time_sentence_is_the_measured_one(path):
    """Each notebook tells its run time in one sentence whose number the execute
    script wrote; for the chapters it is the time in notebook_times.json."""
    import json

    nb = nbformat.read(path, as_version=4)
    rel = path.relative_to(ROOT).as_posix()
    pattern = _run_time_pattern()
    found = [m for c in nb.cells if c.cell_type == "markdown" for m in pattern.finditer(c.source)]
    if rel == "appendices/instructors.ipynb":
        return  # a guide to read, not a computation: it states no run time
    assert len(found) == 1, f"{rel}: expected one '**Run time:** N s on a K-core CPU when the book was last executed'"
    hand_typed = [c.source for c in nb.cells if c.cell_type == "markdown"
                  and re.search(r"(?i)expected run time|\*\*run time\*\*:", c.source)]
    assert not hand_typed, f"{rel}: a run time typed by hand"
    times = json.loads((ROOT / "benchmarks" / "results" / "notebook_times.json").read_text())
    if rel in times:
        stated = int(re.search(r"\*\*Run time:\*\* (\d+) s", found[0].group(0)).group(1))
        assert stated == max(1, round(times[rel])), f"{rel}: states {stated} s, measured {times[rel]} s"


# --- figures: captioned, named, numbered and referred to -------------------------------------

FIGURE_NAME = re.compile(r"fig-[a-z0-9]+(?:-[a-z0-9]+)*")


def _figure_cells():
    """``(notebook, cell index, cell)`` of every code cell whose outputs hold an image."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and any(
                "image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {})
                for o in cell.get("outputs", [])
            ):
                yield path, i, cell


def test_every_figure_has_a_caption_and_a_name():
    """myst-nb makes a cell's image a numbered figure (Fig. N.M) from its metadata
    ``mystnb.figure`` {caption, name}; the prose refers to it with {numref}."""
    failures, names = [], {}
    figures = list(_figure_cells())
    assert figures, "the book has no figure"
    for path, i, cell in figures:
        where = f"{path.relative_to(ROOT)} cell {i}"
        displays = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
        figure = cell.metadata.get("mystnb", {}).get("figure", {})
        if len(displays) != 1:
            failures.append(f"{where}: {len(displays)} display outputs; one figure per cell")
        if not str(figure.get("caption", "")).strip():
            failures.append(f"{where}: no caption (metadata mystnb.figure.caption)")
        name = str(figure.get("name", ""))
        if not FIGURE_NAME.fullmatch(name):
            failures.append(f"{where}: name {name!r} is not of the form fig-chN-what")
        elif name in names:
            failures.append(f"{where}: name {name} is also used by {names[name]}")
        names[name] = where
    assert not failures, "\n".join(failures)


def test_every_figure_is_referred_to_in_the_text():
    text = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        text += [c.source for c in nb.cells if c.cell_type == "markdown"]
    text += [p.read_text(encoding="utf-8") for p in ROOT.glob("**/*.md")
             if not {".venv", "_build", "student", ".pytest_cache"} & set(p.relative_to(ROOT).parts)]
    cited = set(re.findall(r"\{numref\}`(?:[^`<]*<)?(fig-[a-z0-9-]+)>?`", "\n".join(text)))
    missing = [
        f"{path.relative_to(ROOT)} cell {i}: {cell.metadata['mystnb']['figure']['name']}"
        for path, i, cell in _figure_cells()
        if cell.metadata.get("mystnb", {}).get("figure", {}).get("name") not in cited
    ]
    assert not missing, "figures never referred to with {numref}:\n" + "\n".join(missing)


# --- what nbval does not compare ---------------------------------------------------------------


def _sanitize(text: str) -> str:
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "tests" / "nbval_sanitize.cfg", encoding="utf-8")
    for section in config.sections():
        text = re.sub(config[section]["regex"], config[section]["replace"], text)
    return text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("one epoch: 81 ms", "one epoch: TIME"),
        ("teacher 15.158 ms, student 0.070 ms", "teacher TIME, student TIME"),
        ("total CPU run time of the notebooks: 382 s, longest: 43 s", "total CPU run time of the notebooks: TIME, longest: TIME"),
        ("3s in the labelled set: 0", "3s in the labelled set: 0"),  # the digit, not a time
        ("accuracy on 3s", "accuracy on 3s"),
        ("test error 2.1%, 5 seeds", "test error 2.1%, 5 seeds"),
    ],
)
def test_nbval_masks_measured_times_and_nothing_else(text, expected):
    assert _sanitize(text) == expected
