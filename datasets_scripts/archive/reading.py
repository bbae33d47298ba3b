"""Pass 1 of a build: stream the source once and decode, check and prepare every file for the models on all cores.

The label is not needed for that, so pass 1 runs before labels are known (metadata may come after
the images in a tar). Each kept image's stored bytes are spooled to one file; metadata and
class-description tables are kept for pass 2 (``assembly.py``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .codec import ImageOptions, ImageRejected, PreparedImage, prepare_image
from .sources import (
    CLASS_DESCRIPTION_FILE_NAMES,
    IMAGE_EXTENSIONS,
    METADATA_FILE_NAMES,
    Reject,
    SourceFile,
    count_source_files,
    iter_source,
    read_table,
)


@dataclass
class SpooledImage:
    """Pass-1 result for one kept file: where its stored bytes lie in the spool."""

    path: str
    image_id: str
    width: int
    height: int
    mode: str
    offset: int
    length: int
    crop_box: tuple[int, int, int, int] = (0, 0, 0, 0)  # of the original, that the stored image shows
    scale_bar_px: float | None = None


def _prepare_files(files: list[SourceFile], options: ImageOptions) -> list[tuple[SourceFile, PreparedImage | Reject]]:
    """Worker task: read and prepare a chunk of files (the bytes of archive members travel with them)."""
    results = []
    for source_file in files:
        try:
            data = source_file.read()
            results.append((source_file, prepare_image(data, options)))
        except ImageRejected as rejected:
            results.append((source_file, Reject(source_file.path, rejected.kind, rejected.reason)))
        except OSError as error:
            results.append((source_file, Reject(source_file.path, "unreadable", f"cannot read file: {error.strerror or error}")))
    # archive bytes need not travel back to the main process
    return [(SourceFile(item.path, item.size), result) for item, result in results]


def read_source(source: Path, options: ImageOptions, num_workers: int, spool, show_progress: bool):
    """Pass 1: decode, check and pre-resize every file; metadata tables are kept for pass 2."""
    images: list[SpooledImage] = []
    tables: list[tuple[str, str, list[tuple[int, dict]]]] = []  # (kind, path, rows)
    rejects: list[Reject] = []
    num_files = 0

    def candidates() -> Iterator[SourceFile]:
        nonlocal num_files
        for entry in iter_source(source):
            num_files += 1
            if isinstance(entry, Reject):
                rejects.append(entry)
                progress.update()
                continue
            name = entry.path.rsplit("/", 1)[-1]
            if name.lower() in METADATA_FILE_NAMES + CLASS_DESCRIPTION_FILE_NAMES:
                rows, bad_rows = read_table(entry.path, entry.read())
                kind = "metadata" if name.lower() in METADATA_FILE_NAMES else "class_descriptions"
                tables.append((kind, entry.path, rows))
                rejects.extend(bad_rows)
                progress.update()
            elif entry.path.startswith("__MACOSX/") or "/__MACOSX/" in entry.path:
                rejects.append(Reject(entry.path, "not_image", "macOS resource fork (__MACOSX), not an image"))
                progress.update()
            elif posixpath.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                extension = posixpath.splitext(name)[1] or "none"
                rejects.append(Reject(entry.path, "not_image", f"not an image file (extension: {extension})"))
                progress.update()
            else:
                yield entry

    def collect(results: list[tuple[SourceFile, PreparedImage | Reject]]) -> None:
        for source_file, result in results:
            if isinstance(result, Reject):
                rejects.append(result)
            else:
                offset = spool.tell()
                spool.write(result.data)
                images.append(SpooledImage(source_file.path, result.image_id, result.width, result.height, result.mode, offset, len(result.data),
                                           result.crop_box, result.scale_bar_px))
            progress.update()

    progress = tqdm(total=count_source_files(source), unit="file", desc="Reading and resizing", disable=not show_progress)
    with progress:
        chunks = _chunks(candidates(), size=16)
        if num_workers <= 0:
            for chunk in chunks:
                collect(_prepare_files(chunk, options))
        else:
            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                pending: dict = {}  # future -> its chunk
                for chunk in chunks:
                    pending[pool.submit(_prepare_files, chunk, options)] = chunk
                    if len(pending) >= 4 * num_workers:  # bounded: a tar's bytes are read only as fast as they are used
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            collect(_result(future, pending.pop(future)))
                for future in list(pending):
                    collect(_result(future, pending.pop(future)))
    return images, tables, rejects, num_files


def _result(future, chunk: list[SourceFile]):
    try:
        return future.result()
    except BrokenProcessPool as error:  # a decoder crashed its process (or it ran out of memory)
        raise RuntimeError(
            f"a decoding process died while files from {chunk[0].path} on were being read (a crash inside an image "
            "decoder, or out of memory); that file cannot be rejected cleanly: move it out of the source and rebuild"
        ) from error


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
