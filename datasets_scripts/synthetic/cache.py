"""The synthetic sets the training scripts use: built on first use, cached, shared by concurrent processes.

``load_or_create_synthetic(num_images=..., seed=...)`` returns a folder cached under
``$EMVISION_CACHE/synthetic`` (default ``~/.cache/emvision/synthetic``), keyed by the schema and
generator versions and the options, built once under a file lock and moved into place atomically, so
concurrent processes (e.g. two ``accelerate launch`` ranks) share one complete copy. Making an entry
prints where it lies and how large it is (about 58 MB for the 1,000 images the training scripts use).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from emvision.datasets_scripts.storage import DEFAULT_NUM_FOLDS, DEFAULT_SHORT_SIDE, SUBSETS, file_lock

from .build import (
    DEFAULT_DESCRIPTIONS_PER_CLASS,
    DEFAULT_RENDER_SCALE,
    MARKER_FILE,
    cache_key,
    check_options,
    summary_line,
    synthesis_options,
    synthesize,
)

DEFAULT_NUM_IMAGES = 2000  # the main training job's default
CACHE_ENV = "EMVISION_CACHE"


def default_cache_dir() -> Path:
    """``$EMVISION_CACHE/synthetic``, else ``~/.cache/emvision/synthetic``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "emvision") / "synthetic"


def _is_complete(folder: Path, key: str) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("cache_key") == key and all((folder / subset / "state.json").is_file() for subset in SUBSETS)


def load_or_create_synthetic(num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0, cache_dir: str | os.PathLike | None = None, *,
                             num_folds: int = DEFAULT_NUM_FOLDS, short_side: int = DEFAULT_SHORT_SIDE,
                             render_scale: int = DEFAULT_RENDER_SCALE, descriptions_per_class: int = DEFAULT_DESCRIPTIONS_PER_CLASS,
                             human_descriptions: bool = True, num_workers: int | None = None, progress: bool = True) -> Path:
    """The folder of a synthetic dataset with these options, built on first use and cached.

    The cache entry is ``<cache_dir>/n<N>-seed<S>-<key>``, where the key hashes the generator
    version and every option; an entry is only used when its ``synthesis.json`` matches the key.
    A build holds a lock file, so concurrent callers wait for the first one instead of building
    twice, and the finished folder is renamed into place, so no caller ever sees half of it.
    """
    check_options(num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, num_workers)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(**synthesis_options(num_images, seed, num_folds, short_side, render_scale, descriptions_per_class, human_descriptions))
    target = root / f"n{num_images}-seed{seed}-{key}"
    if _is_complete(target, key):
        return target
    with file_lock(root / f".{target.name}.lock"):  # concurrent callers wait for the first one
        if _is_complete(target, key):  # another process built it while we waited
            return target
        if target.exists():  # incomplete or foreign content under our name: set it aside, never reuse it
            os.replace(target, root / f".{target.name}.stale-{uuid.uuid4().hex[:8]}")
        summary = synthesize(target, num_images, seed, num_folds=num_folds, short_side=short_side, render_scale=render_scale,
                             descriptions_per_class=descriptions_per_class, human_descriptions=human_descriptions,
                             num_workers=num_workers, progress=progress)
        for stale in root.glob(f".{target.name}.stale-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if progress:
            print(summary_line(summary), file=sys.stderr)
        # said even when quiet: a new folder of this size under the user's home should never be a surprise
        print(f"synthetic set cached at {target} ({folder_size(target) / 1e6:.0f} MB on disk; set {CACHE_ENV} to move the cache, "
              "delete the folder to free the space)", file=sys.stderr)
    return target


def folder_size(folder: str | os.PathLike) -> int:
    """Bytes of the files under ``folder`` (what ``du`` counts, less the file system's block rounding)."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
