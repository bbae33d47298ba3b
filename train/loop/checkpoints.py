"""What a checkpoint holds besides ``accelerator.save_state``, and how a damaged one is recognised.

A checkpoint ``<output_dir>/checkpoints/step_<N>`` holds accelerate's state (``model.safetensors``,
``optimizer.bin``, random states), the loop's own state (``training_state.json``) and, written last,
``checkpoint_complete.json``: the size and sha256 of every other file. A folder without it was cut off
mid-save; a file whose size or hash differs was truncated or changed afterwards. Resuming names the
broken file, and ``--resume_from_checkpoint latest`` falls back to the newest intact checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STATE_FILE = "training_state.json"  # the loop's state
COMPLETE_MARKER = "checkpoint_complete.json"  # written last: every file's size and sha256
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so that it is either absent, the old version, or complete (never half-written)."""
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def mark_complete(checkpoint: Path) -> None:
    """Write the completion marker: called once everything else in ``checkpoint`` is written."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)
    manifest = {"files": {str(p.relative_to(checkpoint)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}}
    write_atomically(checkpoint / COMPLETE_MARKER, (json.dumps(manifest, indent=1) + "\n").encode())


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed (naming the file), or None when it is intact."""
    marker = checkpoint / COMPLETE_MARKER
    if not marker.is_file():
        return f"it has no {COMPLETE_MARKER} (the save did not finish)"
    try:
        expected = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{COMPLETE_MARKER} is unreadable"
    for name, facts in expected.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size < facts["bytes"]:
            return f"{name} is truncated ({size:,} of {facts['bytes']:,} bytes)"
        if size != facts["bytes"]:
            return f"{name} has {size:,} bytes where {facts['bytes']:,} were written"
        if _sha256(path) != facts["sha256"]:
            return f"{name} is damaged (its content changed after it was written)"
    return None


def _step(path: Path) -> int:
    try:
        return int(path.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def step_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Every ``step_*`` folder, complete or not, oldest first."""
    return sorted((p for p in checkpoint_dir.glob("step_*") if p.is_dir() and _step(p) >= 0), key=_step)


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The ``step_*`` folders whose save finished (they hold the completion marker), oldest first."""
    return [p for p in step_checkpoints(checkpoint_dir) if (p / COMPLETE_MARKER).is_file()]


def find_latest_checkpoint(checkpoint_dir: Path, log: Callable[[str], None] = print) -> Path | None:
    """The newest intact checkpoint; each newer one that is incomplete or damaged is named, with the reason."""
    for path in reversed(step_checkpoints(checkpoint_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log(f"Checkpoint {path} cannot be resumed: {problem}; falling back to an earlier checkpoint")
    return None
