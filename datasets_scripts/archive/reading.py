"""Pass 1 of a build: stream the source once and decode, check and prepare every file for the models on all cores.

The label is not needed for that, so pass 1 runs before labels are known (metadata may come after
the images in a tar). Each kept image's stored bytes are spooled to one file; metadata and
class-description tables are kept for pass 2 (``assembly.py``).

Memory stays bounded whatever the source holds: archive members larger than a few MiB are streamed
to spool files beside the output (``sources.py``), the bytes waiting for a decoding process are
capped, and a file larger than ``SNIFF_ABOVE_BYTES`` is read whole only once its header shows an
image within ``--max_pixels`` whose size such an image can take; anything else is rejected from its
header alone.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from emvision.datasets_scripts.storage import exit_with_parent

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

# A file larger than this is opened lazily first: only an image header within --max_pixels, on a
# file no larger than such an image can take, is read whole (a 1024x768 JPEG is ~300 kB).
SNIFF_ABOVE_BYTES = 32 << 20
# Metadata and class-description tables are parsed in the main process: larger ones are refused.
MAX_TABLE_BYTES = 256 << 20
# Bytes of archive members held in memory while they wait for a decoding process, and bytes of
# files (in memory or spooled to disk) handed out at once; a chunk closes at 16 files or CHUNK_BYTES.
MAX_PENDING_MEMORY_BYTES = 128 << 20
MAX_PENDING_BYTES = 4 << 30
CHUNK_BYTES = 32 << 20
# bytes per pixel of Pillow's modes (others: 4), for the largest file a declared image can justify
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}


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


def _read_for_decoding(source_file: SourceFile, options: ImageOptions) -> bytes:
    """The file's bytes; a large file only once its header shows an image that may be that large."""
    if source_file.data is not None or source_file.size <= SNIFF_ABOVE_BYTES:
        return source_file.read()
    with source_file.open() as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > SNIFF_ABOVE_BYTES:
            _check_header(handle, size, options)
            handle.seek(0)
        return handle.read(size + 1)


def _check_header(handle, size: int, options: ImageOptions) -> None:
    """Reject a large file from its header alone: no image, a bomb, or far more bytes than its image can take."""
    from PIL import Image, UnidentifiedImageError

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the declared size is checked below, against --max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(handle) as image:  # reads the header only
                (width, height), mode = image.size, image.mode
    except UnidentifiedImageError:
        raise ImageRejected("corrupt", "corrupt image: no image format recognises the file's bytes") from None
    except Exception as error:  # noqa: BLE001 - a broken header is this file's problem only
        raise ImageRejected("corrupt", f"corrupt image: {type(error).__name__}: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    if width * height > options.max_pixels:
        raise ImageRejected(
            "decompression_bomb",
            f"decompression bomb: declares {width}x{height} = {width * height:,} pixels, over the limit of {options.max_pixels:,} (--max_pixels)",
        )
    decoded = width * height * _BYTES_PER_PIXEL.get(mode, 4)
    if size > 2 * decoded + (16 << 20):
        raise ImageRejected(
            "corrupt",
            f"file of {size:,} bytes is far larger than the {width}x{height} {mode} image its header declares "
            f"({decoded:,} bytes decoded): padded, or several images in one file; only single images are read",
        )


def _prepare_files(files: list[SourceFile], options: ImageOptions) -> list[tuple[SourceFile, PreparedImage | Reject]]:
    """Worker task: read and prepare a chunk of files (the bytes of small archive members travel with them)."""
    results = []
    for source_file in files:
        try:
            data = _read_for_decoding(source_file, options)
            results.append((source_file, prepare_image(data, options)))
        except ImageRejected as rejected:
            results.append((source_file, Reject(source_file.path, rejected.kind, rejected.reason)))
        except OSError as error:
            results.append((source_file, Reject(source_file.path, "unreadable", f"cannot read file: {error.strerror or error}")))
    # archive bytes need not travel back to the main process
    return [(SourceFile(item.path, item.size), result) for item, result in results]


def read_source(source: Path, options: ImageOptions, num_workers: int, spool, show_progress: bool):
    """Pass 1: decode, check and pre-resize every file; metadata tables are kept for pass 2.

    Large archive members are streamed to a temporary folder beside ``spool`` (in the build's
    staging folder) and removed once decoded.
    """
    spool_name = getattr(spool, "name", None)
    with tempfile.TemporaryDirectory(prefix=".members-", dir=os.path.dirname(spool_name) if isinstance(spool_name, str) else None) as member_dir:
        return _read_source(source, options, num_workers, spool, show_progress, member_dir)


def _read_source(source: Path, options: ImageOptions, num_workers: int, spool, show_progress: bool, member_dir: str):
    images: list[SpooledImage] = []
    tables: list[tuple[str, str, list[tuple[int, dict]]]] = []  # (kind, path, rows)
    rejects: list[Reject] = []
    num_files = 0

    def candidates() -> Iterator[SourceFile]:
        nonlocal num_files
        for entry in iter_source(source, spool_dir=member_dir):
            num_files += 1
            if isinstance(entry, Reject):
                rejects.append(entry)
                progress.update()
                continue
            name = entry.path.rsplit("/", 1)[-1]
            if name.lower() in METADATA_FILE_NAMES + CLASS_DESCRIPTION_FILE_NAMES:
                if entry.size > MAX_TABLE_BYTES:
                    rejects.append(Reject(entry.path, "too_large", f"table of {entry.size:,} bytes is larger than the {MAX_TABLE_BYTES:,}-byte limit for tables"))
                else:
                    try:
                        rows, bad_rows = read_table(entry.path, entry.read())
                    except OSError as error:
                        rows, bad_rows = [], [Reject(entry.path, "unreadable", f"cannot read file: {error.strerror or error}")]
                    kind = "metadata" if name.lower() in METADATA_FILE_NAMES else "class_descriptions"
                    tables.append((kind, entry.path, rows))
                    rejects.extend(bad_rows)
                _discard([entry])
                progress.update()
            elif entry.path.startswith("__MACOSX/") or "/__MACOSX/" in entry.path:
                rejects.append(Reject(entry.path, "not_image", "macOS resource fork (__MACOSX), not an image"))
                _discard([entry])
                progress.update()
            elif posixpath.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                extension = posixpath.splitext(name)[1] or "none"
                rejects.append(Reject(entry.path, "not_image", f"not an image file (extension: {extension})"))
                _discard([entry])
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
                _discard(chunk)
        else:
            with ProcessPoolExecutor(max_workers=num_workers, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
                pending: dict = {}  # future -> its chunk

                def finish(future) -> None:
                    chunk = pending.pop(future)
                    collect(_result(future, chunk))
                    _discard(chunk)

                for chunk in chunks:
                    pending[pool.submit(_prepare_files, chunk, options)] = chunk
                    # bounded: a tar's bytes are read only as fast as they are used, and held in memory (or
                    # spooled to disk) only up to a budget while they wait for a decoding process
                    while pending and (
                        len(pending) >= 4 * num_workers
                        or sum(_memory_bytes(c) for c in pending.values()) > MAX_PENDING_MEMORY_BYTES
                        or sum(_held_bytes(c) for c in pending.values()) > MAX_PENDING_BYTES
                    ):
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            finish(future)
                for future in list(pending):
                    finish(future)
    return images, tables, rejects, num_files


def _memory_bytes(chunk: list[SourceFile]) -> int:
    return sum(len(item.data) for item in chunk if item.data is not None)


def _held_bytes(chunk: list[SourceFile]) -> int:
    """Bytes this process holds for the chunk: in memory, or spooled to disk."""
    return sum(item.size for item in chunk if item.data is not None or item.spooled)


def _discard(files: Iterable[SourceFile]) -> None:
    """Remove the spool files of archive members once they are decoded."""
    for item in files:
        if item.spooled and item.local_path:
            try:
                os.unlink(item.local_path)
            except FileNotFoundError:
                pass


def _result(future, chunk: list[SourceFile]):
    try:
        return future.result()
    except BrokenProcessPool as error:  # a decoder crashed its process (or it ran out of memory)
        raise RuntimeError(
            f"a decoding process died while files from {chunk[0].path} on were being read (a crash inside an image "
            "decoder, or out of memory); that file cannot be rejected cleanly: move it out of the source and rebuild"
        ) from error


def _chunks(items: Iterable[SourceFile], size: int) -> Iterator[list[SourceFile]]:
    """Lists of ``size`` files, closed early once they hold ``CHUNK_BYTES`` (one large member is a chunk of its own)."""
    chunk, held = [], 0
    for item in items:
        chunk.append(item)
        held += _held_bytes([item])
        if len(chunk) == size or held >= CHUNK_BYTES:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk
