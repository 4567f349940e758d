"""What caching only the teacher's top-k probabilities costs on the case study.

Runs ``benchmarks/distill_distributed.py`` in this process (one process, its
default settings: α = 0.5, T = 2, 20 + 30 epochs) for each cache — the whole
teacher output, its top k classes plus the mass of the others (k = 1, 2, 3),
and the teacher run online on every batch — over seeds 0, 1 and 2, and writes
the bytes stored per sample and the distilled student's test accuracy to
``benchmarks/results/distributed_topk.json`` with the machine it ran on::

    python benchmarks/distributed_topk.py

The test set only measures here; nothing is chosen on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kt_helpers import reproducibility  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "distributed_topk.json"
SEEDS = (0, 1, 2)
CACHES = {"whole": [], "top-3": ["--top-k", "3"], "top-2": ["--top-k", "2"], "top-1": ["--top-k", "1"],
          "online": ["--teacher", "online"]}


def main() -> int:
    reproducibility.pin_cpu_kernels()
    sys.path.insert(0, str(HERE))
    import distill_distributed

    start = time.perf_counter()
    rows = []
    for seed in SEEDS:
        for name, extra in CACHES.items():
            out = HERE / "results" / ".topk-run.json"
            with contextlib.redirect_stdout(io.StringIO()):
                distill_distributed.main(["--seed", str(seed), "--out", str(out), *extra])
            result = json.loads(out.read_text())
            out.unlink()
            rows.append({"cache": name, "seed": seed,
                         "bytes_per_sample": result["cache_bytes_per_sample"],
                         "full_logits_bytes_per_sample": result["full_logits_bytes_per_sample"],
                         "teacher_test_accuracy": result["teacher_test_accuracy"],
                         "student_test_correct": result["student_test_correct"],
                         "student_test_accuracy": result["student_test_accuracy"],
                         "student_seconds_per_epoch": result["student_seconds_per_epoch"]})
            print(f"seed {seed} {name:>6}: {result['student_test_accuracy']:.1%}", flush=True)
    OUT.write_text(json.dumps({
        "settings": {"alpha": 0.5, "temperature": 2.0, "teacher_epochs": 20, "epochs": 30,
                     "batch_size": 64, "lr": 3e-3, "label_fraction": 0.1, "processes": 1},
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": reproducibility.machine_info(),
    }, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
