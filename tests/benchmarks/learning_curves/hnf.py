#!/usr/bin/env python
"""Learning curves of the HNF family: test top-1 and macro-F1 against training CPU-seconds, at equal budget.

    python tests/benchmarks/learning_curves/hnf.py                      # 7 runs x 120 training CPU-s, 2 at a time
    python tests/benchmarks/learning_curves/hnf.py --runs hnf,vit --budget_cpu_s 600 --num_points 6

Every run trains on the same data as ``accelerate launch train/classify.py`` (the embedded synthetic set of the
fast recipe: 3,500 images, fold 0 of 10 tests, fold 1 validates, the other 2,800 train), with the same seed,
augmentation, optimizer and schedule, and is evaluated on the same test fold at the same CPU-second marks:

- ``hnf``: the default of train/classify.py (``--recipe fast``: 192-px images cut into 16/24/32-px patches,
  Euler ODE, convolutional stem, no text branch); ``hnf_224`` the same at the paper's 224 px and 16/28/32-px
  patches (the default before); ``hnf_linear`` the default with the paper's linear patch embeddings;
- ``vit``: the same-size transformers ViT (train/baselines.py ``build_vit_baseline``), same recipe and images;
  ``vit_224`` at 224 px;
- the paper's ablations at the same budget: ``hnf_no_ode`` (a transformer block instead of the ODE),
  ``hnf_no_graph``; and the text branch, which the default leaves out, in both fusion directions:
  ``hnf_text`` (bidirectional cross-modal attention) and ``hnf_text_one_way`` (image attends to text only);
  their descriptions are cut to ``--text_bytes`` bytes, because whole descriptions (~1,000 bytes) make a
  step cost ~70x a text-free one (measured in the JSON's ``step_cost_note``);
- ``hnf_paper``: the papers' protocol (Adam 1e-3 constant, no augmentation, RK4, text branch as above).

Each run is a separate process with one torch thread; the cosine schedule's length is set from the run's own
step cost after 5 steps so that it ends at the budget. Image decoding happens once, before the clock starts;
evaluation is not counted. Results: ``tests/benchmarks/results/learning_curves_hnf.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

RESULTS = Path(__file__).resolve().parents[1] / "results"
FLOOR = 0.90
# the fast recipe's convolutional stem and image grid (train/classify.py RECIPE_MODEL_CONFIGS): 192 px, patches 16/24/32
GRID = {"image_size": 192, "patch_sizes": [16, 24, 32]}
PAPER_GRID = {"image_size": 224, "patch_sizes": [16, 28, 32]}
STEM = {"patch_embedding": "conv_stem", **GRID}
RUNS = {
    "hnf": {"label": "HNF (default: fast recipe, 192 px, Euler, conv stem, no text)", "config": {"ode_method": "euler", "use_text_branch": False, **STEM}},
    "hnf_224": {"label": "HNF at the paper's 224 px, patches 16/28/32 (fast recipe otherwise)",
                "config": {"ode_method": "euler", "use_text_branch": False, **STEM, **PAPER_GRID}},
    "hnf_linear": {"label": "HNF, the paper's linear patch embeddings (fast recipe otherwise)",
                   "config": {"ode_method": "euler", "use_text_branch": False, **GRID}},
    "vit": {"label": "ViT baseline (same size, same recipe, 192 px, patch 16)", "vit": True, "config": dict(GRID)},
    "vit_224": {"label": "ViT baseline at 224 px, patch 16", "vit": True, "config": dict(PAPER_GRID)},
    "hnf_no_ode": {"label": "HNF without the ODE", "config": {"use_ode": False, "use_text_branch": False, **STEM}},
    "hnf_no_graph": {"label": "HNF without the graph", "config": {"ode_method": "euler", "use_graph_branch": False, "use_text_branch": False, **STEM}},
    "hnf_text": {"label": "HNF + text branch (bidirectional)", "config": {"ode_method": "euler", **STEM}, "text": True},
    "hnf_text_one_way": {"label": "HNF + text branch (image-to-text only)",
                         "config": {"ode_method": "euler", "fusion_direction": "image_to_text", **STEM}, "text": True},
    # the solver, at the fast recipe otherwise (HNFConfig's ode_method is chosen from these at equal budget)
    "hnf_midpoint": {"label": "HNF, midpoint solver", "config": {"ode_method": "midpoint", "use_text_branch": False, **STEM}},
    "hnf_rk4": {"label": "HNF, RK4 solver", "config": {"ode_method": "rk4", "use_text_branch": False, **STEM}},
    # coarser patches (49, 49 and 16 tokens per layer instead of 196, 64 and 49): fewer tokens, more steps per CPU-second
    "hnf_coarse": {"label": "HNF, patches 32/32/56 (Euler, conv stem, no text)",
                   "config": {"ode_method": "euler", "use_text_branch": False, **STEM, "image_size": 224, "patch_sizes": [32, 32, 56]}},
    "vit_coarse": {"label": "ViT baseline, patch 32", "config": {"image_size": 224, "patch_sizes": [32, 32, 56]}, "vit": True},
    "hnf_paper": {"label": "HNF, paper recipe (RK4, Adam const, no aug., text, linear patches)", "config": {"ode_method": "rk4"}, "text": True,
                  "paper": True},
}
FAST = dict(optimizer="adamw", learning_rate=2e-3, weight_decay=0.05, lr_scheduler="cosine", warmup_steps=100, min_lr_ratio=0.0,
            lr_factor=0.5, lr_patience=5)
PAPER = dict(optimizer="adam", learning_rate=1e-3, weight_decay=0.0, lr_scheduler="plateau", warmup_steps=0, min_lr_ratio=0.0,
             lr_factor=0.5, lr_patience=5)


def image_size_of(name: str) -> int:
    return RUNS[name].get("config", {}).get("image_size", 224)


def load_split(num_images: int, fold: int, num_folds: int, image_size: int = 224):
    """uint8 gray (N, image_size, image_size) tensors and labels of the train and test folds, decoded once."""
    import torch

    from emvision.datasets_scripts.synthesize import load_or_create_synthetic
    from emvision.processing.image_processing_micrograph import MicrographImageProcessor
    from emvision.train.data.collators import ImageCollator
    from emvision.train.data.images import undecoded
    from emvision.train.data.sources import DatasetSource
    from emvision.train.data.splits import split_by_fold

    path = load_or_create_synthetic(num_images=num_images, seed=0, num_folds=num_folds, progress=False)
    images = undecoded(DatasetSource(name="synthetic", path=path).load("images"))
    args = SimpleNamespace(fold=fold, num_folds=num_folds, max_train_samples=None, max_eval_samples=None)
    collate = ImageCollator(MicrographImageProcessor(size={"height": image_size, "width": image_size}))
    out = []
    for split in split_by_fold(images, args)[::2]:  # train, test
        gray, labels = [], []
        for start in range(0, len(split), 100):
            batch = collate(list(split.select(range(start, min(start + 100, len(split))))))
            gray.append(((batch["pixel_values"][:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
            labels.append(batch["labels"])
        out.append((torch.cat(gray), torch.cat(labels)))
    return out, images.features["label"].names


def pixels(gray):
    return gray.float().div(127.5).sub(1.0).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def build_model(name: str, class_names: list[str], text_bytes: int):
    from emvision.datasets_scripts.synthetic.build import class_description_rows
    from emvision.modeling import HNFConfig, HNFForImageClassification
    from emvision.train.baselines import build_vit_baseline

    spec = RUNS[name]
    kwargs = dict(spec.get("config", {}), id2label=dict(enumerate(class_names)))
    if spec.get("text"):
        rows = class_description_rows()
        kwargs["class_descriptions"] = {n: [r["description"] for r in rows if r["label"] == i] for i, n in enumerate(class_names)}
        kwargs["class_descriptions_source"] = "synthetic set (oracle-synthetic + hand-written stand-ins)"
        kwargs["description_max_length"] = text_bytes
    config = HNFConfig(**kwargs)
    return build_vit_baseline(config) if spec.get("vit") else HNFForImageClassification(config)


def evaluate(model, gray, labels):
    import torch
    from sklearn.metrics import f1_score

    model.eval()
    predictions, loss = [], 0.0
    with torch.no_grad():
        for start in range(0, len(labels), 100):
            out = model(pixel_values=pixels(gray[start:start + 100]), labels=labels[start:start + 100])
            predictions.append(out.logits.argmax(-1))
            loss += out.loss.item() * len(out.logits)
    model.train()
    predicted = torch.cat(predictions)
    return {"top1": round((predicted == labels).float().mean().item(), 4),
            "macro_f1": round(float(f1_score(labels.numpy(), predicted.numpy(), average="macro")), 4),
            "test_loss": round(loss / len(labels), 4)}


def run_one(name: str, args) -> dict:
    """Train one run for ``args.budget_cpu_s`` training CPU-seconds; evaluate at ``args.num_points`` marks."""
    import torch

    torch.set_num_threads(args.threads)
    from emvision.train.data.augmentation import augment_micrographs
    from emvision.train.loop.schedule import LearningRateSchedule, build_optimizer

    ((train_gray, train_labels), (test_gray, test_labels)), class_names = load_split(args.num_images, args.fold, args.num_folds,
                                                                                      image_size_of(name))
    torch.manual_seed(args.seed)
    model = build_model(name, class_names, args.text_bytes)
    paper = RUNS[name].get("paper", False)
    recipe = SimpleNamespace(**(PAPER if paper else FAST))
    optimizer = build_optimizer(model, recipe)
    schedule = LearningRateSchedule.from_args(optimizer, recipe, total_steps=10**6)
    generator = torch.Generator().manual_seed(args.seed)
    marks = [args.budget_cpu_s * (i + 1) / args.num_points for i in range(args.num_points)]
    curve, cpu, wall, step, epoch_steps = [], 0.0, 0.0, 0, len(train_labels) // args.batch_size
    order = torch.randperm(len(train_labels), generator=generator)
    model.train()
    while marks:
        position = step % epoch_steps
        if position == 0 and step:
            order = torch.randperm(len(train_labels), generator=generator)
        index = order[position * args.batch_size:(position + 1) * args.batch_size]
        c0, w0 = time.process_time(), time.time()
        batch = pixels(train_gray[index])
        if not paper:
            batch = augment_micrographs(batch, generator)
        loss = model(pixel_values=batch, labels=train_labels[index]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        schedule.step(step)
        cpu += time.process_time() - c0
        wall += time.time() - w0
        if step == 5 and not paper:  # the cosine ends where the budget does
            schedule.total_steps = max(schedule.warmup_steps + 1, int(args.budget_cpu_s / (cpu / step)))
        if cpu >= marks[0]:
            marks.pop(0)
            point = {"step": step, "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1), "epochs": round(step / epoch_steps, 2),
                     "cpu_s_per_step": round(cpu / step, 3), "train_loss": round(loss.item(), 4), "load1": round(os.getloadavg()[0], 2),
                     **evaluate(model, test_gray, test_labels)}
            curve.append(point)
            print(name, json.dumps(point), flush=True)
    return {"name": name, "label": RUNS[name]["label"], "parameters": sum(p.numel() for p in model.parameters()),
            "recipe": "paper" if paper else "fast", "planned_steps": schedule.total_steps if not paper else None,
            "num_train": len(train_labels), "num_test": len(test_labels), "curve": curve}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in results["runs"]:
        xs = [p["train_cpu_s"] for p in run["curve"]]
        for axis, key in zip(axes, ("top1", "macro_f1")):
            axis.plot(xs, [p[key] for p in run["curve"]], marker="o", label=run["label"])
    for axis, key in zip(axes, ("test top-1", "test macro-F1")):
        axis.axhline(FLOOR, color="k", linestyle="--", linewidth=1, label=f"floor {FLOOR}")
        axis.axhline(results["chance"], color="gray", linestyle=":", linewidth=1, label="chance")
        axis.set_xlabel("training CPU-seconds (1 thread)")
        axis.set_ylabel(f"{key} (n={results['num_test']})")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"HNF family on the synthetic set: {results['num_train']} train / {results['num_test']} test images, "
                    f"seed {results['seed']}, load avg {results['load1_range']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {list(RUNS)}")
    parser.add_argument("--budget_cpu_s", type=float, default=120.0, help="training CPU-seconds per run")
    parser.add_argument("--num_points", type=int, default=3, help="evaluations per run, evenly spaced in CPU-seconds")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one process, one thread each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num_images", type=int, default=3500)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--num_folds", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=48)
    parser.add_argument("--text_bytes", type=int, default=128, help="description length of the text-branch runs")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default=str(RESULTS / "learning_curves_hnf.json"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a worker: run this one and print its JSON
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)), flush=True)
        return
    names = args.runs.split(",")
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; expected some of {list(RUNS)}")
    from emvision.datasets_scripts.synthesize import load_or_create_synthetic

    load_or_create_synthetic(num_images=args.num_images, seed=0, num_folds=args.num_folds)  # built once, before the workers
    started, loads, pending, running, done = time.time(), [os.getloadavg()[0]], list(names), {}, {}
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            running[name] = subprocess.Popen([sys.executable, __file__, *forwarded, "--one", name], stdout=subprocess.PIPE, text=True,
                                             env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        time.sleep(2)
        loads.append(os.getloadavg()[0])
        for name, process in list(running.items()):
            if process.poll() is not None:
                output = process.stdout.read()
                print(output, end="", flush=True)
                line = next((l for l in output.splitlines() if l.startswith("RESULT ")), None)
                if process.returncode or line is None:
                    raise SystemExit(f"run {name} failed (exit {process.returncode})")
                done[name] = json.loads(line[len("RESULT "):])
                del running[name]
    runs = [done[n] for n in names]
    floor_first = {}
    for key in ("top1", "macro_f1"):
        reached = [(next(p["train_cpu_s"] for p in r["curve"] if p[key] >= FLOOR), r["name"]) for r in runs
                   if any(p[key] >= FLOOR for p in r["curve"])]
        floor_first[key] = min(reached)[1] if reached else None
    results = {
        "benchmark": "tests/benchmarks/learning_curves/hnf.py", "command": "python " + " ".join([sys.argv[0], *forwarded]),
        "dataset": f"emvision synthetic set (SYNTHETIC images), {args.num_images} images, seed 0, fold {args.fold} of {args.num_folds}",
        "num_train": runs[0]["num_train"], "num_test": runs[0]["num_test"], "chance": 0.1, "seed": args.seed,
        "threads_per_run": args.threads, "parallel_runs": args.jobs, "budget_cpu_s": args.budget_cpu_s, "floor": FLOOR,
        "first_to_floor": floor_first, "wall_s": round(time.time() - started, 1),
        "load1_range": f"{min(loads):.1f}-{max(loads):.1f}", "load1_mean": round(sum(loads) / len(loads), 2),
        "note": "CPU-seconds are process CPU time of the training steps (1 torch thread), robust to load but inflated by "
                "contention on a loaded machine (shared caches and memory bandwidth); evaluation and image decoding excluded.",
        "runs": runs,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1))
    plot(results, output.with_suffix(".png"))
    print(f"wrote {output} and {output.with_suffix('.png')}; first to the {FLOOR} floor: {floor_first}")


if __name__ == "__main__":
    main()
