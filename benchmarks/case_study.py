"""The case study's headline numbers (chapter 4): a CNN teaches an RNN with 10% of the labels.

    python benchmarks/case_study.py            # the full run: 5 seeds, a few minutes on 2 CPU cores
    python benchmarks/case_study.py --tiny     # seconds: checks the wiring only

For every seed: a CNN teacher trained on every training label; an RNN student
trained on the 10% labelled images alone, by distillation, by a feature hint,
by both, and on every label; the distilled and all-labels students again with
shifted copies of the images; the labels-alone and distilled students at other
fractions of labels; the "dark knowledge" experiment (a digit the student never
sees labelled); then the cost of one epoch of distillation against one plain
epoch. The experiments are :func:`kt_helpers.case_study.run_benchmark`; the
settings are the defaults of :class:`kt_helpers.case_study.CaseStudyConfig`,
chosen on the validation split in the chapter's notebooks.

Writes ``benchmarks/results/case_study.json`` (read by the chapter's results
notebook) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kt_helpers import case_study as cs  # noqa: E402

OUTPUT = ROOT / cs.RESULTS_PATH

NAMES = {
    "teacher": "CNN teacher (all labels)",
    "labelled": "RNN, labelled set alone",
    "kd": "RNN + KD (soft labels)",
    "pseudo_labels": "RNN + teacher's labels (argmax)",
    "hint": "RNN + hint (features)",
    "kd+hint": "RNN + KD + hint",
    "all_labels": "RNN, all labels",
    "kd (shifted copies)": "RNN + KD, shifted copies",
    "all_labels (shifted copies)": "RNN, all labels, shifted",
}


#: The benchmark's own target: the whole run in under 5 minutes on a 2-core CPU.
WALL_TARGET_S = 300.0


def print_summary(results: dict) -> None:
    """Print the headline numbers as a readable table."""
    print(f"\nCNN -> RNN case study: {results['label_fraction']:.0%} labels, "
          f"{results['num_seeds']} seeds {results['seeds']}")
    print(f"{'model':<30}{'test error':>11}{'std':>9}")
    for method, stats in results["methods"].items():
        print(f"{NAMES.get(method, method):<30}{stats['mean']:>11.2%}{stats['std']:>9.2%}")
    print(f"relative error reduction, KD vs labels alone: {results['relative_error_reduction']:.3f}")
    better = results["distilled_error"] <= results["full_label_student_error"]
    print(f"distilled error <= all-labels student's: {'yes' if better else 'no'}")
    sweep = {}
    for r in results["label_fraction_sweep"]:
        sweep.setdefault((r["label_fraction"], r["method"]), []).append(r["test_error"])
    print("label fraction sweep (mean test error): " + "; ".join(
        f"{f:.0%} {m} {sum(v) / len(v):.2%}" for (f, m), v in sorted(sweep.items())))
    dark = {}
    for r in results["dark_knowledge"]:
        dark.setdefault(r["student"], []).append(r)
    for student, rs in dark.items():
        n = len(rs)
        print(f"digit {cs.HIDDEN_CLASS} never labelled, {student:<20} accuracy on it "
              f"{sum(r['class_accuracy'] for r in rs) / n:6.1%}, after bias shift "
              f"{sum(r['class_accuracy_shifted'] for r in rs) / n:6.1%}")
    c = results["epoch_costs"]
    print(f"one epoch: plain {c['plain_epoch_s'] * 1e3:.0f} ms, cached KD {c['kd_epoch_s'] * 1e3:.0f} ms "
          f"(ratio {c['kd_epoch_cost_ratio']:.3f}), teacher live {c['live_epoch_s'] * 1e3:.0f} ms "
          f"(ratio {c['live_teacher_epoch_cost_ratio']:.3f}); one-off extraction "
          f"{c['extraction_s'] * 1e3:.0f} ms; medians of {c['repeats']}")
    env = results["environment"]
    print(f"wall time {env['wall_time_s']:.0f} s, CPU time {env.get('cpu_time_s', float('nan')):.0f} s "
          f"({env['threads']} thread); the whole run under {WALL_TARGET_S:.0f} s: "
          f"{'yes' if env['wall_time_s'] < WALL_TARGET_S else 'NO'}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds, 0..n-1 (default 5)")
    parser.add_argument("--repeats", type=int, default=9, help="timing repeats (default 9)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write the JSON")
    parser.add_argument("--tiny", action="store_true", help="one seed, one epoch each: a wiring check")
    args = parser.parse_args(argv)

    # One thread: the models are so small that more threads only add synchronisation
    # (and, on a busy machine, wait for each other); results then reproduce exactly.
    torch.set_num_threads(1)
    config = cs.CaseStudyConfig(seeds=tuple(range(args.seeds)))
    options = dict(repeats=args.repeats, log=print)
    if args.tiny:
        config = config.replace(seeds=(0,), teacher_epochs=1, labelled_epochs=1, transfer_epochs=1,
                                full_epochs=1, hidden_size=8)
        options = dict(repeats=1, fractions=(0.1, 0.5), augmented_epochs=1, log=None)
    results = cs.run_benchmark(config, **options)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    if not args.tiny and args.output.resolve() == OUTPUT.resolve():
        # The package ships a copy, which notebooks read where the repository is not there (Colab).
        packaged = cs.packaged_results_file()
        packaged.parent.mkdir(parents=True, exist_ok=True)
        packaged.write_text(args.output.read_text())
    if not args.tiny:
        print_summary(results)
        print(f"written to {args.output}")
    return results


if __name__ == "__main__":
    main()
