"""The `emvision` command: everything a lab runs, from an installed package.

    emvision predict INPUT... --model DIR [--vqa_model DIR] [--questions 1,3] --output FILE.csv|.jsonl
    emvision ask IMAGE "question" --model DIR
    emvision demo --model DIR [--classifier DIR] [--port N]
    emvision build | synthesize | teacher ...       the dataset scripts, same flags
    emvision train vqa | classify | kfold ...       the training scripts, same flags
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager

# command -> (module with main(argv), what it is)
SCRIPTS = {
    "build": ("emvision.datasets_scripts.build_sem", "datasets_scripts/build_sem.py: a dataset from real micrographs"),
    "synthesize": ("emvision.datasets_scripts.synthesize", "datasets_scripts/synthesize.py: the synthetic dataset"),
    "teacher": ("emvision.datasets_scripts.generate_qa", "datasets_scripts/generate_qa.py: teacher QA pairs and descriptions"),
}
TRAIN_SCRIPTS = {
    "vqa": ("emvision.train.vqa", "train/vqa.py: MVaEMa"),
    "classify": ("emvision.train.classify", "train/classify.py: HNF"),
    "kfold": ("emvision.train.kfold", "train/kfold.py: every cross-validation fold"),
}

USAGE = f"""usage: emvision COMMAND [options]   (emvision COMMAND --help for its options)

For the lab:
  predict     classify (and describe) every micrograph of files, folders, globs or archives into a .csv/.jsonl
  ask         answer one question about one micrograph
  demo        the Gradio app: classes, answers and where the models looked (pip install "emvision[demo]")

The project's scripts, same flags:
{chr(10).join(f"  {name:<11} {text}" for name, (_, text) in SCRIPTS.items())}
{chr(10).join(f"  train {name:<5} {text}" for name, (_, text) in TRAIN_SCRIPTS.items())}

Multi-process training: accelerate launch -m emvision.apps.cli train vqa ... (or accelerate launch train/vqa.py)
"""


@contextmanager
def _program_name(name: str):
    """Scripts whose parser takes its name from sys.argv[0] then print `usage: emvision train vqa ...`."""
    saved = sys.argv[0]
    sys.argv[0] = name
    try:
        yield
    finally:
        sys.argv[0] = saved


def _run_script(module_name: str, argv: list[str], name: str, what: str) -> int:
    if any(flag in argv for flag in ("-h", "--help")):
        print(f"emvision {name}: {what}; the flags below are the script's.\n")
    module = importlib.import_module(module_name)
    with _program_name(f"emvision {name}"):
        result = module.main(argv)
    return result if isinstance(result, int) else 0


# ---------------------------------------------------------------------------------------------
# predict, ask, demo


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emvision predict",
        description="One row per micrograph: path, sha256, top-k classes, the information bar, optional answers. "
        "Bad files are rows with their reason. Rerunning the same command skips rows already in the output.",
        epilog="example: emvision predict scans/ more/*.tif runs.zip --model outputs/classify "
        "--vqa_model outputs/vqa --questions 1,3 --output predictions.csv",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive), globs, .zip/.tar archives")
    parser.add_argument("--model", required=True, help="classifier folder: HNF (train/classify.py) or MVaEMa (zero-shot)")
    parser.add_argument("--output", required=True, help="FILE.csv or FILE.jsonl; appended to and resumed")
    parser.add_argument("--vqa_model", default=None, help="MVaEMa folder (train/vqa.py) that answers --questions")
    parser.add_argument("--questions", default=None, help="prompt family ids, e.g. 1,3, or 'all' (needs --vqa_model)")
    parser.add_argument("--top_k", type=int, default=3, help="classes per row (default 3)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=64, help="longest answer (default 64)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU if there is one)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_predict(argv: Sequence[str]) -> int:
    args = predict_parser().parse_args(argv)
    from .models import Assistant, Classifier
    from .predict import parse_questions, predict

    question_ids = parse_questions(args.questions)
    if question_ids and not args.vqa_model:
        raise ValueError("--questions needs --vqa_model: the MVaEMa folder that answers them")
    classifier = Classifier(args.model, args.device)
    assistant = Assistant(args.vqa_model, classifier.device) if args.vqa_model else None
    summary = predict(
        args.inputs,
        classifier,
        args.output,
        assistant=assistant,
        question_ids=question_ids,
        top_k=args.top_k,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        progress=not args.quiet,
    )
    print(summary.line(args.output))
    return 0


def ask_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emvision ask",
        description="Answer a question about a micrograph with a saved MVaEMa model; prints the answer.",
        epilog='example: emvision ask sample.tif "Estimate size/size range of nanostructures." --model outputs/vqa',
    )
    parser.add_argument("image", help="a micrograph file")
    parser.add_argument("question")
    parser.add_argument("--model", required=True, help="MVaEMa folder (train/vqa.py's --output_dir)")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--heatmap", default=None, metavar="FILE.png", help="also save where the model looked, over the image")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU if there is one)")
    return parser


def run_ask(argv: Sequence[str]) -> int:
    args = ask_parser().parse_args(argv)
    from .explain import explain_answer, overlay_heatmap
    from .models import Assistant
    from .predict import decode

    if not os.path.isfile(args.image):
        raise FileNotFoundError(f"{args.image}: no such image file")
    with open(args.image, "rb") as handle:
        image = decode(args.image, handle.read())
    assistant = Assistant(args.model, args.device)
    if args.heatmap:
        answer, heatmap = explain_answer(assistant.model, assistant.processor, image, args.question, args.max_new_tokens)
        overlay_heatmap(image, heatmap).save(args.heatmap)
    else:
        answer = assistant.answers(assistant.pixel_values([image]), [args.question], args.max_new_tokens)[0][0]
    print(answer)
    return 0


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emvision demo",
        description="A Gradio app on this machine: upload a micrograph (or pick a sample) to see its information bar, "
        "class probabilities, answers to the ten prompt families and to your question, and where the models looked. "
        'Needs the demo extra: pip install "emvision[demo]". Works offline.',
        epilog="example: emvision demo --model outputs/vqa --classifier outputs/classify --port 7860",
    )
    parser.add_argument("--model", required=True, help="MVaEMa folder (train/vqa.py's --output_dir)")
    parser.add_argument("--classifier", default=None, help="HNF folder (train/classify.py); default: MVaEMa zero-shot")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU if there is one)")
    return parser


def run_demo(argv: Sequence[str]) -> int:
    args = demo_parser().parse_args(argv)
    from .demo import launch

    launch(args.model, args.classifier, host=args.host, port=args.port, max_new_tokens=args.max_new_tokens, device=args.device)
    return 0


COMMANDS = {"predict": run_predict, "ask": run_ask, "demo": run_demo}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in SCRIPTS:
        module_name, what = SCRIPTS[command]
        return _run_script(module_name, rest, command, what)
    if command == "train":
        if not rest or rest[0] not in TRAIN_SCRIPTS:
            print("usage: emvision train {vqa,classify,kfold} [the script's flags]   (emvision train vqa --help)")
            return 0 if rest and rest[0] in ("-h", "--help") else 2
        module_name, what = TRAIN_SCRIPTS[rest[0]]
        return _run_script(module_name, rest[1:], f"train {rest[0]}", what)
    if command not in COMMANDS:
        print(f"emvision: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"emvision {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
