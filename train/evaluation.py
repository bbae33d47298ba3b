"""Test-fold evaluation shared by the training scripts, gathered across processes.

- ``evaluate_vqa``: MVaEMa answers the test questions (label-free prompts unless
  ``--eval_with_captions``); BLEU-2/4, ROUGE-1/2/L and METEOR from the project's metric module.
- ``evaluate_zero_shot``: MVaEMa ranks the class names for every test-fold image (no caption).
- ``evaluate_classifier``: an image classifier's Top-1/Top-5, per-class P/R/F1, macro-F1 and
  confusion matrix (json + png).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emvision.vocabulary import category_display_name
from emvision.train.data import ImageCollator, split_by_fold
from emvision.train.metrics.classification import classification_report, save_classification_report
from emvision.train.metrics.vqa_loader import load_vqa_metric


def _progress(accelerator, loader, desc: str):
    return tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False)


@torch.no_grad()
def generate_answers(accelerator, model, processor, rows, *, with_captions: bool, max_new_tokens: int, num_beams: int = 1,
                     batch_size: int = 48) -> list[str]:
    """Answers to ``rows`` (image, question[, caption]) in row order, computed on every process."""

    def collate(batch):
        inputs = processor(
            images=[row["image"] for row in batch],
            text=[row["question"] for row in batch],
            captions=[row["caption"] for row in batch] if with_captions else None,
            return_tensors="pt",
        )
        return dict(inputs)

    loader = accelerator.prepare(DataLoader(rows, batch_size=batch_size, collate_fn=collate))
    model.eval()
    answers: list[str] = []
    for batch in _progress(accelerator, loader, "answering"):
        generated = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        texts = processor.batch_decode(generated, skip_special_tokens=True)
        answers.extend(accelerator.gather_for_metrics(texts, use_gather_object=True))
    return answers


def evaluate_vqa(accelerator, model, processor, test_split, args) -> dict:
    if args.max_generate_samples and len(test_split) > args.max_generate_samples:
        test_split = test_split.select(range(args.max_generate_samples))
    predictions = generate_answers(
        accelerator, model, processor, test_split, with_captions=args.eval_with_captions,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, batch_size=args.per_device_eval_batch_size,
    )
    references = list(test_split["answer"])
    metric = load_vqa_metric()
    scores = metric.compute(predictions=predictions, references=references)
    result = {k: float(v) for k, v in scores.items()}
    result["num_test_pairs"] = len(references)
    result["examples"] = [
        {"question": q, "reference": r, "prediction": p}
        for q, r, p in list(zip(test_split["question"], references, predictions))[:5]
    ]
    return result


@torch.no_grad()
def _scores(accelerator, rows, collate, score_fn, batch_size: int, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    loader = accelerator.prepare(DataLoader(rows, batch_size=batch_size, collate_fn=collate))
    all_scores, all_labels = [], []
    for batch in _progress(accelerator, loader, desc):
        labels = batch["labels"]
        scores = score_fn(batch["pixel_values"], labels)
        scores, labels = accelerator.gather_for_metrics((scores, labels))
        all_scores.append(scores.float().cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_scores), torch.cat(all_labels)


def evaluate_zero_shot(accelerator, model, processor, source, args, *, output_dir: str | Path | None = None) -> dict:
    """MVaEMa's label-free zero-shot classification of the test-fold images."""
    images = source.load("images")
    _, _, test_images = split_by_fold(images, args)
    class_names = images.features["label"].names
    candidates = [category_display_name(name) for name in class_names]
    model.eval()
    scores, labels = _scores(
        accelerator, test_images, ImageCollator(processor.image_processor),
        lambda pixel_values, _labels: model.classify(pixel_values, processor, candidates=candidates),
        args.per_device_eval_batch_size, "zero-shot",
    )
    report = classification_report(scores, labels, class_names, label_conditioned=False,
                                   metadata={"model": "MVaEMa zero-shot (answer likelihood)", "synthetic_data": source.synthetic})
    if accelerator.is_main_process:
        save_classification_report(report, Path(output_dir or args.output_dir) / "zero_shot_classification")
    return _summary(report)


def evaluate_classifier(accelerator, model, image_processor, test_images, class_names, *, output_dir, batch_size: int,
                        label_conditioned: bool = False, metadata: dict | None = None) -> dict:
    model.eval()
    scores, labels = _scores(
        accelerator, test_images, ImageCollator(image_processor),
        # labels reach the model only under the paper's label-conditioned protocol (then marked)
        lambda pixel_values, labels: model(pixel_values=pixel_values, labels=labels if label_conditioned else None).logits,
        batch_size, "evaluating",
    )
    report = classification_report(scores, labels, class_names, label_conditioned=label_conditioned, metadata=metadata)
    if accelerator.is_main_process:
        save_classification_report(report, output_dir)
    return _summary(report)


def _summary(report: dict) -> dict:
    top_k = report["top_k_effective"]
    return {
        "top1": report["top1_accuracy"],
        "top5": report.get("top5_accuracy", report.get(f"top{top_k}_accuracy")),
        "macro_f1": report["macro_f1"],
        "num_images": report["num_examples"],
        "label_conditioned": report["label_conditioned"],
        "per_class_f1": {name: values["f1"] for name, values in report["per_class"].items()},
    }
