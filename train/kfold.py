#!/usr/bin/env python
"""Run a training script on every cross-validation fold and report mean +- std.

    accelerate launch train/kfold.py vqa --num_folds 10 --output_dir outputs/vqa_10fold -- --dataset data/sem_qa
    accelerate launch train/kfold.py classify --num_folds 10 --folds 0,1,2 -- --dataset data/sem

Arguments after ``--`` go to the script unchanged (each fold gets ``--fold k --num_folds K
--output_dir <output_dir>/fold_k``). Writes ``<output_dir>/kfold_summary.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from emvision.train.loop.arguments import HelpFormatter, ScriptArgumentParser, num_folds_type, refuse_reserved, split_script_args
from emvision.train.loop.preflight import InputError, earlier_run_entries, run_script

SCRIPTS = ("vqa", "classify")
SUMMARY_KEYS = {
    "vqa": ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor", "zero_shot_classification.top1", "zero_shot_classification.top5",
            "zero_shot_classification.macro_f1"),
    "classify": ("top1", "top5", "macro_f1"),
}


def _lookup(metrics: dict, dotted: str):
    value = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def summarize(script: str, per_fold: dict[int, dict]) -> dict:
    summary = {"script": script, "folds": sorted(per_fold), "metrics": {}}
    for key in SUMMARY_KEYS[script]:
        values = [v for v in (_lookup(m, key) for m in per_fold.values()) if isinstance(v, (int, float))]
        if values:
            summary["metrics"][key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "per_fold": values,
            }
    flags = {m.get("label_conditioned") for m in per_fold.values()}
    summary["label_conditioned"] = any(flags)
    summary["synthetic_data"] = any(m.get("synthetic_data") for m in per_fold.values())
    return summary


def to_markdown(summary: dict) -> str:
    lines = [
        f"{summary['script']}: {len(summary['folds'])} folds"
        + (" (synthetic data)" if summary["synthetic_data"] else "")
        + (" (LABEL-CONDITIONED)" if summary["label_conditioned"] else " (label-free)"),
        "",
        "| metric | mean | std |",
        "| --- | --- | --- |",
    ]
    for key, stats in summary["metrics"].items():
        lines.append(f"| {key} | {stats['mean']:.4f} | {stats['std']:.4f} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = ScriptArgumentParser(
        description="Cross-validate train/vqa.py or train/classify.py over K folds: each fold k trains with --fold k, "
        "and the metrics' mean and standard deviation go to <output_dir>/kfold_summary.json and .md. "
        "Arguments after '--' go to the script unchanged.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("script", choices=SCRIPTS, help="the training script to cross-validate: vqa (MVaEMa) or classify (HNF)")
    parser.add_argument("--num_folds", type=num_folds_type, default=10, help="K: the dataset's folds (>= 3); every fold is tested once")
    parser.add_argument("--folds", type=str, default=None, help="comma-separated subset of folds to run, e.g. 0,1,2 (default: all K)")
    parser.add_argument("--output_dir", type=str, default=None,
                        help="folder for the summary; fold k trains into <output_dir>/fold_k (default: outputs/<script>_kfold)")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="replace the fold folders of an earlier cross-validation (passed on to every fold)")
    return parser


def parse_folds(parser: argparse.ArgumentParser, text: str | None, num_folds: int) -> list[int]:
    if not text:
        return list(range(num_folds))
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        parser.error(f"argument --folds: expected comma-separated integers in 0..{num_folds - 1}, got {text!r}")
    outside = [fold for fold in folds if not 0 <= fold < num_folds]
    if not folds or outside:
        parser.error(f"argument --folds: every fold must be in 0..{num_folds - 1} for --num_folds {num_folds}, got {text!r}")
    return sorted(set(folds))


def main(argv=None) -> dict:
    argv, script_args = split_script_args(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_reserved(parser, script_args, ("--fold", "--num_folds", "--output_dir"), "kfold.py",
                    "pass --num_folds/--output_dir before '--'")
    folds = parse_folds(parser, args.folds, args.num_folds)
    output_dir = Path(args.output_dir or f"outputs/{args.script}_kfold")
    if args.overwrite_output_dir and "--overwrite_output_dir" not in script_args:
        script_args.append("--overwrite_output_dir")
    # every fold's folder is checked before the first fold trains, not when its turn comes
    if not ({"--overwrite_output_dir", "--resume_from_checkpoint"} & set(script_args)):
        earlier = [fold for fold in folds if earlier_run_entries(output_dir / f"fold_{fold}")]
        if earlier:
            raise InputError(f"{output_dir} already holds folds {', '.join(map(str, earlier))} of an earlier run: pass --overwrite_output_dir "
                             "to replace them, --resume_from_checkpoint latest after '--' to continue them, or choose another --output_dir")

    if args.script == "vqa":
        from emvision.train.vqa import main as run
    else:
        from emvision.train.classify import main as run

    per_fold = {}
    for fold in folds:
        print(f"=== fold {fold} of {args.num_folds} ===", flush=True)
        per_fold[fold] = run([*script_args, "--fold", str(fold), "--num_folds", str(args.num_folds), "--output_dir", str(output_dir / f"fold_{fold}")])
    summary = summarize(args.script, per_fold)
    from accelerate import PartialState

    if PartialState().is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "kfold_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (output_dir / "kfold_summary.md").write_text(to_markdown(summary))
        print(to_markdown(summary))
        means = ", ".join(f"{k}={v['mean']:.4f}±{v['std']:.4f}" for k, v in summary["metrics"].items())
        print(f"{args.script} over {len(folds)} folds: {means}")
    return summary


if __name__ == "__main__":
    run_script(main)
