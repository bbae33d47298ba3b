"""Saved model folders as the lab tools use them: a classifier and an assistant, each with its own processor.

Images go in as anything the image processor reads (paths, PIL images, working arrays); each processor
applies its own settings, information-bar removal included.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

import emvision.modeling  # noqa: F401  (registers HNF and MVaEMa with the Auto classes)
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoProcessor


def pick_device(name: str | None = None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1", ...), or the first GPU when there is one."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_folder(folder: str | os.PathLike, what: str) -> str:
    folder = os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(
            f"{folder}: not a saved model folder (no config.json); pass the --output_dir of a training run, "
            f"e.g. outputs/{what}"
        )
    return folder


class Assistant:
    """A saved MVaEMa folder (train/vqa.py's output): answers questions and classifies zero-shot."""

    def __init__(self, folder: str | os.PathLike, device: str | torch.device | None = None):
        folder = _check_folder(folder, "vqa")
        config = AutoConfig.from_pretrained(folder)
        if config.model_type != "mvaema":
            raise ValueError(f"{folder}: a {config.model_type!r} model, not MVaEMa; pass the folder written by train/vqa.py")
        self.folder = folder
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.model = AutoModel.from_pretrained(folder).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(folder)
        self.labels = [self.model.config.id2label[index] for index in sorted(self.model.config.id2label)]

    def pixel_values(self, images: Sequence) -> torch.Tensor:
        return self.processor.image_processor(list(images), return_tensors="pt")["pixel_values"].to(self.device)

    @torch.no_grad()
    def answers(self, pixel_values: torch.Tensor, questions: Sequence[str], max_new_tokens: int = 64) -> list[list[str]]:
        """Every question about every image, in one batched generation: `answers[image][question]`."""
        num_images, num_questions = pixel_values.shape[0], len(questions)
        image_embeds = self.model.get_image_embeds(pixel_values).repeat_interleave(num_questions, dim=0)
        prompts = self.processor(text=list(questions) * num_images, return_tensors="pt")
        generated = self.model.generate(
            image_embeds=image_embeds,
            input_ids=prompts["input_ids"].to(self.device),
            attention_mask=prompts["attention_mask"].to(self.device),
            max_new_tokens=max_new_tokens,
        )
        texts = self.processor.batch_decode(generated)
        return [texts[row * num_questions : (row + 1) * num_questions] for row in range(num_images)]

    @torch.no_grad()
    def zero_shot(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Probabilities over `self.labels` (B, C): the zero-shot classification of train/vqa.py's evaluation."""
        from emvision.train.evaluation.zero_shot import zero_shot_scores

        return zero_shot_scores(self.model, self.processor, pixel_values, self.labels).float().cpu()


class Classifier:
    """A saved image classifier: an HNF folder (train/classify.py's output), any transformers image classifier,
    or an MVaEMa folder, which then classifies zero-shot (`kind` says which)."""

    def __init__(self, folder: str | os.PathLike, device: str | torch.device | None = None, assistant: Assistant | None = None):
        """`assistant`: an already loaded MVaEMa to reuse when `folder` is that model's folder."""
        folder = _check_folder(folder, "classify")
        self.folder = folder
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        config = AutoConfig.from_pretrained(folder)
        self.assistant = None
        if config.model_type == "mvaema":
            same = assistant is not None and os.path.samefile(assistant.folder, folder)
            self.assistant = assistant if same else Assistant(folder, self.device)
            self.model, self.image_processor = self.assistant.model, self.assistant.processor.image_processor
            self.kind = "MVaEMa zero-shot"
        else:
            if not os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
                raise FileNotFoundError(f"{folder}: no preprocessor_config.json; save the image processor with the model")
            self.model = AutoModelForImageClassification.from_pretrained(folder, use_kernels=False).to(self.device).eval()
            self.image_processor = AutoImageProcessor.from_pretrained(folder)
            self.kind = f"{config.model_type.upper()} classifier"
        self.labels = [self.model.config.id2label[index] for index in sorted(self.model.config.id2label)]

    def pixel_values(self, images: Sequence) -> torch.Tensor:
        return self.image_processor(list(images), return_tensors="pt")["pixel_values"].to(self.device)

    @torch.no_grad()
    def probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C) class probabilities, columns in the order of `self.labels`."""
        if self.assistant is not None:
            return self.assistant.zero_shot(pixel_values)
        return self.model(pixel_values=pixel_values).logits.float().softmax(-1).cpu()
