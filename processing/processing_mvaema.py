"""MVaEMaProcessor: the micrograph image processor and the MVaEMa tokenizer, and the model's text layout.

    decoder   [DEC] (caption) question [SEP] answer [EOS]    labels: -100 except the answer and [EOS]
    ITC/ITM   [CLS] answer [SEP]                              (the model swaps [CLS] for [ENC] in ITM)
    prompt    [DEC] (caption) question [SEP]                  left-padded, for generate()

Captions are the MVaEMa paper's training protocol: they name the true category, so they are
label-conditioned and never used by default or for classification (DESIGN.md leakage rule).

Copied next to the weights as remote code: imports only transformers and the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin


DEFAULT_ITC_MAX_LENGTH = 32


class MVaEMaProcessor(ProcessorMixin):
    r"""
    Pairs an image processor (`MicrographImageProcessor`) with a tokenizer that has MVaEMa's special tokens
    (the default WordPiece tokenizer, or any Hugging Face tokenizer passed through `prepare_tokenizer`).

    Args:
        image_processor: turns micrographs (paths, PIL images, arrays, tensors) into `pixel_values`.
        tokenizer: provides [PAD], [CLS], [SEP], [DEC] (bos) and [EOS] (eos).
        max_length (`int`, defaults to 512): longest decoder sequence; longer answers are cut (and then get
            no [EOS], so the model is never taught to stop in the middle of a sentence).
        max_prompt_length (`int`, defaults to 128): longest `[DEC] (caption) question` part, cut at the end.
        itc_max_length (`int`, defaults to 32): longest `[CLS] answer [SEP]` sequence for ITC/ITM: the opening of
            the answer, which names what the image shows, like BLIP's captions (at most 35 tokens). The ITM pass
            runs three sequences per image, so this length sets most of the training cost beyond the LM.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        max_length: int = 512,
        max_prompt_length: int = 128,
        itc_max_length: int = DEFAULT_ITC_MAX_LENGTH,
        **kwargs,
    ):
        if max_prompt_length >= max_length:
            raise ValueError(f"max_prompt_length ({max_prompt_length}) must be smaller than max_length ({max_length})")
        if itc_max_length < 3:
            raise ValueError(f"itc_max_length must be at least 3, got {itc_max_length}")
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.itc_max_length = itc_max_length
        super().__init__(image_processor, tokenizer, **kwargs)
        missing = [
            role for role in ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")
            if getattr(tokenizer, role, None) is None
        ]
        if missing:
            raise ValueError(
                f"tokenizer lacks MVaEMa's special tokens {missing}; pass it through "
                "emvision.processing.prepare_tokenizer first"
            )

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask", "labels", "itc_input_ids", "itc_attention_mask"]

    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        answers: str | Sequence[str] | None = None,
        captions: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        padding_side: str | None = None,
        **images_kwargs,
    ) -> BatchFeature:
        """Model inputs for questions about micrographs.

        Args:
            images: one micrograph or a list; gives `pixel_values`. Extra keyword arguments go to the
                image processor.
            text: the question(s). Without `answers` the result is a generation prompt, left-padded.
            answers: the answer(s), for training: adds `labels`, `itc_input_ids`, `itc_attention_mask`;
                right-padded.
            captions: optional caption(s) put before each question: the paper's label-conditioned protocol.
            padding_side: override the padding side ("left" or "right").
        """
        if text is None and (answers is not None or captions is not None):
            raise ValueError("answers and captions need their questions: pass text=...")
        if images is None and text is None:
            raise ValueError("MVaEMaProcessor needs images, text (questions), or both")
        data = {}
        batch_size = None
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **images_kwargs))
            batch_size = len(data["pixel_values"])
        if text is not None:
            questions = _as_list(text, "text")
            if batch_size is not None and len(questions) != batch_size:
                raise ValueError(f"got {batch_size} images but {len(questions)} questions (text)")
            answer_list = _as_list(answers, "answers", len(questions)) if answers is not None else None
            caption_list = _as_list(captions, "captions", len(questions)) if captions is not None else None
            data.update(self._text_inputs(questions, answer_list, caption_list, padding_side))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # split_special_tokens: a literal "[SEP]" in a question or answer is text, not a control token
        return self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _text_inputs(self, questions, answers, captions, padding_side) -> dict[str, list[list[int]]]:
        tokenizer = self.tokenizer
        bos, sep, eos, cls, pad = (
            tokenizer.bos_token_id, tokenizer.sep_token_id, tokenizer.eos_token_id, tokenizer.cls_token_id, tokenizer.pad_token_id
        )
        question_ids = self._encode(questions)
        caption_ids = self._encode(captions) if captions is not None else [[] for _ in questions]
        answer_ids = self._encode(answers) if answers is not None else None

        sequences, labels = [], []
        for index, question in enumerate(question_ids):
            prompt = ([bos] + caption_ids[index] + question)[: self.max_prompt_length - 1] + [sep]
            if answer_ids is None:
                sequences.append(prompt)
                continue
            answer = answer_ids[index]
            room = self.max_length - len(prompt)
            target = answer + [eos] if len(answer) < room else answer[:room]
            sequences.append(prompt + target)
            labels.append([-100] * len(prompt) + target)

        side = padding_side or ("left" if answer_ids is None else "right")
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        out = {
            "input_ids": _pad(sequences, pad, side),
            "attention_mask": _pad([[1] * len(s) for s in sequences], 0, side),
        }
        if answer_ids is not None:
            out["labels"] = _pad(labels, -100, side)
            itc = [[cls] + answer[: self.itc_max_length - 2] + [sep] for answer in answer_ids]
            out["itc_input_ids"] = _pad(itc, pad, "right")
            out["itc_attention_mask"] = _pad([[1] * len(s) for s in itc], 0, "right")
        return out

    def batch_decode(self, sequences, skip_special_tokens: bool = True, answers_only: bool = True, **kwargs) -> list[str]:
        """Text of generated sequences. With `answers_only` (default) the prompt up to the first [SEP] after
        [DEC] is dropped and decoding stops at [EOS]; spacing around numbers and brackets is tidied."""
        return [self.decode(row, skip_special_tokens=skip_special_tokens, answers_only=answers_only, **kwargs) for row in sequences]

    def decode(self, token_ids, skip_special_tokens: bool = True, answers_only: bool = True, tidy: bool = True, **kwargs) -> str:
        ids = [int(token) for token in (token_ids.tolist() if hasattr(token_ids, "tolist") else token_ids)]
        if answers_only:
            tokenizer = self.tokenizer
            start = ids.index(tokenizer.bos_token_id) + 1 if tokenizer.bos_token_id in ids else 0
            if tokenizer.sep_token_id in ids[start:]:
                start = ids.index(tokenizer.sep_token_id, start) + 1
            ids = ids[start:]
            if tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(tokenizer.eos_token_id)]
        text = self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)
        return tidy_spacing(text) if tidy else text


def tidy_spacing(text: str) -> str:
    """Undo the spaces WordPiece decoding puts around punctuation that written English does not space: inside
    numbers, brackets and slashes ('3. 5' -> '3.5'), before ';', ':' and '%' ('size : 5 %' -> 'size: 5%'), in
    times and ratios ('1 : 2' -> '1:2') and in hyphenated words ('close - packed' -> 'close-packed'; a hyphen
    used as a spaced dash is joined too: decoding cannot tell the two apart). Answers are scored against the
    written references word by word, so each of these spaces would cost a correct answer its n-grams.
    Thousands separators stay spaced ('3, 200'): they cannot be told from a list of numbers."""
    text = re.sub(r"(?<=\d)\.\s+(?=\d)", ".", text)
    text = re.sub(r"([(\[{])\s+", r"\1", text)
    text = re.sub(r"\s+([)\]}])", r"\1", text)
    text = re.sub(r"\s*/\s*", "/", text)
    text = re.sub(r"\s+([;:%])", r"\1", text)
    text = re.sub(r"(?<=\d):\s+(?=\d)", ":", text)
    text = re.sub(r"(?<=\w)\s+-\s+(?=\w)", "-", text)
    return text


def _as_list(value, name: str, expected: int | None = None) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    for index, item in enumerate(values):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{index}] must be a string, got {type(item).__name__}")
    if expected is not None and len(values) != expected:
        raise ValueError(f"got {expected} questions but {len(values)} {name}")
    return values


def _pad(rows: list[list[int]], value: int, side: str) -> list[list[int]]:
    longest = max(len(row) for row in rows)
    if side == "right":
        return [row + [value] * (longest - len(row)) for row in rows]
    return [[value] * (longest - len(row)) + row for row in rows]


__all__ = ["DEFAULT_ITC_MAX_LENGTH", "MVaEMaProcessor", "tidy_spacing"]
