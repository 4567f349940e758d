"""Which CPU-kernel settings change the book's arithmetic: the experiment behind the pinning.

    python benchmarks/kernel_knobs.py

Trains a DigitCNN and a RowRNN for a few epochs (the book's two models, with the
book's training loop) in a fresh process for each setting of the variables
that choose CPU kernels, and prints a fingerprint of the final weights (and of
a NumPy matrix product and sum, for NumPy's own dispatch and OpenBLAS). A
variable matters on this processor when setting it alone changes a
fingerprint. ``kt_helpers.reproducibility`` pins those that change the
weights, and turns oneDNN off (it has no cross-processor reproducible mode). Writes ``benchmarks/results/kernel_knobs.json`` with the machine
(:func:`kt_helpers.reproducibility.machine_info`) and, for each setting, its
fingerprints and run time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kt_helpers import reproducibility  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "kernel_knobs.json"

PROBE = r"""
import hashlib
import os
import numpy as np
import torch
from kt_helpers import data, models, train

def digest(parts):
    return hashlib.sha256(b"".join(parts)).hexdigest()[:12]

splits = data.make_splits(0.1, seed=0)
out = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
for name, make in (("cnn", models.DigitCNN), ("rnn", models.RowRNN)):
    train.seed_everything(0)
    if os.environ.get("PROBE_ONEDNN") == "off":
        torch.backends.mkldnn.enabled = False
    model = make()
    train.fit(model, splits.X_train, splits.y_train, num_epochs=3)
    out[name] = digest(p.detach().numpy().tobytes() for p in model.parameters())
a = np.random.default_rng(0).standard_normal((300, 64))
out["numpy"] = digest([(a @ a.T).tobytes(), np.exp(a).sum(axis=0).tobytes()])
print(repr(out))
"""

#: Each setting: a name and the variables it sets (on top of an environment without any).
#: KT_KERNELS=native keeps seed_everything from pinning anything itself (it turns oneDNN off).
NATIVE = {reproducibility.SWITCH: "native"}
SETTINGS: list[tuple[str, dict[str, str]]] = [
    ("nothing set (this processor's own kernels)", NATIVE),
    ("ATEN_CPU_CAPABILITY=avx2", {**NATIVE, "ATEN_CPU_CAPABILITY": "avx2"}),
    ("ATEN_CPU_CAPABILITY=default", {**NATIVE, "ATEN_CPU_CAPABILITY": "default"}),
    ("ONEDNN_MAX_CPU_ISA=AVX2", {**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("oneDNN off (torch.backends.mkldnn.enabled = False)", {**NATIVE, "PROBE_ONEDNN": "off"}),
    ("MKL_CBWR=AVX2", {**NATIVE, "MKL_CBWR": "AVX2"}),
    ("MKL_CBWR=COMPATIBLE", {**NATIVE, "MKL_CBWR": "COMPATIBLE"}),
    ("NumPy without AVX-512 (NPY_DISABLE_CPU_FEATURES)",
     {**NATIVE, "NPY_DISABLE_CPU_FEATURES": "AVX512F,AVX512CD,AVX512_SKX,AVX512_CLX,AVX512_CNL,AVX512_ICL"}),
    ("the book's pinning (oneDNN off)", dict(reproducibility.PINNED_ENV)),
    ("the book's pinning, two threads", dict(reproducibility.PINNED_ENV)),
]


def run(env_vars: dict[str, str], *, two_threads: bool = False) -> tuple[dict, float]:
    env = {k: v for k, v in os.environ.items()
           if k not in reproducibility.PINNED_ENV
           and k not in ("NPY_DISABLE_CPU_FEATURES", reproducibility.SWITCH, "PROBE_ONEDNN")}
    env.update(env_vars)
    code = PROBE.replace("seed_everything(0)", "seed_everything(0, num_threads=2)") if two_threads else PROBE
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    return eval(out), time.perf_counter() - start  # noqa: S307 (our own probe's repr)


def main() -> int:
    rows = []
    print(f"{'setting':58s} {'capability':10s} {'cnn':12s} {'rnn':12s} {'numpy':12s} time")
    for name, env_vars in SETTINGS:
        out, seconds = run(env_vars, two_threads="two threads" in name)
        rows.append({"setting": name, "env": env_vars, **out, "seconds": round(seconds, 1)})
        print(f"{name:58s} {out['torch_cpu_capability']:10s} {out['cnn']:12s} {out['rnn']:12s} "
              f"{out['numpy']:12s} {seconds:4.1f} s", flush=True)
    base = rows[0]
    print("\nChanges the weights on this processor (alone):")
    for row in rows[1:8]:
        changed = [k for k in ("cnn", "rnn", "numpy") if row[k] != base[k]]
        print(f"  {row['setting']:58s} {', '.join(changed) or 'nothing'}")
    RESULTS.write_text(json.dumps({"machine": reproducibility.machine_info(), "settings": rows},
                                  indent=2) + "\n")
    print(f"\nWritten to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
