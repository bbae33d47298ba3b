"""The training data layer on schema 2: image_id joins, the collators, version-1 folders read as they are, and
the ``--streaming`` rows each process reads. The datasets here are SYNTHETIC (the project's generator)."""

from __future__ import annotations

import io
from argparse import Namespace
from collections import Counter

import pytest
import torch
from datasets import load_from_disk
from PIL import Image

from emvision.processing import MVaEMaProcessor, build_default_tokenizer
from emvision.processing.image_processing_micrograph import MicrographImageProcessor
from emvision.train.data.collators import ImageCollator, VQACollator, VQAPromptCollator
from emvision.train.data.images import ImageTable, undecoded
from emvision.train.data.sources import DatasetSource
from emvision.train.data.streaming import StreamingTrainingRows, fold_sets, stream_images
from v1_datasets import write_v1_dataset

NUM_IMAGES, NUM_FOLDS = 40, 5


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from emvision.datasets_scripts.synthesize import load_or_create_synthetic

    return load_or_create_synthetic(num_images=NUM_IMAGES, seed=2, num_folds=NUM_FOLDS, cache_dir=tmp_path_factory.mktemp("syn"), progress=False)


@pytest.fixture(scope="module")
def processor():
    return MVaEMaProcessor(MicrographImageProcessor(), build_default_tokenizer())


def test_vqa_rows_find_their_images_through_the_index(synthetic, processor):
    images, vqa = load_from_disk(str(synthetic / "images")), load_from_disk(str(synthetic / "vqa"))
    table = ImageTable(images)
    assert len(table) == NUM_IMAGES and table.model_ready
    rows = [vqa[i] for i in (0, 11, 25, 399)]
    batch = VQACollator(processor, with_captions=False, images=table)(rows)
    by_id = {row["image_id"]: row for row in undecoded(images)}
    expected = ImageCollator(processor.image_processor)([by_id[row["image_id"]] for row in rows])["pixel_values"]
    assert torch.equal(batch["pixel_values"], expected)
    assert batch["input_ids"].shape[0] == 4 and batch["image_ids"].tolist() == [int(r["image_id"][:15], 16) for r in rows]
    prompts = VQAPromptCollator(processor, with_captions=False, images=table)(rows)
    assert torch.equal(prompts["pixel_values"], expected) and "labels" not in prompts
    with pytest.raises(ValueError, match="pass the images subset"):
        VQACollator(processor, with_captions=False)(rows)
    with pytest.raises(KeyError, match="not in the images subset"):
        table.get(["0" * 64])


def test_images_stored_at_another_size_are_resized_as_the_processor_does(synthetic):
    """A model reading 192-px images from a dataset stored at 224 px: the collator's quick path gives the
    processor's values to the bit."""
    rows = list(undecoded(load_from_disk(str(synthetic / "images"))).select(range(6)))
    small = MicrographImageProcessor(size={"height": 192, "width": 192})
    batch = ImageCollator(small)(rows)["pixel_values"]
    stored = [Image.open(io.BytesIO(row["image"]["bytes"])) for row in rows]
    expected = small(stored, do_remove_info_bar=False, return_tensors="pt")["pixel_values"]
    assert batch.shape == (6, 3, 192, 192) and torch.equal(batch, expected)
    assert not torch.equal(batch, ImageCollator(small)(rows[1:] + rows[:1])["pixel_values"])


def test_a_version_1_folder_trains_as_it_did(tmp_path, processor):
    old = write_v1_dataset(tmp_path / "v1", num_images=6)
    source = DatasetSource(name="v1", path=old)
    vqa = source.load("vqa")
    assert "image" not in vqa.column_names  # converted on read
    table = ImageTable(source.load("images"))
    assert not table.model_ready
    rows = list(vqa.select(range(4)))
    batch = VQACollator(processor, with_captions=False, images=table)(rows)
    stored = {row["image_id"]: row["image"] for row in load_from_disk(str(old / "images"))}
    # version-1 images carry the bar: the processor's full path, as version 1 trained
    assert torch.equal(batch["pixel_values"], processor.image_processor([stored[r["image_id"]] for r in rows], return_tensors="pt")["pixel_values"])


def _epoch(rows: StreamingTrainingRows, epoch: int) -> list[dict]:
    rows.set_epoch(epoch)
    return list(rows)


def test_streamed_epochs_cover_the_training_folds_evenly_across_processes(synthetic):
    source = DatasetSource(name="syn", path=synthetic)
    args = Namespace(fold=1, num_folds=NUM_FOLDS)
    train_folds, val_fold, test_fold = fold_sets(args)
    images = load_from_disk(str(synthetic / "images"))
    train_ids = {row["image_id"] for row in images if row["fold"] in train_folds}
    stream = stream_images(source, num_shards=8)
    processes = [StreamingTrainingRows(stream, train_folds=train_folds, num_rows=len(train_ids), rank=rank, world_size=2, seed=7,
                                       shuffle_buffer_size=10) for rank in (0, 1)]
    first = [_epoch(rows, 0) for rows in processes]
    assert [len(rows) for rows in first] == [len(train_ids) // 2] * 2 == [len(p) for p in processes]
    seen = [row["image_id"] for rows in first for row in rows]
    assert set(seen) <= train_ids and len(seen) >= len(train_ids) - 1  # every training image, no validation or test image
    assert max(Counter(seen).values()) <= 2  # a share read again only to pad a short process
    assert all(row["fold"] in train_folds and row["crop_box"] is not None and isinstance(row["image"]["bytes"], bytes) for row in first[0])
    second = [row["image_id"] for row in _epoch(processes[0], 1)]
    assert second != [row["image_id"] for row in first[0]]  # reshuffled every epoch
    assert [row["image_id"] for row in _epoch(processes[0], 0)] == [row["image_id"] for row in first[0]]  # seeded


def test_streamed_vqa_rows_carry_their_image_and_mix_images(synthetic, processor):
    source = DatasetSource(name="syn", path=synthetic)
    train_folds, _, _ = fold_sets(Namespace(fold=0, num_folds=NUM_FOLDS))
    vqa = load_from_disk(str(synthetic / "vqa"))
    train_text = [row for row in vqa if row["fold"] in train_folds]
    qa_rows: dict[str, list[dict]] = {}
    for row in train_text:
        qa_rows.setdefault(row["image_id"], []).append(row)
    rows = StreamingTrainingRows(stream_images(source, 4), train_folds=train_folds, num_rows=len(train_text), rank=0, world_size=1,
                                 seed=3, shuffle_buffer_size=50, qa_rows=qa_rows)
    epoch = _epoch(rows, 0)
    assert sorted((r["image_id"], r["question_id"]) for r in epoch) == sorted((r["image_id"], r["question_id"]) for r in train_text)
    assert len({row["image_id"] for row in epoch[:16]}) > 4  # the row buffer mixes images within a batch
    table = ImageTable(load_from_disk(str(synthetic / "images")))
    streamed = VQACollator(processor, with_captions=False)(epoch[:8])  # rows carry their image: no table needed
    looked_up = VQACollator(processor, with_captions=False, images=table)([{k: v for k, v in r.items() if k not in ("image", "crop_box")} for r in epoch[:8]])
    assert torch.equal(streamed["pixel_values"], looked_up["pixel_values"])


def test_streamed_rows_split_over_dataloader_workers(synthetic):
    from torch.utils.data import DataLoader

    source = DatasetSource(name="syn", path=synthetic)
    train_folds, _, _ = fold_sets(Namespace(fold=0, num_folds=NUM_FOLDS))
    num_rows = sum(1 for fold in load_from_disk(str(synthetic / "images"))["fold"] if fold in train_folds)
    rows = StreamingTrainingRows(stream_images(source, 8), train_folds=train_folds, num_rows=num_rows, rank=0, world_size=1, seed=1)
    loader = DataLoader(rows, batch_size=4, num_workers=2, collate_fn=lambda batch: [row["image_id"] for row in batch])
    ids = [image_id for batch in loader for image_id in batch]
    # each worker reads its own shards: a worker whose shards hold fewer training rows pads its share by reading again
    assert len(ids) == num_rows and len(set(ids)) >= num_rows - 2
