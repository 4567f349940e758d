"""Train the character-level teacher of chapter 5's "Distilling a language model" and store it.

    python benchmarks/char_teacher.py            # the shipped teacher: a few minutes on 2 CPU cores
    python benchmarks/char_teacher.py --tiny     # seconds: checks the wiring, writes nothing

The teacher (:class:`kt_helpers.text.CharGRU`, the settings of
:class:`kt_helpers.text.TeacherConfig`) learns from the training part of
Python's help text alone (:func:`kt_helpers.text.load_help_text`); the
validation and test parts are only scored. Training is deterministic: the
kernels are pinned (:mod:`kt_helpers.reproducibility`) and PyTorch runs on one
thread, so the same Python and torch give the same weights bit for bit.

Writes ``kt_helpers/results/char_teacher.pt`` (float16 weights, the vocabulary
and the configuration, about 0.36 MB) and ``kt_helpers/results/char_teacher.json``
(the configuration, the SHA-256 of the weights and of the training text, the
held-out bits per character, the run time and the machine), and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kt_helpers import reproducibility  # noqa: E402

reproducibility.pin_cpu_kernels()  # before the first tensor operation

import torch  # noqa: E402

from kt_helpers import models, text  # noqa: E402

WEIGHTS = ROOT / "kt_helpers" / text.PACKAGED_TEACHER_PATH
RECORD = ROOT / "kt_helpers" / text.PACKAGED_TEACHER_RECORD
#: Windows of this many characters score the held-out text (:func:`kt_helpers.text.bits_per_char`).
EVAL_SEQ_LEN = 128
#: The script's own target: under 3 minutes on a 2-core CPU.
WALL_TARGET_S = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few steps, nothing written")
    args = parser.parse_args()

    torch.set_num_threads(1)
    splits = text.load_help_text()
    vocab = text.CharVocab.from_text(splits.train)
    train_ids = vocab.encode(splits.train)
    config = text.TeacherConfig()
    if args.tiny:
        config = text.TeacherConfig(num_steps=3, batch_size=8, seq_len=32)
    print(f"{splits}; {vocab}; {config}")

    start = time.perf_counter()
    teacher = text.train_teacher(config, train_ids, len(vocab))
    train_s = time.perf_counter() - start
    bpc = {
        name: text.bits_per_char(teacher, vocab.encode(getattr(splits, name)), seq_len=EVAL_SEQ_LEN)
        for name in ("train", "val", "test")
    }
    wall_s = time.perf_counter() - start
    print(
        f"teacher: {models.count_parameters(teacher):,} parameters; bits per character "
        f"train {bpc['train']:.3f}, val {bpc['val']:.3f}, test {bpc['test']:.3f}; "
        f"trained in {train_s:.0f} s, {wall_s:.0f} s in all (target < {WALL_TARGET_S:.0f} s on 2 cores)"
    )
    if args.tiny:
        return
    record = {
        "config": asdict(config),
        "weights_sha256": text.state_dict_sha256(teacher),
        "vocab": vocab.chars,
        "train_sha256": text.text_sha256(splits.train),
        "split_chars": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "parameters": models.count_parameters(teacher),
        "eval_seq_len": EVAL_SEQ_LEN,
        "train_bpc": bpc["train"],
        "val_bpc": bpc["val"],
        "test_bpc": bpc["test"],
        "train_s": round(train_s, 1),
        "wall_s": round(wall_s, 1),
        "machine": reproducibility.machine_info(),
    }
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    text.save_teacher(teacher, vocab, config, WEIGHTS)
    RECORD.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {WEIGHTS.relative_to(ROOT)} ({WEIGHTS.stat().st_size / 1e6:.2f} MB) and {RECORD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
