"""Throughput of HNF's default config beside a plain ViT of the same width and depth, on the same batches.

Each step is forward + backward + AdamW step on a batch of random 224x224 images. The models alternate step
by step, so background load hits both alike; the figures are medians over the timed steps. Beside wall-clock
time the table gives the process CPU time per step, which a busy shared machine distorts less (with one
thread it is the work done; with more it also counts threads waiting for each other).

    python tests/benchmarks/bench_hnf_throughput.py                   # batch 48, default HNF vs ViT
    python tests/benchmarks/bench_hnf_throughput.py --ablations       # also HNF's ablation switches
    python tests/benchmarks/bench_hnf_throughput.py --threads 1 --ode_method midpoint
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from tqdm.auto import tqdm

from emvision.modeling.configuration_hnf import HNFConfig
from emvision.modeling.modeling_hnf import HNFForImageClassification
from emvision.train.baselines import build_vit_baseline, count_parameters

ABLATIONS = {
    "HNF single-scale": {"multi_scale": False},
    "HNF without LLM text": {"use_text_branch": False},
    "HNF concat fusion": {"fusion": "concat"},
    "HNF without HNF (text + ViT)": {"image_encoder": "vit"},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=48)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model (default 5)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5: see run_all.py --warmup_steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--vit_intermediate_size", type=int, default=None,
        help="MLP width of the ViT (default: HNF's intermediate_size, as in train/classify.py --baseline vit)",
    )
    parser.add_argument("--ablations", action="store_true", help="also time HNF's ablation switches")
    parser.add_argument("--ode_method", default=None, help="solver of the HNF row (default: the config's, euler)")
    parser.add_argument("--solvers", default="", help="also time HNF with each of these solvers (e.g. rk4,midpoint,euler)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_before = os.getloadavg()[0]
    config = HNFConfig(**({"ode_method": args.ode_method} if args.ode_method else {}))
    hnf_name = f"HNF (ode_method={args.ode_method})" if args.ode_method else "HNF (default config)"
    models = {hnf_name: HNFForImageClassification(config)}
    models["ViT (same width, depth)"] = build_vit_baseline(config, args.vit_intermediate_size)
    for solver in [name for name in args.solvers.split(",") if name and name != config.ode_method]:
        models[f"HNF (ode_method={solver})"] = HNFForImageClassification(HNFConfig(ode_method=solver))
    if args.ablations:
        models.update({name: HNFForImageClassification(HNFConfig(**changes)) for name, changes in ABLATIONS.items()})
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-3) for name, model in models.items()}

    batches = [
        (torch.rand(args.batch_size, 3, 224, 224) * 2 - 1, torch.randint(0, config.num_labels, (args.batch_size,)))
        for _ in range(2)
    ]
    train_seconds = {name: [] for name in models}
    train_cpu_seconds = {name: [] for name in models}
    for step in tqdm(range(args.warmup + args.steps), desc="train steps"):
        pixel_values, labels = batches[step % len(batches)]
        for name, model in models.items():
            model.train()
            start, cpu_start = time.perf_counter(), time.process_time()
            model(pixel_values=pixel_values, labels=labels).loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if step >= args.warmup:
                train_seconds[name].append(time.perf_counter() - start)
                train_cpu_seconds[name].append(time.process_time() - cpu_start)

    infer_seconds = {name: [] for name in models}
    with torch.inference_mode():
        for step in range(args.warmup + args.steps):
            pixel_values = batches[step % len(batches)][0]
            for name, model in models.items():
                model.eval()
                start = time.perf_counter()
                model(pixel_values=pixel_values)
                if step >= args.warmup:
                    infer_seconds[name].append(time.perf_counter() - start)

    print(
        f"\nbatch {args.batch_size}, {torch.get_num_threads()} threads, {args.steps} timed steps, "
        f"1-min load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}"
    )
    header = f"{'model':32} {'params':>9} {'train ms/step':>14} {'cpu ms/step':>12} {'train img/s':>12} {'infer img/s':>12}"
    print(header)
    print("-" * len(header))
    medians = {}
    for name, model in models.items():
        train = statistics.median(train_seconds[name])
        infer = statistics.median(infer_seconds[name])
        cpu = statistics.median(train_cpu_seconds[name])
        medians[name] = (train, cpu, infer)
        params = count_parameters(model)
        print(
            f"{name:32} {params / 1e6:8.2f}M {train * 1e3:14.0f} {cpu * 1e3:12.0f} "
            f"{args.batch_size / train:12.1f} {args.batch_size / infer:12.1f}"
        )
    hnf, vit = medians[hnf_name], medians["ViT (same width, depth)"]
    for name in models:
        if name.startswith("HNF (ode_method=") and name != hnf_name:
            print(f"{name}/ViT cost per image: train {medians[name][0] / vit[0]:.2f}x wall, {medians[name][1] / vit[1]:.2f}x CPU")
    print(
        f"HNF/ViT cost per image: train {hnf[0] / vit[0]:.2f}x wall, {hnf[1] / vit[1]:.2f}x CPU; "
        f"inference {hnf[2] / vit[2]:.2f}x wall (target for a later issue: train <= 3x)"
    )


if __name__ == "__main__":
    main()
