"""One exclusive lock per output: two processes never build, or pay for, the same thing twice."""

from __future__ import annotations

import contextlib
import os
import threading
import time
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


def exit_with_parent(parent_pid: int) -> None:
    """Initializer for worker processes: the worker ends when the process ``parent_pid`` that started it ends.

    A forked worker inherits its parent's open files, and with them the locks this module and the
    staging folders take. Were the parent killed, its idle workers would wait on their task queue for
    ever and keep those locks held: the next build would find the lock of a killed run still taken.
    On Linux the kernel kills the worker with its parent (``PR_SET_PDEATHSIG``); elsewhere a thread
    notices the new parent within a second.
    """
    if os.getppid() != parent_pid:  # the parent ended before this worker got here
        os._exit(1)
    if _kill_with_parent():
        if os.getppid() != parent_pid:  # ended between the check above and the request
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _kill_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent ends (Linux only); whether it was granted."""
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError, TypeError):  # no prctl (not Linux), or no C library to load
        return False
