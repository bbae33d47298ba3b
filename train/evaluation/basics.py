"""Does the answer to the Basics question name the right category? (``basics_category_accuracy``)

The Basics family ("... Identify the specific type of nanomaterial depicted in the image ...") is the one
question whose answer must name the class. An answer counts as right when its first clause (the text before
the first ':' or ';' or ', specifically', the openings of the synthetic oracle's answers) names exactly one
category, the image's own. Names are matched as whole words in two spellings per class: the one the synthetic
oracle writes ("a film (coated surface)", article dropped) and the category's display name ("films coated
surface"), so a model trained on either wording is read the same way; "nanoparticles" is not "particles",
and a clause that names two categories names none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from emvision.datasets_scripts.synthetic.oracle import CATEGORY_NAMES
from emvision.vocabulary import category_display_name

_FIRST_CLAUSE = re.compile(r"[:;]|, specifically")


def _spellings(class_name: str) -> set[str]:
    names = {category_display_name(class_name)}
    if class_name in CATEGORY_NAMES:
        names.add(re.sub(r"^(a|an) ", "", CATEGORY_NAMES[class_name]).lower())
    return names


class CategoryNamer:
    """``namer(answer)`` -> the index of the one class the answer's first clause names, or None."""

    def __init__(self, class_names: Sequence[str]):
        self.patterns = [
            re.compile("|".join(rf"(?<!\w){re.escape(name)}(?!\w)" for name in sorted(_spellings(c), key=len, reverse=True)))
            for c in class_names
        ]

    def __call__(self, answer: str) -> int | None:
        clause = _FIRST_CLAUSE.split(answer.lower(), maxsplit=1)[0]
        named = [index for index, pattern in enumerate(self.patterns) if pattern.search(clause)]
        return named[0] if len(named) == 1 else None


def basics_category_accuracy(answers: Sequence[str], labels: Sequence[int], class_names: Sequence[str]) -> float:
    """Fraction of Basics answers whose first clause names exactly the true category (see the module)."""
    if len(answers) != len(labels):
        raise ValueError(f"{len(answers)} answers but {len(labels)} labels")
    if not answers:
        raise ValueError("no Basics answers to score")
    namer = CategoryNamer(class_names)
    return sum(namer(answer) == label for answer, label in zip(answers, labels)) / len(answers)
