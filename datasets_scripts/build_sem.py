"""Build the emvision SEM dataset from the NFFA archive (Aversa et al. 2018) or from a user's own folder.

    python datasets_scripts/build_sem.py SOURCE --output DIR [--num_folds K] [--seed S]

SOURCE is the archive as extracted (category folders, or flat ``L<k>_<md5>.jpg`` names), a
``.tar``/``.tgz``/``.zip`` of it, or a user's folder (category folders, or an ImageFolder with
``metadata.jsonl``/``metadata.csv``). DIR receives one ``datasets.load_from_disk`` folder per subset:

- ``DIR/images``: one row per distinct image, pre-resized, with a stratified fold;
- ``DIR/vqa``: one row per question-answer pair, when the metadata has ``question``/``answer`` columns;
- ``DIR/class_descriptions``: when SOURCE holds a ``class_descriptions.jsonl``/``.csv``;

plus ``DIR/rejects.jsonl`` (every file left out, and why) and ``DIR/README.md`` (the dataset card).

The build runs in two passes. Pass 1 streams the source once and decodes, checks and pre-resizes
every file on all cores (the label is not needed for that), spooling the stored bytes to disk.
Pass 2 resolves labels (metadata may come after the images in a tar), drops exact duplicates,
assigns folds and writes the rows sorted by ``image_id``: the same input gives the same output
whatever the order of the archive, the number of workers or where the input lives.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import sys
import time
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from emvision.vocabulary import FAMILY_BY_ID, PROMPT_FAMILIES, PROMPT_VERSION, caption_for
from emvision.datasets_scripts.storage import (
    DEFAULT_NUM_FOLDS,
    DEFAULT_SHORT_SIDE,
    HUMAN_SOURCE,
    SUBSETS,
    assign_folds,
    class_descriptions_features,
    images_features,
    progress_bars,
    save_subset,
    sha256_bytes,
    staged_write,
    vqa_features,
)
from emvision.datasets_scripts.sources import (
    ARCHIVE_FILE_NAME,
    CLASS_DESCRIPTION_FILE_NAMES,
    IMAGE_EXTENSIONS,
    METADATA_FILE_NAMES,
    ClassMatcher,
    Reject,
    SourceFile,
    clean_member_path,
    count_source_files,
    iter_source,
    normalize_class_name,
    read_table,
)
from emvision.vocabulary import SEM_CATEGORIES

ARCHIVE_DOI = "10.23728/b2share.80df8606fcdb4b2bae1656f0dc6db8ba"
ARCHIVE_LICENSE = "cc-by-4.0"
ARCHIVE_CITATION = """@article{aversa2018sem,
  title   = {The first annotated set of scanning electron microscopy images for nanoscience},
  author  = {Aversa, Rossella and Modarres, Mohammad Hadi and Cozzini, Stefano and Ciancio, Regina and Chiusole, Alberto},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180172},
  year    = {2018},
  doi     = {10.1038/sdata.2018.172}
}"""
IN_HOUSE_TEACHER = "in-house"
OUTPUT_NAMES = (*SUBSETS, "rejects.jsonl", "README.md")
LOCK_NAME = ".build_sem.lock"  # held while a finished build moves into DIR
# metadata columns with a meaning of their own; every other column goes to the row's `metadata` JSON
QA_COLUMNS = ("question", "answer", "caption", "teacher", "question_id", "prompt_version")
RESERVED_COLUMNS = frozenset({"file_name", "label", *QA_COLUMNS})

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (a 9459x9459 image)
# SEM noise leaves deflate's string matching little to find: run-length + Huffman coding (Z_RLE)
# stores the smallest files of zlib's strategies on the smoke micrographs (-8% against level 1, as
# small as level 9) at about level 1's speed, about half of level 6's time.
PNG_ZLIB_STRATEGY = zlib.Z_RLE
# A colour file is a grayscale micrograph when colour is confined to annotations (the microscope's
# info-bar text and scale bar cover ~1% of an NFFA image): at most this share of its pixels may have
# a chroma value (|Cb - 128|, |Cr - 128|, each counted) above the tolerance, well above JPEG's noise.
GRAY_CHROMA_TOLERANCE = 8
GRAY_MAX_COLORED_FRACTION = 0.05
_FAMILY_BY_QUESTION = {family.question: family.question_id for family in PROMPT_FAMILIES}


# ---------------------------------------------------------------------------------------------
# one file -> one checked, pre-resized image


@dataclass(frozen=True)
class ImageOptions:
    """How each image is checked and stored (the same for every file of a build)."""

    short_side: int = DEFAULT_SHORT_SIDE  # 0 keeps the original size
    image_format: str = "png"  # png (lossless) or jpeg
    jpeg_quality: int = 95
    color: str = "auto"  # auto, L or RGB
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.short_side < 0:
            raise ValueError(f"short_side must be >= 0 (0 keeps the original size), got {self.short_side}")
        if self.image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.color not in ("auto", "L", "RGB"):
            raise ValueError(f"color must be 'auto', 'L' or 'RGB', got {self.color!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")


@dataclass(frozen=True)
class PreparedImage:
    image_id: str  # sha256 of the original bytes
    width: int  # original size
    height: int
    data: bytes  # the stored, pre-resized encoding
    mode: str  # "L" or "RGB"


class ImageRejected(Exception):
    """A file that cannot be part of the dataset; ``kind`` groups the reasons in the build report."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The stored size: short side scaled to ``short_side``, aspect ratio kept, never upscaled."""
    short = min(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    scale = short_side / short
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def prepare_image(data: bytes, options: ImageOptions = ImageOptions()) -> PreparedImage:
    """Check one file's bytes and return the image as it will be stored; raises :class:`ImageRejected`."""
    if not data:
        raise ImageRejected("empty", "empty file (0 bytes)")
    image_id = sha256_bytes(data)
    with _pixel_limit(options.max_pixels):
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageRejected("corrupt", "corrupt image: no image format recognises the file's bytes") from None
        except Exception as error:  # noqa: BLE001 - any decoder failure is this file's problem only
            raise _decode_failure(error) from None
        with image:
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageRejected("corrupt", f"corrupt image: declares an empty size {width}x{height}")
            if width * height > options.max_pixels:
                raise ImageRejected(
                    "decompression_bomb",
                    f"decompression bomb: declares {width}x{height} = {width * height:,} pixels, "
                    f"over the limit of {options.max_pixels:,} (--max_pixels)",
                )
            try:
                pixels = _decode(image, resized_size(width, height, options.short_side), options.color)
            except Exception as error:  # noqa: BLE001
                raise _decode_failure(error) from None
    return PreparedImage(image_id, width, height, _encode(pixels, options), pixels.mode)


@contextlib.contextmanager
def _pixel_limit(max_pixels: int):
    """Pillow's own bomb check off while opening: we reject above ``max_pixels`` ourselves, naming the declared size."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _decode_failure(error: BaseException) -> ImageRejected:
    message = re.sub(r" at 0x[0-9a-fA-F]+", "", str(error)) or type(error).__name__
    if isinstance(error, EOFError) or "truncated" in message.lower():
        return ImageRejected("truncated", f"truncated image: {message}")
    if isinstance(error, MemoryError):
        return ImageRejected("corrupt", "cannot decode: out of memory")
    return ImageRejected("corrupt", f"corrupt image: {type(error).__name__}: {message}")


def _decode(image: Image.Image, size: tuple[int, int], color: str) -> Image.Image:
    """Decode, bring to 8 bits, pick the stored mode (L or RGB) and resize to ``size``."""
    if image.format == "JPEG":
        # libjpeg scales in the DCT domain by 1/2, 1/4 or 1/8 while decoding, as far as ``size``
        # allows: a 1024x768 micrograph is decoded at 512x384, about twice as fast.
        if color == "L" or image.mode == "L":
            image.draft("L", size)
        elif image.mode == "RGB":
            image.draft("YCbCr", size)  # no colour conversion; auto mode looks at the chroma anyway
        else:
            image.draft(None, size)
    image.load()
    image = _to_8bit(image)
    if image.mode == "RGB" and color != "RGB":
        image = _resize(image, size).convert("YCbCr")  # resize first: RGB files (TIFF, PNG) can be large
    if image.mode == "YCbCr":
        if color == "L" or (color == "auto" and _is_neutral(image)):
            image = image.getchannel(0)  # luma: what Pillow's convert("L") computes from RGB
        else:
            image = image.convert("RGB")
    image = _resize(image, size)  # a single band when the micrograph is gray
    return image.convert("RGB") if color == "RGB" else image


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # bicubic, the default of transformers' CLIP/BLIP image processors; Pillow antialiases downscaling
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


_COLORED = np.abs(np.arange(256) - 128) > GRAY_CHROMA_TOLERANCE  # chroma value -> visibly coloured?


def _is_neutral(ycbcr: Image.Image) -> bool:
    """Few enough visibly coloured values in the Cb and Cr bands (counted from their histograms)."""
    histogram = np.asarray(ycbcr.histogram()).reshape(3, 256)  # Y, Cb, Cr
    colored = histogram[1:, _COLORED].sum()  # a pixel coloured in both bands counts twice: errs towards RGB
    return colored <= GRAY_MAX_COLORED_FRACTION * ycbcr.width * ycbcr.height


def _to_8bit(image: Image.Image) -> Image.Image:
    """L, RGB or YCbCr at 8 bits per channel."""
    mode = image.mode
    if mode in ("L", "RGB", "YCbCr"):
        return image
    if mode.startswith("I;16"):
        pixels = np.asarray(image).astype(np.float64) / 257.0  # 16-bit container: full range to 0..255
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    if mode in ("I", "F"):
        pixels = np.asarray(image).astype(np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        if low >= 0 and high <= 255:
            scaled = pixels
        elif low >= 0 and high <= 65535 and mode == "I":
            scaled = pixels / 257.0
        else:  # floats or unusual ranges: stretch to the full 8-bit range
            scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    if mode in ("1", "LA", "La"):
        return image.convert("L")
    if mode in ("P", "PA"):
        return image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB").convert("RGB")
    return image.convert("RGB")  # RGBA, RGBa, RGBX, CMYK, LAB, HSV: alpha dropped


def _encode(image: Image.Image, options: ImageOptions) -> bytes:
    buffer = io.BytesIO()
    if options.image_format == "png":
        image.save(buffer, format="PNG", compress_level=1, compress_type=PNG_ZLIB_STRATEGY)
    else:  # 4:4:4 keeps the colour of thin annotation text sharp
        image.save(buffer, format="JPEG", quality=options.jpeg_quality, subsampling=0)
    return buffer.getvalue()


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


# ---------------------------------------------------------------------------------------------
# the build


@dataclass
class BuildReport:
    """What a build produced; ``summary()`` is the one line the CLI prints."""

    output_dir: Path
    class_names: list[str]
    class_counts: dict[str, int]
    num_files: int
    num_qa_pairs: int
    num_descriptions: int
    rejects: list[Reject]
    seconds: float
    num_duplicates: int = 0
    num_conflicts: int = 0  # groups of identical images carrying different labels
    vqa_teachers: dict[str, int] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return sum(self.class_counts.values())

    @property
    def rejects_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(reject.kind for reject in self.rejects).items()))

    def summary(self) -> str:
        by_kind = ", ".join(f"{count} {kind}" for kind, count in self.rejects_by_kind.items())
        rate = self.num_files / self.seconds if self.seconds > 0 else float("inf")
        extra = ""
        if self.num_qa_pairs:
            extra += f", {self.num_qa_pairs:,} QA pairs"
        if self.num_descriptions:
            extra += f", {self.num_descriptions:,} class descriptions"
        return (
            f"{self.output_dir}: {self.num_images:,} images in {sum(1 for c in self.class_counts.values() if c)} classes{extra}; "
            f"{len(self.rejects):,} rejects{f' ({by_kind})' if by_kind else ''}; "
            f"{self.num_files:,} files in {self.seconds:.1f} s ({rate:.0f} files/s)"
        )


@dataclass
class _Image:
    """Pass-1 result for one kept file: where its stored bytes lie in the spool."""

    path: str
    image_id: str
    width: int
    height: int
    mode: str
    offset: int
    length: int


def build_sem_dataset(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_folds: int = DEFAULT_NUM_FOLDS,
    seed: int = 0,
    short_side: int = DEFAULT_SHORT_SIDE,
    image_format: str = "png",
    jpeg_quality: int = 95,
    color: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    labels: Sequence[str] | None = None,
    allow_new_labels: bool = False,
    license: str | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> BuildReport:
    """Build ``images`` (+ ``vqa``, ``class_descriptions``) from ``source`` into ``output_dir``.

    ``labels`` is the class set (default: the ten SEM categories); files of other classes are
    rejected as ``unknown_class`` unless ``allow_new_labels``, which appends the new names (sorted,
    each spelled as most files spell it) after the given ones. ``license`` defaults to CC BY 4.0
    when every image carries the NFFA archive's ``L<k>_<md5>`` name, else to "unknown".
    ``num_workers=None`` uses every core; 0 decodes in this process.
    """
    started = time.perf_counter()
    source, output_dir = Path(source), Path(output_dir)
    if num_folds < 1:
        raise ValueError(f"num_folds must be >= 1, got {num_folds}")
    options = ImageOptions(short_side, image_format, jpeg_quality, color, max_pixels)
    matcher = ClassMatcher(list(labels) if labels else SEM_CATEGORIES, allow_new_labels=allow_new_labels)
    if not source.exists():
        raise FileNotFoundError(f"SOURCE {source}: no such file or folder")
    _check_output(source, output_dir, overwrite)
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    # replace a previous build only once this one is complete
    with staged_write(output_dir, OUTPUT_NAMES, prefix="build_sem", lock=output_dir / LOCK_NAME) as staging:
        spool_path = staging / "images.spool"
        with open(spool_path, "wb") as spool:
            images, tables, rejects, num_files = _read_source(source, options, num_workers, spool, show_progress)
        state = _assemble(images, tables, rejects, matcher, num_folds, seed)
        _write_subsets(state, spool_path, staging, show_progress)
        report = BuildReport(
            output_dir=output_dir,
            class_names=state.class_names,
            class_counts=state.class_counts(),
            num_files=num_files,
            num_qa_pairs=len(state.qa_rows),
            num_descriptions=len(state.description_rows),
            rejects=sorted(state.rejects, key=lambda r: (r.path, r.kind, r.reason)),
            seconds=0.0,
            num_duplicates=state.num_duplicates,
            num_conflicts=state.num_conflicts,
            vqa_teachers=dict(sorted(Counter(row["teacher"] for row in state.qa_rows).items())),
        )
        with open(staging / "rejects.jsonl", "w", encoding="utf-8") as handle:
            for reject in report.rejects:
                handle.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
        command = _command_line(source.resolve().name, options, num_folds, seed, labels, allow_new_labels, license)
        card = dataset_card(report, state, source_name=source.resolve().name, command=command, options=options, num_folds=num_folds, seed=seed, license=license)
        (staging / "README.md").write_text(str(card), encoding="utf-8")
    report.seconds = time.perf_counter() - started
    return report


def _check_output(source: Path, output_dir: Path, overwrite: bool) -> None:
    resolved_source, resolved_output = source.resolve(), output_dir.resolve()
    if resolved_source.is_dir() and (resolved_output == resolved_source or resolved_source in resolved_output.parents):
        raise ValueError(f"--output {output_dir} lies inside SOURCE {source}: choose a folder outside the source")
    existing = [name for name in OUTPUT_NAMES if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds a build ({', '.join(existing)}); pass --overwrite to replace it")


def _read_source(source: Path, options: ImageOptions, num_workers: int, spool, show_progress: bool):
    """Pass 1: decode, check and pre-resize every file; metadata tables are kept for pass 2."""
    images: list[_Image] = []
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
                images.append(_Image(source_file.path, result.image_id, result.width, result.height, result.mode, offset, len(result.data)))
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


@dataclass
class _BuildState:
    class_names: list[str]
    image_rows: list[dict]  # sorted by image_id; "image" is (offset, length) in the spool
    qa_rows: list[dict]
    description_rows: list[dict]
    rejects: list[Reject]
    num_duplicates: int
    num_conflicts: int
    modes: Counter

    def class_counts(self) -> dict[str, int]:
        counts = Counter(row["label"] for row in self.image_rows)
        return {name: counts.get(index, 0) for index, name in enumerate(self.class_names)}


def _assemble(images, tables, rejects, matcher: ClassMatcher, num_folds: int, seed: int) -> _BuildState:
    """Pass 2: labels, duplicates, folds, QA pairs and class descriptions, all in a sorted order."""
    rejects = list(rejects)
    images = sorted(images, key=lambda image: image.path)
    known_paths = {image.path for image in images} | {reject.path for reject in rejects}
    metadata = _metadata_by_path(sorted(t for t in tables if t[0] == "metadata"), known_paths, rejects)

    labelled: list[tuple[_Image, str]] = []
    for image in images:
        rows = metadata.get(image.path, [])
        explicit, origin, conflict = _explicit_label(rows)
        if conflict:
            rejects.append(Reject(image.path, "label_conflict", conflict))
            continue
        label, why = matcher.resolve(image.path, explicit, origin)
        if label is None:
            rejects.append(Reject(image.path, "unknown_class", f"unknown class: {why}"))
        else:
            labelled.append((image, label))
    class_names = matcher.class_names + matcher.new_names
    label_index = {name: index for index, name in enumerate(class_names)}
    labelled = [(image, matcher.match(label)) for image, label in labelled]  # final spelling of new classes

    by_id: dict[str, list[tuple[_Image, str]]] = defaultdict(list)
    for image, label in labelled:
        by_id[image.image_id].append((image, label))
    kept: list[tuple[_Image, str, list[tuple[str, int, dict]]]] = []
    num_duplicates = num_conflicts = 0
    for image_id in sorted(by_id):
        copies = by_id[image_id]  # sorted by path
        if len({label for _, label in copies}) > 1:
            num_conflicts += 1
            listing = "; ".join(f"{label} in {image.path}" for image, label in copies)
            for image, _ in copies:
                rejects.append(Reject(image.path, "label_conflict", f"label conflict: identical files (sha256 {image_id[:12]}) carry different labels: {listing}"))
            continue
        first, label = copies[0]
        for duplicate, _ in copies[1:]:
            num_duplicates += 1
            rejects.append(Reject(duplicate.path, "duplicate", f"duplicate of {first.path}"))
        # question-answer pairs of every copy belong to the one image kept
        kept.append((first, label, [row for image, _ in copies for row in metadata.get(image.path, [])]))

    folds = assign_folds([image.image_id for image, _, _ in kept], [label_index[label] for _, label, _ in kept], num_folds, seed)
    image_rows, qa_rows, modes = [], [], Counter()
    for (image, label, rows), fold in zip(kept, folds):
        modes[image.mode] += 1
        image_rows.append(
            {
                "image": (image.offset, image.length),
                "image_id": image.image_id,
                "label": label_index[label],
                "fold": fold,
                "source": image.path,
                "width": image.width,
                "height": image.height,
                "metadata": _user_metadata(rows),
            }
        )
        qa_rows.extend(_qa_rows(image, label, label_index[label], fold, rows, rejects))
    qa_rows = _unique(sorted(qa_rows, key=lambda r: (r["image_id"], r["question_id"], r["question"], r["answer"], r["teacher"], r["caption"], r["prompt_version"])))
    description_rows = _description_rows(sorted(t for t in tables if t[0] == "class_descriptions"), matcher, label_index, rejects)
    return _BuildState(class_names, image_rows, qa_rows, description_rows, rejects, num_duplicates, num_conflicts, modes)


def _metadata_by_path(tables, known_paths: set[str], rejects: list[Reject]) -> dict[str, list[tuple[str, int, dict]]]:
    """Metadata rows keyed by the file they describe (``file_name`` is relative to the table's folder)."""
    by_path: dict[str, list[tuple[str, int, dict]]] = defaultdict(list)
    for _, table_path, rows in tables:
        if rows and not any("file_name" in row for _, row in rows):
            columns = sorted({key for _, row in rows for key in row})
            rejects.append(Reject(table_path, "metadata", f"no 'file_name' column (columns: {', '.join(columns)}); the table was ignored"))
            continue
        folder = posixpath.dirname(table_path)
        for number, row in rows:
            name = clean_member_path(str(row.get("file_name", "")))
            if name is None:
                rejects.append(Reject(table_path, "metadata", f"row {number}: missing or invalid file_name {row.get('file_name')!r}"))
                continue
            path = posixpath.join(folder, name) if folder else name
            if path not in known_paths:
                rejects.append(Reject(path, "metadata", f"listed in {table_path} (row {number}) but not found in the source"))
                continue
            by_path[path].append((table_path, number, row))
    return by_path


def _explicit_label(rows: list[tuple[str, int, dict]]) -> tuple[str | None, str, str]:
    """(label, where it came from, conflict message) from an image's metadata rows."""
    found: dict[str, tuple[str, str]] = {}  # spelling-insensitive key -> (label as first written, where)
    for table_path, number, row in rows:
        if "label" in row:
            label = str(row["label"]).strip()
            found.setdefault(normalize_class_name(label), (label, f"{table_path} row {number}"))
    if not found:
        return None, "", ""
    if len(found) > 1:
        listing = ", ".join(f"{label!r} ({where})" for label, where in found.values())
        return None, "", f"label conflict: metadata rows disagree on the label: {listing}"
    label, origin = next(iter(found.values()))
    return label, origin, ""


def _user_metadata(rows: list[tuple[str, int, dict]]) -> str:
    extra: dict = {}
    for _, _, row in rows:
        for key, value in row.items():
            if key not in RESERVED_COLUMNS:
                extra.setdefault(key, value)
    return json.dumps(extra, sort_keys=True, ensure_ascii=False)


def _qa_rows(image: _Image, label: str, label_id: int, fold: int, rows, rejects: list[Reject]) -> list[dict]:
    qa = []
    for table_path, number, row in rows:
        has_question, has_answer = "question" in row, "answer" in row
        if not (has_question or has_answer):
            continue
        if has_question != has_answer:
            what = "a question without an answer" if has_question else "an answer without a question"
            rejects.append(Reject(table_path, "metadata", f"row {number}: {what}; the pair was skipped"))
            continue
        question = str(row["question"])
        if "question_id" in row:
            try:
                question_id = int(row["question_id"])
            except (TypeError, ValueError):
                rejects.append(Reject(table_path, "metadata", f"row {number}: question_id {row['question_id']!r} is not an integer; the pair was skipped"))
                continue
        else:  # one of the paper's ten prompt families, or 0 for a free-form in-house question
            question_id = _FAMILY_BY_QUESTION.get(question, 0)
        family = FAMILY_BY_ID.get(question_id)
        qa.append(
            {
                "image_id": image.image_id,
                "image": (image.offset, image.length),
                "label": label_id,
                "question_id": question_id,
                "question": question,
                # names the true class: the paper's label-conditioned protocol, as in every emvision vqa subset
                "caption": str(row.get("caption", caption_for(label))),
                "answer": str(row["answer"]),
                "teacher": str(row.get("teacher", IN_HOUSE_TEACHER)),
                "prompt_version": str(row.get("prompt_version", PROMPT_VERSION if family and family.question == question else IN_HOUSE_TEACHER)),
                "fold": fold,
            }
        )
    return qa


def _unique(rows: list[dict]) -> list[dict]:
    unique, seen = [], set()
    for row in rows:
        key = tuple((k, v) for k, v in row.items() if k != "image")
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _description_rows(tables, matcher: ClassMatcher, label_index: dict[str, int], rejects: list[Reject]) -> list[dict]:
    rows = []
    for _, table_path, table in tables:
        for number, row in table:
            if "label" not in row or "description" not in row:
                rejects.append(Reject(table_path, "metadata", f"row {number}: a class description needs 'label' and 'description'"))
                continue
            name = matcher.match(str(row["label"]))
            if name is None or name not in label_index:
                rejects.append(Reject(table_path, "unknown_class", f"row {number}: label {row['label']!r} is not one of the classes ({', '.join(label_index)})"))
                continue
            rows.append(
                {
                    "label": label_index[name],
                    "name": name,
                    "description": str(row["description"]),
                    "source": str(row.get("source", HUMAN_SOURCE)),
                    "prompt": str(row.get("prompt", "")),
                }
            )
    return _unique(sorted(rows, key=lambda r: (r["label"], r["source"], r["description"], r["prompt"])))


def _spooled_rows(spool_path: str, rows: Sequence[dict], show_progress: bool, desc: str) -> Iterator[dict]:
    """Generator for ``Dataset.from_generator``: rows with their stored image bytes read back from the spool."""
    with open(spool_path, "rb") as spool:
        for row in tqdm(rows, desc=desc, unit="row", disable=not show_progress):
            if "image" in row:
                offset, length = row["image"]
                spool.seek(offset)
                row = {**row, "image": {"bytes": spool.read(length), "path": None}}
            yield row


def _write_subsets(state: _BuildState, spool_path: Path, staging: Path, show_progress: bool) -> None:
    subsets = {"images": (state.image_rows, images_features(state.class_names))}
    if state.qa_rows:
        subsets["vqa"] = (state.qa_rows, vqa_features(state.class_names))
    if state.description_rows:
        subsets["class_descriptions"] = (state.description_rows, class_descriptions_features(state.class_names))
    with progress_bars(False):  # one bar per subset, ours
        for name, (rows, features) in subsets.items():
            if not rows:  # e.g. every file rejected: an empty subset, so the build can still be inspected
                save_subset(staging / name, features)
                continue
            # the rows and the stored bytes fix the content, so they fix the fingerprint too
            digest = hashlib.sha256(repr(features.to_dict()).encode())
            for row in rows:
                digest.update(repr(sorted((k, v) for k, v in row.items() if k != "image")).encode())
            save_subset(
                staging / name,
                features,
                generator=_spooled_rows,
                # a tuple, not a list: datasets would make every list item a shard of its own
                gen_kwargs={"spool_path": str(spool_path), "rows": tuple(rows), "show_progress": show_progress, "desc": f"Writing {name}"},
                fingerprint=digest.hexdigest()[:32],
            )


# ---------------------------------------------------------------------------------------------
# dataset card and Hub upload


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


def _command_line(source_name, options: ImageOptions, num_folds, seed, labels, allow_new_labels, license) -> str:
    """The build's command, with the options that differ from the defaults (for the card)."""
    parts = ["python datasets_scripts/build_sem.py", source_name, "--output DIR", f"--num_folds {num_folds}", f"--seed {seed}"]
    defaults = ImageOptions()
    for name in ("short_side", "image_format", "jpeg_quality", "color", "max_pixels"):
        if getattr(options, name) != getattr(defaults, name) and (name != "jpeg_quality" or options.image_format == "jpeg"):
            parts.append(f"--{name} {getattr(options, name)}")
    if labels:
        parts.append("--labels " + ",".join(labels))
    if allow_new_labels:
        parts.append("--allow_new_labels")
    if license:
        parts.append(f"--license {license}")
    return " ".join(parts)


def dataset_card(report: BuildReport, state: _BuildState, *, source_name: str, command: str, options: ImageOptions, num_folds: int, seed: int, license: str | None):
    """The dataset card (``huggingface_hub.DatasetCard``): YAML metadata + a readable build record."""
    from huggingface_hub import DatasetCard, DatasetCardData

    sources = [row["source"] for row in state.image_rows]
    is_archive = bool(sources) and all(ARCHIVE_FILE_NAME.match(path.rsplit("/", 1)[-1]) for path in sources)
    license = license or (ARCHIVE_LICENSE if is_archive else "unknown")
    counts = report.class_counts
    total = max(report.num_images, 1)
    pretty_name = "NFFA-EUROPE SEM images (Aversa et al. 2018), emvision build" if is_archive else f"SEM images from {source_name}, emvision build"
    stored = (
        "lossless PNG: no second round of JPEG artefacts on top of the microscope's, and pixels that read back exactly"
        if options.image_format == "png"
        else f"JPEG (quality {options.jpeg_quality}, 4:4:4 chroma)"
    )
    resize = (
        f"short side {options.short_side} px (aspect ratio kept, never upscaled), bicubic; JPEGs are first "
        "downscaled while decoding (libjpeg DCT scaling, `draft`)"
        if options.short_side
        else "original size"
    )
    card_data = DatasetCardData(
        license=license,
        pretty_name=pretty_name,
        task_categories=["image-classification"] + (["visual-question-answering"] if report.num_qa_pairs else []),
        tags=["electron-microscopy", "sem", "nanomaterials", "emvision"],
        size_categories=[_size_category(report.num_images)],
        emvision={
            "source": source_name,
            "source_kind": "nffa-archive" if is_archive else "user-folder",
            "num_images": report.num_images,
            "class_counts": counts,
            "num_folds": num_folds,
            "fold_seed": seed,
            "preprocessing": {
                "short_side": options.short_side,
                "format": options.image_format,
                "color": options.color,
                "stored_modes": dict(sorted(state.modes.items())),
                "max_pixels": options.max_pixels,
            },
            "num_qa_pairs": report.num_qa_pairs,
            "num_class_descriptions": report.num_descriptions,
            "num_rejects": len(report.rejects),
            "rejects_by_kind": report.rejects_by_kind,
            "num_duplicates_removed": report.num_duplicates,
            "num_label_conflicts": report.num_conflicts,
        },
    )
    lines = [f"# {pretty_name}", ""]
    if is_archive:
        lines += [
            f"Scanning-electron micrographs of nanomaterials in {len(report.class_names)} classes from the NFFA-EUROPE SEM dataset "
            f"(Aversa et al., Scientific Data 5, 180172, 2018; archive doi:{ARCHIVE_DOI}), licensed CC BY 4.0.",
        ]
    else:
        lines += [f"Micrographs read from `{source_name}`. Licence: `{license}`" + (" (not stated: pass `--license` when building)." if license == "unknown" else ".")]
    lines += [
        "",
        f"Built with emvision: `{command}`.",
        "",
        "## Subsets",
        "",
        "| subset | rows | load with |",
        "| --- | ---: | --- |",
        f"| images | {report.num_images:,} | `datasets.load_from_disk(\"DIR/images\")` |",
    ]
    if report.num_qa_pairs:
        lines.append(f"| vqa | {report.num_qa_pairs:,} | `datasets.load_from_disk(\"DIR/vqa\")` |")
    if report.num_descriptions:
        lines.append(f"| class_descriptions | {report.num_descriptions:,} | `datasets.load_from_disk(\"DIR/class_descriptions\")` |")
    lines += [
        "",
        "`images` columns: `image` (pre-resized), `image_id` (sha256 of the original file's bytes), `label`, `fold`, "
        "`source` (path inside the source), `width`/`height` (original size), `metadata` (JSON: the user's metadata columns, or `{}`).",
        "",
        "## Classes",
        "",
        "| label | class | images | share |",
        "| ---: | --- | ---: | ---: |",
    ]
    lines += [f"| {index} | {name} | {counts[name]:,} | {100 * counts[name] / total:.1f}% |" for index, name in enumerate(report.class_names)]
    lines += [
        "",
        "The classes are imbalanced: report macro-F1 next to accuracy.",
        "",
        "## Folds",
        "",
        f"`fold` holds {num_folds} stratified folds (seed {seed}): each fold has the floor or the ceiling of "
        f"n_class / {num_folds} images of every class. For cross-validation, test on `fold == k` and train on the rest. "
        "Exact duplicates are removed before folding, so one image never sits in two folds.",
        "",
        "## Preprocessing",
        "",
        f"- Size: {resize}.",
        f"- Stored as {stored}.",
        f"- Colour (`{options.color}`): grayscale micrographs are stored as 8-bit `L`, including colour files whose colour "
        f"is confined to annotations (at most {GRAY_MAX_COLORED_FRACTION:.0%} of pixels with a chroma above {GRAY_CHROMA_TOLERANCE}, "
        "e.g. the microscope's information bar); other colour images as `RGB`. "
        + ", ".join(f"{count:,} stored as {mode}" for mode, count in sorted(state.modes.items())) + ".",
        "- 16-bit images are scaled to 8 bits; alpha is dropped; EXIF orientation is not applied (pixels as stored in the file).",
        f"- Files declaring more than {options.max_pixels:,} pixels are rejected as decompression bombs.",
        "",
        "## Build report",
        "",
        f"{report.num_files:,} files read; {report.num_images:,} images kept; {len(report.rejects):,} entries in `rejects.jsonl` "
        f"(path, kind, reason): {', '.join(f'{count:,} {kind}' for kind, count in report.rejects_by_kind.items()) or 'none'}.",
        f"Exact duplicates (same sha256) kept once: {report.num_duplicates:,} copies dropped. "
        f"Identical files carrying different labels: {report.num_conflicts:,} (all copies dropped).",
    ]
    if report.num_qa_pairs:
        teachers = ", ".join(f"{teacher} ({count:,})" for teacher, count in report.vqa_teachers.items())
        lines += [
            "",
            "## Question-answer pairs",
            "",
            f"{report.num_qa_pairs:,} pairs from the source's metadata; teachers: {teachers}. `question_id` is the MVaEMa "
            "prompt family (1-10) when the question is one of the paper's, else 0. Unless the metadata gave one, "
            "`caption` names the true class (the paper's protocol): using it is label-conditioned.",
        ]
    if is_archive:
        lines += ["", "## Citation", "", "```bibtex", ARCHIVE_CITATION, "```"]
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def push_to_hub(output_dir: str | os.PathLike, repo_id: str, *, private: bool = True, token: str | None = None) -> str:
    """Upload a build: the card, each subset as a config of ``repo_id`` (split "train"), and rejects.jsonl."""
    from datasets import load_from_disk
    from huggingface_hub import DatasetCard, HfApi

    output_dir = Path(output_dir)
    if not (output_dir / "images").is_dir():
        raise FileNotFoundError(f"{output_dir}: no images subset; build the dataset before pushing it")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    # the card first: each subset's push then adds its config and dataset_info to the card's YAML
    DatasetCard.load(output_dir / "README.md").push_to_hub(repo_id, token=token, repo_type="dataset", commit_message="Dataset card")
    for subset in SUBSETS:
        if (output_dir / subset).is_dir():
            load_from_disk(str(output_dir / subset)).push_to_hub(
                repo_id,
                config_name=subset,
                set_default=subset == "images",
                split="train",
                private=private,
                token=token,
                commit_message=f"Add the {subset} subset",
            )
    api.upload_file(
        path_or_fileobj=str(output_dir / "rejects.jsonl"),
        path_in_repo="rejects.jsonl",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Build rejects (path, kind, reason)",
    )
    return str(url)


# ---------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_sem.py",
        description="Build the emvision SEM dataset (DIR/images [+ vqa, class_descriptions], rejects.jsonl, README.md) "
        "from the NFFA archive (folder, .tar/.tgz/.zip) or your own image folder.",
        epilog="example: python datasets_scripts/build_sem.py SEM_dataset.tar --output data/sem --num_folds 10 --seed 0",
    )
    parser.add_argument("source", metavar="SOURCE", help="archive folder or file, or a folder of your images")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--num_folds", type=int, default=DEFAULT_NUM_FOLDS, metavar="K", help="stratified folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="fold seed (default: %(default)s)")
    parser.add_argument("--short_side", type=int, default=DEFAULT_SHORT_SIDE, help="stored short side in px, 0 = original (default: %(default)s)")
    parser.add_argument("--image_format", choices=("png", "jpeg"), default="png", help="stored format (default: lossless png)")
    parser.add_argument("--jpeg_quality", type=int, default=95, help="quality with --image_format jpeg (default: %(default)s)")
    parser.add_argument("--color", choices=("auto", "L", "RGB"), default="auto", help="stored mode; auto: L for grayscale micrographs")
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS, help="reject larger images as bombs (default: %(default)s)")
    parser.add_argument("--labels", metavar="A,B,C", help="your class names, comma-separated (default: the 10 SEM categories)")
    parser.add_argument("--allow_new_labels", action="store_true", help="add unknown labels / folder names as new classes")
    parser.add_argument("--license", help="licence id for the card (default: cc-by-4.0 for the archive, else unknown)")
    parser.add_argument("--num_workers", type=int, default=None, help="decoding processes (default: all cores; 0 = none)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous build in DIR")
    parser.add_argument("--push_to_hub", metavar="REPO", help="also upload to this Hub dataset repo")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True, help="private repo (default)")
    visibility.add_argument("--public", dest="private", action="store_false", help="public repo")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    labels = [name.strip() for name in args.labels.split(",") if name.strip()] if args.labels else None
    if args.labels is not None and not labels:
        _parser().error("--labels needs at least one class name")
    try:
        report = build_sem_dataset(
            args.source,
            args.output,
            num_folds=args.num_folds,
            seed=args.seed,
            short_side=args.short_side,
            image_format=args.image_format,
            jpeg_quality=args.jpeg_quality,
            color=args.color,
            max_pixels=args.max_pixels,
            labels=labels,
            allow_new_labels=args.allow_new_labels,
            license=args.license,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
            show_progress=not args.quiet,
        )
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as error:
        print(f"build_sem.py: error: {error}", file=sys.stderr)
        return 2
    if args.push_to_hub:
        url = push_to_hub(args.output, args.push_to_hub, private=args.private)
        print(f"pushed to {url} ({'private' if args.private else 'public'})")
    if report.num_conflicts:
        print(
            f"build_sem.py: warning: {report.num_conflicts} image(s) appear under different labels; every copy was left out "
            f"(kind label_conflict in {Path(args.output) / 'rejects.jsonl'})",
            file=sys.stderr,
        )
    print(report.summary())
    if report.num_images == 0:
        print(f"build_sem.py: error: no image was kept; see {Path(args.output) / 'rejects.jsonl'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module, so worker processes can import what they are sent.
    from emvision.datasets_scripts.build_sem import main as _main

    sys.exit(_main())
