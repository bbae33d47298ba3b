"""One exclusive lock per output: two processes never build, or pay for, the same thing twice."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


class LockBusyError(RuntimeError):
    """The lock is held by another process and the caller chose not to wait."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True, busy_message: str | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created, empty, if missing) for the block.

    ``wait=True`` blocks until the holder releases it; ``wait=False`` raises :class:`LockBusyError`
    (``busy_message``, or one naming ``path``) at once. The lock goes with the process: a killed
    holder never leaves a stale lock behind. The file stays, so that every process locks the same
    one. Where ``fcntl`` is missing (Windows) this is a no-op: the callers' atomic renames still keep
    what they write consistent.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusyError(busy_message or f"{Path(path)} is locked by another process") from None
        yield
    finally:
        os.close(descriptor)  # releases the lock
