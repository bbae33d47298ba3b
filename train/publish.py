"""Writing the finished model folder: weights, config, processor, remote code, metrics, model card.

The folder written here is exactly what ``--push_to_hub`` uploads (checkpoints excluded).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from emvision.train.hub import push_folder_to_hub


def add_hub_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Hugging Face Hub")
    group.add_argument("--push_to_hub", action="store_true", help="upload the finished model folder in one commit")
    group.add_argument("--hub_model_id", type=str, default=None, help="repository to push to (owner/name)")
    group.add_argument("--hub_private", action=argparse.BooleanOptionalAction, default=True, help="private repository (default)")
    group.add_argument("--hub_token", type=str, default=None, help="token (default: the cached login or HF_TOKEN)")


def check_hub_args(args) -> None:
    if args.push_to_hub and not args.hub_model_id:
        raise SystemExit("--push_to_hub needs --hub_model_id owner/name")


def parse_config_overrides(text: str | None) -> dict:
    """``"use_itc=false,vision_config.num_hidden_layers=2"`` -> nested dict with parsed values."""
    overrides: dict = {}
    if not text:
        return overrides
    for item in re.split(r",(?=\s*[\w.]+\s*=)", text):  # commas inside values ("[16,28]") stay
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"--config_overrides: expected key=value, got {item!r}")
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            value = json.loads(raw.lower() if raw.lower() in ("true", "false", "null") else raw)
        except json.JSONDecodeError:
            value = raw
        target = overrides
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return overrides


def apply_config_overrides(config, overrides: dict, prefix: str = "") -> None:
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"--config_overrides: {type(config).__name__} has no field {prefix + key!r}")
        if isinstance(value, dict):
            apply_config_overrides(getattr(config, key), value, prefix=f"{prefix}{key}.")
        else:
            setattr(config, key, value)


def save_model_folder(accelerator, model, processor, output_dir: str | Path, *, card, metrics: dict, lora_args=None) -> Path:
    """Save everything a user (or the Hub) needs into ``output_dir``; main process only."""
    output_dir = Path(output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(output_dir, safe_serialization=True)  # adapter only when LoRA-wrapped
        if processor is not None:
            processor.save_pretrained(output_dir)
        if lora_args is not None and lora_args.merge_lora:
            merged_dir = output_dir / "merged"
            merged = unwrapped.merge_and_unload()
            merged.save_pretrained(merged_dir, safe_serialization=True)
            if processor is not None:
                processor.save_pretrained(merged_dir)
            card.save(merged_dir / "README.md")
            (merged_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        card.save(output_dir / "README.md")
    accelerator.wait_for_everyone()
    return output_dir


def maybe_push(accelerator, args, output_dir: Path) -> None:
    if args.push_to_hub and accelerator.is_main_process:
        url = push_folder_to_hub(output_dir, args.hub_model_id, private=args.hub_private, token=args.hub_token)
        accelerator.print(f"Pushed {output_dir} to {url}")
