"""Build the emvision SEM dataset from the NFFA archive (Aversa et al. 2018) or from a user's own folder.

    python datasets_scripts/build_sem.py SOURCE --output DIR [--num_folds K] [--seed S]

SOURCE is the archive as extracted (category folders, or flat ``L<k>_<md5>.jpg`` names), a
``.tar``/``.tgz``/``.zip`` of it, or a user's folder (category folders, or an ImageFolder with
``metadata.jsonl``/``metadata.csv``). DIR receives one ``datasets.load_from_disk`` folder per subset:

- ``DIR/images``: one row per distinct image as the models read it (info bar cut, 224x224), with a stratified fold;
- ``DIR/vqa``: one row per question-answer pair (text; ``image_id`` joins ``images``), when the metadata has
  ``question``/``answer`` columns;
- ``DIR/class_descriptions``: SOURCE's ``class_descriptions.jsonl``/``.csv``, else the project's hand-written ones;

plus ``DIR/rejects.jsonl`` (every file left out, and why) and ``DIR/README.md`` (the dataset card).

The same input gives the same output whatever the order of the archive, the number of workers or
where the input lives. The builder lives in ``emvision.datasets_scripts.archive``; this is its command
line, and re-exports ``build_sem_dataset`` and ``push_to_hub``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from emvision.datasets_scripts.archive import DEFAULT_MAX_PIXELS, build_sem_dataset, push_to_hub
from emvision.datasets_scripts.storage import DEFAULT_NUM_FOLDS, MODEL_IMAGE_SIZE
from emvision.datasets_scripts.storage.writing import unwritable_reason

__all__ = ["build_sem_dataset", "main", "push_to_hub"]


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
    parser.add_argument("--short_side", type=int, default=MODEL_IMAGE_SIZE, help="stored images are SxS px after the info bar is cut: what the models read; 0 = cropped original size (default: %(default)s)")
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
    unwritable = unwritable_reason(args.output)
    if unwritable is not None:  # before any file is read: a read-only --output fails at once, in one line
        print(f"build_sem.py: error: argument --output: {unwritable}; choose a folder you can write to", file=sys.stderr)
        return 2
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
    except (OSError, ValueError, RuntimeError) as error:  # FileNotFoundError, FileExistsError, a disk that fills up, ...
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
    sys.exit(main())
