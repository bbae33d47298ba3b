"""The SEM dataset builder on the real smoke micrographs, copied into every source layout it accepts.

Bad files (corrupt bytes, a truncated JPEG, a zero-byte file, a .txt, a decompression bomb, a
folder of an unknown class) are generated here; so is the small noise image standing for an
image of an unknown class (synthetic, labelled as such below).
"""

import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Image as DatasetImage
from datasets import load_from_disk
from huggingface_hub import DatasetCard
from PIL import Image

from emvision.datasets_scripts.archive import (
    ImageOptions,
    ImageRejected,
    build_sem_dataset,
    prepare_image,
    push_to_hub,
)
from emvision.datasets_scripts.build_sem import main
from emvision.processing.image_processing_micrograph import MicrographImageProcessor
from emvision.processing.micrograph import detect_info_bar
from emvision.train.data.collators import ImageCollator
from emvision.vocabulary import PROMPT_FAMILIES, PROMPT_VERSION, caption_for
from emvision.datasets_scripts.archive.sources import ClassMatcher, SourceFile
from emvision.vocabulary import ARCHIVE_PREFIX_TO_CATEGORY, SEM_CATEGORIES

CATEGORY_TO_PREFIX = {name: k for k, name in ARCHIVE_PREFIX_TO_CATEGORY.items()}
# the folder layout spells categories the ways people do
FOLDER_SPELLINGS = {
    "Porous_Sponge": "porous sponge",
    "MEMS_devices_and_electrodes": "MEMS devices and electrodes",
    "Films_Coated_Surface": "films-coated-surface",
    "Patterned_surface": "PATTERNED_SURFACE",
    "Fibres": "Fibers",
}


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header declaring width x height pixels, with almost no pixel data behind it."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, real_sem_images):
    root = tmp_path_factory.mktemp("sources")
    by_name = {p.name: p for p in real_sem_images}

    # 1. category folders in several spellings, one nested sub-folder, plus bad files
    folders = root / "folders"
    for image in real_sem_images:
        category = image.parent.name
        folder = folders / FOLDER_SPELLINGS.get(category, category)
        if image.name.startswith("L6_0a6f78"):
            folder = folder / "batch 2"  # a sub-folder inside a category folder keeps the category
        _write(folder / image.name, image.read_bytes())
    jpeg = by_name["L6_0a6f18702a4a32677c74ed390f3af7af.jpg"].read_bytes()
    _write(folders / "Particles" / "corrupt.jpg", random.Random(0).randbytes(5000))
    _write(folders / "Nanowires" / "truncated.jpg", jpeg[: len(jpeg) // 2])
    _write(folders / "Tips" / "empty.png", b"")
    _write(folders / "Powder" / "notes.txt", b"sample prepared on 2024-03-01\n")
    _write(folders / "Fibers" / "bomb.png", _bomb_png())
    # synthetic noise image standing for a micrograph of a class that is not one of the ten
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    _write(folders / "Graphene" / "flake.png", buffer.getvalue())
    # an exact duplicate in its own class, and a copy filed under another class (a label conflict)
    _write(folders / "Tips" / "tile_totalgood_Tips_copy.png", by_name["tile_totalgood_Tips.png"].read_bytes())
    _write(folders / "Biological" / "sponge_again.jpg", by_name["goyal_sponge_val_0.jpg"].read_bytes())

    # 2. flat archive names L<k>_<md5>.<ext>
    flat = root / "flat"
    for image in real_sem_images:
        data = image.read_bytes()
        name = f"L{CATEGORY_TO_PREFIX[image.parent.name]}_{hashlib.md5(data).hexdigest()}{image.suffix}"
        _write(flat / name, data)

    # 3. the same as archives, members in a scrambled order
    flat_tar = root / "flat.tar.gz"
    with tarfile.open(flat_tar, "w:gz") as tar:
        members = sorted(flat.iterdir())
        random.Random(1).shuffle(members)
        for member in members:
            tar.add(member, arcname=f"SEM_dataset/{member.name}")
    folders_zip = root / "folders.zip"
    with zipfile.ZipFile(folders_zip, "w") as archive:
        for member in sorted(folders.rglob("*"), reverse=True):
            if member.is_file():
                archive.write(member, member.relative_to(folders).as_posix())
    return {"folders": folders, "flat": flat, "flat_tar": flat_tar, "folders_zip": folders_zip, "root": root}


@pytest.fixture(scope="module")
def folders_build(layouts, tmp_path_factory):
    output = tmp_path_factory.mktemp("builds") / "folders"
    report = build_sem_dataset(layouts["folders"], output, num_workers=2, show_progress=False)
    return output, report


def _rejects(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "rejects.jsonl").read_text().splitlines()]


def _rows(output: Path, subset: str = "images") -> list[dict]:
    return list(load_from_disk(str(output / subset)))


def test_category_folders_with_bad_files(folders_build, layouts):
    output, report = folders_build
    images = load_from_disk(str(output / "images"))
    assert images.features["label"].names == list(SEM_CATEGORIES)
    rows = list(images)
    assert len(rows) == report.num_images == 17  # 18 real images, minus the one whose copy carries another label

    rejects = {r["path"]: r for r in _rejects(output)}
    expected_kinds = {
        "Particles/corrupt.jpg": "corrupt",
        "Nanowires/truncated.jpg": "truncated",
        "Tips/empty.png": "empty",
        "Powder/notes.txt": "not_image",
        "Fibers/bomb.png": "decompression_bomb",
        "Graphene/flake.png": "unknown_class",
        "Tips/tile_totalgood_Tips_copy.png": "duplicate",
        "Biological/sponge_again.jpg": "label_conflict",
        "porous sponge/goyal_sponge_val_0.jpg": "label_conflict",
    }
    assert {path: r["kind"] for path, r in rejects.items()} == expected_kinds
    assert rejects["Tips/tile_totalgood_Tips_copy.png"]["reason"] == "duplicate of Tips/tile_totalgood_Tips.png"
    assert "Biological" in rejects["Biological/sponge_again.jpg"]["reason"] and "Porous_Sponge" in rejects["Biological/sponge_again.jpg"]["reason"]
    assert "20000x20000" in rejects["Fibers/bomb.png"]["reason"]
    assert "'Graphene'" in rejects["Graphene/flake.png"]["reason"] and "--allow_new_labels" in rejects["Graphene/flake.png"]["reason"]
    assert report.num_duplicates == 1 and report.num_conflicts == 1

    for row in rows:
        path = layouts["folders"] / row["source"]
        original = path.read_bytes()
        assert row["image_id"] == hashlib.sha256(original).hexdigest()
        with Image.open(io.BytesIO(original)) as source_image:
            assert (row["width"], row["height"]) == source_image.size
        stored = row["image"]
        assert stored.size == (224, 224)  # what the models read
        # L when what the models read is gray (the colour info bar is cut first); colour or JPEG chroma noise: RGB, so exact
        model_input = MicrographImageProcessor()(str(path), return_tensors="np")["pixel_values"][0]
        assert stored.mode == ("L" if _channels_equal(model_input.transpose(1, 2, 0)) else "RGB"), row["source"]
        bar = detect_info_bar(str(path))
        assert row["crop_box"] == [0, 0, row["width"], row["height"] if bar is None else bar]
        assert row["metadata"] == "{}" and row["magnification"] is None and row["detector"] is None  # no OCR
        assert 0 <= row["fold"] < 10
    # the stored images give the training collator exactly the processor's pixel_values on the original files
    processor = MicrographImageProcessor()
    raw = list(load_from_disk(str(output / "images")).cast_column("image", DatasetImage(decode=False)))
    expected = processor([str(layouts["folders"] / row["source"]) for row in raw], return_tensors="pt")["pixel_values"]
    assert torch.equal(ImageCollator(processor)(raw)["pixel_values"], expected)
    # the NFFA-style JPEGs' scale bars are found in their information bars (the 2 µm bar of L6_0a6f18 is 111 px long)
    by_name = {Path(row["source"]).name: row for row in rows}
    assert by_name["L6_0a6f18702a4a32677c74ed390f3af7af.jpg"]["scale_bar_px"] == pytest.approx(111, abs=3)
    assert by_name["goyal_sponge_test_1.jpg"]["scale_bar_px"] is None and by_name["goyal_sponge_test_1.jpg"]["crop_box"] == [0, 0, 256, 256]
    labels = {row["source"]: SEM_CATEGORIES[row["label"]] for row in rows}
    assert labels["MEMS devices and electrodes/tile_totalgood_MEMS_devices_and_electrodes.png"] == "MEMS_devices_and_electrodes"
    assert labels["Nanowires/batch 2/L6_0a6f78b39b585f1be2400daebf44dcb3.jpg"] == "Nanowires"
    assert labels["Fibers/tile_totalgood_Fibres.png"] == "Fibres"
    assert [r["image_id"] for r in rows] == sorted(r["image_id"] for r in rows)
    # stratified: the five sponge crops left spread over five different folds
    sponge_folds = [row["fold"] for row in rows if SEM_CATEGORIES[row["label"]] == "Porous_Sponge"]
    assert len(sponge_folds) == 5 and len(set(sponge_folds)) == 5

    card = DatasetCard.load(output / "README.md")
    assert card.data.license == "unknown"
    assert card.data.emvision["class_counts"] == dict(Counter(SEM_CATEGORIES[r["label"]] for r in rows)) | {
        name: 0 for name in SEM_CATEGORIES if name not in {SEM_CATEGORIES[r["label"]] for r in rows}
    }
    assert card.data.emvision["num_rejects"] == len(rejects) == len(report.rejects)
    assert card.data.emvision["rejects_by_kind"]["label_conflict"] == 2
    assert "Stored as PNG without compression" in card.text and "| 7 | Porous_Sponge | 5 |" in card.text
    assert "**not read**" in card.text and card.data.emvision["schema_version"] == 2
    assert not (output / "vqa").exists()
    # no class descriptions in the source: the project's hand-written ones, labelled human, so MLM pre-training works
    descriptions = load_from_disk(str(output / "class_descriptions"))
    assert sorted(descriptions["name"]) == sorted(SEM_CATEGORIES) and set(descriptions["source"]) == {"human"}
    assert report.num_descriptions == 10 and "hand-written" in card.text


def _channels_equal(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def test_every_archive_layout_gives_the_same_rows(folders_build, layouts, tmp_path):
    # a zip of the folders (members in reverse order) gives exactly the folder build
    output, _ = folders_build
    zipped = tmp_path / "zipped"
    build_sem_dataset(layouts["folders_zip"], zipped, num_workers=1, show_progress=False)
    assert _rows(zipped) == _rows(output)
    assert _rejects(zipped) == _rejects(output)

    # flat L<k>_ names: labels from the prefix; a shuffled .tar.gz of them gives the same rows
    flat, flat_tar = tmp_path / "flat", tmp_path / "flat_tar"
    build_sem_dataset(layouts["flat"], flat, num_workers=2, show_progress=False)
    report = build_sem_dataset(layouts["flat_tar"], flat_tar, num_workers=2, show_progress=False)
    flat_rows, tar_rows = _rows(flat), _rows(flat_tar)
    assert len(flat_rows) == 18 and report.num_images == 18 and _rejects(flat_tar) == []
    assert [{**r, "source": "SEM_dataset/" + r["source"]} for r in flat_rows] == tar_rows
    by_id = {r["image_id"]: SEM_CATEGORIES[r["label"]] for r in flat_rows}
    folder_labels = {r["image_id"]: SEM_CATEGORIES[r["label"]] for r in _rows(output)}
    assert all(by_id[image_id] == label for image_id, label in folder_labels.items())
    # every file carries the archive's L<k>_<md5> name: the card credits the archive and its licence
    card = DatasetCard.load(flat_tar / "README.md")
    assert card.data.license == "cc-by-4.0" and "doi:10.23728/b2share.80df8606fcdb4b2bae1656f0dc6db8ba" in card.text


def test_downloaded_category_archives_and_broken_archives(layouts, real_sem_images, tmp_path):
    # the archive as downloaded: one tar per category in a folder, plus a broken download
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for category in ("Tips", "Powder"):
        with tarfile.open(downloads / f"{category}.tar", "w") as tar:
            for image in real_sem_images:
                if image.parent.name == category:
                    tar.add(image, arcname=image.name)  # no category folder inside: the tar's name gives it
    (downloads / "Nanowires.tar.gz").write_bytes(layouts["flat_tar"].read_bytes()[:300])
    report = build_sem_dataset(downloads, tmp_path / "out", num_workers=0, show_progress=False)
    rows = _rows(tmp_path / "out")
    assert sorted((r["source"], SEM_CATEGORIES[r["label"]]) for r in rows) == [
        ("Powder.tar/tile_totalgood_Powder.png", "Powder"),
        ("Tips.tar/tile_totalgood_Tips.png", "Tips"),
    ]
    assert [(r.path, r.kind) for r in report.rejects] == [("Nanowires.tar.gz", "corrupt")]

    # a truncated .tar.gz SOURCE keeps the members read before the break
    cut = tmp_path / "cut.tar.gz"
    data = layouts["flat_tar"].read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    report = build_sem_dataset(cut, tmp_path / "cut", num_workers=0, show_progress=False)
    assert 0 < report.num_images < 18
    assert any(r.kind == "corrupt" and "after the members read so far" in r.reason for r in report.rejects)
    # a SOURCE that is no archive at all is an error that names it
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="fake.zip: cannot read archive"):
        build_sem_dataset(fake, tmp_path / "fake", num_workers=0, show_progress=False)


class _CrashingFile(SourceFile):
    def read(self) -> bytes:
        os._exit(1)  # stands for a decoder crashing its process


def test_a_crashed_decoding_process_is_a_clear_error(layouts, tmp_path, monkeypatch):
    from emvision.datasets_scripts.archive import reading

    monkeypatch.setattr(reading, "iter_source", lambda source, **kwargs: iter([_CrashingFile("Tips/crash.png", 10, local_path="unused")]))
    with pytest.raises(RuntimeError, match="decoding process died while files from Tips/crash.png on"):
        build_sem_dataset(layouts["flat"], tmp_path / "out", num_workers=1, show_progress=False)
    assert not any((tmp_path / "out").iterdir())  # nothing half-written


def test_same_input_same_output_bytes(folders_build, layouts, tmp_path):
    output, _ = folders_build
    moved = shutil.copytree(layouts["folders"], tmp_path / "elsewhere" / "folders")
    again = tmp_path / "again"
    build_sem_dataset(moved, again, num_workers=0, show_progress=False)
    produced = sorted(p.relative_to(output) for p in output.rglob("*") if p.is_file())
    assert produced == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in produced:
        assert (output / relative).read_bytes() == (again / relative).read_bytes(), relative


@pytest.fixture()
def inhouse(tmp_path, real_sem_images):
    """An ImageFolder of in-house images: flat files + metadata with labels, QA pairs and extra columns."""
    folder = tmp_path / "inhouse"
    picks = {"a.jpg": "Nanowires/L6_0a6f18702a4a32677c74ed390f3af7af.jpg", "b.png": "Tips/tile_totalgood_Tips.png", "c.png": "Powder/tile_totalgood_Powder.png"}
    sem = {p.relative_to(p.parents[1]).as_posix(): p for p in real_sem_images}
    for name, real in picks.items():
        _write(folder / "train" / name, sem[real].read_bytes())
    return folder


def test_imagefolder_metadata_jsonl_writes_vqa(inhouse, tmp_path):
    family = PROMPT_FAMILIES[1]
    # hand-written stand-in answers, as a lab's own QA file would hold
    rows = [
        {"file_name": "a.jpg", "label": "nanowires", "magnification": "20 kX", "question": family.question, "answer": "Dense vertical wires."},
        {"file_name": "a.jpg", "label": "Nanowires", "question": "Is the sample tilted?", "answer": "Yes, about 45 degrees.", "teacher": "lab-expert"},
        {"file_name": "b.png", "label": "Tips", "magnification": "5 kX"},
        {"file_name": "c.png", "question": "What is shown?", "answer": "A powder."},  # no label, no class folder
        {"file_name": "missing.png", "label": "Tips"},
        {"file_name": "b.png", "question": "Orphan question without an answer"},
    ]
    (inhouse / "train" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    output = tmp_path / "out"
    report = build_sem_dataset(inhouse, output, num_workers=0, show_progress=False)

    images = {r["source"]: r for r in _rows(output)}
    assert set(images) == {"train/a.jpg", "train/b.png"}
    assert SEM_CATEGORIES[images["train/a.jpg"]["label"]] == "Nanowires"
    # an info-bar column given as text that is not a number stays in the metadata JSON
    assert json.loads(images["train/b.png"]["metadata"]) == {"magnification": "5 kX"} and images["train/b.png"]["magnification"] is None
    rejects = {(r["path"], r["kind"]) for r in _rejects(output)}
    assert ("train/c.png", "unknown_class") in rejects
    assert "'train' names a split" in next(r["reason"] for r in _rejects(output) if r["path"] == "train/c.png")
    assert ("train/missing.png", "metadata") in rejects
    reasons = [r["reason"] for r in _rejects(output) if r["path"] == "train/metadata.jsonl"]
    assert any("line 7: invalid JSON" in reason for reason in reasons)
    assert any("row 6: a question without an answer" in reason for reason in reasons)

    vqa = load_from_disk(str(output / "vqa"))
    assert vqa.features["label"].names == list(SEM_CATEGORIES) and len(vqa) == report.num_qa_pairs == 2
    by_question = {r["question"]: r for r in vqa}
    paper, free = by_question[family.question], by_question["Is the sample tilted?"]
    assert (paper["question_id"], paper["prompt_version"], paper["teacher"]) == (family.question_id, PROMPT_VERSION, "in-house")
    assert (free["question_id"], free["prompt_version"], free["teacher"]) == (0, "in-house", "lab-expert")
    for row in vqa:
        assert row["image_id"] == images["train/a.jpg"]["image_id"] and row["fold"] == images["train/a.jpg"]["fold"]
        assert row["caption"] == caption_for("Nanowires")
    assert "image" not in vqa.column_names  # text rows: image_id joins them to images
    card = DatasetCard.load(output / "README.md")
    assert "visual-question-answering" in card.data.task_categories and "in-house (1)" in card.text


def test_metadata_csv_with_the_users_own_classes(inhouse, tmp_path):
    (inhouse / "train" / "metadata.csv").write_text("file_name,label,operator\na.jpg,Defect,ana\nb.png,clean,ben\nc.png,Clean,ben\n")
    (inhouse / "class_descriptions.csv").write_text(
        "label,description\nDefect,Hand-written stand-in: a wafer region with a visible defect.\nClean,Hand-written stand-in: a defect-free region.\n"
    )
    # the ten SEM classes by default: in-house labels are unknown
    default = build_sem_dataset(inhouse, tmp_path / "default", num_workers=0, show_progress=False)
    assert default.num_images == 0 and default.rejects_by_kind["unknown_class"] == 5  # 3 images + 2 descriptions

    own = build_sem_dataset(inhouse, tmp_path / "own", labels=["Clean", "Defect"], num_workers=0, show_progress=False)
    images = load_from_disk(str(tmp_path / "own" / "images"))
    assert images.features["label"].names == ["Clean", "Defect"]
    assert {r["source"]: images.features["label"].int2str(r["label"]) for r in images} == {"train/a.jpg": "Defect", "train/b.png": "Clean", "train/c.png": "Clean"}
    assert json.loads(next(r for r in images if r["source"] == "train/a.jpg")["metadata"]) == {"operator": "ana"}
    descriptions = _rows(tmp_path / "own", "class_descriptions")
    assert [(d["name"], d["source"]) for d in descriptions] == [("Clean", "human"), ("Defect", "human")]
    assert own.num_descriptions == 2 and own.rejects == []

    grown = build_sem_dataset(inhouse, tmp_path / "grown", allow_new_labels=True, num_workers=0, show_progress=False)
    assert grown.class_names == [*SEM_CATEGORIES, "Clean", "Defect"]
    assert load_from_disk(str(tmp_path / "grown" / "images")).features["label"].names == grown.class_names


def test_prepare_image_conversions(real_sem_images):
    jpeg = next(p for p in real_sem_images if p.name == "L6_0a6f18702a4a32677c74ed390f3af7af.jpg").read_bytes()
    prepared = prepare_image(jpeg)
    assert (prepared.width, prepared.height, prepared.mode) == (1024, 768, "RGB")
    assert prepared.crop_box == (0, 0, 1024, 630)  # the data zone and the strip below it are cut
    assert Image.open(io.BytesIO(prepared.data)).size == (224, 224)
    assert prepare_image(jpeg, ImageOptions(color="L")).mode == "L"
    kept = prepare_image(jpeg, ImageOptions(short_side=0, image_format="jpeg", color="RGB"))
    with Image.open(io.BytesIO(kept.data)) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (1024, 630), "RGB")

    # 16-bit grayscale: scaled to 8 bits, not clipped
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    stored = np.asarray(Image.open(io.BytesIO(prepare_image(buffer.getvalue(), ImageOptions(short_side=0)).data)))
    assert stored.dtype == np.uint8 and stored.max() == round(65520 / 257) and stored.min() == 0

    # a false-colour image stays RGB; the same picture in gray is stored as L
    colour = np.zeros((300, 400, 3), dtype=np.uint8)
    colour[..., 0] = np.linspace(0, 255, 400, dtype=np.uint8)
    colour[..., 2] = 255 - colour[..., 0]
    for array, mode in ((colour, "RGB"), (np.repeat(colour[..., :1], 3, axis=2), "L")):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        assert prepare_image(buffer.getvalue()).mode == mode

    with pytest.raises(ImageRejected, match="over the limit of 1,000") as rejected:
        prepare_image(jpeg, ImageOptions(max_pixels=1000))
    assert rejected.value.kind == "decompression_bomb"
    with pytest.raises(ValueError, match="image_format"):
        ImageOptions(image_format="gif")


def test_class_names_match_any_spelling():
    matcher = ClassMatcher(SEM_CATEGORIES)
    for spelling in ("porous sponge", "Porous_Sponge", "POROUS-SPONGE", "PorousSponge"):
        assert matcher.match(spelling) == "Porous_Sponge"
    assert matcher.match("MEMS devices and electrodes") == "MEMS_devices_and_electrodes"
    assert matcher.resolve("x/Biological.tar/L0_" + "a" * 32 + ".jpg") == ("Biological", "")  # folder before prefix
    assert matcher.resolve("L9_" + "b" * 32 + ".jpg") == ("Fibres", "")
    with pytest.raises(ValueError, match="same class"):
        ClassMatcher(["Defect", "defects"])


def test_push_to_hub_uploads_card_subsets_and_rejects(folders_build, monkeypatch):
    import datasets
    import huggingface_hub

    output, report = folders_build
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw)) or f"https://hub/{repo_id}")
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", lambda self, **kw: calls.append(("upload_file", kw["path_in_repo"], kw)))
    monkeypatch.setattr(huggingface_hub.DatasetCard, "push_to_hub", lambda self, repo_id, **kw: calls.append(("card", repo_id, self.data.emvision)))
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", lambda self, repo_id, **kw: calls.append(("dataset", repo_id, (len(self), kw))))

    push_to_hub(output, "lab/sem", token="hf_test")
    assert [c[0] for c in calls] == ["create_repo", "card", "dataset", "dataset", "upload_file"]  # images, class_descriptions
    assert calls[0][2]["private"] is True and calls[0][2]["repo_type"] == "dataset"
    assert calls[1][2]["num_images"] == report.num_images
    rows, kwargs = calls[2][2]
    assert rows == report.num_images and kwargs["config_name"] == "images" and kwargs["private"] is True


def test_cli(layouts, tmp_path, capsys):
    output = tmp_path / "cli"
    command = [sys.executable, "datasets_scripts/build_sem.py", str(layouts["flat"]), "--output", str(output), "--num_folds", "3", "--seed", "1", "--quiet"]
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(f"{output}: 18 images in 10 classes, 10 class descriptions; 0 rejects")
    assert {r["fold"] for r in _rows(output)} == {0, 1, 2}

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0 and len(capsys.readouterr().out.splitlines()) < 50

    # a second build into the same folder must be asked for; an output inside the source is refused
    assert main([str(layouts["flat"]), "--output", str(output), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(layouts["flat"]), "--output", str(layouts["flat"] / "out"), "--quiet"]) == 2
    assert "inside SOURCE" in capsys.readouterr().err


def test_stored_pixels_are_what_the_image_processor_reads(tmp_path):
    """One 8-bit converter (emvision.processing.micrograph) for stored images and model inputs: alpha over black, floats in [0, 1] x 255."""
    from emvision.processing.micrograph import micrograph_to_array

    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 1, 96, dtype=np.float32), (64, 1))
    rgba = np.dstack([rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), rng.integers(0, 256, (64, 96), dtype=np.uint8)])
    for name, image, color in (("ramp.tif", Image.fromarray(ramp), "auto"), ("overlay.png", Image.fromarray(rgba), "RGB")):
        image.save(tmp_path / name)
        stored = prepare_image((tmp_path / name).read_bytes(), ImageOptions(short_side=0, color=color))
        read = np.rint(micrograph_to_array(tmp_path / name) * 255).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(stored.data))), read)


# ---------------------------------------------------------------------------------------------
# untrusted sources: links, special files, absolute members, huge members (issue 14, items 2-4)


def _build_cli(source: Path, output: Path, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real command line in its own process, so that a hang is a failed test, not a hung suite."""
    command = [sys.executable, "datasets_scripts/build_sem.py", str(source), "--output", str(output), "--quiet", *extra]
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=timeout)


def test_links_that_leave_the_source_are_rejected_in_folders_and_absolute_members_in_archives(real_sem_images, tmp_path):
    by_category = {}
    for image in real_sem_images:
        by_category.setdefault(image.parent.name, image)
    outside = tmp_path / "outside"
    secret = _write(outside / "secret.png", by_category["Biological"].read_bytes())
    _write(outside / "fibres" / "outside_fibre.png", by_category["Fibres"].read_bytes())
    source = tmp_path / "source"
    _write(source / "Tips" / "tip.png", by_category["Tips"].read_bytes())
    _write(source / "unsorted" / "powder.png", by_category["Powder"].read_bytes())
    _write(source / "Particles" / "particle.png", by_category["Particles"].read_bytes())
    (source / "Biological").mkdir()
    (source / "Biological" / "link.png").symlink_to(secret)  # a file outside the source
    (source / "Biological" / "passwd.png").symlink_to("/etc/passwd")
    (source / "Biological" / "dangling.png").symlink_to("missing.png")  # inside, but nothing there
    (source / "Powder").mkdir()
    (source / "Powder" / "powder.png").symlink_to("../unsorted/powder.png")  # stays inside: read where it lies
    (source / "Fibres").symlink_to(outside / "fibres", target_is_directory=True)
    (source / "Particles_again").symlink_to(source / "Particles", target_is_directory=True)
    linked_source = tmp_path / "linked_source"  # SOURCE itself may be a link
    linked_source.symlink_to(source, target_is_directory=True)

    output = tmp_path / "out"
    done = _build_cli(linked_source, output)
    assert done.returncode == 0, done.stderr
    rows = _rows(output)
    outside_ids = {hashlib.sha256(p.read_bytes()).hexdigest() for p in outside.rglob("*.png")}
    assert not outside_ids & {r["image_id"] for r in rows}, "a file from outside the source was stored"
    assert sorted((r["source"], SEM_CATEGORIES[r["label"]]) for r in rows) == [
        ("Particles/particle.png", "Particles"),
        ("Powder/powder.png", "Powder"),
        ("Tips/tip.png", "Tips"),
    ]
    rejects = {r["path"]: r for r in _rejects(output)}
    for path in ("Biological/link.png", "Biological/passwd.png"):
        assert rejects[path]["kind"] == "unreadable" and "resolves outside the source" in rejects[path]["reason"], rejects[path]
    assert "cannot read file" in rejects["Biological/dangling.png"]["reason"]
    assert "symbolic link to a folder outside the source" in rejects["Fibres"]["reason"]
    assert "symbolic link to a folder inside the source" in rejects["Particles_again"]["reason"]
    assert rejects["unsorted/powder.png"]["kind"] == "unknown_class"
    assert b"root:" not in b"".join(p.read_bytes() for p in output.rglob("*") if p.is_file())

    # tar and zip members with absolute paths are rejected, as the reject text says, never stored under a stripped name
    tip = by_category["Tips"].read_bytes()
    tarred = tmp_path / "absolute.tar"
    with tarfile.open(tarred, "w") as tar:
        for name in ("/abs/Tips/tar_absolute.png", "Tips/../../escape.png", "Tips/kept.png"):
            info = tarfile.TarInfo(name)
            info.size = len(tip)
            tar.addfile(info, io.BytesIO(tip))
    zipped = tmp_path / "absolute.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr(zipfile.ZipInfo("/Tips/zip_absolute.png"), tip)
        archive.writestr(zipfile.ZipInfo("C:/Tips/drive.png"), tip)
        archive.writestr(zipfile.ZipInfo("Tips/kept.png"), tip)
    for archive_path, absolute in ((tarred, ["/abs/Tips/tar_absolute.png", "Tips/../../escape.png"]), (zipped, ["/Tips/zip_absolute.png", "C:/Tips/drive.png"])):
        built = tmp_path / f"built_{archive_path.name}"
        report = build_sem_dataset(archive_path, built, num_workers=0, show_progress=False)
        assert [r["source"] for r in _rows(built)] == ["Tips/kept.png"]
        assert sorted((r.path, r.kind) for r in report.rejects if "leaves the archive" in r.reason) == sorted((p, "unreadable") for p in absolute)


def test_special_files_are_rejected_by_type_never_read(real_sem_images, tmp_path):
    import socket
    import stat as stat_module

    source = tmp_path / "src"
    _write(source / "Tips" / "tip.png", real_sem_images[-1].read_bytes())
    os.mkfifo(source / "Tips" / "fifo.png")  # opening it for reading would block until a writer comes
    (source / "Tips" / "fifo_link.png").symlink_to("fifo.png")  # a link inside the source, to the FIFO
    (source / "Tips" / "zero.png").symlink_to("/dev/zero")  # endless bytes, size 0
    (source / "Tips" / "zero.tar").symlink_to("/dev/zero")
    os.mkfifo(source / "Tips" / "pipe.tar")  # an 'archive' that is a FIFO
    listener = socket.socket(socket.AF_UNIX)
    sock_path = source / "Tips" / "s.png"
    expected = {"Tips/fifo.png": "FIFO", "Tips/fifo_link.png": "FIFO", "Tips/pipe.tar": "FIFO"}
    if len(str(sock_path)) < 100:
        listener.bind(str(sock_path))
        expected["Tips/s.png"] = "socket"
    try:  # a device node inside the source (root only): the same device as /dev/zero
        os.mknod(source / "Tips" / "device.png", stat_module.S_IFCHR | 0o600, os.makedev(1, 5))
        expected["Tips/device.png"] = "character device"
    except (PermissionError, OSError):
        pass
    output = tmp_path / "out"
    try:
        done = _build_cli(source, output, "--num_workers", "1", timeout=120)
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    assert [r["source"] for r in _rows(output)] == ["Tips/tip.png"]
    rejects = {r["path"]: r for r in _rejects(output)}
    for path, kind in expected.items():
        assert rejects[path]["kind"] == "unreadable" and f"not a regular file ({kind})" in rejects[path]["reason"], rejects[path]
    for path in ("Tips/zero.png", "Tips/zero.tar"):
        assert "resolves outside the source" in rejects[path]["reason"]
    assert set(rejects) == set(expected) | {"Tips/zero.png", "Tips/zero.tar"}

    # a SOURCE that is itself a FIFO is refused at once, naming what it is
    os.mkfifo(tmp_path / "source.tar")
    done = _build_cli(tmp_path / "source.tar", tmp_path / "out2", timeout=120)
    assert done.returncode == 2 and "not a folder or a regular file (FIFO)" in done.stderr and "Traceback" not in done.stderr


def _zeros_member(archive: zipfile.ZipFile, name: str, size: int, head: bytes = b"") -> None:
    """A member of ``size`` bytes (``head`` then zeros), written in blocks: the test never holds it whole either."""
    block = bytes(1 << 20)
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as member:
        member.write(head)
        left = size - len(head)
        while left > 0:
            member.write(block[: min(left, len(block))])
            left -= min(left, len(block))


@pytest.mark.slow
def test_huge_archive_members_are_streamed_and_memory_stays_bounded(real_sem_images, tmp_path):
    """A zip of a few MB holding two 600 MB members (and a tar.gz with a 100 MB one) must not drive the build's RSS up."""
    import time

    import psutil

    tile = next(p for p in real_sem_images if p.suffix == ".png")
    small = Image.new("L", (64, 48))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    source = tmp_path / "src"
    source.mkdir()
    with zipfile.ZipFile(source / "Tips.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _zeros_member(archive, "big_1.png", 600_000_000)
        _zeros_member(archive, "big_2.jpg", 600_000_000)
        _zeros_member(archive, "padded.png", 40_000_000, head=buffer.getvalue())  # a real 64x48 PNG, then 40 MB of padding
        archive.writestr("tile.png", tile.read_bytes())
    with tarfile.open(source / "Powder.tar.gz", "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("big_3.tif")
        info.size = 100_000_000

        class Zeros(io.RawIOBase):
            left = info.size

            def readable(self):
                return True

            def readinto(self, view):
                n = min(len(view), self.left)
                view[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    assert (source / "Tips.zip").stat().st_size < 10_000_000

    output = tmp_path / "out"
    command = [sys.executable, "datasets_scripts/build_sem.py", str(source), "--output", str(output), "--quiet", "--num_workers", "2"]
    # the peak RSS of every process of the build: exact per process (getrusage in a fresh parent), sampled for their sum
    measure = (
        "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(done.returncode)"
    )
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([sys.executable, "-c", measure, *command], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent, peak_sum = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak_sum = max(peak_sum, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    peak_one = int(out.strip().splitlines()[-1])
    assert peak_one < 1_000_000_000 and peak_sum < 1_000_000_000, f"peak RSS {peak_one / 1e6:.0f} MB (one process), {peak_sum / 1e6:.0f} MB (all)"
    print(f"peak RSS: {peak_one / 1e6:.0f} MB in one process, {peak_sum / 1e6:.0f} MB over all processes")
    assert [r["source"] for r in _rows(output)] == ["Tips.zip/tile.png"]
    rejects = {r["path"]: r for r in _rejects(output)}
    for path in ("Tips.zip/big_1.png", "Tips.zip/big_2.jpg", "Powder.tar.gz/big_3.tif"):
        assert rejects[path]["reason"] == "corrupt image: no image format recognises the file's bytes", rejects[path]
    assert "far larger than the 64x48 L image its header declares" in rejects["Tips.zip/padded.png"]["reason"]
    assert [p.name for p in output.rglob("*") if p.name.startswith(".")] == [".build_sem.lock"], "spool files left behind"


def test_staging_folders_of_killed_builds_are_removed_and_live_ones_kept(layouts, tmp_path):
    """SIGKILL the real CLI while it builds, then build again: what the killed build left is removed, a live build's folder is not."""
    import signal
    import time

    import psutil

    output = tmp_path / "out"
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "datasets_scripts/build_sem.py", str(layouts["folders"]), "--output", str(output), "--quiet", "--num_workers", "1"]
    killed = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    parent = psutil.Process(killed.pid)
    while not (list(output.glob(".build_sem-*/images.spool")) and (workers := parent.children(recursive=True))):  # decoding has begun
        assert killed.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    # its decoding process ends with it: left alive, it would hold the staging folder's lock for ever
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"decoding processes outlived the killed build: {alive}"
    left_by_kill = list(output.glob(".build_sem-*"))
    assert len(left_by_kill) == 1 and (left_by_kill[0] / ".owner").exists()

    # a staging folder as older versions left them (no owner record): its pid is gone, and it is old
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    old_style = output / f".build_sem-{gone}-0123abcd"
    _write(old_style / "images.spool", b"stale")
    os.utime(old_style, (time.time() - 3600, time.time() - 3600))
    # a build still running (here: a process inside staged_write, waiting): its staging folder must survive
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom emvision.datasets_scripts.storage import staged_write\n"
         "with staged_write(sys.argv[1], ['images'], prefix='build_sem') as staging:\n    print(staging, flush=True); time.sleep(120)", str(output)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        live = Path(holder.stdout.readline().strip())
        assert live.is_dir()
        done = _build_cli(layouts["folders"], output, "--num_workers", "1")
        assert done.returncode == 0, done.stderr
        assert not left_by_kill[0].exists() and not old_style.exists()
        assert live.is_dir() and (live / ".owner").exists()
        assert sorted(p.name for p in output.glob(".build_sem-*")) == [live.name]
    finally:
        holder.kill()
        holder.wait()
    assert len(_rows(output)) == 17


@pytest.fixture()
def read_only_folder(tmp_path):
    """A folder nobody can write in: mode 555, and immutable as well when the tests run as root (who ignores modes)."""
    from emvision.datasets_scripts.storage.writing import unwritable_reason

    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = unwritable_reason(folder) is None and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if unwritable_reason(folder) is None:
            pytest.skip("no way to make a read-only folder here")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_an_unwritable_output_is_a_one_line_error_before_any_work(layouts, read_only_folder, tmp_path, capsys):
    from emvision.datasets_scripts import synthesize

    a_file = _write(tmp_path / "a_file", b"x")
    for output, says in ((read_only_folder, "cannot write in"), (read_only_folder / "new" / "out", "cannot write in"), (a_file, "exists and is not a folder")):
        assert main([str(layouts["flat"]), "--output", str(output), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("build_sem.py: error: argument --output: ") and says in err, err
        assert synthesize.main(["--output", str(output), "--num_images", "10", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("synthesize.py: error: argument --output: ") and says in err, err
    assert not any(read_only_folder.iterdir())
