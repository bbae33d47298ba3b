"""Same-size transformers baselines that the training scripts can train instead of emvision's models.

What a user would otherwise take, built at the sizes of emvision's models so that a comparison is
about the architecture, not the budget:

- ``--baseline blip`` in ``train/vqa.py``: transformers' ``BlipForQuestionAnswering`` at MVaEMa's sizes
  (patch 32, hidden 64, 4 heads, MVaEMa's MLP width and depths; its question encoder and its answer
  decoder each get MVaEMa's text depth), with MVaEMa's tokenizer and vocabulary. It trains the LM loss
  only (that is what BLIP's VQA head has); ``BlipBaselineProcessor`` lays the same rows out the way
  BLIP expects and decodes its ``generate`` output, so the script's collate, training loop and
  evaluation run unchanged.
- ``--baseline vit`` in ``train/classify.py``: transformers' ``ViTForImageClassification`` at HNF's
  width, MLP width and depth (HNF's first patch size; one ViT layer per HNF scale).

The saved folders are plain transformers folders: ``BlipForQuestionAnswering.from_pretrained`` /
``ViTForImageClassification.from_pretrained`` load the weights, ``AutoTokenizer`` the tokenizer and the
micrograph image processor loads as in every emvision folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

import torch
from transformers.feature_extraction_utils import BatchFeature

from emvision.train.data.collators import VQACollator

if TYPE_CHECKING:  # loaded when a baseline is built: the scripts import count_parameters on every run
    from transformers import BlipConfig, BlipForQuestionAnswering, ViTConfig, ViTForImageClassification

BASELINES = {"vqa": ("blip",), "classify": ("vit",)}


def blip_config_like(mvaema_config, vocab_size: int | None = None) -> BlipConfig:
    """A ``BlipConfig`` at an ``MVaEMaConfig``'s sizes, with MVaEMa's special-token ids.

    BLIP's answer decoder stops at ``text_config.sep_token_id``: it is set to MVaEMa's [EOS], the token
    every answer ends with. Its decoder starts from ``bos_token_id`` (MVaEMa's [DEC]).
    """
    from transformers import BlipConfig

    vision, text = mvaema_config.vision_config, mvaema_config.text_config
    return BlipConfig(
        vision_config=dict(
            image_size=vision.image_size, patch_size=vision.patch_size, hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size, num_hidden_layers=vision.num_hidden_layers,
            num_attention_heads=vision.num_attention_heads,
        ),
        text_config=dict(
            vocab_size=vocab_size or text.vocab_size, hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
            max_position_embeddings=text.max_position_embeddings, bos_token_id=text.bos_token_id,
            eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id, sep_token_id=text.eos_token_id,
        ),
        projection_dim=mvaema_config.projection_dim,
    )


def build_blip_baseline(mvaema_config, tokenizer) -> BlipForQuestionAnswering:
    """``BlipForQuestionAnswering`` at MVaEMa's sizes whose special tokens are ``tokenizer``'s."""
    from transformers import BlipForQuestionAnswering

    text = mvaema_config.text_config
    for role in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(text, role, getattr(tokenizer, role))
    return BlipForQuestionAnswering(blip_config_like(mvaema_config, vocab_size=len(tokenizer)))


def vit_config_like(hnf_config, intermediate_size: int | None = None) -> ViTConfig:
    """A ``ViTConfig`` at an ``HNFConfig``'s width and depth (HNF's first patch size), same labels."""
    from transformers import ViTConfig

    return ViTConfig(
        image_size=hnf_config.image_size,
        patch_size=hnf_config.patch_sizes[0],
        num_channels=hnf_config.num_channels,
        hidden_size=hnf_config.hidden_size,
        num_hidden_layers=hnf_config.num_hidden_layers,
        num_attention_heads=hnf_config.num_attention_heads,
        intermediate_size=intermediate_size or hnf_config.intermediate_size,
        num_labels=hnf_config.num_labels,
        id2label=dict(hnf_config.id2label),
        label2id=dict(hnf_config.label2id),
    )


def build_vit_baseline(hnf_config, intermediate_size: int | None = None) -> ViTForImageClassification:
    from transformers import ViTForImageClassification

    return ViTForImageClassification(vit_config_like(hnf_config, intermediate_size))


class BlipBaselineProcessor:
    """MVaEMa's tokenizer and image processor, laying rows out the way ``BlipForQuestionAnswering`` expects.

        question encoder   [CLS] question [SEP]            (right-padded; captions go before the question)
        answer decoder     [DEC] answer [EOS]              decoder_input_ids / labels (-100 on padding)

    Called like ``MVaEMaProcessor`` (``images``, ``text`` = questions, ``answers``, ``captions``), so
    the training script's collator and ``evaluate_vqa`` use it unchanged; ``batch_decode`` turns BLIP's
    generated ``[DEC] answer [EOS]`` rows back into answer text.
    """

    def __init__(self, image_processor, tokenizer, max_question_length: int = 128, max_answer_length: int = 384):
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.max_question_length, self.max_answer_length = max_question_length, max_answer_length

    @classmethod
    def from_mvaema_processor(cls, processor) -> BlipBaselineProcessor:
        return cls(processor.image_processor, processor.tokenizer, max_question_length=processor.max_prompt_length,
                   max_answer_length=processor.max_length - processor.max_prompt_length)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def __call__(self, images=None, text: str | Sequence[str] | None = None, answers: str | Sequence[str] | None = None,
                 captions: str | Sequence[str] | None = None, return_tensors: str | None = "pt", **images_kwargs) -> BatchFeature:
        if text is None:
            raise ValueError("BlipBaselineProcessor needs the questions (text=...): BLIP's VQA head always encodes one")
        questions = [text] if isinstance(text, str) else list(text)
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **images_kwargs))
            if len(data["pixel_values"]) != len(questions):
                raise ValueError(f"got {len(data['pixel_values'])} images but {len(questions)} questions (text)")
        tok = self.tokenizer
        if captions is not None:
            captions = [captions] if isinstance(captions, str) else list(captions)
            if len(captions) != len(questions):
                raise ValueError(f"got {len(questions)} questions but {len(captions)} captions")
            questions = [f"{c} {q}" for c, q in zip(captions, questions)]
        encoded = [[tok.cls_token_id, *ids[: self.max_question_length - 2], tok.sep_token_id] for ids in self._encode(questions)]
        data["input_ids"] = _pad(encoded, tok.pad_token_id)
        data["attention_mask"] = _pad([[1] * len(row) for row in encoded], 0)
        if answers is not None:
            answers = [answers] if isinstance(answers, str) else list(answers)
            if len(answers) != len(questions):
                raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
            targets = []
            for ids in self._encode(answers):
                ids = ids[: self.max_answer_length - 2]
                targets.append([tok.bos_token_id, *ids, tok.eos_token_id])
            data["decoder_input_ids"] = _pad(targets, tok.pad_token_id)
            data["decoder_attention_mask"] = _pad([[1] * len(row) for row in targets], 0)
            data["labels"] = _pad(targets, -100)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        return [self.decode(row, skip_special_tokens=skip_special_tokens, **kwargs) for row in sequences]

    def decode(self, token_ids, skip_special_tokens: bool = True, **kwargs) -> str:
        from emvision.processing.processing_mvaema import tidy_spacing

        ids = [int(t) for t in (token_ids.tolist() if hasattr(token_ids, "tolist") else token_ids)]
        tok = self.tokenizer
        if ids and ids[0] == tok.bos_token_id:
            ids = ids[1:]
        if tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id)]
        return tidy_spacing(tok.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs))

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """The tokenizer and the image processor, as in any transformers folder."""
        self.tokenizer.save_pretrained(save_directory, **kwargs)
        self.image_processor.save_pretrained(save_directory, **kwargs)


def _pad(rows: list[list[int]], value: int) -> list[list[int]]:
    longest = max(len(row) for row in rows)
    return [row + [value] * (longest - len(row)) for row in rows]


class BlipTrainingCollator(VQACollator):
    """Rows of the ``vqa`` subset -> ``BlipForQuestionAnswering`` inputs: MVaEMa's collator without image ids."""

    def __init__(self, processor: BlipBaselineProcessor, with_captions: bool):
        super().__init__(processor, with_captions, with_image_ids=False)


def load_blip_baseline(folder: str | Path) -> tuple[BlipForQuestionAnswering, BlipBaselineProcessor]:
    """A folder written by ``train/vqa.py --baseline blip``: the model and its processor."""
    from transformers import AutoTokenizer, BlipForQuestionAnswering

    from emvision.processing.image_processing_micrograph import MicrographImageProcessor

    model = BlipForQuestionAnswering.from_pretrained(folder)
    return model, BlipBaselineProcessor(MicrographImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
