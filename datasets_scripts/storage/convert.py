"""Convert a dataset folder written in the version-1 layout to version 2, once:

    python -m emvision.datasets_scripts.storage.convert OLD NEW

Version 1 stored every image again in each ``vqa`` row and kept the information bar on the stored
images (resized to a 256 px short side). NEW receives:

- ``images``: each stored image through ``model_image.prepare_model_image`` (the bar detected and cut,
  224x224), which is exactly what a version-1 training run computed from it at every read; the bar row
  and the scale bar found in the stored image are scaled back to the original's size for ``crop_box``
  and ``scale_bar_px``. Building from the original files again gives slightly sharper images (the
  bar is then cut before any resize); do that when you still have them. Synthetic rows get the
  info-bar columns that do not depend on the image size from their generator parameters.
- ``vqa``: the same rows without the image column; ``class_descriptions`` as they were;
- every other file of OLD (dataset card, rejects, synthesis record) copied, the card with a note.

The training scripts also read version-1 folders directly (converted on read, more slowly).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .model_image import encode_png, open_image_bytes, prepare_model_image
from .schema import INFO_BAR_COLUMNS, SCHEMA_VERSION, SUBSETS, images_features, schema_version, stamp_schema_version
from .writing import save_subset, staged_write

SYNTHETIC_BAR_COLUMNS = ("scale_bar_nm", "magnification", "accelerating_voltage_kv", "working_distance_mm", "detector")


def convert_images_row(row: dict) -> dict:
    """One version-1 ``images`` row (image undecoded) -> a version-2 row."""
    data = row["image"]["bytes"]
    prepared = prepare_model_image(open_image_bytes(data))
    stored_width, stored_height = prepared.width, prepared.height  # of the version-1 stored image
    width, height = row.get("width") or stored_width, row.get("height") or stored_height
    bar = prepared.info_bar_row
    columns: dict = dict.fromkeys(INFO_BAR_COLUMNS)
    if prepared.scale_bar_px is not None:
        columns["scale_bar_px"] = prepared.scale_bar_px * width / stored_width
    metadata = row.get("metadata") or "{}"
    if row.get("source") == "synthetic":
        try:
            parameters = json.loads(metadata)
            imaging, info_bar = parameters["imaging"], parameters["info_bar"]
            values = {"scale_bar_nm": info_bar["scale_bar_nm"], "magnification": imaging["magnification"],
                      "accelerating_voltage_kv": imaging["accelerating_voltage_kv"],
                      "working_distance_mm": imaging["working_distance_mm"], "detector": imaging["detector"]}
            columns.update({name: values[name] for name in SYNTHETIC_BAR_COLUMNS})
        except (ValueError, KeyError, TypeError):
            pass
    if columns["scale_bar_nm"] and columns["scale_bar_px"]:
        columns["pixel_size_nm"] = columns["scale_bar_nm"] / columns["scale_bar_px"]
    return {
        "image": {"bytes": encode_png(prepared.pixels), "path": None},
        "image_id": row["image_id"],
        "label": row["label"],
        "fold": row["fold"],
        "source": row.get("source", ""),
        "width": width,
        "height": height,
        "crop_box": [0, 0, width, height if bar is None else round(bar * height / stored_height)],
        **columns,
        "metadata": metadata,
    }


def _converted_rows(path: str) -> Iterator[dict]:
    from datasets import Image, load_from_disk

    images = load_from_disk(path).cast_column("image", Image(decode=False))
    for row in images:
        yield convert_images_row(row)


def convert_v1(old: str | Path, new: str | Path, *, overwrite: bool = False) -> dict[str, int]:
    """Write the version-2 form of the version-1 folder ``old`` into ``new``; returns the rows per subset."""
    from datasets import load_from_disk

    old, new = Path(old), Path(new)
    if not (old / "images" / "dataset_info.json").is_file():
        raise FileNotFoundError(f"{old} holds no images subset (saved with save_to_disk): not an emvision dataset folder")
    if new.exists() and any(new.iterdir()) and not overwrite:
        raise FileExistsError(f"{new} exists and is not empty; choose another folder or pass --overwrite")
    if new.resolve() == old.resolve():
        raise ValueError("NEW must differ from OLD: the version-1 folder is read while NEW is written")
    images = load_from_disk(str(old / "images"))
    if schema_version(images, "images") >= SCHEMA_VERSION:
        raise ValueError(f"{old} is already in the version-{SCHEMA_VERSION} layout: nothing to convert")
    names = images.features["label"].names
    counts = {}
    with staged_write(new) as staging:
        counts["images"] = save_subset(staging / "images", images_features(names), generator=_converted_rows,
                                       gen_kwargs={"path": str(old / "images")})
        stamp_schema_version(staging / "images")
        for subset in SUBSETS[1:]:
            if not (old / subset / "dataset_info.json").is_file():
                continue
            table = load_from_disk(str(old / subset))
            if "image" in table.column_names:
                table = table.remove_columns("image")
            table.save_to_disk(str(staging / subset))
            stamp_schema_version(staging / subset)
            counts[subset] = len(table)
        for entry in old.iterdir():
            if entry.name in SUBSETS or entry.name.startswith("."):
                continue
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, staging / entry.name)
        card = staging / "README.md"
        if card.is_file():
            card.write_text(card.read_text(encoding="utf-8").rstrip() + (
                f"\n\nConverted to schema version {SCHEMA_VERSION} with `python -m emvision.datasets_scripts.storage.convert`: "
                "the images were cut and resized from the version-1 stored images (256 px short side), and `vqa` no longer "
                "repeats them.\n"), encoding="utf-8")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emvision.datasets_scripts.storage.convert",
        description="Convert an emvision dataset folder from the version-1 layout (images in every vqa row, info bar on) to version 2.",
        epilog="example: python -m emvision.datasets_scripts.storage.convert data/sem_v1 data/sem",
    )
    parser.add_argument("old", metavar="OLD", help="version-1 dataset folder (images/, vqa/, class_descriptions/)")
    parser.add_argument("new", metavar="NEW", help="output folder (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace NEW")
    args = parser.parse_args(argv)
    try:
        counts = convert_v1(args.old, args.new, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"convert: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.new}: schema version {SCHEMA_VERSION}, " + ", ".join(f"{n:,} {subset} rows" for subset, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
