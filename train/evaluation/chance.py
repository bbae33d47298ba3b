"""Chance levels printed beside every figure: what the same metric gives for a guess that ignores the image.

- classification: a uniform random guess over the C classes: Top-1 1/C, Top-k min(k, C)/C, and the
  expected per-class F1 of such a guess, 2 p_c / (C p_c + 1) for a class of test share p_c, averaged over
  the classes (a class absent from the test fold scores 0 for a guess that still predicts it);
- question answering: each test question answered with the answer of a random training pair to the same
  question (seeded), scored by the same metric module: the floor that the answers' shared wording gives.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

CLASSIFICATION_CHANCE_NOTE = "Chance level: a uniform random guess over the classes (expected value on this test set)."
VQA_CHANCE_NOTE = (
    "Chance level: BLEU/ROUGE/METEOR of answering each test question with the answer of a random training pair "
    "to the same question (Basics category accuracy: the category that random answer names); zero-shot figures: "
    "a uniform random guess over the classes."
)


def classification_chance(labels, num_classes: int, top_k: int = 5) -> dict[str, float]:
    labels = [int(label) for label in labels]
    counts = Counter(labels)
    total = max(len(labels), 1)
    f1 = [2 * (counts.get(c, 0) / total) / (num_classes * counts.get(c, 0) / total + 1) for c in range(num_classes)]
    return {"top1": 1 / num_classes, "top5": min(top_k, num_classes) / num_classes, "macro_f1": sum(f1) / num_classes}


def random_training_answers(train_rows, test_rows, seed: int = 0) -> list[str]:
    """For each test row, the answer of a random training row with the same ``question_id`` (any, if none)."""
    by_question: dict[int, list[str]] = defaultdict(list)
    for question_id, answer in zip(train_rows["question_id"], train_rows["answer"]):
        by_question[question_id].append(answer)
    every = [answer for answers in by_question.values() for answer in answers]
    rng = random.Random(seed)
    return [rng.choice(by_question.get(question_id) or every) for question_id in test_rows["question_id"]]


def vqa_chance(train_rows, test_rows, metric, seed: int = 0) -> dict[str, float]:
    if len(train_rows) == 0 or len(test_rows) == 0:
        return {}
    predictions = random_training_answers(train_rows, test_rows, seed)
    scores = metric.compute(predictions=predictions, references=list(test_rows["answer"]))
    return {key: float(value) for key, value in scores.items()}
