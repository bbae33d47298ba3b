"""Learning curves of MVaEMa's default recipe against the same-size BLIP and the paper's ablations.

Every variant is trained by ``train/vqa.py`` itself (same synthetic set, fold, seed, step budget and recipe
options; one torch thread per run), with a checkpoint at every epoch; each selected checkpoint is then
evaluated on the same test-fold subset:

- zero-shot Top-1 over the test-fold images (``train/evaluation/zero_shot.py``; BLIP's VQA head has no
  zero-shot classifier, so it has no such curve);
- ``basics_category_accuracy`` over the Basics answers of the first test images (``train/evaluation/basics.py``);
- ROUGE-L over every question of the first test images (the project's metric module).

The x axis is training CPU-seconds of the run's process (``time.process_time``: robust to other jobs'
load, though a loaded machine still inflates it through cache and memory contention; the 1-minute load
average is recorded beside every run). MVaEMa's curve includes its stage-1 image-encoder pre-training.
Variants: ``mvaema`` (the default recipe: ITC + LM), ``mvaema_itm`` (``--itm``: the paper's three losses),
``blip`` (``--baseline blip``: transformers' BLIP VQA at MVaEMa's sizes, LM loss only, no class loss and no
stage 1, which need MVaEMa's image-label head; ``blip_lr1e-3`` the same at the papers' learning rate instead of the fast
recipe's 3e-3), ``no_itc`` and ``no_itm`` (the paper's ablations of its
three-loss model, otherwise the default recipe; ``no_itm`` is the default recipe itself since that left ITM out).

    python tests/benchmarks/learning_curves/mvaema.py                       # ~40 CPU-minutes, 2 runs at a time
    python tests/benchmarks/learning_curves/mvaema.py --variants mvaema --max_train_steps 100 --num_images 400
    python tests/benchmarks/learning_curves/mvaema.py --variants blip_lr1e-3 --add ...  # one more run beside the committed ones

Writes tests/benchmarks/results/learning_curves_mvaema.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RESULTS = REPO / "tests" / "benchmarks" / "results"
VARIANTS = {
    "mvaema": [],  # the default recipe: ITC + LM (+ the class loss and stage 1)
    "mvaema_itm": ["--itm"],  # the paper's three losses, otherwise the default recipe
    "blip": ["--baseline", "blip"],
    "blip_lr1e-3": ["--baseline", "blip", "--learning_rate", "1e-3"],  # at the papers' learning rate, not the fast recipe's 3e-3
    "no_itc": ["--itm", "--config_overrides", "use_itc=false"],  # the paper's ablations of its three-loss model
    "no_itm": ["--no-itm"],  # (the same as the default recipe since it left ITM out)
    "paper": ["--recipe", "paper"],
}
FLOORS = {"zero_shot_top1": 0.80, "basics_category_accuracy": 0.80, "rougeL": 0.45}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="mvaema,mvaema_itm,blip,no_itc", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--num_images", type=int, default=2000, help="synthetic images (10 folds: 80%% train)")
    parser.add_argument("--max_train_steps", type=int, default=400, help="optimizer steps of every variant")
    parser.add_argument("--vision_pretrain_steps", type=int, default=300, help="MVaEMa's stage 1 (default recipe variants)")
    parser.add_argument("--points", type=int, default=4, help="checkpoints evaluated per run (spread over the epochs)")
    parser.add_argument("--eval_images", type=int, default=100, help="test images whose Basics answers are scored")
    parser.add_argument("--rouge_images", type=int, default=10, help="test images whose ten answers are scored by ROUGE-L")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (each on 1 thread)")
    parser.add_argument("--work_dir", default="/tmp/emvision_learning_curves")
    parser.add_argument("--output", default=str(RESULTS / "learning_curves_mvaema"))
    parser.add_argument("--add", action="store_true",
                        help="keep the runs already in --output's JSON (same data and budget) and add or replace these variants")
    parser.add_argument("--evaluate", help=argparse.SUPPRESS)  # internal: evaluate one run folder, print JSON
    return parser.parse_args(argv)


def _env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)
    return env


def train(name: str, args, dataset: Path) -> dict:
    out = Path(args.work_dir) / name
    command = [
        sys.executable, str(REPO / "train" / "vqa.py"), "--dataset", str(dataset), "--output_dir", str(out), "--overwrite_output_dir",
        "--max_train_steps", str(args.max_train_steps), "--checkpointing_steps", "epoch", "--checkpoints_total_limit", "1000",
        "--max_generate_samples", "1", "--report_to", "none", "--vision_pretrain_steps", str(args.vision_pretrain_steps),
        *VARIANTS[name],
    ]
    load = os.getloadavg()[0]
    started = time.time()
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    evaluated = subprocess.run([sys.executable, __file__, "--evaluate", str(out), "--points", str(args.points),
                                "--eval_images", str(args.eval_images), "--rouge_images", str(args.rouge_images)],
                               cwd=REPO, env=_env(), capture_output=True, text=True)
    if evaluated.returncode:
        raise RuntimeError(f"evaluating {name} failed:\n{evaluated.stderr[-3000:]}")
    stage1 = (metrics.get("vision_pretraining") or {}).get("cpu_seconds", 0.0)
    points = json.loads(evaluated.stdout.strip().splitlines()[-1])
    for point in points:
        point["cpu_seconds"] = round(stage1 + point["loop_cpu_seconds"], 1)
    return {"variant": name, "arguments": VARIANTS[name], "load_average_at_start": load, "load_average_at_end": os.getloadavg()[0],
            "wall_seconds": round(time.time() - started, 1), "vision_pretrain_cpu_seconds": stage1,
            "process_cpu_seconds": metrics.get("process_cpu_seconds"), "parameters": metrics["parameters"],
            "steps_per_epoch": metrics["steps_per_epoch"], "points": points}


def evaluate_run(folder: Path, points: int, eval_images: int, rouge_images: int) -> list[dict]:
    """Each selected epoch checkpoint of ``folder`` on the test-fold subset (one thread)."""
    import torch
    from accelerate import Accelerator
    from safetensors.torch import load_model
    from transformers import AutoProcessor

    from emvision.train.data.images import ImageTable
    from emvision.train.data.sources import resolve_dataset
    from emvision.train.data.splits import split_by_fold
    from emvision.train.evaluation.vqa import evaluate_vqa
    from emvision.train.evaluation.zero_shot import evaluate_zero_shot
    from emvision.train.metrics.vqa_loader import load_vqa_metric  # noqa: F401  (fails early if the metric is missing)

    torch.set_num_threads(1)
    metrics = json.loads((folder / "metrics.json").read_text())
    baseline = metrics["model"].startswith("BLIP")
    if baseline:
        from emvision.train.baselines import load_blip_baseline

        model, processor = load_blip_baseline(folder)
    else:
        from emvision.modeling import MVaEMaForQuestionAnswering

        model, processor = MVaEMaForQuestionAnswering.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    model.eval()
    history = {record["step"]: record for record in metrics["history"]}
    checkpoints = sorted((folder / "checkpoints").glob("step_*"))
    chosen = [checkpoints[round(i * (len(checkpoints) - 1) / max(1, points - 1))] for i in range(points)] if checkpoints else []
    args = argparse.Namespace(dataset=metrics["dataset"], fold=0, num_folds=10, max_train_samples=None, max_eval_samples=None,
                              max_generate_samples=0, eval_with_captions=False, per_device_eval_batch_size=96, seed=42,
                              num_beams=1, max_new_tokens=96, output_dir=str(folder / "curve_eval"), labels=None,
                              synthetic_num_images=None, synthetic_seed=0, streaming=False, hub_token=None,
                              # the decoding the run chose on its validation fold (MVaEMa's saved generation config has it too)
                              repetition_penalty=(metrics.get("decoding") or {}).get("repetition_penalty"))
    accelerator = Accelerator(cpu=True)
    source = resolve_dataset(args, accelerator, output_dir=args.output_dir)
    images = ImageTable(source.load("images"))
    _, _, test = split_by_fold(source.load("vqa"), args)
    test_ids = list(dict.fromkeys(test["image_id"]))
    basics_ids, rouge_ids = set(test_ids[:eval_images]), set(test_ids[:rouge_images])
    basics_rows = test.filter(lambda row: row["question_id"] == 1 and row["image_id"] in basics_ids)
    rouge_rows = test.filter(lambda row: row["image_id"] in rouge_ids)
    results = []
    for checkpoint in chosen:
        step = int(checkpoint.name.split("_")[1])
        load_model(model, str(checkpoint / "model.safetensors"), strict=False)
        basics = evaluate_vqa(accelerator, model, processor, basics_rows, argparse.Namespace(**{**vars(args), "max_new_tokens": 24}), images=images)
        rouge = evaluate_vqa(accelerator, model, processor, rouge_rows, args, images=images)
        zero_shot = {} if baseline else evaluate_zero_shot(accelerator, model, processor, source, args)
        results.append({"step": step, "loop_cpu_seconds": history[step]["cpu_seconds"],
                        "zero_shot_top1": zero_shot.get("top1"), "zero_shot_images": zero_shot.get("num_images"),
                        "basics_category_accuracy": basics["basics_category_accuracy"], "basics_answers": basics["num_basics_answers"],
                        "rougeL": rouge["rougeL"], "rouge_pairs": rouge["num_test_pairs"]})
    return results


def first_to_floor(runs: list[dict]) -> dict:
    """For each floor, the variant (and CPU-seconds) that reached it first, or None."""
    out = {}
    for metric, floor in FLOORS.items():
        hits = [(p["cpu_seconds"], run["variant"]) for run in runs for p in run["points"] if (p.get(metric) or 0) >= floor]
        out[metric] = {"floor": floor, "first": min(hits)[1] if hits else None, "cpu_seconds": min(hits)[0] if hits else None}
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for axis, (metric, floor) in zip(axes, FLOORS.items()):
        for run in runs:
            points = [p for p in run["points"] if p.get(metric) is not None]
            if points:
                axis.plot([p["cpu_seconds"] for p in points], [p[metric] for p in points], marker="o", label=run["variant"])
        axis.axhline(floor, color="gray", linestyle="--", linewidth=1, label=f"floor {floor}")
        axis.set_xlabel("training CPU-seconds (1 thread)")
        axis.set_title(metric)
        axis.set_ylim(0, 1)
        axis.legend(fontsize=8)
    figure.suptitle("MVaEMa learning curves on the synthetic set (test fold 0)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _kept_runs(path: Path, args, names: list[str]) -> list[dict]:
    """The runs of an earlier result at ``path`` that ``--add`` keeps: all but the variants being run again."""
    if not path.is_file():
        raise SystemExit(f"--add: {path} does not exist; run without --add first")
    earlier = json.loads(path.read_text())
    settings = ("num_images", "max_train_steps", "vision_pretrain_steps")
    if any(earlier.get(key) != getattr(args, key) for key in settings) or earlier.get("eval") != {
        "basics_images": args.eval_images, "rouge_images": args.rouge_images}:
        raise SystemExit(f"--add: {path} was measured with other settings ({', '.join(f'{k}={earlier.get(k)}' for k in settings)}, "
                         f"eval {earlier.get('eval')}); use the same ones or another --output")
    return [run for run in earlier["runs"] if run["variant"] not in names]


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.evaluate:
        print(json.dumps(evaluate_run(Path(args.evaluate), args.points, args.eval_images, args.rouge_images)))
        return {}
    from emvision.datasets_scripts.synthesize import load_or_create_synthetic

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; expected some of {sorted(VARIANTS)}")
    output = Path(args.output)
    kept = _kept_runs(output.with_suffix(".json"), args, names) if args.add else []
    dataset = load_or_create_synthetic(num_images=args.num_images, seed=0, num_folds=10, cache_dir=Path(args.work_dir) / "data")
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = kept + list(pool.map(lambda name: train(name, args, dataset), names))
    result = {"num_images": args.num_images, "max_train_steps": args.max_train_steps, "vision_pretrain_steps": args.vision_pretrain_steps,
              "eval": {"basics_images": args.eval_images, "rouge_images": args.rouge_images}, "threads_per_run": 1,
              "parallel_runs": args.parallel, "floors": FLOORS, "first_to_floor": first_to_floor(runs), "runs": runs}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(runs, output.with_suffix(".png"))
    for run in runs:
        last = run["points"][-1] if run["points"] else {}
        print(f"{run['variant']:8s} {last.get('cpu_seconds')} CPU-s: zero-shot {last.get('zero_shot_top1')} basics "
              f"{last.get('basics_category_accuracy')} ROUGE-L {last.get('rougeL')} (load {run['load_average_at_start']:.1f})")
    print(json.dumps(result["first_to_floor"]))
    return result


if __name__ == "__main__":
    main()
