"""MVaEMa's label-free zero-shot classification: it ranks the classes for every test-fold image (no caption).

By default (``classify``'s ``"retrieval"``, BLIP's zero-shot retrieval) each image is compared through ITC
with texts in the form MVaEMa was trained on, the first sentences of Basics answers that name each class
(the synthetic oracle's sentences for the ten SEM categories, else the Basics openings filled with the class's
display name). Measured on the synthetic set it ranks the classes better than the decoder's likelihood of
the class names, inside the answer openings or after a question the instruction data never asks, and than
re-ranking by ITM (README, "Training recipe"). A model without ITC falls back to the answer openings.
"""

from __future__ import annotations

from pathlib import Path

from emvision.train.data.collators import ImageCollator
from emvision.train.data.splits import split_by_fold
from emvision.train.metrics.classification import classification_report, save_classification_report
from emvision.datasets_scripts.synthetic.oracle import CATEGORY_NAMES, oracle_basics_sentences
from emvision.vocabulary import BASICS_ANSWER_TEMPLATES, category_display_name

from .classifier import report_summary, score_images


def answer_names(class_names) -> list[str]:
    """How answers name each class: the synthetic oracle's words for the SEM categories, else the display name."""
    return [CATEGORY_NAMES.get(name, category_display_name(name)) for name in class_names]


def class_texts(class_names) -> list[list[str]]:
    """Per class, the Basics answer sentences that name it (texts only: nothing here depends on a test image)."""
    return [oracle_basics_sentences(name) if name in CATEGORY_NAMES else [t.format(category_display_name(name)) for t in BASICS_ANSWER_TEMPLATES]
            for name in class_names]


def zero_shot_scores(model, processor, pixel_values, class_names):
    """``classify``'s default method with this module's class texts and names: probabilities (B, C)."""
    return model.classify(pixel_values, processor, candidates=answer_names(class_names), class_texts=class_texts(class_names))


def evaluate_zero_shot(accelerator, model, processor, source, args, *, output_dir: str | Path | None = None) -> dict:
    """MVaEMa's label-free zero-shot classification of the test-fold images."""
    images = source.load("images")
    _, _, test_images = split_by_fold(images, args)
    class_names = images.features["label"].names
    model.eval()
    scores, labels = score_images(
        accelerator, test_images, ImageCollator(processor.image_processor),
        lambda pixel_values, _labels: zero_shot_scores(model, processor, pixel_values, class_names),
        args.per_device_eval_batch_size, "zero-shot",
    )
    method = "ITC retrieval" if model.config.use_itc else "answer likelihood in the Basics answer form"
    report = classification_report(scores, labels, class_names, label_conditioned=False,
                                   metadata={"model": f"MVaEMa zero-shot ({method})", "synthetic_data": source.synthetic})
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
