"""The case study's headline numbers (chapter 4): a CNN teaches an RNN, measured against controls.

    python benchmarks/case_study.py                 # the full run: both designs, 5 seeds, minutes on 2 CPU cores
    python benchmarks/case_study.py --part honest   # only the honest design (the other keys are kept)
    python benchmarks/case_study.py --tiny          # seconds: checks the wiring only

Two designs. The **honest** one (:func:`kt_helpers.protocols.run_honest`,
keys ``headline`` and ``honest``): the CNN teacher learns from a labelled
split disjoint from the student's labelled and transfer images, so it never
sees a label of a transfer image; α and T are chosen on the validation split
over three seeds; every student is compared with controls trained with the
same images, schedule, initial weights and batch order (the teacher's argmax,
that argmax smoothed to the soft labels' entropy, the true labels, labels
alone; for the hint, an untrained teacher's features and the raw pixels), at
three transfer-set sizes over five seeds, as paired differences with 95 %
t-intervals; and Hinton et al.'s omitted class. The **label-relay** contrast
(the first design, every other key, summarised under ``label_relay``): the
teacher is trained on every training label, those of the transfer images
included. For every seed of it: a CNN teacher trained on every training label; an RNN student
trained on the 10% labelled images alone, by distillation, by a feature hint,
by both, and on every label; the distilled and all-labels students again with
shifted copies of the images; the labels-alone and distilled students at other
fractions of labels; the "dark knowledge" experiment (a digit the student never
sees labelled); then the cost of one epoch of distillation against one plain
epoch. The experiments are :func:`kt_helpers.case_study.run_benchmark`; the
settings are the defaults of :class:`kt_helpers.case_study.CaseStudyConfig`,
chosen on the validation split in the chapter's notebooks.

Nothing is chosen on the test set. Writes ``benchmarks/results/case_study.json`` (read by the chapter's results
notebook) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kt_helpers import reproducibility  # noqa: E402

reproducibility.pin_cpu_kernels()  # before the first tensor operation

from kt_helpers import case_study as cs  # noqa: E402
from kt_helpers import protocols  # noqa: E402

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


#: The benchmark's own target: the whole run in under 10 minutes on a 2-core CPU.
WALL_TARGET_S = 600.0

#: The keys of the label-relay design summarised next to the honest headline.
RELAY_SUMMARY = ("teacher_error", "student_error", "distilled_error", "full_label_student_error")


def relay_summary(results: dict) -> dict:
    """The label-relay contrast in a few numbers, read from its keys."""
    out = {key: results[key] for key in RELAY_SUMMARY if key in results}
    if "methods" in results:
        out["pseudo_labels_error"] = results["methods"]["pseudo_labels"]["mean"]
    return {"teacher_saw_transfer_labels": True, "label_fraction": results.get("label_fraction"),
            "seeds": results.get("num_seeds"), **out,
            "note": "the teacher is trained on every training label, those of the transfer images "
                    "included: its argmax relays those labels to the student (chapter 4)."}


def print_headline(results: dict) -> None:
    """Print the honest design's headline."""
    h = results["headline"]
    s = h["soft_vs_argmax_small_transfer"]
    print(f"\nhonest teacher (never saw a transfer label): alpha={s['alpha']}, T={s['temperature']} chosen "
          f"on validation (ties {results['honest']['selection']['ties']})")
    for p in results["honest"]["paired"]:
        print(f"n={p['transfer_size']:>4} {p['comparison']:<22} {p['mean']:+.2%}  95% CI "
              f"[{p['ci95'][0]:+.2%}, {p['ci95'][1]:+.2%}]  ({p['seeds']} seeds)")
    o = h["omitted_class"]
    print(f"omitted digit {o['class']} (T={o['temperature']}, {o['seeds']} seeds): soft recall {o['soft_recall']:.1%}, "
          f"bias-shifted {o['soft_recall_bias_shifted']:.1%}; argmax {o['argmax_recall']:.1%}, bias-shifted "
          f"{o['argmax_recall_bias_shifted']:.1%}")
    c = h["hint_controls"]
    print(f"hint ({c['seeds']} seeds): trained teacher {c['trained_teacher_error']:.1%}, untrained "
          f"{c['untrained_teacher_error']:.1%}, pixels {c['pixels_error']:.1%}")


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
    parser.add_argument("--part", choices=("all", "relay", "honest"), default="all",
                        help="run both designs (default) or one, keeping the other's keys from --output")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    # One thread: the models are so small that more threads only add synchronisation
    # (and, on a busy machine, wait for each other); results then reproduce exactly.
    torch.set_num_threads(1)
    config = cs.CaseStudyConfig(seeds=tuple(range(args.seeds)))
    options = dict(repeats=args.repeats, log=print)
    if args.tiny:
        config = config.replace(seeds=(0,), teacher_epochs=1, labelled_epochs=1, transfer_epochs=1,
                                full_epochs=1, hidden_size=8)
        options = dict(repeats=1, fractions=(0.1, 0.5), augmented_epochs=1, log=None)
    honest = protocols.HonestConfig()
    if args.tiny:
        honest = protocols.HonestConfig(seeds=(0, 1), sizes=(20, 40), teacher_epochs=1, steps=2,
                                        selection_seeds=(0, 1), selection_size=20, temperatures=(1.0, 4.0),
                                        omitted_seeds=(0, 1), omitted_temperatures=(4.0,), hint_size=40)
    results = {}
    if args.part != "all" and args.output.is_file():
        results = json.loads(args.output.read_text())
    if args.part in ("all", "relay"):
        for key in [k for k in results if k not in ("headline", "honest", "machine")]:
            del results[key]
        results.update(cs.run_benchmark(config, **options))
    if args.part in ("all", "honest"):
        honest_start, honest_cpu = time.perf_counter(), time.process_time()
        results.update(protocols.run_honest(honest, log=None if args.tiny else print))
        results["honest"]["wall_time_s"] = round(time.perf_counter() - honest_start, 1)
        results["honest"]["cpu_time_s"] = round(time.process_time() - honest_cpu, 1)
    results["label_relay"] = relay_summary(results)
    results["machine"] = reproducibility.machine_info()
    order = ["headline", "label_relay"]
    results = {**{k: results[k] for k in order}, **{k: v for k, v in results.items() if k not in order}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    if not args.tiny and args.output.resolve() == OUTPUT.resolve():
        # The package ships a copy, which notebooks read where the repository is not there (Colab).
        packaged = cs.packaged_results_file()
        packaged.parent.mkdir(parents=True, exist_ok=True)
        packaged.write_text(args.output.read_text())
    if not args.tiny:
        if "methods" in results:
            print_summary(results)
        print_headline(results)
        print(f"this run ({args.part}): {time.perf_counter() - start:.0f} s wall, "
              f"{time.process_time():.0f} s CPU; target for the whole run: under {WALL_TARGET_S:.0f} s "
              "on a quiet 2-core machine")
        print(f"written to {args.output}")
    return results


if __name__ == "__main__":
    main()
