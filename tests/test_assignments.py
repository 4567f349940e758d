"""The graded assignments (assignments/src): each builds with ``otter assign``, and its
autograder gives full marks to the solution and less to the blank student notebook.

Grading runs ``otter run`` (no Docker), which executes each notebook in a fresh
kernel of this Python; the fourteen runs take a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import build_assignments  # noqa: E402

from kt_helpers import course  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("otter") is None,
    reason="otter-grader is not installed (pip install otter-grader): the assignments cannot be built",
)

NAMES = [p.stem for p in build_assignments.masters()]
CHAPTERS = {"01", "02", "03", "04", "05", "07", "08"}


def test_one_assignment_per_chapter() -> None:
    assert {name[2:4] for name in NAMES} == CHAPTERS


@pytest.mark.parametrize("name", NAMES)
def test_master_setup_cell_is_current(name: str) -> None:
    """The setup cell installs the helper package from the repository of _config.yml
    (``python scripts/build_assignments.py --sync`` rewrites it)."""
    url, branch = course.read_repository(ROOT)
    nb = nbformat.read(build_assignments.SRC / f"{name}.ipynb", as_version=4)
    setup = [c for c in nb.cells if build_assignments.SETUP_TAG in c.metadata.get("tags", [])]
    assert [c.source for c in setup] == [build_assignments.setup_cell_source(url, branch)]


@pytest.mark.parametrize("name", NAMES)
def test_master_has_points_tests_and_rubrics(name: str) -> None:
    """Every question has points; an autograded one has hidden tests, a manual one a rubric."""
    nb = nbformat.read(build_assignments.SRC / f"{name}.ipynb", as_version=4)
    questions, current = [], None
    for cell in nb.cells:
        text = cell.source
        if cell.cell_type == "raw" and text.startswith("# BEGIN QUESTION"):
            current = {"config": text, "hidden": 0, "rubric": False}
            questions.append(current)
        elif current is not None and cell.cell_type == "code" and text.startswith("# HIDDEN"):
            current["hidden"] += 1
        elif current is not None and cell.cell_type == "markdown" and "**Rubric**" in text:
            current["rubric"] = True
    assert len(questions) >= 3
    for q in questions:
        assert "\npoints: " in q["config"], q["config"]
        if "manual: true" in q["config"]:
            assert q["rubric"], f"{name}: manual question without a rubric: {q['config']}"
        else:
            assert q["hidden"] >= 1, f"{name}: autograded question without hidden tests: {q['config']}"
    assert any("manual: true" in q["config"] for q in questions), f"{name} has no open question"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, build_assignments.Built]:
    out = tmp_path_factory.mktemp("dist")
    return {b.name: b for b in build_assignments.build_all(out=out)}


@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_is_blank_and_self_contained(built, name: str) -> None:
    b = built[name]
    assert {p.name for p in b.student.parent.iterdir()} == {f"{name}.ipynb"}
    student = nbformat.read(b.student, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "# HIDDEN" not in text and "**Rubric**" not in text
    tests = student.metadata["otter"]["tests"]
    assert tests, "the public tests travel in the notebook's metadata"
    hidden = [case for t in tests.values() for suite in t["suites"] for case in suite["cases"] if case["hidden"]]
    assert hidden == [], "hidden tests must not reach the students"


@pytest.mark.parametrize("name", NAMES)
def test_autograder_full_marks_on_solution_less_on_blank(built, name: str, tmp_path: Path) -> None:
    b = built[name]
    solution = build_assignments.grade(b.autograder_zip, b.solution, tmp_path / "solution")
    assert solution.possible > 0
    assert solution.score == solution.possible, json.dumps(solution.by_question)
    blank = build_assignments.grade(b.autograder_zip, b.student, tmp_path / "student")
    assert blank.possible == solution.possible
    assert blank.score < blank.possible, json.dumps(blank.by_question)


def test_colab_setup_writes_the_public_tests(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Colab (faked here) the setup cell writes the notebook's public tests to tests/,
    where otter's grader reads them, and otter can run them."""
    import types

    b = built["ch02_four_steps"]
    student = json.loads(b.student.read_text())
    message = types.SimpleNamespace(blocking_request=lambda *a, **k: {"ipynb": student})
    colab = types.ModuleType("google.colab")
    colab._message = message
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab._message", message)
    monkeypatch.chdir(tmp_path)
    setup = next(c for c in student["cells"] if build_assignments.SETUP_TAG in c["metadata"].get("tags", []))
    exec("".join(setup["source"]), {})
    written = sorted(p.stem for p in (tmp_path / "tests").glob("*.py"))
    assert written == sorted(student["metadata"]["otter"]["tests"])
    # The written public test of q1 fails on a blank answer and passes on a right one.
    import torch
    from otter.test_files.ok_test import OKTestFile

    q1 = str(tmp_path / "tests" / "q1.py")
    blank, right = OKTestFile.from_file(q1), OKTestFile.from_file(q1)
    blank.run({"torch": torch, "my_soft_targets": lambda z, t: None})
    right.run({"torch": torch, "my_soft_targets": lambda z, t: torch.softmax(z / t, dim=1)})
    assert not blank.passed_all
    assert right.passed_all


def _hidden_test(built, name: str, question: str, tmp_path: Path):
    """The question's full test file (hidden cases included) from the autograder zip."""
    import zipfile

    from otter.test_files.ok_test import OKTestFile

    with zipfile.ZipFile(built[name].autograder_zip) as archive:
        path = tmp_path / f"{question}.py"
        path.write_bytes(archive.read(f"tests/{question}.py"))
    return OKTestFile.from_file(str(path))


def test_hidden_tests_catch_typical_mistakes_that_public_tests_miss(built, tmp_path: Path) -> None:
    """A distillation loss without its tau^2 and a gradient with 1/tau instead of tau pass
    the public tests but not the hidden ones."""
    import torch
    import torch.nn.functional as F

    from kt_helpers import fusion, mapping, metrics, models

    def kd_without_tau2(zs, zt, y, alpha, tau):
        soft = F.kl_div(F.log_softmax(zs / tau, dim=1), F.softmax(zt / tau, dim=1), reduction="batchmean")
        return alpha * F.cross_entropy(zs, y) + (1 - alpha) * soft

    def gradient_over_tau(zs, zt, y, alpha, tau):
        q, p = F.softmax(zs / tau, dim=1), F.softmax(zt / tau, dim=1)
        hard = F.softmax(zs, dim=1) - F.one_hot(y, zs.shape[1])
        return (alpha * hard + (1 - alpha) * (q - p) / tau) / zs.shape[0]

    env = {"torch": torch, "F": F, "fusion": fusion, "mapping": mapping, "metrics": metrics, "models": models}
    for name, question, wrong in (
        ("ch02_four_steps", "q2", {"my_kd_loss": kd_without_tau2}),
        ("ch03_mathematics", "q2", {"kd_gradient": gradient_over_tau}),
    ):
        test = _hidden_test(built, name, question, tmp_path)
        test.run({**env, **wrong})
        assert test.passed_all_public, f"{name} {question}: the public tests should not catch this"
        assert not test.passed_all, f"{name} {question}: the hidden tests miss a typical mistake"
