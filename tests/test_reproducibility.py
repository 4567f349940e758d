"""The pinned CPU kernels: what is pinned, that the tests and the notebook kernels run
under it, and that the arithmetic it pins gives the book's exact numbers."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from kt_helpers import course, reproducibility

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import execute_notebooks  # noqa: E402

X86 = platform.machine().lower() in ("x86_64", "amd64")
HAS_AVX2 = "avx2" in reproducibility.cpu_flags()
CAPABILITY = {"avx2": "AVX2", "default": "DEFAULT", "avx512": "AVX512"}


def test_pinned_env_adds_the_three_variables_on_x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    env = reproducibility.pinned_env({"PATH": "/bin"})
    assert env == {"PATH": "/bin", **reproducibility.PINNED_ENV}


def test_pinned_env_keeps_a_value_set_outside(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    env = reproducibility.pinned_env({"ATEN_CPU_CAPABILITY": "default"})
    assert env["ATEN_CPU_CAPABILITY"] == "default"
    assert env["MKL_CBWR"] == "COMPATIBLE"


@pytest.mark.parametrize("machine", ["arm64", "aarch64"])
def test_nothing_is_pinned_off_x86(monkeypatch, machine):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert reproducibility.pinned_env({}) == {}
    environ: dict[str, str] = {}
    assert reproducibility.pin_cpu_kernels(environ) == {}
    assert environ == {}


def test_native_switch_turns_pinning_off(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    environ = {reproducibility.SWITCH: "native"}
    assert reproducibility.pin_cpu_kernels(environ) == {}
    assert environ == {reproducibility.SWITCH: "native"}


def test_pin_cpu_kernels_sets_and_reports(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    environ = {"MKL_CBWR": "AUTO"}
    assert reproducibility.pin_cpu_kernels(environ) == {
        "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AUTO",
    }


@pytest.mark.skipif(not (X86 and HAS_AVX2), reason="the pinning names x86 AVX2 kernels")
def test_these_tests_run_with_the_pinned_kernels():
    # Set by the root conftest.py before torch computed anything.
    for key in reproducibility.PINNED_ENV:
        assert key in os.environ, f"{key} is not set in the test process"
    assert torch.backends.cpu.get_cpu_capability() == CAPABILITY[os.environ["ATEN_CPU_CAPABILITY"]]


@pytest.mark.skipif(not (X86 and HAS_AVX2), reason="the pinning names x86 AVX2 kernels")
def test_notebook_kernels_run_with_the_pinned_kernels(tmp_path):
    # The kernel nbval and the execute script start inherits this process's environment,
    # and the notebook's own setup cell pins again (keeping what is set).
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(course.setup_source(*course.read_repository(ROOT))),
        nbformat.v4.new_code_cell(
            "import os, torch\n"
            "print(torch.backends.cpu.get_cpu_capability(), os.environ['ONEDNN_MAX_CPU_ISA'], "
            "os.environ['MKL_CBWR'])"
        ),
    ]
    path = tmp_path / "probe.ipynb"
    execute_notebooks.notebook_client(nb, path, timeout=120).execute()
    printed = nb.cells[1].outputs[0]["text"].split()
    expected = CAPABILITY[os.environ["ATEN_CPU_CAPABILITY"]]
    assert printed == [expected, os.environ["ONEDNN_MAX_CPU_ISA"], os.environ["MKL_CBWR"]]


def test_every_setup_cell_pins_before_anything_else_runs():
    source = course.setup_source(*course.read_repository(ROOT))
    assert "reproducibility.pin_cpu_kernels()" in source
    for path in course.notebooks(ROOT):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and course.SETUP_TAG in code[0].metadata.get("tags", []), (
            f"{path.name}: the first code cell must be the generated setup cell"
        )
        assert code[0].source == source, f"{path.name}: stale setup cell (python -m kt_helpers.course sync)"


def test_execute_script_runs_kernels_pinned(monkeypatch):
    # main() pins os.environ before any kernel starts; the kernels inherit it.
    seen = {}
    monkeypatch.setattr(execute_notebooks, "execute", lambda path, timeout: seen.update(os.environ) or 1.0)
    for key in reproducibility.PINNED_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(execute_notebooks, "ROOT", ROOT)
    times = ROOT / "benchmarks" / "results" / "notebook_times.json"
    before = times.read_text()
    try:
        execute_notebooks.main([str(ROOT / "chapters" / "05_applications" / "03_new_models.ipynb")])
    finally:
        times.write_text(before)
    if X86:
        for key, value in reproducibility.PINNED_ENV.items():
            assert seen[key] == value


def test_machine_info_names_what_results_depend_on():
    info = reproducibility.machine_info()
    for key in ("processor", "vector_instructions", "torch_cpu_capability", "pinned_env",
                "torch_threads", "torch", "numpy", "python"):
        assert key in info
    assert info["torch"] == torch.__version__


# The weights of a short, fixed training run under the pinned kernels, as computed when the
# book was last executed. Another x86-64 processor with AVX2 must give the same bits; if this
# test fails there, so will nbval, and the stored digits do not reproduce on that processor
# (the claims, `make test-claims`, are then what must hold).
FINGERPRINT_SCRIPT = r"""
import hashlib, torch
from kt_helpers import data, models, train
splits = data.make_splits(0.1, seed=0)
out = []
for make in (models.DigitCNN, models.RowRNN):
    train.seed_everything(0)
    model = make()
    train.fit(model, splits.X_train[:512], splits.y_train[:512], num_epochs=2)
    out.append(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:16])
print(torch.backends.cpu.get_cpu_capability(), *out)
"""
FINGERPRINT = "AVX2 0a68e86b52134915 d6b212bb11646de7"


@pytest.mark.skipif(not (X86 and HAS_AVX2), reason="the pinning names x86 AVX2 kernels")
def test_pinned_training_gives_the_books_bits():
    env = reproducibility.pinned_env({k: v for k, v in os.environ.items()
                                      if k not in reproducibility.PINNED_ENV})
    out = subprocess.run([sys.executable, "-c", FINGERPRINT_SCRIPT], env=env, capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout.strip()
    assert out == FINGERPRINT, (
        f"The pinned kernels give other weights on this processor ({reproducibility.machine_info()['processor']}): "
        f"{out!r} instead of {FINGERPRINT!r}."
    )
