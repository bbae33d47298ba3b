"""Writing a dataset folder: every subset is saved into a staging folder and moved into place only once complete.

The three builders (``build_sem.py``, ``synthesize.py``, ``generate_qa.py``) write this way, so a
crash, a kill or a full disk never leaves a half-written subset under its final name, and a reader
sees either the previous output or the new one:

    with staged_write(output_dir, names=("vqa", "class_descriptions"), prefix="generate_qa") as staging:
        save_subset(staging / "vqa", vqa_features(), generator=rows, fingerprint=...)
        save_subset(staging / "class_descriptions", class_descriptions_features(), rows=descriptions)

``staged_write(folder)`` without ``names`` builds a whole folder next to ``folder`` and renames it
into place (the synthetic cache relies on that rename).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from .locking import file_lock


def save_subset(
    path: str | os.PathLike,
    features,
    rows: Sequence[Mapping] | None = None,
    *,
    generator: Callable[..., Iterator[dict]] | None = None,
    gen_kwargs: dict | None = None,
    fingerprint: str | None = None,
    description: str | None = None,
) -> int:
    """Save one subset at ``path`` with ``save_to_disk`` and return its number of rows.

    The rows come either as ``rows`` (a list, for small subsets) or from ``generator(**gen_kwargs)``,
    streamed to an Arrow file in a temporary folder beside ``path``: memory stays flat however many
    rows there are (e.g. a vqa subset repeating every image ten times). ``fingerprint`` names the
    streamed result; when the rows fix it, ``state.json`` is the same for the same rows. A generator
    must yield at least one row (``datasets`` refuses an empty one): no rows (``rows`` empty and no
    ``generator``) gives an empty subset of ``features``. ``description`` goes to the subset's
    ``dataset_info.json``.
    """
    import datasets

    path = Path(path)
    if generator is not None:
        cache_dir = _fresh_name(path.parent, f".{path.name}-cache")
        cache_dir.mkdir()
        try:
            dataset = datasets.Dataset.from_generator(
                generator, features=features, cache_dir=str(cache_dir), gen_kwargs=gen_kwargs, fingerprint=fingerprint
            )
            return _save(dataset, path, description)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    if rows:
        return _save(datasets.Dataset.from_list(list(rows), features=features), path, description)
    return _save(datasets.Dataset.from_dict({column: [] for column in features}, features=features), path, description)


def _save(dataset, path: Path, description: str | None) -> int:
    if description is not None:
        dataset.info.description = description
    # datasets (5.2) writes no shard at all for 0 rows, and cannot load that back: ask for one
    dataset.save_to_disk(str(path), num_shards=1 if len(dataset) == 0 else None)
    return len(dataset)


@contextlib.contextmanager
def staged_write(
    target: str | os.PathLike, names: Sequence[str] | None = None, *, prefix: str = "staging", lock: str | os.PathLike | None = None
) -> Iterator[Path]:
    """A staging folder to write into; once the block succeeds, its content replaces ``target``'s.

    - ``names`` given: the staging folder lies inside ``target`` (``.<prefix>-...``, created with
      ``target``); each of ``names`` the block wrote replaces its namesake in ``target``, and a name it
      did not write is removed from ``target``, so no output of an earlier run survives beside the
      new ones. Other entries of ``target`` are left alone.
    - ``names`` omitted: the staging folder lies beside ``target`` (``.<target name>.tmp-...``) and
      becomes ``target`` itself, in one rename; a previous ``target`` is replaced whole.

    With ``lock`` (a lock file, see :func:`file_lock`), the moves into ``target`` wait for that lock,
    so two writers never interleave their outputs. If the block raises, ``target`` is left as it
    was. The staging folder is removed either way.
    """
    target = Path(target)
    if names is None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = _fresh_name(target.parent, f".{target.name}.tmp")
    else:
        target.mkdir(parents=True, exist_ok=True)
        staging = _fresh_name(target, f".{prefix}")
    staging.mkdir()
    try:
        yield staging
        with file_lock(lock) if lock is not None else contextlib.nullcontext():
            if names is None:
                replace_path(staging, target)
            else:
                for name in names:
                    if (staging / name).exists():
                        replace_path(staging / name, target / name)
                    else:
                        remove_path(target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_path(new: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move ``new`` (a file or a folder) to ``final``, replacing whatever is there.

    A file over a file is one atomic rename. Anything else first renames the old ``final`` aside
    (a folder cannot be renamed over a non-empty one), renames ``new`` in, then deletes the old one;
    if the second rename fails, the old ``final`` is put back.
    """
    new, final = Path(new), Path(final)
    if not (final.exists() or final.is_symlink()) or (new.is_file() and not final.is_dir()):
        os.replace(new, final)
        return
    aside = _fresh_name(final.parent, f".{final.name}.old")
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise
    remove_path(aside)


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file, link or folder tree; nothing to do when ``path`` does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """``datasets``' own progress bars on or off for the block (off: a builder shows its own, or none)."""
    import datasets

    were_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if were_enabled and not enabled:
            datasets.enable_progress_bars()


def _fresh_name(folder: Path, stem: str) -> Path:
    return folder / f"{stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
