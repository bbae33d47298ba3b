"""The dataset card of a build (``huggingface_hub.DatasetCard``): YAML metadata and a readable build record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emvision.datasets_scripts.storage import SCHEMA_VERSION

from .codec import ImageOptions
from .sources import ARCHIVE_FILE_NAME

if TYPE_CHECKING:
    from .assembly import BuildState
    from .builder import BuildReport

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

def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


def command_line(source_name, options: ImageOptions, num_folds, seed, labels, allow_new_labels, license) -> str:
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


def dataset_card(report: BuildReport, state: BuildState, *, source_name: str, command: str, options: ImageOptions, num_folds: int, seed: int, license: str | None):
    """The dataset card (``huggingface_hub.DatasetCard``): YAML metadata + a readable build record."""
    from huggingface_hub import DatasetCard, DatasetCardData

    sources = [row["source"] for row in state.image_rows]
    is_archive = bool(sources) and all(ARCHIVE_FILE_NAME.match(path.rsplit("/", 1)[-1]) for path in sources)
    license = license or (ARCHIVE_LICENSE if is_archive else "unknown")
    counts = report.class_counts
    total = max(report.num_images, 1)
    pretty_name = "NFFA-EUROPE SEM images (Aversa et al. 2018), emvision build" if is_archive else f"SEM images from {source_name}, emvision build"
    stored = (
        "PNG without compression or row filters: pixels that read back exactly, with a copy instead of a decoder "
        "(SEM noise leaves deflate little to save: about 25%)"
        if options.image_format == "png"
        else f"JPEG (quality {options.jpeg_quality}, 4:4:4 chroma): lossy, so the stored pixels are no longer exactly the processor's"
    )
    resize = (
        f"{options.short_side}x{options.short_side} px, bicubic with antialiasing, aspect ratio not kept: exactly what "
        "`MicrographImageProcessor` gives the models (its default size is 224x224)"
        if options.short_side
        else "kept at the cropped original size (training then resizes every image at every read)"
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
            "schema_version": SCHEMA_VERSION,
            "preprocessing": {
                "image_size": options.short_side,
                "info_bar_removed": True,
                "format": options.image_format,
                "color": options.color,
                "stored_modes": dict(sorted(state.modes.items())),
                "max_pixels": options.max_pixels,
            },
            "num_qa_pairs": report.num_qa_pairs,
            "num_class_descriptions": report.num_descriptions,
            "class_descriptions_source": "human (emvision's hand-written descriptions)" if state.human_description_classes else "source",
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
        f"Schema version {SCHEMA_VERSION}: `vqa` rows hold no image, only the `image_id` that joins them to `images`.",
        "",
        "`images` columns: `image` (the information bar cropped off, resized to what the models read), `image_id` (sha256 of "
        "the original file's bytes), `label`, `fold`, `source` (path inside the source), `width`/`height` (original size), "
        "`crop_box` (left, top, right, bottom: the part of the original that `image` shows; the information bar and "
        "everything below it are cut), `scale_bar_px` (the scale bar's length in original pixels: the longest horizontal "
        "line drawn in the bar, measured, null when none was found), `scale_bar_nm`, `pixel_size_nm`, `magnification`, "
        "`accelerating_voltage_kv`, `working_distance_mm`, `detector` (what the bar's text says: **not read** from real "
        "images, which would need OCR, so null unless your metadata table has columns of these names), `metadata` "
        "(JSON: the user's other metadata columns, or `{}`).",
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
        "- The information bar (the microscope's data zone) is detected as `MicrographImageProcessor` detects it and cut "
        "off with everything below it; images without one are kept whole.",
        f"- Size: {resize}.",
        f"- Stored as {stored}.",
        f"- Colour (`{options.color}`): " + (
            "images whose pixels are gray (R = G = B) are stored as 8-bit `L`, others as `RGB`, so both are exactly what the "
            "processor computes from the original file. "
            if options.color == "auto" else
            "every image as luma `L` (colour files then differ from what the processor computes from the original). "
            if options.color == "L" else "every image as `RGB`. "
        ) + ", ".join(f"{count:,} stored as {mode}" for mode, count in sorted(state.modes.items())) + ".",
        "- 16-bit images are scaled to 8 bits by their bit depth; alpha is composited over black; EXIF orientation is "
        "applied (as the processor reads a file).",
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
    if state.human_description_classes:
        covered = state.human_description_classes
        missing = [name for name in report.class_names if name not in covered]
        lines += [
            "",
            "## Class descriptions",
            "",
            f"The source held no class descriptions, so `class_descriptions` holds emvision's **hand-written** descriptions "
            f"(`source=\"human\"`, not written by a model) of {len(covered)} class(es): {', '.join(covered)}."
            + (f" The other classes ({', '.join(missing)}) have no hand-written description: HNF's text branch falls back to "
               "the class names unless a teacher run (`datasets_scripts/generate_qa.py`) adds descriptions." if missing else ""),
        ]
    if is_archive:
        lines += ["", "## Citation", "", "```bibtex", ARCHIVE_CITATION, "```"]
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
