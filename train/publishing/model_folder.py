"""Writing the finished model folder: weights, config, processor, remote code, metrics, model card and the split
record (``split.json``: which images the model saw, see ``train/data/split_record.py``).

The folder written here is exactly what ``--push_to_hub`` uploads (checkpoints excluded).
"""

from __future__ import annotations

import json
from pathlib import Path


def save_model_folder(accelerator, model, processor, output_dir: str | Path, *, card, metrics: dict, split=None, lora_args=None) -> Path:
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
            if split is not None:
                split.save(merged_dir)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        card.save(output_dir / "README.md")
        if split is not None:
            split.save(output_dir)
    accelerator.wait_for_everyone()
    return output_dir
