"""VQA answer metrics of the MVaEMa paper: BLEU-2, BLEU-4, ROUGE-1, ROUGE-2, ROUGE-L and METEOR.

An ``evaluate`` module loaded by path, offline::

    metric = evaluate.load("train/metrics/vqa")  # or emvision.train.metrics.vqa_loader.load_vqa_metric()
    metric.compute(predictions=["..."], references=["..."])  # or references=[["...", "..."]]

The paper's conventions (its Table 7 figures are reproduced to within 0.002):

- BLEU-N: sentence BLEU with uniform weights over 1..N-grams and no smoothing, on lower-cased
  whitespace tokens (punctuation stays attached to its word). Any n-gram order without a match
  makes the sentence score exactly 0.
- ROUGE-1/2/L: F-measure of the ``rouge_score`` package (its own tokenizer, no stemming).
- METEOR: NLTK's METEOR (alpha 0.9, beta 3, gamma 0.5; exact, Porter-stem and WordNet 3.0 synonym
  stages) on whitespace tokens. WordNet is required: without it NLTK would silently skip the
  synonym stage, so a missing WordNet is an error raised at load time and again before scoring.

Every corpus figure is the mean of the sentence figures. With several references per prediction,
BLEU clips n-gram counts against all references at once (brevity penalty from the closest length),
while ROUGE and METEOR take the best reference. An empty prediction scores 0 on every metric.

This file is copied into evaluate's module cache when loaded: keep one import per line (evaluate
reads the import lines to check dependencies) and import project code by absolute name.
"""

import math
from collections import Counter

import datasets
import evaluate
from nltk.translate.meteor_score import meteor_score
from rouge_score import rouge_scorer
from tqdm.auto import tqdm

from emvision.train.metrics.wordnet_data import load_wordnet

_CITATION = """\
@inproceedings{papineni2002bleu, title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing}, booktitle={ACL}, year={2002}}
@inproceedings{lin2004rouge, title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}}
@inproceedings{banerjee2005meteor, title={METEOR: An Automatic Metric for MT Evaluation with Improved
  Correlation with Human Judgments}, author={Banerjee, Satanjeev and Lavie, Alon},
  booktitle={ACL Workshop on Intrinsic and Extrinsic Evaluation Measures}, year={2005}}
"""

_DESCRIPTION = """\
Answer-quality metrics for visual question answering on electron micrographs, as reported by the
MVaEMa paper: BLEU-2, BLEU-4 (sentence BLEU, no smoothing, mean over examples), ROUGE-1/2/L
F-measures and METEOR with WordNet 3.0 synonyms. Runs offline; WordNet 3.0 is installed with
`python -m emvision.train.metrics.wordnet_data install`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated answers.
    references (`list` of `str`, or `list` of `list` of `str`): one or several reference answers
        per prediction.
    return_per_example (`bool`, defaults to `False`): also return every sentence figure under
        `per_example`.
    meteor_synonyms (`bool`, defaults to `True`): `False` is an ablation that disables METEOR's
        WordNet synonym stage; its figure is then returned as `meteor_without_synonyms`, never as
        `meteor`.
Returns:
    `bleu2`, `bleu4`, `rouge1`, `rouge2`, `rougeL`, `meteor`: means of the sentence figures, in [0, 1].
Examples:
    >>> metric = evaluate.load("train/metrics/vqa")
    >>> result = metric.compute(predictions=["rod-shaped particles"], references=["rod-shaped particles"])
    >>> result["bleu2"], result["rougeL"]
    (1.0, 1.0)
"""

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def tokenize(text: str) -> list[str]:
    """Lower-cased whitespace tokens; punctuation stays attached to its word."""
    return text.lower().split()


def _ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(references: list[list[str]], hypothesis: list[str], max_order: int) -> float:
    """BLEU of one tokenized hypothesis: uniform weights over 1..max_order-grams, no smoothing.

    Same figure as ``nltk.translate.bleu_score.sentence_bleu`` with weights ``(1/N,) * N``, except
    that an n-gram order without any match gives exactly 0 (NLTK gives about 1e-77 and a warning).
    """
    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_order + 1):
        hypothesis_ngrams = _ngram_counts(hypothesis, n)
        total = sum(hypothesis_ngrams.values())
        max_reference_ngrams = Counter()
        for reference in references:
            max_reference_ngrams |= _ngram_counts(reference, n)
        matches = sum((hypothesis_ngrams & max_reference_ngrams).values())
        if matches == 0:
            return 0.0
        log_precision += math.log(matches / total) / max_order
    hypothesis_length = len(hypothesis)
    closest_reference_length = min((abs(len(r) - hypothesis_length), len(r)) for r in references)[1]
    if hypothesis_length > closest_reference_length:
        brevity_penalty = 1.0
    else:
        brevity_penalty = math.exp(1 - closest_reference_length / hypothesis_length)
    return brevity_penalty * math.exp(log_precision)


class _NoSynonyms:
    """Stands in for WordNet in the `meteor_synonyms=False` ablation: no word has a synset."""

    def synsets(self, *args, **kwargs):
        return []


def _as_reference_lists(references) -> list[list[str]]:
    reference_lists = []
    for index, entry in enumerate(references):
        entry = [entry] if isinstance(entry, str) else list(entry)
        if not entry:
            raise ValueError(f"references[{index}] is an empty list; give at least one reference answer")
        for reference in entry:
            if not isinstance(reference, str) or not reference.strip():
                raise ValueError(f"references[{index}] holds an empty or non-string reference: {reference!r}")
        reference_lists.append(entry)
    return reference_lists


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Vqa(evaluate.Metric):
    def _info(self):
        string = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": string, "references": datasets.Sequence(string, id="references")}),
                datasets.Features({"predictions": string, "references": string}),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=[
                "https://www.nltk.org/api/nltk.translate.meteor_score.html",
                "https://wordnet.princeton.edu/",
            ],
        )

    def _download_and_prepare(self, dl_manager):
        load_wordnet()  # fail at load time, not after a long generation run

    def _compute(self, predictions, references, return_per_example=False, meteor_synonyms=True):
        wordnet = load_wordnet() if meteor_synonyms else _NoSynonyms()
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        reference_lists = _as_reference_lists(references)
        meteor_key = "meteor" if meteor_synonyms else "meteor_without_synonyms"
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)

        scores = {key: [] for key in ("bleu2", "bleu4", *ROUGE_TYPES, meteor_key)}
        # a bar only on a terminal and for long inputs (about 1 ms per example, most of it METEOR)
        progress = tqdm(
            zip(predictions, reference_lists),
            total=len(predictions),
            desc="VQA metrics",
            disable=None if len(predictions) >= 500 else True,
        )
        for prediction, refs in progress:
            prediction = prediction or ""
            hypothesis_tokens = tokenize(prediction)
            reference_tokens = [tokenize(reference) for reference in refs]
            scores["bleu2"].append(sentence_bleu(reference_tokens, hypothesis_tokens, max_order=2))
            scores["bleu4"].append(sentence_bleu(reference_tokens, hypothesis_tokens, max_order=4))
            rouge = scorer.score_multi(refs, prediction)
            for rouge_type in ROUGE_TYPES:
                scores[rouge_type].append(float(rouge[rouge_type].fmeasure))
            meteor = meteor_score([r.split() for r in refs], prediction.split(), wordnet=wordnet) if prediction.split() else 0.0
            scores[meteor_key].append(float(meteor))

        result = {key: (math.fsum(values) / len(values) if values else 0.0) for key, values in scores.items()}
        if return_per_example:
            result["per_example"] = scores
        return result
