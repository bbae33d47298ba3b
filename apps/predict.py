"""Batch prediction: one row per micrograph of files, folders, globs and archives, into a CSV or JSON-lines file.

Each row holds the file's path and sha256, its top-k classes with probabilities, what the frame says
(size, information bar, crop box, pixel size when the file's metadata has it) and, with an assistant,
the answers to chosen prompt families. A file that is not a readable image is a row too, with
`status` = why (not_image, corrupt, ...) and `reason`, and never stops the run.

The output is appended to batch by batch and flushed, so a killed run keeps what it finished; a rerun
skips every (path, sha256) already in the output, and a file that changed since gets a new row.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
from tqdm.auto import tqdm

from emvision.datasets_scripts.archive.sources import (
    IMAGE_EXTENSIONS,
    MAX_FILE_BYTES,
    Reject,
    count_source_files,
    is_archive,
    iter_source,
)
from emvision.processing.micrograph import MicrographImageError, load_micrograph, to_working_array
from emvision.vocabulary import FAMILY_BY_ID

from .infobar import read_frame_info
from .models import Assistant, Classifier

FRAME_COLUMNS = ["width", "height", "bar_row", "bar_height", "crop_box", "pixel_size_nm", "scale_source"]


@dataclass(frozen=True)
class InputFile:
    """One file to predict: its bytes, or why there are none (`reject`)."""

    path: str
    data: bytes | None = None
    reject: Reject | None = None


def iter_inputs(inputs: Sequence[str], max_file_bytes: int = MAX_FILE_BYTES) -> Iterator[InputFile]:
    """Files of `inputs` (files, folders walked recursively, globs, .zip / .tar archives), in the order given.

    A folder's or an archive's files are named `<input>/<path inside>`. Files and archive members whose
    extension is not an image format are rejects (`not_image`), as are missing inputs.
    """
    for pattern in inputs:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            yield InputFile(pattern, reject=Reject(pattern, "missing", "no file matches this pattern"))
        for match in matches:
            yield from _iter_one(Path(match), max_file_bytes)


def _iter_one(path: Path, max_file_bytes: int) -> Iterator[InputFile]:
    name = path.as_posix()
    if not path.exists():
        yield InputFile(name, reject=Reject(name, "missing", "no such file or folder"))
        return
    if path.is_file() and not is_archive(path):
        if path.stat().st_size > max_file_bytes:
            yield InputFile(name, reject=Reject(name, "too_large", f"file is larger than the {max_file_bytes:,}-byte limit"))
            return
        yield _checked(name, path.read_bytes())
        return
    try:
        for entry in iter_source(path, max_file_bytes):
            member = f"{name}/{entry.path}"
            if isinstance(entry, Reject):
                yield InputFile(member, reject=Reject(member, entry.kind, entry.reason))
            else:
                yield _checked(member, entry.read())
    except ValueError as error:  # an archive that cannot be opened at all
        yield InputFile(name, reject=Reject(name, "corrupt", str(error)))


def _checked(path: str, data: bytes) -> InputFile:
    extension = os.path.splitext(path)[1].lower()
    if extension not in IMAGE_EXTENSIONS:
        why = f"'{extension}' is not an image format" if extension else "no file extension of an image format"
        return InputFile(path, data=data, reject=Reject(path, "not_image", f"{why} ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
    return InputFile(path, data=data)


def count_inputs(inputs: Sequence[str]) -> int | None:
    """How many files `iter_inputs` will yield, when cheap to know (no archives or globs)."""
    total = 0
    for pattern in inputs:
        path = Path(pattern)
        if glob.has_magic(pattern) or (path.is_file() and is_archive(path)):
            return None
        if path.is_dir():
            count = count_source_files(path)
            if count is None:
                return None
            total += count
        else:
            total += 1
    return total


def decode(path: str, data: bytes) -> PIL.Image.Image:
    """A file's bytes as a fully decoded image, or a `MicrographImageError` that says what is wrong."""
    if not data:
        raise MicrographImageError(path, "file is empty (0 bytes)")
    try:
        image = PIL.Image.open(io.BytesIO(data))
    except PIL.Image.DecompressionBombError as error:
        raise MicrographImageError(path, f"refused by PIL's decompression-bomb protection ({error})") from error
    except PIL.UnidentifiedImageError as error:
        raise MicrographImageError(path, "not an image file PIL can identify (wrong format or corrupt header)") from error
    try:
        return load_micrograph(image)
    except MicrographImageError as error:
        raise MicrographImageError(path, error.reason) from error


# ---------------------------------------------------------------------------------------------
# output


class RowWriter:
    """Rows appended to a .csv or .jsonl file; knows which (path, sha256) the file already holds."""

    def __init__(self, output: str | os.PathLike, columns: list[str]):
        self.output = Path(output)
        self.format = self.output.suffix.lower().lstrip(".")
        if self.format not in ("csv", "jsonl"):
            raise ValueError(f"{self.output}: the output must end in .csv or .jsonl")
        self.columns = columns
        self.done: set[tuple[str, str]] = set()
        existing = self._read_existing()
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.output, "a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._handle, fieldnames=columns) if self.format == "csv" else None
        if self._csv is not None and not existing:
            self._csv.writeheader()

    def _read_existing(self) -> bool:
        if not self.output.is_file() or self.output.stat().st_size == 0:
            return False
        _drop_partial_last_line(self.output)
        with open(self.output, newline="", encoding="utf-8") as handle:
            if self.format == "csv":
                reader = csv.DictReader(handle)
                rows = list(reader)
                found = reader.fieldnames or []
            else:
                rows = [json.loads(line) for line in handle if line.strip()]
                found = list(rows[0]) if rows else self.columns
        if found != self.columns:
            raise ValueError(
                f"{self.output} was written with other columns ({', '.join(found)}); rerun with the same "
                "--top_k, --vqa_model and --questions to resume it, or write to a new --output"
            )
        self.done = {(row["path"], row["sha256"] or "") for row in rows}
        return True

    def write(self, rows: Iterable[dict]) -> None:
        for row in rows:
            if self._csv is not None:
                self._csv.writerow({key: _csv_value(row.get(key)) for key in self.columns})
            else:
                self._handle.write(json.dumps({key: row.get(key) for key in self.columns}, ensure_ascii=False) + "\n")
            self.done.add((row["path"], row["sha256"] or ""))
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _drop_partial_last_line(path: Path) -> None:
    """A run killed while writing may leave half a line: cut it, so that the file is resumed cleanly."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


# ---------------------------------------------------------------------------------------------
# prediction


def parse_questions(spec: str | None) -> list[int]:
    """'1,3' -> [1, 3]; 'all' -> every prompt family; None or '' -> []."""
    if not spec:
        return []
    if spec.strip().lower() == "all":
        return sorted(FAMILY_BY_ID)
    try:
        ids = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        ids = [-1]
    unknown = [i for i in ids if i not in FAMILY_BY_ID]
    if unknown:
        families = "; ".join(f"{f.question_id} {f.name}" for f in FAMILY_BY_ID.values())
        raise ValueError(f"--questions {spec!r}: use comma-separated prompt family ids or 'all' ({families})")
    return ids


def output_columns(top_k: int, question_ids: Sequence[int]) -> list[str]:
    columns = ["path", "sha256", "status", "reason", *FRAME_COLUMNS]
    for rank in range(1, top_k + 1):
        columns += [f"label_{rank}", f"prob_{rank}"]
    return columns + [f"answer_q{question_id}" for question_id in question_ids]


@dataclass
class PredictionSummary:
    predicted: int = 0
    rejected: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def line(self, output: str | os.PathLike) -> str:
        rate = self.predicted / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.predicted} images predicted, {self.rejected} rejected, {self.skipped} already in {output}; "
            f"{rate:.2f} images/s ({self.seconds:.1f} s)"
        )


def predict(
    inputs: Sequence[str],
    classifier: Classifier,
    output: str | os.PathLike,
    assistant: Assistant | None = None,
    question_ids: Sequence[int] = (),
    top_k: int = 3,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    progress: bool = True,
) -> PredictionSummary:
    """Predict every image of `inputs` into `output` (.csv or .jsonl), skipping rows it already has."""
    if question_ids and assistant is None:
        raise ValueError("answers to prompt families need an assistant: pass --vqa_model (a folder written by train/vqa.py)")
    top_k = max(1, min(top_k, len(classifier.labels)))
    writer = RowWriter(output, output_columns(top_k, question_ids))
    questions = [FAMILY_BY_ID[question_id].question for question_id in question_ids]
    summary = PredictionSummary()
    pending: list[dict] = []  # rows in input order; the images among them wait for the model
    images: list = []
    started = time.perf_counter()

    def flush() -> None:
        if images:
            rows = [row for row in pending if row["status"] == "ok"]
            _fill_predictions(rows, images, classifier, assistant, question_ids, questions, top_k, max_new_tokens)
            summary.predicted += len(rows)
        writer.write(pending)
        pending.clear()
        images.clear()

    bar = tqdm(total=count_inputs(inputs), unit="file", desc="predict", disable=not progress)
    try:
        for item in iter_inputs(inputs):
            bar.update(1)
            sha256 = hashlib.sha256(item.data).hexdigest() if item.data is not None else ""
            if (item.path, sha256) in writer.done or any(row["path"] == item.path for row in pending):
                summary.skipped += 1
                continue
            row = {"path": item.path, "sha256": sha256, "status": "ok", "reason": ""}
            if item.reject is not None:
                row.update(status=item.reject.kind, reason=item.reject.reason)
            else:
                try:
                    image = decode(item.path, item.data)
                    array = to_working_array(image)
                except MicrographImageError as error:
                    row.update(status=_reject_kind(error.reason), reason=error.reason)
            if row["status"] != "ok":
                summary.rejected += 1
                pending.append(row)
                continue
            frame = read_frame_info(array, image)
            row.update(
                width=frame.width,
                height=frame.height,
                bar_row=frame.bar_row,
                bar_height=frame.bar_height,
                crop_box=list(frame.crop_box),
                pixel_size_nm=frame.pixel_size_nm,
                scale_source=frame.scale_source,
            )
            pending.append(row)
            images.append(array)
            if len(images) == batch_size:
                flush()
                bar.set_postfix(images_per_s=f"{summary.predicted / (time.perf_counter() - started):.2f}")
        flush()
    finally:
        bar.close()
        writer.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _reject_kind(reason: str) -> str:
    if reason.startswith("not an image"):
        return "not_image"
    if reason.startswith("file is empty"):
        return "empty"
    if "decompression-bomb" in reason:
        return "decompression_bomb"
    return "corrupt"


def _fill_predictions(rows, images, classifier, assistant, question_ids, questions, top_k, max_new_tokens) -> None:
    probabilities = classifier.probabilities(classifier.pixel_values(images))
    values, indices = probabilities.topk(top_k, dim=-1)
    for row, row_values, row_indices in zip(rows, values.tolist(), indices.tolist()):
        for rank, (value, index) in enumerate(zip(row_values, row_indices), start=1):
            row[f"label_{rank}"] = classifier.labels[index]
            row[f"prob_{rank}"] = round(value, 6)
    if questions:
        answers = assistant.answers(assistant.pixel_values(images), questions, max_new_tokens)
        for row, row_answers in zip(rows, answers):
            for question_id, answer in zip(question_ids, row_answers):
                row[f"answer_q{question_id}"] = answer
