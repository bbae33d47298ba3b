#!/usr/bin/env python
"""Leakage audit: one split trained and evaluated label-free and label-conditioned, and how much the papers'
label-conditioned protocols inflate each figure.

    accelerate launch train/leakage_audit.py --output_dir outputs/leakage_audit          # embedded synthetic set, both models
    accelerate launch train/leakage_audit.py --models hnf --fold 3 --output_dir outputs/audit -- --dataset data/sem --max_train_steps 0

HNF: ``train/classify.py`` as it is (every image attends over the descriptions of all classes) and with
``--paper_protocol`` (each image's text side holds its TRUE class's descriptions, the HNF paper's protocol).
MVaEMa: ``train/vqa.py`` as it is and with ``--caption_protocol --eval_with_captions`` (every prompt, in training
and at evaluation, starts with a caption naming the true category, the MVaEMa paper's protocol). MVaEMa's zero-shot
classification reads no caption in either run: its rows show what caption training alone does to a label-free use.

Both runs of a model get the same arguments apart from the protocol (same data, fold, seed, budget). Arguments
after ``--`` go to every run; ``--hnf_args``/``--mvaema_args`` to one model's runs. Writes
``<output_dir>/leakage_audit.json`` and ``.md`` (metric, label-free, label-conditioned, difference, test-set size,
chance level; each run's CPU-seconds and load average) and a "Leakage audit" section into each run's model card.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from emvision.train.loop.arguments import (
    HelpFormatter,
    ScriptArgumentParser,
    check_fold,
    non_negative_int,
    num_folds_type,
    refuse_reserved,
    split_script_args,
)
from emvision.train.loop.preflight import InputError, earlier_run_entries, run_script

# model -> (script, label-conditioned flags)
PROTOCOLS = {
    "hnf": ("classify", ["--paper_protocol"]),
    "mvaema": ("vqa", ["--caption_protocol", "--eval_with_captions"]),
}
PROTOCOL_NOTES = {
    "hnf": "label-conditioned: `--paper_protocol`, each image's text side holds its true class's descriptions at training "
           "and at evaluation (the HNF paper's protocol)",
    "mvaema": "label-conditioned: `--caption_protocol --eval_with_captions`, every prompt starts with a caption naming the "
              "true category, at training and at evaluation (the MVaEMa paper's protocol); zero-shot rows: no caption "
              "in either run, only the training differs",
}
RESERVED = ("--fold", "--num_folds", "--output_dir", "--paper_protocol", "--caption_protocol", "--eval_with_captions", "--baseline")
CLASSIFICATION = (("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy"), ("macro_f1", "Macro-F1"))
VQA = (("bleu2", "BLEU-2"), ("bleu4", "BLEU-4"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("meteor", "METEOR"))


def metric_rows(model: str, metrics: dict) -> list[dict]:
    """(metric, value, test-set size, chance) of one run, in the order the table shows them."""
    if model == "hnf":
        images = metrics["num_images"]
        return [{"key": key, "metric": name, "value": metrics[key], "test_set": f"{images} test images",
                 "chance": metrics["chance"].get(key)} for key, name in CLASSIFICATION]
    pairs = metrics["num_test_pairs"]
    rows = [{"key": key, "metric": name, "value": metrics[key], "test_set": f"{pairs} test QA pairs", "chance": metrics["chance"].get(key)}
            for key, name in VQA]
    zero_shot = metrics.get("zero_shot_classification") or {}
    if zero_shot:
        rows += [{"key": f"zero_shot_{key}", "metric": f"Zero-shot {name} (no caption in either run)", "value": zero_shot[key],
                  "test_set": f"{zero_shot['num_images']} test images", "chance": zero_shot["chance"].get(key)}
                 for key, name in CLASSIFICATION]
    return rows


def compare(model: str, label_free: dict, label_conditioned: dict) -> list[dict]:
    """One row per metric: both values, their difference (label-conditioned minus label-free), test set and chance."""
    rows = []
    for free, conditioned in zip(metric_rows(model, label_free), metric_rows(model, label_conditioned)):
        rows.append({"key": free["key"], "metric": free["metric"], "label_free": free["value"], "label_conditioned": conditioned["value"],
                     "difference": conditioned["value"] - free["value"],
                     "test_set": free["test_set"] if free["test_set"] == conditioned["test_set"] else f"{free['test_set']} / {conditioned['test_set']}",
                     "chance": free["chance"]})
    return rows


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def table_markdown(rows: list[dict]) -> str:
    lines = ["| metric | label-free | label-conditioned | difference | test set | chance level |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['metric']} | {row['label_free']:.4f} | {row['label_conditioned']:.4f} | {row['difference']:+.4f} | "
                     f"{row['test_set']} | {_number(row['chance'])} |")
    return "\n".join(lines)


def model_section(audit: dict, model: str, heading: str = "###") -> str:
    result = audit["models"][model]
    runs = ", ".join(f"{protocol}: {run['optimizer_steps']} optimizer steps ({run['epochs']} epochs), {run['cpu_seconds']:.0f} CPU-s, "
                     f"load {run['load_before']:.1f} -> {run['load_after']:.1f}" for protocol, run in result["runs"].items())
    return (f"{heading} {'HNF' if model == 'hnf' else 'MVaEMa'}\n\n{table_markdown(result['rows'])}\n\n"
            f"Difference = label-conditioned minus label-free; {PROTOCOL_NOTES[model]}. Runs: {runs}.")


def header_markdown(audit: dict) -> str:
    data = audit["dataset"] + (" (**synthetic data**: procedurally generated images, oracle answers)" if audit["synthetic_data"] else "")
    return (f"Dataset: {data}; fold {audit['fold']} of {audit['num_folds']} (test fold {audit['fold']}), the same split, seed and "
            f"budget for both runs of a model; {audit['torch_threads']} torch thread(s).")


def to_markdown(audit: dict) -> str:
    sections = [model_section(audit, model) for model in audit["models"]]
    return "\n\n".join(["# Leakage audit: label-free vs label-conditioned", header_markdown(audit), *sections]) + "\n"


def card_section(audit: dict, model: str) -> str:
    return (f"## Leakage audit\n\n`train/leakage_audit.py` trained and evaluated this model both ways on one split. "
            f"{header_markdown(audit)}\n\n{model_section(audit, model, heading='###')}\n\n")


def add_to_card(folder: Path, section: str) -> None:
    """Insert ``section`` before the card's Limitations (or at its end)."""
    card = folder / "README.md"
    text = card.read_text()
    marker = "## Limitations"
    text = text.replace(marker, section + marker, 1) if marker in text else text.rstrip() + "\n\n" + section
    card.write_text(text)


def build_parser() -> argparse.ArgumentParser:
    parser = ScriptArgumentParser(
        description="Train and evaluate HNF and/or MVaEMa on one split label-free and label-conditioned (the papers' protocols), "
        "and report how much the label-conditioned figures are inflated. Arguments after '--' go to every run.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--models", type=str, default="hnf,mvaema", help="comma-separated: hnf (train/classify.py), mvaema (train/vqa.py)")
    parser.add_argument("--fold", type=non_negative_int, default=0, help="the test fold of every run, 0..K-1")
    parser.add_argument("--num_folds", type=num_folds_type, default=10, help="K, the dataset's cross-validation folds (>= 3)")
    parser.add_argument("--output_dir", type=str, default="outputs/leakage_audit",
                        help="folder for leakage_audit.json/.md; each run trains into <output_dir>/<model>_<protocol>")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace the run folders of an earlier audit")
    parser.add_argument("--hnf_args", type=str, default="", help="extra arguments for HNF's two runs only, one quoted string")
    parser.add_argument("--mvaema_args", type=str, default="", help="extra arguments for MVaEMa's two runs only, one quoted string")
    return parser


def parse_models(parser: argparse.ArgumentParser, text: str) -> list[str]:
    models = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [model for model in models if model not in PROTOCOLS]
    if not models or unknown:
        parser.error(f"argument --models: expected a comma-separated subset of {', '.join(PROTOCOLS)}, got {text!r}")
    return list(dict.fromkeys(models))


def main(argv=None) -> dict:
    argv, shared = split_script_args(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    check_fold(parser, args.fold, args.num_folds)
    models = parse_models(parser, args.models)
    extra = {model: shlex.split(getattr(args, f"{model}_args")) for model in models}
    for given in [shared, *extra.values()]:
        refuse_reserved(parser, given, RESERVED, "leakage_audit.py", "pass --fold/--num_folds/--output_dir before '--'")
    output_dir = Path(args.output_dir)
    runs = {(model, protocol): output_dir / f"{model}_{protocol}" for model in models for protocol in ("label_free", "label_conditioned")}
    if args.overwrite_output_dir:
        shared = [*shared, "--overwrite_output_dir"]
    else:
        earlier = [str(folder) for folder in runs.values() if earlier_run_entries(folder)]
        if earlier:
            raise InputError(f"{output_dir} already holds runs of an earlier audit ({', '.join(earlier)}): pass --overwrite_output_dir "
                             "to replace them, or choose another --output_dir")

    import torch

    audit: dict = {"fold": args.fold, "num_folds": args.num_folds, "torch_threads": torch.get_num_threads(), "models": {}}
    for model in models:
        script, conditioned_flags = PROTOCOLS[model]
        if script == "vqa":
            from emvision.train.vqa import main as run
        else:
            from emvision.train.classify import main as run
        results, timings = {}, {}
        for protocol, flags in (("label_free", []), ("label_conditioned", conditioned_flags)):
            print(f"=== {model}, {protocol.replace('_', '-')} ===", flush=True)
            load_before, started = os.getloadavg()[0], time.process_time()
            metrics = run([*shared, *extra[model], *flags, "--fold", str(args.fold), "--num_folds", str(args.num_folds),
                           "--output_dir", str(runs[(model, protocol)])])
            timings[protocol] = {"cpu_seconds": round(time.process_time() - started, 1), "load_before": load_before,
                                 "load_after": os.getloadavg()[0], "optimizer_steps": metrics["optimizer_steps"], "epochs": metrics["epochs"],
                                 "output_dir": str(runs[(model, protocol)])}
            results[protocol] = metrics
        marked = (results["label_free"]["label_conditioned"], results["label_conditioned"]["label_conditioned"])
        if marked != (False, True):  # the scripts mark what their evaluation read: anything else is a bug worth stopping for
            raise RuntimeError(f"{model}: the label-free and label-conditioned runs are marked label_conditioned={marked}")
        audit.setdefault("dataset", results["label_free"]["dataset"])
        audit["synthetic_data"] = audit.get("synthetic_data", False) or bool(results["label_free"]["synthetic_data"])
        audit["models"][model] = {"rows": compare(model, results["label_free"], results["label_conditioned"]), "runs": timings}

    from accelerate import PartialState

    if PartialState().is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "leakage_audit.json").write_text(json.dumps(audit, indent=2) + "\n")
        (output_dir / "leakage_audit.md").write_text(to_markdown(audit))
        for (model, _), folder in runs.items():
            add_to_card(folder, card_section(audit, model))
        print(to_markdown(audit))
    return audit


if __name__ == "__main__":
    run_script(main)
