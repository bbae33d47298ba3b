"""HNF's text branch: class descriptions, tokenized once into buffers, encoded by a small LM with attention pooling."""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertModel, ByT5Tokenizer
from transformers.utils import logging


def load_description_tokenizer(config):
    """The tokenizer of `text_model_name_or_path`, or a byte-level one (no vocabulary file) without it."""
    if config.text_model_name_or_path is None:
        return ByT5Tokenizer()
    try:
        return AutoTokenizer.from_pretrained(config.text_model_name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"text_model_name_or_path={config.text_model_name_or_path!r}: no tokenizer could be loaded ({error})"
        ) from error


def build_text_model(text_config) -> nn.Module:
    if text_config.model_type == "bert":
        return BertModel(text_config, add_pooling_layer=False)
    return AutoModel.from_config(text_config)


class HNFAttentionPooling(nn.Module):
    """Pools a token sequence into one vector with learned, masked attention scores (additive attention)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.projection = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(self.projection(token_states))).squeeze(-1)  # (D, L)
        scores = scores.masked_fill(attention_mask == 0, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        return torch.einsum("dl,dlh->dh", weights, token_states)


class HNFTextEncoder(nn.Module):
    """Encodes the stored class descriptions into one embedding each: (num_descriptions, hidden_size).

    The descriptions are tokenized when the module is built, into persistent buffers that are saved with
    the weights, so a loaded model needs neither the texts' tokenizer nor any file. In eval mode the
    embeddings are computed once and reused (as constants) until a weight or buffer changes or `train()`
    is called.
    """

    def __init__(self, config):
        super().__init__()
        text_width = config.text_config.hidden_size
        self.language_model = build_text_model(config.text_config)
        self.pooling = HNFAttentionPooling(text_width)
        self.projection = nn.Linear(text_width, config.hidden_size)
        descriptions = config.descriptions_per_class()
        num_descriptions = sum(len(texts) for texts in descriptions.values())
        shape = (num_descriptions, config.description_max_length)
        self.register_buffer("description_input_ids", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("description_attention_mask", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("description_labels", torch.zeros(num_descriptions, dtype=torch.long))
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @torch.no_grad()
    def set_descriptions(self, config, tokenizer=None) -> None:
        """Tokenize `config.descriptions_per_class()` into the buffers (shapes fixed by the config)."""
        tokenizer = tokenizer if tokenizer is not None else load_description_tokenizer(config)
        label2id = {name: index for index, name in config.id2label.items()}
        texts, labels = [], []
        for name, class_texts in config.descriptions_per_class().items():
            texts.extend(class_texts)
            labels.extend([label2id[name]] * len(class_texts))
        if len(texts) != self.description_labels.numel():
            raise ValueError(
                f"{len(texts)} class descriptions but the model was built for {self.description_labels.numel()}; "
                "build a new model from the updated config"
            )
        vocab_size = getattr(self.language_model.config, "vocab_size", None)
        if vocab_size is not None and len(tokenizer) > vocab_size:
            raise ValueError(f"the description tokenizer has {len(tokenizer)} tokens but the text encoder's vocab_size is {vocab_size}")
        encoded = tokenizer(
            texts, padding="max_length", truncation=True, max_length=config.description_max_length, return_tensors="pt"
        )
        device = self.description_input_ids.device
        self.description_input_ids.copy_(encoded["input_ids"].to(device))
        self.description_attention_mask.copy_(encoded["attention_mask"].to(device))
        self.description_labels.copy_(torch.tensor(labels, device=device))
        self._cache = None

    def load_pretrained_language_model(self, name_or_path: str) -> None:
        """Copy the weights of a pre-trained encoder (e.g. the output of train/pretrain_text_mlm.py) into the LM."""
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # an MLM checkpoint's head weights are expected leftovers, not news
        try:
            pretrained = AutoModel.from_pretrained(name_or_path, use_kernels=False)  # torch's own ops (see torch_operations.py)
        finally:
            logging.set_verbosity(verbosity)
        missing, _ = self.language_model.load_state_dict(pretrained.state_dict(), strict=False)
        if missing:
            raise ValueError(f"text_model_name_or_path={name_or_path!r} lacks weights for {missing[:5]} ...")
        # Loaded weights must survive the weight initialisation of an enclosing model's `post_init`.
        for tensor in chain(self.language_model.parameters(), self.language_model.buffers()):
            tensor._is_hf_initialized = True
        self._cache = None

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _state_key(self) -> tuple:
        # tensors made under inference_mode cannot enter autograd later, so that mode is part of the key
        versions = tuple((id(tensor), tensor._version) for tensor in chain(self.parameters(), self.buffers()))
        return versions, torch.is_inference_mode_enabled()

    def encode(self) -> torch.Tensor:
        length = max(int(self.description_attention_mask.sum(dim=1).max()), 1)  # drop all-padding columns
        input_ids = self.description_input_ids[:, :length]
        attention_mask = self.description_attention_mask[:, :length]
        token_states = self.language_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.projection(self.pooling(token_states, attention_mask))

    def forward(self) -> torch.Tensor:
        if self.training:
            return self.encode()
        key = self._state_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.encode())
        return self._cache[1]
