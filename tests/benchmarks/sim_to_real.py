"""Synthetic-trained models on the 18 real micrographs of tests/fixtures/real_sem: a per-image table.

    python tests/benchmarks/sim_to_real.py --hnf outputs/classify --mvaema outputs/vqa [--output table.md]

For every image of the manifest: its true class, the HNF folder's prediction and probability, MVaEMa's
zero-shot prediction (the same classifier as train/vqa.py's evaluation) and MVaEMa's answer to the Basics
question. Real micrographs keep their information bar, which the image processor crops as it does for any
input. Eighteen images, one or two per class, from low-resolution tiles: this is a look at what the models
do on real data, not an accuracy figure, and the table says so.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "real_sem"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hnf", help="a train/classify.py output folder (optional)")
    parser.add_argument("--mvaema", help="a train/vqa.py output folder (optional)")
    parser.add_argument("--images", default=str(FIXTURES), help="a folder with manifest.csv (path,category,...)")
    parser.add_argument("--max_new_tokens", type=int, default=48, help="length of the Basics answer")
    parser.add_argument("--output", help="also write the markdown table here")
    return parser.parse_args(argv)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def main(argv=None) -> str:
    args = parse_args(argv)
    if not (args.hnf or args.mvaema):
        raise SystemExit("give --hnf and/or --mvaema (model folders)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from PIL import Image

    from emvision.apps.models import Assistant, Classifier
    from emvision.vocabulary import BASICS_QUESTION

    folder = Path(args.images)
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = [Image.open(folder / row["path"]).convert("L") for row in rows]
    hnf = Classifier(args.hnf) if args.hnf else None
    assistant = Assistant(args.mvaema) if args.mvaema else None
    zero_shot = Classifier(args.mvaema, assistant=assistant) if assistant else None
    columns = ["file", "true class"]
    if hnf:
        columns += ["HNF prediction", "probability"]
    if assistant:
        columns += ["MVaEMa zero-shot", "probability", "MVaEMa's Basics answer"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row, image in zip(rows, images):
        cells = [Path(row["path"]).name, row["category"]]
        if hnf:
            probabilities = hnf.probabilities(hnf.pixel_values([image]))[0]
            best = int(probabilities.argmax())
            cells += [hnf.labels[best], f"{float(probabilities[best]):.2f}"]
        if assistant:
            probabilities = zero_shot.probabilities(zero_shot.pixel_values([image]))[0]
            best = int(probabilities.argmax())
            answer = assistant.answers(assistant.pixel_values([image]), [BASICS_QUESTION], max_new_tokens=args.max_new_tokens)[0][0]
            cells += [zero_shot.labels[best], f"{float(probabilities[best]):.2f}", _cell(answer)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\n\n{len(rows)} real micrographs (tests/fixtures/real_sem), models trained on synthetic images only. "
            "Too few images, and too unlike the training images, for an accuracy figure: read it image by image.")
    table = "\n".join(lines) + note
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
