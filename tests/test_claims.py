"""The prose's claims as checks: the helpers, the claims runner, and a notebook whose claim
fails when its result is changed; one notebook's claims checked with other kernels."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kt_helpers import claims, course

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import check_claims  # noqa: E402

# A quick notebook (about 10 s) whose claims the tests run with other kernels and break.
QUICK = ROOT / "chapters" / "05_applications" / "03_new_models.ipynb"


# --- the helpers -----------------------------------------------------------------------------

def test_a_claim_that_holds_prints_nothing(capsys):
    claims.claim("one is one", 1 == 1)
    claims.less("0.02 < 0.09", 0.02, 0.09)
    claims.less("0.02 + 0.05 < 0.09", 0.02, 0.09, margin=0.05)
    claims.at_least("at least", 0.9, 0.9)
    claims.between("in range", 0.5, 0.0, 1.0)
    claims.close("close", 0.50, 0.51, atol=0.02)
    assert claims.count("two of three", [True, False, True], at_least=2) is None
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: claims.claim("soft beats argmax", False, soft=0.08, argmax=0.11),
         r"Claim failed: soft beats argmax\. Evidence: soft=0\.08, argmax=0\.11\."),
        (lambda: claims.less("soft beats argmax", 0.11, 0.08),
         r"Claim failed: soft beats argmax\. Expected 0\.11 < 0\.08\."),
        (lambda: claims.less("by two points", 0.07, 0.08, margin=0.02),
         r"Expected 0\.07 < 0\.08 by more than 0\.02\."),
        (lambda: claims.at_least("recall", 0.5, 0.6), r"Expected 0\.5 >= 0\.6\."),
        (lambda: claims.between("about 2 %", 0.05, 0.01, 0.03), r"Expected 0\.05 in \[0\.01, 0\.03\]\."),
        (lambda: claims.close("about 2 %", 0.05, 0.02, atol=0.01), r"within 0\.01 of 0\.02"),
        (lambda: claims.count("on every seed", [True, False], at_least=2),
         r"Expected at least 2 of 2, got 1\."),
    ],
)
def test_a_claim_that_fails_names_itself_and_its_numbers(call, message):
    with pytest.raises(claims.ClaimFailed, match=message):
        call()


def test_claim_failed_is_an_assertion_error():
    assert issubclass(claims.ClaimFailed, AssertionError)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: claims.claim("", True), r"'statement' parameter of claim must be a non-empty string"),
        (lambda: claims.less("x", "a", 1), r"'smaller' parameter of less must be a real number\. Got 'a'"),
        (lambda: claims.between("x", 0.5, 1.0, 0.0), r"'low' parameter of between must not exceed 'high'"),
        (lambda: claims.close("x", 1, 1, atol=-1), r"'atol' parameter of close must be >= 0"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_less_holds_exactly_when_the_ordering_does(a, b):
    try:
        claims.less("a < b", a, b)
        held = True
    except claims.ClaimFailed:
        held = False
    assert held == (a < b)


def test_tensor_scalars_are_numbers():
    import torch

    claims.less("tensor", torch.tensor(0.1), torch.tensor(0.2))


# --- the runner ------------------------------------------------------------------------------

def test_kernel_env_modes():
    base = {"PATH": "/bin", "ATEN_CPU_CAPABILITY": "avx512"}
    pinned = check_claims.kernel_env("pinned", base)
    default = check_claims.kernel_env("default", base)
    native = check_claims.kernel_env("native", base)
    if check_claims.reproducibility.pinned_env({}):  # on x86-64
        assert pinned["ATEN_CPU_CAPABILITY"] == "avx2"
        assert default["ATEN_CPU_CAPABILITY"] == "default"
        assert default["MKL_CBWR"] == "COMPATIBLE"
    assert native["KT_KERNELS"] == "native"
    assert "ATEN_CPU_CAPABILITY" not in native
    with pytest.raises(ValueError, match=r"'kernels' parameter of kernel_env must be one of"):
        check_claims.kernel_env("fast", base)


def _notebook(*sources: str, claim_at: int) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[claim_at].metadata["tags"] = ["claim", "remove-cell"]
    return nb


def test_runner_reports_a_failed_claim_with_its_message(tmp_path):
    nb = _notebook("soft, argmax = 0.11, 0.08",
                   "from kt_helpers import claims\nclaims.less('soft beats argmax', soft, argmax)",
                   claim_at=1)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    outcome = check_claims.run_notebook(path, timeout=60)
    assert outcome.claims == 1
    assert not outcome.ok
    assert outcome.failure == "Claim failed: soft beats argmax. Expected 0.11 < 0.08."


def test_runner_reports_other_errors_as_such(tmp_path):
    nb = _notebook("1 / 0", "pass", claim_at=1)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    outcome = check_claims.run_notebook(path, timeout=60)
    assert outcome.failure.startswith("ZeroDivisionError")


def test_every_chapter_notebook_states_claims():
    # Appendices report no findings of their own; every chapter notebook that computes does.
    exempt = {"chapters/04_case_study/01_data.ipynb"}  # the data, no finding
    missing = []
    for path in course.notebooks(ROOT):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("appendices/") or rel in exempt:
            continue
        if check_claims.count_claims(nbformat.read(path, as_version=4)) == 0:
            missing.append(rel)
    assert not missing, f"notebooks without a claim cell: {missing}"


def test_claim_cells_are_hidden_on_the_site_and_print_nothing():
    for path in course.notebooks(ROOT):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "claim" in tags:
                assert "remove-cell" in tags, f"{path.name}: a claim cell shown on the site"
                assert cell.outputs == [], f"{path.name}: a claim cell with output: {cell.source[:80]}"


# --- real notebooks --------------------------------------------------------------------------

def test_a_claim_fails_when_its_result_is_changed(tmp_path):
    # Break one finding of the Net2Net page: pretend the network from scratch reached the
    # target as fast as the widened one. Its claim must stop the notebook.
    book = check_claims.copy_book(tmp_path)
    path = book / QUICK.relative_to(ROOT)
    nb = nbformat.read(path, as_version=4)
    index = next(i for i, c in enumerate(nb.cells)
                 if "claim" in c.metadata.get("tags", []) and "from scratch needs" in c.source)
    nb.cells.insert(index, nbformat.v4.new_code_cell('curves["scratch"] = curves["Net2Net"]'))
    nbformat.write(nb, path)
    outcome = check_claims.run_notebook(path)
    assert not outcome.ok
    assert outcome.failure.startswith("Claim failed: from scratch needs at least 5 more epochs")


def test_claims_hold_with_other_kernels():
    # ATEN_CPU_CAPABILITY=default: PyTorch's generic kernels, another order of additions,
    # other digits; the findings must not change. `make test-claims` does this for every notebook.
    [outcome] = check_claims.check([QUICK], kernels="default")
    assert outcome.claims >= 3
    assert outcome.ok, outcome.failure
