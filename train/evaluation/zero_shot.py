"""MVaEMa's label-free zero-shot classification: it ranks the class names for every test-fold image (no caption)."""

from __future__ import annotations

from pathlib import Path

from emvision.train.data.collators import ImageCollator
from emvision.train.data.splits import split_by_fold
from emvision.train.metrics.classification import classification_report, save_classification_report
from emvision.vocabulary import category_display_name

from .classifier import report_summary, score_images


def evaluate_zero_shot(accelerator, model, processor, source, args, *, output_dir: str | Path | None = None) -> dict:
    """MVaEMa's label-free zero-shot classification of the test-fold images."""
    images = source.load("images")
    _, _, test_images = split_by_fold(images, args)
    class_names = images.features["label"].names
    candidates = [category_display_name(name) for name in class_names]
    model.eval()
    scores, labels = score_images(
        accelerator, test_images, ImageCollator(processor.image_processor),
        lambda pixel_values, _labels: model.classify(pixel_values, processor, candidates=candidates),
        args.per_device_eval_batch_size, "zero-shot",
    )
    report = classification_report(scores, labels, class_names, label_conditioned=False,
                                   metadata={"model": "MVaEMa zero-shot (answer likelihood)", "synthetic_data": source.synthetic})
    if accelerator.is_main_process:
        save_classification_report(report, Path(output_dir or args.output_dir) / "zero_shot_classification")
    return report_summary(report)


def evaluate_mvaema_folder(accelerator, args, source) -> dict:
    """``--mvaema_model``'s zero-shot classification of the same test fold, written to ``<output_dir>/mvaema_zero_shot``."""
    from transformers import AutoProcessor

    from emvision.modeling import MVaEMaForQuestionAnswering

    model = MVaEMaForQuestionAnswering.from_pretrained(args.mvaema_model).to(accelerator.device)
    processor = AutoProcessor.from_pretrained(args.mvaema_model)
    result = evaluate_zero_shot(accelerator, model, processor, source, args, output_dir=Path(args.output_dir) / "mvaema_zero_shot")
    accelerator.print(f"MVaEMa zero-shot ({args.mvaema_model}): top1={result['top1']:.4f} top5={result['top5']:.4f} macro_f1={result['macro_f1']:.4f}")
    return result
