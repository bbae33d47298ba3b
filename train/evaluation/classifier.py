"""An image classifier's test-fold report: Top-1/Top-5, per-class P/R/F1, macro-F1 and the confusion
matrix (json + png), gathered across processes."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from emvision.train.data.collators import ImageCollator
from emvision.train.metrics.classification import classification_report, save_classification_report

from .progress import progress


@torch.no_grad()
def score_images(accelerator, rows, collate, score_fn, batch_size: int, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``score_fn(pixel_values, labels)`` over every row, with the labels, gathered from all processes."""
    loader = accelerator.prepare(DataLoader(rows, batch_size=batch_size, collate_fn=collate))
    all_scores, all_labels = [], []
    for batch in progress(accelerator, loader, desc):
        labels = batch["labels"]
        scores = score_fn(batch["pixel_values"], labels)
        scores, labels = accelerator.gather_for_metrics((scores, labels))
        all_scores.append(scores.float().cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_scores), torch.cat(all_labels)


def evaluate_classifier(accelerator, model, image_processor, test_images, class_names, *, output_dir, batch_size: int,
                        label_conditioned: bool = False, metadata: dict | None = None) -> dict:
    model.eval()
    scores, labels = score_images(
        accelerator, test_images, ImageCollator(image_processor),
        # labels reach the model only under the paper's label-conditioned protocol (then marked)
        lambda pixel_values, labels: model(pixel_values=pixel_values, labels=labels if label_conditioned else None).logits,
        batch_size, "evaluating",
    )
    report = classification_report(scores, labels, class_names, label_conditioned=label_conditioned, metadata=metadata)
    if accelerator.is_main_process:
        save_classification_report(report, output_dir)
    return report_summary(report)


def report_summary(report: dict) -> dict:
    """The figures of a classification report that go into ``metrics.json``."""
    from .chance import classification_chance

    top_k = report["top_k_effective"]
    labels = [index for index, name in enumerate(report["class_names"]) for _ in range(report["per_class"][name]["support"])]
    return {
        "top1": report["top1_accuracy"],
        "top5": report.get("top5_accuracy", report.get(f"top{top_k}_accuracy")),
        "macro_f1": report["macro_f1"],
        "num_images": report["num_examples"],
        "num_classes": report["num_classes"],
        "top_k_effective": top_k,
        "chance": classification_chance(labels, report["num_classes"]),
        "label_conditioned": report["label_conditioned"],
        "per_class_f1": {name: values["f1"] for name, values in report["per_class"].items()},
    }
