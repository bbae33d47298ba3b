"""Writing a dataset folder: every subset is saved into a staging folder and moved into place only once complete.

The three builders (``build_sem.py``, ``synthesize.py``, ``generate_qa.py``) write this way, so a
crash, a kill or a full disk never leaves a half-written subset under its final name, and a reader
sees either the previous output or the new one:

    with staged_write(output_dir, names=("vqa", "class_descriptions"), prefix="generate_qa") as staging:
        save_subset(staging / "vqa", vqa_features(), generator=rows, fingerprint=...)
        save_subset(staging / "class_descriptions", class_descriptions_features(), rows=descriptions)

``staged_write(folder)`` without ``names`` builds a whole folder next to ``folder`` and renames it
into place (the synthetic cache relies on that rename).

A staging folder records its owner (pid and host, in ``.owner``) and holds a lock on that file for
as long as its process lives. A run that was killed leaves its staging folder behind; the next
``staged_write`` for the same output removes it once the lock shows that its owner is gone (or, for
a folder with no owner record, once the pid in its name is no longer running here and the folder is
over a minute old). A folder whose owner may still be running is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from .locking import file_lock

logger = logging.getLogger(__name__)
OWNER_FILE = ".owner"
# a staging folder without an owner record is left alone this long: its owner may be writing the record
UNCLAIMED_GRACE_S = 60.0


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
        folder, stem = target.parent, f".{target.name}.tmp"
    else:
        target.mkdir(parents=True, exist_ok=True)
        folder, stem = target, f".{prefix}"
    remove_stale_staging(folder, stem)
    staging = _fresh_name(folder, stem)
    staging.mkdir()
    owner = _claim(staging)
    try:
        yield staging
        with file_lock(lock) if lock is not None else contextlib.nullcontext():
            if names is None:
                os.unlink(staging / OWNER_FILE)  # not part of the output (the pid in the name still marks the folder as ours)
                replace_path(staging, target)
            else:
                for name in names:
                    if (staging / name).exists():
                        replace_path(staging / name, target / name)
                    else:
                        remove_path(target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if owner is not None:
            os.close(owner)  # releases the owner lock


def _claim(staging: Path) -> int | None:
    """Record this process as the staging folder's owner and hold a lock on the record while it lives."""
    descriptor = os.open(staging / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): the pid alone tells
            pass
        os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode())
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def remove_stale_staging(folder: str | os.PathLike, stem: str) -> list[Path]:
    """Remove the ``<stem>-<pid>-<hex>`` staging folders in ``folder`` whose owning process is gone; returns them.

    Only folders this module names are considered, and only those whose owner is known to be gone:
    its lock on ``.owner`` is free (the lock goes with the process, however it ended); with no owner
    record, the pid in the name is not running on this host and the folder is over a minute old.
    """
    pattern = re.compile(re.escape(stem) + r"-(\d+)-[0-9a-f]{8}")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False) or not _owner_gone(Path(entry.path), int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            logger.info("removed %s, left by a run that was killed (pid %s)", entry.path, match.group(1))
            removed.append(Path(entry.path))
    return removed


def _owner_gone(staging: Path, pid_in_name: int) -> bool:
    try:
        record = json.loads((staging / OWNER_FILE).read_text())
        pid, host = int(record["pid"]), str(record["host"])
    except (OSError, ValueError, KeyError, TypeError):  # no record (yet, or from an older version)
        try:
            age = time.time() - staging.stat().st_mtime
        except OSError:
            return False
        return pid_in_name != os.getpid() and not _pid_running(pid_in_name) and age > UNCLAIMED_GRACE_S
    try:
        import fcntl
    except ImportError:
        return host == socket.gethostname() and pid != os.getpid() and not _pid_running(pid)
    try:
        descriptor = os.open(staging / OWNER_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its owner is alive
        return False
    finally:
        os.close(descriptor)  # closing it releases the lock, if taken
    return True


def _pid_running(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we can check: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def unwritable_reason(path: str | os.PathLike) -> str | None:
    """Why an output folder cannot be written (in a few words), or None when it can.

    The folder itself, or the nearest folder above it that exists (where it would be created), must
    be a folder this process can create files in: tried by creating (and removing) an empty file, so
    a read-only mount or an immutable folder is caught as well as missing permissions, for root too.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            return f"no folder of {path} exists"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder, so {path} cannot be created"
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".emvision-write-test-", dir=existing)
    except OSError as error:
        return f"cannot write in {existing} ({error.strerror or error})"
    os.close(descriptor)
    os.unlink(probe)
    return None


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
