"""A progress bar over an evaluation loader, shown by the local main process only."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress(accelerator, loader, desc: str):
    return tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False)
