"""``--streaming``: training rows read as a stream, for datasets larger than memory or local disk.

The ``images`` subset is read as a ``datasets.IterableDataset`` (a saved folder through
``to_iterable_dataset``, a Hub dataset id with ``streaming=True``), filtered to the training folds,
shuffled (shard order, then a ``--shuffle_buffer_size`` buffer, seeded by ``--seed`` and the epoch) and
split across processes with ``datasets.distributed.split_dataset_by_node``: every process reads its own
shards, none reads the whole stream. DataLoader workers split a process's shards again.

For MVaEMa the ``vqa`` subset is text (schema version 2) and small: it is held in memory, grouped by
``image_id``, and each streamed image is joined to its question-answer rows, which pass through a second
shuffle buffer so that a batch mixes images. No random access to the images is needed.

Every process yields the same number of rows per epoch (the training rows divided by the number of
processes, rounded down): processes that run out first read their share again, so that no process waits
for a gradient exchange that never comes. An epoch is that many rows per process, so epoch-based early
stopping and the learning-rate schedule keep their meaning.

Evaluation stays map-style: the validation and test folds are small (a fifth of a 10-fold dataset) and
are read from the saved folder (memory-mapped), or, for a Hub id, collected from one pass over the stream.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.utils.data

from emvision.datasets_scripts.storage import fold_splits
from emvision.train.loop.schedule import build_optimizer

from .images import ImageTable
from .sources import DEFAULT_SHUFFLE_BUFFER

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

    from .sources import DatasetSource


def _in_folds(folds: list[int], wanted: frozenset[int]) -> list[bool]:
    return [fold in wanted for fold in folds]


def fold_sets(args) -> tuple[frozenset[int], int, int]:
    """(training folds, validation fold, test fold) of this run."""
    val_fold, test_fold = (args.fold + 1) % args.num_folds, args.fold
    fold_splits([], args.fold, args.num_folds)  # checks --fold and --num_folds
    return frozenset(range(args.num_folds)) - {val_fold, test_fold}, val_fold, test_fold


def stream_images(source: DatasetSource, num_shards: int) -> IterableDataset:
    """The ``images`` subset as a stream of rows whose ``image`` is the stored bytes (not decoded)."""
    from datasets import Image, load_dataset, load_from_disk

    if source.hub_id:
        stream = load_dataset(source.hub_id, name="images", split="train", streaming=True)
    else:
        images = load_from_disk(str(source.path / "images"))
        stream = images.to_iterable_dataset(num_shards=max(1, min(num_shards, len(images))))
    return stream.cast_column("image", Image(decode=False))


def count_rows(stream: IterableDataset, folds: frozenset[int]) -> int:
    """Rows of a stream in ``folds``: one pass over its ``fold`` column."""
    return sum(1 for fold in stream.select_columns(["fold"]) if fold["fold"] in folds)


class StreamingTrainingRows(torch.utils.data.IterableDataset):
    """This process's share of the training rows of one epoch, read from a stream (see the module docstring).

    ``qa_rows`` (image_id -> the image's question-answer rows of the training folds) makes it MVaEMa's: each
    image is joined to its rows, which carry the image's bytes. ``len()`` is the rows per process.
    """

    def __init__(self, images: IterableDataset, *, train_folds: frozenset[int], num_rows: int, rank: int, world_size: int,
                 seed: int, shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER, qa_rows: dict[str, list[dict]] | None = None):
        if num_rows < world_size:
            raise ValueError(f"{num_rows} training rows cannot be shared by {world_size} processes")
        self.images = images.filter(_in_folds, input_columns=["fold"], batched=True, fn_kwargs={"wanted": frozenset(train_folds)})
        self.num_rows, self.rank, self.world_size = num_rows, rank, world_size
        self.seed, self.shuffle_buffer_size, self.qa_rows = seed, shuffle_buffer_size, qa_rows
        self.per_process = num_rows // world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_process

    def _read(self, number: int) -> Iterator[dict]:
        """One pass over this process's shards (pass ``number`` of the epoch: later passes pad a short share)."""
        from datasets.distributed import split_dataset_by_node

        stream = self.images
        if self.shuffle_buffer_size > 1:
            stream = stream.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer_size)
        stream = split_dataset_by_node(stream, rank=self.rank, world_size=self.world_size)
        stream.set_epoch(self.epoch * 1009 + number)  # the same shard order on every process
        if self.qa_rows is None:
            yield from stream
            return
        for image in stream:
            for row in self.qa_rows.get(image["image_id"], ()):
                yield {**row, "image": image["image"], "crop_box": image.get("crop_box")}

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        quota = self.per_process // workers + (1 if worker < self.per_process % workers else 0)
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}")
        produced, number = 0, 0
        while produced < quota:
            rows = self._read(number)
            if self.qa_rows is not None and self.shuffle_buffer_size > 1:
                rows = shuffle_buffer(rows, self.shuffle_buffer_size, rng)
            read_any = False
            for row in rows:
                read_any = True
                yield row
                produced += 1
                if produced >= quota:
                    return
            if not read_any:
                raise RuntimeError(
                    f"process {self.rank} (DataLoader worker {worker} of {workers}) received no training rows from the stream: "
                    "the dataset has fewer shards than processes x workers; use fewer --num_workers"
                )
            number += 1


def shuffle_buffer(rows: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Rows in a random order drawn through a buffer of ``size`` rows (as ``datasets``' stream shuffling)."""
    buffer: list = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        index = rng.randrange(size)
        yield buffer[index]
        buffer[index] = row
    rng.shuffle(buffer)
    yield from buffer


@dataclass
class StreamedSplits:
    """What a ``--streaming`` run trains and evaluates on."""

    train: StreamingTrainingRows
    validation: Dataset  # map-style
    test: Dataset  # map-style
    class_names: list[str]
    images: ImageTable | None = None  # MVaEMa: the validation and test folds' images, for the vqa rows

    @property
    def num_train_rows(self) -> int:
        return self.train.num_rows


def _num_shards(accelerator, args) -> int:
    return accelerator.num_processes * max(1, args.num_workers) * 4


def _evaluation_images(source: DatasetSource, stream: IterableDataset, folds: frozenset[int]) -> Dataset:
    """The images of ``folds``, map-style: the saved folder itself, or, for a Hub id, collected from the stream."""
    from datasets import Dataset, Image

    from .images import undecoded

    if source.path is not None:
        return undecoded(source.load("images"))
    rows = [row for row in stream if row["fold"] in folds]
    return Dataset.from_list(rows, features=stream.features).cast_column("image", Image(decode=False))


def _select_folds(dataset: Dataset, folds: frozenset[int], limit: int | None) -> Dataset:
    rows = [row for row, fold in enumerate(dataset["fold"]) if fold in folds]
    return dataset.select(rows[:limit] if limit else rows)


def streamed_image_splits(source: DatasetSource, args, accelerator) -> StreamedSplits:
    """HNF's ``--streaming`` data: training images streamed; validation and test folds map-style."""
    train_folds, val_fold, test_fold = fold_sets(args)
    stream = stream_images(source, _num_shards(accelerator, args))
    class_names = stream.features["label"].names
    if source.path is not None:  # the fold column of a saved folder is read without reading the images
        num_rows = sum(1 for fold in source.load("images")["fold"] if fold in train_folds)
    else:
        num_rows = count_rows(stream, train_folds)
    if args.max_train_samples:
        num_rows = min(num_rows, args.max_train_samples)
    evaluation = _evaluation_images(source, stream, frozenset({val_fold, test_fold}))
    train = StreamingTrainingRows(stream, train_folds=train_folds, num_rows=num_rows, rank=accelerator.process_index,
                                  world_size=accelerator.num_processes, seed=args.seed, shuffle_buffer_size=args.shuffle_buffer_size)
    return StreamedSplits(train, _select_folds(evaluation, frozenset({val_fold}), args.max_eval_samples),
                          _select_folds(evaluation, frozenset({test_fold}), args.max_eval_samples), class_names)


def streamed_vqa_rows(source: DatasetSource, train_text: Dataset, args, accelerator) -> StreamedSplits:
    """MVaEMa's ``--streaming`` training rows: images streamed and joined to ``train_text`` (the training folds'
    vqa rows, in memory); the images of the validation and test folds map-style, for evaluation."""
    train_folds, val_fold, test_fold = fold_sets(args)
    stream = stream_images(source, _num_shards(accelerator, args))
    qa_rows: dict[str, list[dict]] = defaultdict(list)
    for row in train_text:
        qa_rows[row["image_id"]].append(row)
    evaluation = _evaluation_images(source, stream, frozenset({val_fold, test_fold}))
    train = StreamingTrainingRows(stream, train_folds=train_folds, num_rows=len(train_text), rank=accelerator.process_index,
                                  world_size=accelerator.num_processes, seed=args.seed, shuffle_buffer_size=args.shuffle_buffer_size,
                                  qa_rows=dict(qa_rows))
    return StreamedSplits(train, None, None, stream.features["label"].names, images=ImageTable(evaluation))


def streaming_training_loop(accelerator, args, model, train_rows: StreamingTrainingRows, val_split, collate, project: str,
                            eval_collate=None):
    """``TrainingLoop.from_splits`` for a stream: the same Adam and validation loader; the training loader is
    this process's stream (split by ``split_dataset_by_node``, so Accelerate only places its batches on the device)."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    from emvision.train.loop.trainer import TrainingLoop

    train_loader = DataLoader(train_rows, batch_size=args.per_device_train_batch_size, collate_fn=collate, num_workers=args.num_workers,
                              drop_last=len(train_rows) > args.per_device_train_batch_size)
    val_loader = DataLoader(val_split, batch_size=args.per_device_eval_batch_size, collate_fn=eval_collate or collate,
                            num_workers=args.num_workers)
    # as TrainingLoop.from_splits
    optimizer = build_optimizer(model, args)
    model, optimizer, val_loader = accelerator.prepare(model, optimizer, val_loader)
    train_loader = prepare_data_loader(train_loader, device=accelerator.device, num_processes=1, process_index=0,
                                       put_on_device=True, dispatch_batches=False)
    if accelerator.is_main_process:
        accelerator.init_trackers(project, config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})
    return TrainingLoop(accelerator, args, model, optimizer, train_loader, val_loader, train_rows)
