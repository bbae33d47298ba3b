"""MVaEMa answers the test questions (label-free prompts unless ``--eval_with_captions``); BLEU-2/4,
ROUGE-1/2/L and METEOR from the project's metric module (``train/metrics/vqa``)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from emvision.train.data.collators import VQAPromptCollator
from emvision.train.metrics.vqa_loader import load_vqa_metric

from .progress import progress


@torch.no_grad()
def generate_answers(accelerator, model, processor, rows, *, with_captions: bool, max_new_tokens: int, num_beams: int = 1,
                     batch_size: int = 48, images=None) -> list[str]:
    """Answers to ``rows`` (question[, caption], and image or ``image_id`` found in ``images``) in row order,
    computed on every process."""
    collate = VQAPromptCollator(processor, with_captions=with_captions, images=images)
    loader = accelerator.prepare(DataLoader(rows, batch_size=batch_size, collate_fn=collate))
    model.eval()
    answers: list[str] = []
    for batch in progress(accelerator, loader, "answering"):
        generated = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        texts = processor.batch_decode(generated, skip_special_tokens=True)
        answers.extend(accelerator.gather_for_metrics(texts, use_gather_object=True))
    return answers


def spread_sample(num_rows: int, size: int) -> list[int]:
    """``size`` row indices evenly spaced over ``num_rows`` (all of them when ``size`` is 0 or not smaller): a fold's
    rows come grouped by image, so its first rows would be a few images of few classes, a spaced sample spans them."""
    if not size or size >= num_rows:
        return list(range(num_rows))
    return [index * num_rows // size for index in range(size)]


def evaluate_vqa(accelerator, model, processor, test_split, args, train_split=None, images=None) -> dict:
    """BLEU-2/4, ROUGE-1/2/L, METEOR of the model's answers on the test fold (every pair by default; with
    --max_generate_samples N, N pairs evenly spaced over it), the number of pairs they were measured on and, given
    ``train_split``, their chance level. ``images`` joins text rows to their images (schema version 2)."""
    in_fold = len(test_split)
    if args.max_generate_samples and len(test_split) > args.max_generate_samples:
        test_split = test_split.select(spread_sample(len(test_split), args.max_generate_samples))
    predictions = generate_answers(
        accelerator, model, processor, test_split, with_captions=args.eval_with_captions,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, batch_size=args.per_device_eval_batch_size, images=images,
    )
    references = list(test_split["answer"])
    metric = load_vqa_metric()
    scores = metric.compute(predictions=predictions, references=references)
    result = {k: float(v) for k, v in scores.items()}
    result["num_test_pairs"] = len(references)
    result["num_test_pairs_in_fold"] = in_fold
    if train_split is not None:
        from .chance import vqa_chance

        result["chance"] = vqa_chance(train_split, test_split, metric, seed=args.seed)
    result["examples"] = [
        {"question": q, "reference": r, "prediction": p}
        for q, r, p in list(zip(test_split["question"], references, predictions))[:5]
    ]
    return result
