"""emvision's vocabulary: the words every layer shares, in pure Python (no torch, no transformers).

- ``categories``: the ten SEM categories of Aversa et al. 2018, their archive codes and display names;
- ``prompts``: the MVaEMa paper's ten prompt families, the classification question, the caption
  wording and HNF's class-description prompt;
- ``special_tokens``: the special tokens of MVaEMa's text side.

Models and data code both import this package and never each other. A saved model folder does not
need it: its config carries the labels and the texts it was built with.
"""

from .categories import ARCHIVE_PREFIX_TO_CATEGORY, SEM_CATEGORIES, category_display_name
from .prompts import (
    BASICS_ANSWER_TEMPLATES,
    BASICS_QUESTION,
    CLASSIFICATION_QUESTION,
    FAMILY_BY_ID,
    PROMPT_FAMILIES,
    PROMPT_VERSION,
    TEACHER_SYSTEM_PROMPT,
    PromptFamily,
    caption_for,
    class_description_prompt,
)
from .special_tokens import MVAEMA_SPECIAL_TOKENS, add_mvaema_special_tokens, special_token_ids

__all__ = [
    "ARCHIVE_PREFIX_TO_CATEGORY",
    "BASICS_ANSWER_TEMPLATES",
    "BASICS_QUESTION",
    "CLASSIFICATION_QUESTION",
    "FAMILY_BY_ID",
    "MVAEMA_SPECIAL_TOKENS",
    "PROMPT_FAMILIES",
    "PROMPT_VERSION",
    "SEM_CATEGORIES",
    "TEACHER_SYSTEM_PROMPT",
    "PromptFamily",
    "add_mvaema_special_tokens",
    "caption_for",
    "category_display_name",
    "class_description_prompt",
    "special_token_ids",
]
