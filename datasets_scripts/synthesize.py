"""Build the synthetic SEM dataset: procedural micrographs, oracle QA pairs and class descriptions.

    python datasets_scripts/synthesize.py --output DIR --num_images N [--seed S] [--num_folds K]

SYNTHETIC DATA, ORACLE ANSWERS: DIR receives ``images``, ``vqa`` and ``class_descriptions``
(``datasets.load_from_disk``), the dataset card ``README.md`` and ``synthesis.json``, the parameters
that made DIR. The generator, the oracle and the builder live in ``emvision.datasets_scripts.synthetic``;
this is their command line. Training scripts call ``load_or_create_synthetic`` (re-exported here),
which builds the same set once into a shared cache.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from emvision.datasets_scripts.storage import DEFAULT_NUM_FOLDS, DEFAULT_SHORT_SIDE
from emvision.datasets_scripts.storage.writing import unwritable_reason
from emvision.datasets_scripts.synthetic import (
    DEFAULT_DESCRIPTIONS_PER_CLASS,
    DEFAULT_RENDER_SCALE,
    load_or_create_synthetic,
    summary_line,
    synthesize,
)

__all__ = ["build_parser", "load_or_create_synthetic", "main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthesize.py",
        description="Build a SYNTHETIC SEM dataset (procedural micrographs, oracle-derived QA pairs and class "
                    "descriptions) as DIR/images, DIR/vqa, DIR/class_descriptions (datasets.load_from_disk) + a card.",
        epilog="Example: python datasets_scripts/synthesize.py --output data/synthetic --num_images 2000 --seed 0",
    )
    parser.add_argument("--output", required=True, type=Path, help="output folder (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--num_images", required=True, type=_positive_int, help="number of images (balanced over the 10 classes)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="generator and fold seed (default: 0)")
    parser.add_argument("--num_folds", type=_positive_int, default=DEFAULT_NUM_FOLDS, help=f"stratified folds (default: {DEFAULT_NUM_FOLDS})")
    parser.add_argument("--short_side", type=_positive_int, default=DEFAULT_SHORT_SIDE, help=f"stored short side in px, 4:3 images (default: {DEFAULT_SHORT_SIDE})")
    parser.add_argument("--render_scale", type=int, choices=(1, 2, 3, 4), default=DEFAULT_RENDER_SCALE,
                        help=f"microscope frame size as a multiple of the stored size (default: {DEFAULT_RENDER_SCALE})")
    parser.add_argument("--descriptions_per_class", type=_non_negative_int, default=DEFAULT_DESCRIPTIONS_PER_CLASS,
                        help=f"oracle class descriptions per class (default: {DEFAULT_DESCRIPTIONS_PER_CLASS})")
    parser.add_argument("--no_human_descriptions", action="store_true", help="leave out the hand-written class descriptions")
    parser.add_argument("--num_workers", type=_positive_int, default=None, help="rendering processes (default: all available cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.short_side < 32:
        build_parser().error(f"--short_side must be at least 32 pixels, got {args.short_side}")
    unwritable = unwritable_reason(args.output)
    if unwritable is not None:  # before any image is rendered: a read-only --output fails at once, in one line
        print(f"synthesize.py: error: argument --output: {unwritable}; choose a folder you can write to", file=sys.stderr)
        return 2
    try:
        summary = synthesize(args.output, args.num_images, args.seed, num_folds=args.num_folds, short_side=args.short_side,
                             render_scale=args.render_scale, descriptions_per_class=args.descriptions_per_class,
                             human_descriptions=not args.no_human_descriptions, num_workers=args.num_workers,
                             overwrite=args.overwrite, progress=not args.quiet)
    except OSError as error:  # FileExistsError, a disk that fills up, ...
        print(f"synthesize.py: error: {error}", file=sys.stderr)
        return 2
    print(summary_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
