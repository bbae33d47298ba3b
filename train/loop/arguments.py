"""The training protocol's command-line arguments, shared by ``train/vqa.py`` and ``train/classify.py``, and
the quick-start step budget of runs on the embedded synthetic set."""

from __future__ import annotations

import argparse
import os


def add_training_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training protocol (paper defaults)")
    group.add_argument("--learning_rate", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    group.add_argument("--weight_decay", type=float, default=0.0)
    group.add_argument("--per_device_train_batch_size", type=int, default=48, help="batch per process (default: 48)")
    group.add_argument("--per_device_eval_batch_size", type=int, default=96)
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--num_train_epochs", type=int, default=50, help="epoch cap (default: 50)")
    group.add_argument("--max_train_steps", type=int, default=None, help="stop after this many optimizer steps")
    group.add_argument("--early_stopping_patience", type=int, default=10, help="epochs without a better validation loss before stopping")
    group.add_argument("--lr_patience", type=int, default=5, help="stagnant epochs before the learning rate is halved")
    group.add_argument("--lr_factor", type=float, default=0.5)
    group.add_argument("--max_grad_norm", type=float, default=1.0)
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="overrides accelerate's config")
    group.add_argument("--num_workers", type=int, default=0, help="DataLoader workers per process")
    run = parser.add_argument_group("checkpoints and tracking")
    run.add_argument("--output_dir", type=str, default=None, help="model folder to write (default: outputs/<script>)")
    run.add_argument("--checkpointing_steps", type=str, default="epoch", help="'epoch', an integer number of optimizer steps, or 'no'")
    run.add_argument("--checkpoints_total_limit", type=int, default=2)
    run.add_argument("--resume_from_checkpoint", type=str, default=None, help="a checkpoint folder, or 'latest'")
    run.add_argument("--report_to", type=str, default="all", help="accelerate trackers ('all' uses whichever are installed; 'none')")


def apply_step_budget(args, quick_start_steps: int) -> None:
    """On the embedded synthetic set (no --dataset) a run stops after ``quick_start_steps`` optimizer steps
    unless --max_train_steps says otherwise; ``--max_train_steps 0`` means the paper's full schedule."""
    args.quick_start = args.dataset is None and args.max_train_steps is None
    if args.quick_start:
        args.max_train_steps = quick_start_steps
    elif args.max_train_steps == 0:
        args.max_train_steps = None


def default_output_dir(script: str) -> str:
    return os.path.join("outputs", script)
