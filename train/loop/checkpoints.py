"""What a checkpoint holds besides ``accelerator.save_state``: the loop's own state as JSON, written last."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

STATE_FILE = "training_state.json"  # written last: a checkpoint without it is incomplete
BEST_WEIGHTS = "best_model.safetensors"


@dataclass
class TrainingState:
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # batches of the current epoch already consumed
    global_step: int = 0  # optimizer steps
    early_stopping: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # one dict per validation
    finished: bool = False


def json_safe(obj):
    """``obj`` with non-finite floats as strings (JSON has no inf or nan)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def json_load(obj):
    """The inverse of ``json_safe``."""
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: json_load(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_load(v) for v in obj]
    return obj


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The ``step_*`` folders that hold a state file, oldest first."""
    complete = [p for p in checkpoint_dir.glob("step_*") if (p / STATE_FILE).is_file()]
    return sorted(complete, key=lambda p: int(p.name.split("_")[1]))


def find_latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    complete = complete_checkpoints(checkpoint_dir)
    return complete[-1] if complete else None
