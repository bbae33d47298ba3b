"""MVaEMa answers the test questions (label-free prompts unless ``--eval_with_captions``); BLEU-2/4,
ROUGE-1/2/L and METEOR from the project's metric module (``train/metrics/vqa``)."""

from __future__ import annotations

import random

import torch
from torch.utils.data import DataLoader

from emvision.train.data.collators import VQAPromptCollator
from emvision.train.metrics.vqa_loader import load_vqa_metric

from .basics import basics_category_accuracy
from .progress import progress

BASICS_QUESTION_ID = 1  # the prompt family whose answer names the category


@torch.no_grad()
def generate_answers(accelerator, model, processor, rows, *, with_captions: bool, max_new_tokens: int, num_beams: int = 1,
                     batch_size: int = 48, images=None, repetition_penalty: float | None = None) -> list[str]:
    """Answers to ``rows`` (question[, caption], and image or ``image_id`` found in ``images``) in row order,
    computed on every process. ``repetition_penalty``: None keeps the model's generation config."""
    collate = VQAPromptCollator(processor, with_captions=with_captions, images=images)
    loader = accelerator.prepare(DataLoader(rows, batch_size=batch_size, collate_fn=collate))
    model.eval()
    answers: list[str] = []
    penalty = {} if repetition_penalty is None else {"repetition_penalty": float(repetition_penalty)}
    for batch in progress(accelerator, loader, "answering"):
        generated = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False, **penalty)
        texts = processor.batch_decode(generated, skip_special_tokens=True)
        answers.extend(accelerator.gather_for_metrics(texts, use_gather_object=True))
    return answers


def spread_sample(num_rows: int, size: int, seed: int = 0) -> list[int]:
    """``size`` row indices (sorted) drawn at random with a fixed seed from ``num_rows`` (all of them when ``size`` is 0
    or not smaller). A fold's rows come grouped by image, ten questions each, so its first rows would be a few images
    of few classes, and evenly spaced rows keep landing on the same questions (every 10th row is the same question of
    the next image); a seeded random draw spans the images and the questions alike."""
    if not size or size >= num_rows:
        return list(range(num_rows))
    return sorted(random.Random(seed).sample(range(num_rows), size))


def _penalty(args) -> float | None:
    penalty = getattr(args, "repetition_penalty", None)
    return None if penalty in (None, "auto") else float(penalty)


def choose_repetition_penalty(accelerator, model, processor, validation_rows, args, candidates, *, images=None,
                              max_pairs: int = 200) -> dict:
    """The repetition penalty (of ``candidates``) whose answers to up to ``max_pairs`` validation-fold pairs (a seeded
    random sample) score the best ROUGE-L; ties go to the smaller penalty. A small model trained briefly loops on phrases
    ("at 20 µm at 20 µm ..."); how much penalty helps depends on how far it trained, so it is chosen per run, on
    data the test metrics never see."""
    rows = validation_rows.select(spread_sample(len(validation_rows), max_pairs))
    references = list(rows["answer"])
    metric = load_vqa_metric()
    scores = {}
    for penalty in sorted(candidates):
        answers = generate_answers(accelerator, model, processor, rows, with_captions=args.eval_with_captions,
                                   max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                                   batch_size=args.per_device_eval_batch_size, images=images, repetition_penalty=penalty)
        scores[penalty] = float(metric.compute(predictions=answers, references=references)["rougeL"])
    best = max(scores, key=lambda penalty: (round(scores[penalty], 6), -penalty))
    return {"repetition_penalty": best, "chosen_on": "validation fold (ROUGE-L)", "validation_rougeL": scores,
            "num_validation_pairs": len(references)}


def evaluate_vqa(accelerator, model, processor, test_split, args, train_split=None, images=None) -> dict:
    """BLEU-2/4, ROUGE-1/2/L, METEOR of the model's answers on the test fold (every pair by default; with
    --max_generate_samples N, a seeded random sample of N pairs), the number of pairs they were measured on and, given
    ``train_split``, their chance level. ``images`` joins text rows to their images (schema version 2)."""
    in_fold = len(test_split)
    if args.max_generate_samples and len(test_split) > args.max_generate_samples:
        test_split = test_split.select(spread_sample(len(test_split), args.max_generate_samples))
    predictions = generate_answers(
        accelerator, model, processor, test_split, with_captions=args.eval_with_captions,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, batch_size=args.per_device_eval_batch_size, images=images,
        repetition_penalty=_penalty(args),
    )
    references = list(test_split["answer"])
    metric = load_vqa_metric()
    scores = metric.compute(predictions=predictions, references=references)
    result = {k: float(v) for k, v in scores.items()}
    result["num_test_pairs"] = len(references)
    result["num_test_pairs_in_fold"] = in_fold
    basics = [index for index, question_id in enumerate(test_split["question_id"]) if question_id == BASICS_QUESTION_ID]
    class_names = test_split.features["label"].names if hasattr(test_split.features["label"], "names") else None
    if basics and class_names:
        labels = test_split["label"]
        result["basics_category_accuracy"] = basics_category_accuracy([predictions[i] for i in basics], [labels[i] for i in basics], class_names)
        result["num_basics_answers"] = len(basics)
    if train_split is not None:
        from .chance import random_training_answers, vqa_chance

        result["chance"] = vqa_chance(train_split, test_split, metric, seed=args.seed)
        if "basics_category_accuracy" in result:
            guesses = random_training_answers(train_split, test_split, seed=args.seed)
            result["chance"]["basics_category_accuracy"] = basics_category_accuracy(
                [guesses[i] for i in basics], [labels[i] for i in basics], class_names)
    result["examples"] = [
        {"question": q, "reference": r, "prediction": p}
        for q, r, p in list(zip(test_split["question"], references, predictions))[:5]
    ]
    return result
