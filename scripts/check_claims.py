"""Re-execute the book's notebooks and check the claims its prose makes, not its digits.

    python scripts/check_claims.py                              # every notebook, pinned kernels
    python scripts/check_claims.py --kernels default            # PyTorch's generic kernels
    python scripts/check_claims.py chapters/08_faq.ipynb        # some notebooks

Each notebook runs top to bottom in a fresh kernel, inside a temporary copy of
the book (the committed notebooks stay untouched). Its cells tagged ``claim``
state, with a tolerance, what the prose says about the results
(:mod:`kt_helpers.claims`); a claim that does not hold stops the notebook with
:class:`~kt_helpers.claims.ClaimFailed`, which this script reports with the
claim and its numbers. No output is compared with the stored one: this is the
check that holds where digits cannot be the same (another processor, Apple
silicon, a GPU, another torch version).

``--kernels`` chooses the arithmetic:

- ``pinned`` (default): the book's pinned CPU kernels (:mod:`kt_helpers.reproducibility`);
- ``default``: ``ATEN_CPU_CAPABILITY=default``, PyTorch's generic kernels, which add in
  another order: it simulates a processor whose arithmetic differs;
- ``native``: nothing pinned: the kernels this processor chooses by itself.

Exits with 1 when a claim fails, a notebook fails, or a notebook has no claim
(``--allow-no-claims`` lists those instead), 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from execute_notebooks import notebook_client  # noqa: E402
from kt_helpers import cache, course, reproducibility  # noqa: E402

#: Cell tag of a claim: a check of what the prose says about a result.
CLAIM_TAG = "claim"
#: What the temporary copy of the book leaves out: environments, builds, history.
IGNORE = shutil.ignore_patterns(
    ".venv", "_build", ".git", "student", "__pycache__", ".ipynb_checkpoints",
    ".pytest_cache", ".hypothesis", "*.egg-info", "build", "colab",
)
KERNELS = ("pinned", "default", "native")


@dataclass
class Outcome:
    """What one notebook's run showed."""

    notebook: str
    seconds: float
    claims: int
    failure: str | None = None  #: the failed claim's message, or the notebook's error

    @property
    def ok(self) -> bool:
        return self.failure is None


def kernel_env(kernels: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a notebook kernel runs with for ``kernels`` (see the module docstring)."""
    if kernels not in KERNELS:
        raise ValueError(
            f"The 'kernels' parameter of kernel_env must be one of {', '.join(KERNELS)}. "
            f"Got {kernels!r} instead."
        )
    env = dict(os.environ if environ is None else environ)
    for key in reproducibility.PINNED_ENV:
        env.pop(key, None)
    env.pop(reproducibility.SWITCH, None)
    if kernels == "native":
        env[reproducibility.SWITCH] = "native"  # the setup cell then pins nothing
        return env
    env = reproducibility.pinned_env(env)
    if kernels == "default":
        env["ATEN_CPU_CAPABILITY"] = "default"
    return env


def count_claims(nb: nbformat.NotebookNode) -> int:
    """How many code cells of ``nb`` are tagged ``claim``."""
    return sum(
        1 for c in nb.cells
        if c.cell_type == "code" and CLAIM_TAG in c.get("metadata", {}).get("tags", [])
    )


def copy_book(dest: Path) -> Path:
    """A copy of the book's sources (no .venv, builds or git) under ``dest``."""
    book = dest / "book"
    shutil.copytree(ROOT, book, ignore=IGNORE, symlinks=True)
    return book


def run_notebook(path: Path, *, timeout: int = 600, label: str | None = None) -> Outcome:
    """Execute the notebook at ``path`` (in place: pass a copy) and report its claims."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    claims = count_claims(nb)
    client = notebook_client(nb, path, timeout)
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except CellExecutionError as exc:
        if exc.ename == "ClaimFailed":
            failure = exc.evalue
        else:
            failure = f"{exc.ename}: {exc.evalue}"[:500]
    except (CellTimeoutError, DeadKernelError) as exc:
        failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}"[:500]
    return Outcome(label or path.name, time.perf_counter() - start, claims, failure)


def check(notebooks: list[Path], *, kernels: str = "pinned", timeout: int = 600) -> list[Outcome]:
    """Run ``notebooks`` (paths in the book) with ``kernels`` in a temporary copy; print each outcome."""
    env = kernel_env(kernels)
    saved = dict(os.environ)
    outcomes = []
    print(f"Claims of {len(notebooks)} notebook(s), kernels: {kernels} "
          f"(ATEN_CPU_CAPABILITY={env.get('ATEN_CPU_CAPABILITY')!r})", flush=True)
    try:
        os.environ.clear()
        os.environ.update(env)  # kernels inherit it
        with tempfile.TemporaryDirectory(prefix="kt-claims-") as tmp:
            os.environ[cache.DIR_VARIABLE] = str(Path(tmp) / "cache")  # an empty training cache
            book = copy_book(Path(tmp))
            for original in notebooks:
                rel = original.resolve().relative_to(ROOT).as_posix()
                outcome = run_notebook(book / rel, timeout=timeout, label=rel)
                outcomes.append(outcome)
                status = "ok" if outcome.ok else "FAILED"
                print(f"  {outcome.seconds:6.1f} s  {outcome.claims:3d} claims  {status:6s}  {rel}",
                      flush=True)
                if outcome.failure:
                    print(f"      {outcome.failure}", flush=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of the book")
    parser.add_argument("--kernels", choices=KERNELS, default="pinned")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--allow-no-claims", action="store_true",
                        help="do not fail on a notebook that states no claim")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    notebooks = [p.resolve() for p in args.notebooks] or course.notebooks(ROOT)
    outcomes = check(notebooks, kernels=args.kernels, timeout=args.timeout)
    failed = [o for o in outcomes if not o.ok]
    # Appendices hold no findings of their own; every chapter notebook states its claims.
    claimless = [o for o in outcomes if o.claims == 0 and not o.notebook.startswith("appendices/")]
    held = sum(o.claims for o in outcomes if o.ok)
    print(f"\n{held} claims held in {len(outcomes) - len(failed)} notebook(s); "
          f"{len(failed)} notebook(s) failed; kernels: {args.kernels}.")
    if claimless:
        print("Notebooks that state no claim: " + ", ".join(o.notebook for o in claimless))
    return 1 if failed or (claimless and not args.allow_no_claims) else 0


if __name__ == "__main__":
    sys.exit(main())
