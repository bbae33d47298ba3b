"""MVaEMa: a small BLIP-style vision-language assistant for electron micrographs.

Four parts, as in BLIP: a ViT image encoder; a BERT-like text encoder; an image-grounded text encoder (the
text blocks plus cross-attention to the image tokens in every block, summarised by [ENC]); and an
image-grounded text decoder (causal self-attention, sharing the cross-attention and feed-forward layers
with the grounded encoder, LM head tied to the embeddings). Training minimises ITC + ITM + LM inside
`forward`; `generate` answers questions through `GenerationMixin` with a KV cache; `classify` ranks the
candidate categories by the decoder's likelihood.

Attention runs on `torch.nn.functional.scaled_dot_product_attention`; single-token decoding steps use two
plain matmuls instead, which are faster on CPU at these sizes. Plain greedy `generate` calls run a short loop of
their own (`MVaEMaTextModel.decode_step`) that gives the same ids as GenerationMixin's.

Copied next to the weights as remote code: imports only torch, transformers and, relatively, the
configuration and the losses (emvision's vocabulary is optional there: it only supplies defaults).
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput
from transformers.utils import generic as _generic

# transformers 5.24 renamed the decoding state from `past_key_values` to `cache`: in outputs (a metaclass rewrites
# the keyword) and in what `generate` passes to `forward`. The name this installation uses:
CACHE_NAME = "cache" if hasattr(_generic, "_rename_kwargs_for_bc") else "past_key_values"

from .conv_stem import MicrographConvStem
from .configuration_mvaema import BASICS_ANSWER_TEMPLATES, BASICS_QUESTION, MVaEMaConfig, MVaEMaTextConfig, MVaEMaVisionConfig
from .losses import contrastive_loss, itm_loss, linear_cross_entropy, lm_loss, sample_hard_negatives
from .torch_operations import TorchOperationsMixin

try:  # emvision's vocabulary: the default zero-shot candidates and the special-token helpers
    from emvision.vocabulary import add_mvaema_special_tokens, category_display_name, special_token_ids
except ImportError:  # loaded as Hub remote code without emvision: pass `candidates` to `classify`
    add_mvaema_special_tokens = category_display_name = special_token_ids = None


@dataclass
class MVaEMaOutput(ModelOutput):
    r"""
    loss: weighted sum of the component losses that were computed (`None` when there were none).
    loss_itc: image-text contrastive loss (needs `itc_input_ids`).
    loss_itm: image-text matching loss (needs `itc_input_ids`).
    loss_lm: next-token cross-entropy on the answer tokens (needs `labels`).
    loss_image_label: auxiliary class cross-entropy on the image [CLS] (`image_labels` and
        `config.image_label_loss_weight > 0`; not one of the paper's losses).
    logits: decoder LM logits `(batch, length, vocab)`, or the last `logits_to_keep` positions. `None` when
        `labels` are given: the LM head then runs on the answer positions only.
    cache: the decoder's self- and cross-attention cache (with `use_cache`); `past_key_values` before transformers 5.24
        (either name reads it).
    image_embeds: image-encoder output `(batch, 1 + num_patches, vision_hidden)`, [CLS] first (and, with
        `config.image_label_token`, the class token last: `(batch, 2 + num_patches, vision_hidden)`).
    image_features, text_features: L2-normalised ITC embeddings `(batch, projection_dim)`.
    logits_per_image: ITC similarities / temperature, local images against the (global) batch of texts.
    itm_logits: matching logits for the positives followed by the sampled negatives.
    itm_labels: 1 for positives, 0 for negatives, aligned with `itm_logits`.
    hidden_states (`output_hidden_states=True`): the decoder's embeddings and each text block's output, one
        `(batch, length, text_hidden)` tensor per entry.
    attentions (`output_attentions=True`): the decoder's causal self-attention weights per block,
        `(batch, heads, length, past + length)`.
    cross_attentions (`output_attentions=True`): the decoder's attention over the image tokens per block,
        `(batch, heads, length, 1 + num_patches)`; position 0 of the last axis is the image [CLS].
    vision_hidden_states, vision_attentions: the same for the image encoder, `(batch, 1 + num_patches, vision_hidden)`
        and `(batch, heads, 1 + num_patches, 1 + num_patches)`, when it ran in this call (not with `image_embeds`).
    The ITC and ITM passes are not recorded.
    """

    loss: torch.FloatTensor | None = None
    loss_itc: torch.FloatTensor | None = None
    loss_itm: torch.FloatTensor | None = None
    loss_lm: torch.FloatTensor | None = None
    loss_image_label: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    if CACHE_NAME == "cache":
        cache: Cache | None = None
    else:  # transformers < 5.24
        past_key_values: Cache | None = None
    image_embeds: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------
# KV cache


class MVaEMaCacheLayer(DynamicLayer):
    """A `DynamicLayer` that writes new keys/values into spare capacity (doubled when full) and returns views
    of the filled part, instead of concatenating the whole history at every decoding step. MVaEMa's decoder
    keeps its prompt (the question) in the cache, so the copies a concatenation makes would grow with it."""

    def __init__(self, capacity: int | None = None):
        super().__init__()
        self.capacity = capacity  # positions to allocate at the first write (e.g. prompt + max_new_tokens)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if key_states.requires_grad or value_states.requires_grad:  # in-place writes would break autograd
            self.keys = torch.cat([self.keys[:, :, : self.length], key_states], dim=-2) if self.length else key_states
            self.values = torch.cat([self.values[:, :, : self.length], value_states], dim=-2) if self.length else value_states
        else:
            if self.keys.ndim != 4 or end > self.keys.shape[-2]:
                capacity = max(end, 2 * self.length, 32 if self.length or not self.capacity else self.capacity)
                keys = key_states.new_zeros((*key_states.shape[:2], capacity, key_states.shape[-1]))
                values = value_states.new_zeros((*value_states.shape[:2], capacity, value_states.shape[-1]))
                if self.length:
                    keys[:, :, : self.length] = self.keys[:, :, : self.length]
                    values[:, :, : self.length] = self.values[:, :, : self.length]
                self.keys, self.values = keys, values
            self.keys[:, :, self.length : end] = key_states
            self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if self.is_initialized:
            self.length = max(self.length + tokens_to_remove, 0)

    def reset(self) -> None:
        super().reset()
        self.length = 0


class MVaEMaDynamicCache(DynamicCache):
    """A `DynamicCache` whose layers are `MVaEMaCacheLayer`s (created as the model fills them); `capacity`: the
    positions each layer allocates at its first write (the total length, when it is known: no reallocation)."""

    def __init__(self, capacity: int | None = None):
        super().__init__()
        self.layer_class_to_replicate = functools.partial(MVaEMaCacheLayer, capacity)


def new_mvaema_cache(capacity: int | None = None) -> EncoderDecoderCache:
    """An empty decoder cache: self-attention keys/values (room for `capacity` positions) and the image's
    cross-attention keys/values."""
    return EncoderDecoderCache(MVaEMaDynamicCache(capacity), MVaEMaDynamicCache())


# ----------------------------------------------------------------------------------------------------
# Attention (SDPA) and masks


class MVaEMaAttention(nn.Module):
    """Multi-head attention on torch's SDPA: self-attention (fused q/k/v) or cross-attention to image tokens."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, layer_idx: int = 0, kv_hidden_size: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.layer_idx = layer_idx
        self.is_cross_attention = kv_hidden_size is not None
        if self.is_cross_attention:
            self.query = nn.Linear(hidden_size, hidden_size)
            self.key_value = nn.Linear(kv_hidden_size, 2 * hidden_size)
        else:
            self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def _heads(self, states: torch.Tensor, parts: int) -> torch.Tensor:
        batch, length, _ = states.shape  # -> (parts, batch, heads, length, head_dim)
        return states.view(batch, length, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def image_key_value(self, image_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of the image tokens, each `(B, heads, image_tokens, head_dim)`."""
        key, value = self._heads(self.key_value(image_embeds), 2)
        return key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        image_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: Cache | None = None,
        attention_probs: list | None = None,
        key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        keep: slice | None = None,
    ) -> torch.Tensor:
        """`attention_probs`, when a list, receives this call's attention weights `(B, heads, queries, keys)`.
        `key_value`: the image's keys and values from `image_key_value` (cross-attention), instead of `image_embeds`.
        `keep`: the positions whose outputs are wanted (queries); every position still gives keys and values."""
        batch, length, width = hidden_states.shape
        queries = hidden_states if keep is None else hidden_states[:, keep]
        if self.is_cross_attention:
            query = self._heads(self.query(queries), 1)[0]
            cross_cache = cache.cross_attention_cache if cache is not None else None
            if key_value is not None:
                key, value = key_value
            elif cache is not None and cache.is_updated.get(self.layer_idx, False):
                stored = cross_cache.layers[self.layer_idx]
                filled = stored.get_seq_length()
                key, value = stored.keys[:, :, :filled], stored.values[:, :, :filled]
            else:
                key, value = self.image_key_value(image_embeds)
                if cache is not None:
                    key, value = cross_cache.update(key, value, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
        else:
            if keep is None:
                query, key, value = self._heads(self.qkv(hidden_states), 3)
            elif type(self.qkv) is nn.Linear:  # queries of the kept positions only (not under a LoRA wrapper)
                weight, bias = self.qkv.weight, self.qkv.bias
                query = self._heads(F.linear(queries, weight[:width], bias[:width]), 1)[0]
                key, value = self._heads(F.linear(hidden_states, weight[width:], bias[width:]), 2)
            else:
                query, key, value = self._heads(self.qkv(hidden_states), 3)
                query = query[:, :, keep]
            if cache is not None:
                key, value = cache.update(key, value, self.layer_idx)
        length = query.shape[-2]
        if attention_probs is not None or (length == 1 and not self.training):
            # the weights were asked for (`output_attentions`), or one decoding step, where two small matmuls
            # beat SDPA's kernel dispatch on CPU: the explicit softmax gives the same result
            scores = (query * self.head_dim**-0.5) @ key.transpose(-1, -2)
            if is_causal:
                attention_mask = torch.ones(length, key.shape[-2], dtype=torch.bool, device=scores.device).tril()
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            probs = scores.softmax(dim=-1)
            if attention_probs is not None:
                attention_probs.append(probs)
            context = F.dropout(probs, self.dropout, self.training) @ value
        else:
            context = F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=attention_mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=is_causal,
            )
        return self.out_proj(context.transpose(1, 2).reshape(batch, length, width))


@dataclass
class MVaEMaRecording:
    """What `output_hidden_states` / `output_attentions` collect from one stack, layer by layer (`None`: not asked)."""

    hidden_states: list | None = None
    attentions: list | None = None
    cross_attentions: list | None = None

    @classmethod
    def asked(cls, hidden_states: bool, attentions: bool, cross_attentions: bool = False) -> MVaEMaRecording | None:
        if not (hidden_states or attentions):
            return None
        return cls([] if hidden_states else None, [] if attentions else None, [] if attentions and cross_attentions else None)

    def add_hidden_states(self, states: torch.Tensor) -> None:
        if self.hidden_states is not None:
            self.hidden_states.append(states)


def _recorded(recording: MVaEMaRecording | None, name: str) -> tuple | None:
    values = getattr(recording, name) if recording is not None else None
    return tuple(values) if values is not None else None


def _padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Bidirectional attention: (batch, 1, 1, keys) bool mask, or None when nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def _causal_mask(
    attention_mask: torch.Tensor | None, query_length: int, past_length: int, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """Causal attention over `past_length` cached + `query_length` new positions -> (mask, is_causal).

    Right-padded or unpadded inputs without a cache use SDPA's own causal kernel: padding that comes after
    every real token is never attended to by a real token. Otherwise an explicit bool mask is built; each
    position always sees itself, so rows of left padding never turn into NaN.
    """
    if past_length == 0 and (attention_mask is None or bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())):
        return None, query_length > 1
    if query_length == 1:  # one new token sees every valid cached position
        return _padding_mask(attention_mask), False
    if attention_mask is None:
        attention_mask = torch.ones(1, past_length + query_length, dtype=torch.long, device=device)
    key_positions = torch.arange(past_length + query_length, device=device)
    query_positions = torch.arange(past_length, past_length + query_length, device=device)
    visible = key_positions[None, :] <= query_positions[:, None]  # (queries, keys)
    mask = visible[None] & attention_mask.bool()[:, None, :]
    mask = mask | (key_positions[None, :] == query_positions[:, None])[None]
    return mask[:, None], False


# ----------------------------------------------------------------------------------------------------
# Image encoder: ViT with a [CLS] token


class MVaEMaVisionEmbeddings(nn.Module):
    """Patch tokens (a linear map of each patch, or a projection of a convolutional stem's map: see
    `MVaEMaVisionConfig.patch_embedding`), a [CLS] token and learned position embeddings."""

    def __init__(self, config: MVaEMaVisionConfig):
        super().__init__()
        self.config = config
        if getattr(config, "patch_embedding", "linear") == "conv_stem":
            self.conv_stem = MicrographConvStem(config.num_channels, config.conv_stem_channels)
            self.stem_stage, self.patch_embedding = self.conv_stem.projection(config.patch_size, config.hidden_size)
        else:
            self.conv_stem, self.stem_stage = None, None
            self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size)
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (self.config.num_channels, self.config.image_size, self.config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (batch, {expected[0]}, {expected[1]}, {expected[2]}), got "
                f"{tuple(pixel_values.shape)}; use the model's image processor (MicrographImageProcessor)"
            )
        pixel_values = pixel_values.to(self.patch_embedding.weight.dtype)
        if self.conv_stem is not None:
            pixel_values = self.conv_stem(pixel_values, num_stages=self.stem_stage + 1)[-1]
        patch_tokens = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, N, D)
        cls_token = self.class_embedding.expand(patch_tokens.shape[0], -1, -1)
        return self.dropout(torch.cat([cls_token, patch_tokens], dim=1) + self.position_embedding)


class MVaEMaVisionLayer(GradientCheckpointingLayer):
    """Pre-norm ViT block."""

    def __init__(self, config: MVaEMaVisionConfig, layer_idx: int):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = MVaEMaAttention(
            config.hidden_size, config.num_attention_heads, config.attention_probs_dropout_prob, layer_idx
        )
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, attention_probs: list | None = None) -> torch.Tensor:
        attended = self.attention(self.layernorm_before(hidden_states), attention_probs=attention_probs)
        hidden_states = hidden_states + self.dropout(attended)
        feed_forward = self.fc2(self.activation(self.fc1(self.layernorm_after(hidden_states))))
        return hidden_states + self.dropout(feed_forward)


class MVaEMaVisionModel(nn.Module):
    def __init__(self, config: MVaEMaVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = MVaEMaVisionEmbeddings(config)
        self.layers = nn.ModuleList([MVaEMaVisionLayer(config, index) for index in range(config.num_hidden_layers)])
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, recording: MVaEMaRecording | None = None) -> torch.Tensor:
        """(B, C, H, W) -> image tokens (B, 1 + num_patches, hidden), [CLS] first. A `recording` collects the
        embeddings and every block's output (`hidden_states`) and each block's attention weights."""
        hidden_states = self.embeddings(pixel_values)
        attention_probs = recording.attentions if recording is not None else None
        for layer in self.layers:
            if recording is not None:
                recording.add_hidden_states(hidden_states)
            hidden_states = layer(hidden_states, attention_probs)
        if recording is not None:
            recording.add_hidden_states(hidden_states)
        return self.post_layernorm(hidden_states)


# ----------------------------------------------------------------------------------------------------
# Text side: one stack of BERT-like (post-norm) blocks used as encoder, grounded encoder and decoder


class MVaEMaTextEmbeddings(nn.Module):
    def __init__(self, config: MVaEMaTextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """`condition` (`(B, hidden)`, optional): added at every position (the decoder's class condition)."""
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if condition is not None:
            embeddings = embeddings + condition[:, None]
        return self.dropout(self.LayerNorm(embeddings))


class MVaEMaTextAttentionBlock(nn.Module):
    """Attention, then dropout, residual and LayerNorm (BERT's post-norm sub-layer)."""

    def __init__(self, config: MVaEMaTextConfig, layer_idx: int, kv_hidden_size: int | None = None):
        super().__init__()
        self.attention = MVaEMaAttention(
            config.hidden_size, config.num_attention_heads, config.attention_probs_dropout_prob, layer_idx, kv_hidden_size
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, image_embeds=None, attention_mask=None, is_causal=False, cache=None, attention_probs=None,
                key_value=None, keep=None):
        attended = self.attention(hidden_states, image_embeds, attention_mask, is_causal, cache, attention_probs, key_value, keep)
        residual = hidden_states if keep is None else hidden_states[:, keep]
        return self.LayerNorm(residual + self.dropout(attended))


class MVaEMaTextFeedForward(nn.Module):
    def __init__(self, config: MVaEMaTextConfig):
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        transformed = self.output(self.activation(self.intermediate(hidden_states)))
        return self.LayerNorm(hidden_states + self.dropout(transformed))


class MVaEMaTextLayer(GradientCheckpointingLayer):
    """One text block. Encoders use `self_attention`, the decoder `causal_self_attention`; both share
    `cross_attention` (image-grounded passes only) and `feed_forward`. Ablated parts are `None`."""

    def __init__(self, config: MVaEMaConfig, layer_idx: int):
        super().__init__()
        text = config.text_config
        self.self_attention = MVaEMaTextAttentionBlock(text, layer_idx) if config.use_self_attention else None
        self.causal_self_attention = (
            MVaEMaTextAttentionBlock(text, layer_idx) if config.use_causal_self_attention else None
        )
        self.cross_attention = (
            MVaEMaTextAttentionBlock(text, layer_idx, kv_hidden_size=config.vision_config.hidden_size)
            if config.use_cross_attention
            else None
        )
        self.feed_forward = MVaEMaTextFeedForward(text)

    def forward(
        self,
        hidden_states: torch.Tensor,
        image_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        causal: bool = False,
        past_key_values: EncoderDecoderCache | None = None,
        recording: MVaEMaRecording | None = None,
        image_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        keep: slice | None = None,
    ) -> torch.Tensor:
        """`image_key_value`: this layer's precomputed cross-attention keys/values (see `MVaEMaTextModel.image_key_values`).
        `keep`: return only these positions (their queries alone go through the block; all positions give keys)."""
        self_attention = self.causal_self_attention if causal else self.self_attention
        attentions = recording.attentions if recording is not None else None
        cross_attentions = recording.cross_attentions if recording is not None else None
        if self_attention is not None:
            self_cache = past_key_values.self_attention_cache if past_key_values is not None else None
            hidden_states = self_attention(hidden_states, None, attention_mask, is_causal, self_cache, attentions, None, keep)
        elif keep is not None:
            hidden_states = hidden_states[:, keep]
        if self.cross_attention is not None and (image_embeds is not None or image_key_value is not None):
            hidden_states = self.cross_attention(
                hidden_states, image_embeds, None, False, past_key_values, cross_attentions, image_key_value
            )
        return self.feed_forward(hidden_states)


class MVaEMaTextModel(nn.Module):
    def __init__(self, config: MVaEMaConfig):
        super().__init__()
        self.config = config.text_config
        self.embeddings = MVaEMaTextEmbeddings(config.text_config)
        self.layers = nn.ModuleList([MVaEMaTextLayer(config, index) for index in range(config.text_config.num_hidden_layers)])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        causal: bool = False,
        position_ids: torch.Tensor | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        recording: MVaEMaRecording | None = None,
        image_key_values: list | None = None,
        keep: slice | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text encoder (`image_embeds=None`), grounded encoder (with `image_embeds`) or decoder (`causal=True`).
        A `recording` collects the embeddings and every block's output and attention weights. `condition`
        (`(B, hidden)`) is added to every input embedding (`MVaEMaConfig.image_label_condition`).

        `image_key_values` (from `image_key_values(image_embeds)`, optionally indexed by row) replaces `image_embeds`
        in the cross-attention: the image's keys and values are then projected once for several passes.
        `keep` (a slice over the new positions) returns only those positions: the last block computes the queries,
        cross-attention and feed-forward of those positions alone (every position still gives keys and values, so
        the kept outputs, and the cache, are the same as those of the full pass)."""
        if keep is not None and recording is not None:
            keep = None  # every position of every block is recorded
        length = input_ids.shape[1]
        if attention_mask is not None:
            past_length = attention_mask.shape[1] - length
        elif past_key_values is not None:
            past_length = past_key_values.get_seq_length()
        else:
            past_length = 0
        if position_ids is None:
            if attention_mask is not None and causal:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
            else:
                position_ids = torch.arange(past_length, past_length + length, device=input_ids.device)[None]
        if int(position_ids.max()) >= self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {int(position_ids.max()) + 1} tokens is longer than "
                f"text_config.max_position_embeddings={self.config.max_position_embeddings}; truncate the inputs"
            )
        if causal:
            mask, is_causal = _causal_mask(attention_mask, length, past_length, input_ids.device)
        else:
            mask, is_causal = _padding_mask(attention_mask), False
        hidden_states = self.embeddings(input_ids, position_ids, condition)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if recording is not None:
                recording.add_hidden_states(hidden_states)
            layer_keep, layer_mask, layer_is_causal = None, mask, is_causal
            if keep is not None and index == last:
                layer_keep = keep
                layer_mask, layer_is_causal = _kept_query_mask(mask, is_causal, keep, length, past_length, input_ids.device)
            hidden_states = layer(
                hidden_states,
                image_embeds,
                attention_mask=layer_mask,
                is_causal=layer_is_causal,
                causal=causal,
                past_key_values=past_key_values,
                recording=recording,
                image_key_value=image_key_values[index] if image_key_values is not None else None,
                keep=layer_keep,
            )
        if keep is not None and not self.layers:
            hidden_states = hidden_states[:, keep]
        if recording is not None:
            recording.add_hidden_states(hidden_states)
        return hidden_states

    @torch.no_grad()
    def decode_step(self, token_ids: torch.Tensor, position_ids: torch.Tensor, cache: EncoderDecoderCache, bias,
                    condition: torch.Tensor | None = None) -> torch.Tensor:
        """One greedy-decoding step: the next token of every row `(B,)` at `position_ids` `(B,)` -> its final hidden
        state `(B, 1, hidden)`, the self-attention cache updated.

        The same operations, in the same order and on the same tensors, as `forward` with a cache and one new token
        (eval mode), so the result is bit-for-bit the same; what it leaves out is the per-call work around them
        (module calls, mask building and checks, the cross-attention cache lookup, output objects). `bias`
        (`(B, 1, 1, keys)`: 0, or -inf at padding; or None) replaces the padding mask: adding 0 or -inf to a score
        gives what `masked_fill` gives. Needs eval mode, a filled cache and plain `nn.Linear` projections.
        """
        embeddings = self.embeddings
        ids, positions = token_ids[:, None], position_ids[:, None]
        hidden = embeddings.word_embeddings(ids) + embeddings.position_embeddings(positions)
        if condition is not None:
            hidden = hidden + condition[:, None]
        hidden = embeddings.LayerNorm(hidden)
        batch, width = hidden.shape[0], hidden.shape[-1]
        for index, layer in enumerate(self.layers):
            block = layer.causal_self_attention
            if block is not None:
                attention = block.attention
                qkv = attention._heads(F.linear(hidden, attention.qkv.weight, attention.qkv.bias), 3)
                key, value = cache.self_attention_cache.update(qkv[1], qkv[2], index)
                scores = _single_query_scores(qkv[0] * attention.head_dim**-0.5, key)
                if bias is not None:
                    scores += bias[..., : key.shape[-2]]
                context = _single_query_context(scores.softmax(dim=-1), value)
                attended = F.linear(context.transpose(1, 2).reshape(batch, 1, width), attention.out_proj.weight, attention.out_proj.bias)
                hidden = block.LayerNorm(hidden + attended)
            block = layer.cross_attention
            if block is not None:
                attention = block.attention
                stored = cache.cross_attention_cache.layers[index]
                filled = stored.get_seq_length()
                key, value = stored.keys[:, :, :filled], stored.values[:, :, :filled]
                query = attention._heads(F.linear(hidden, attention.query.weight, attention.query.bias), 1)[0]
                scores = _single_query_scores(query * attention.head_dim**-0.5, key)
                context = _single_query_context(scores.softmax(dim=-1), value)
                attended = F.linear(context.transpose(1, 2).reshape(batch, 1, width), attention.out_proj.weight, attention.out_proj.bias)
                hidden = block.LayerNorm(hidden + attended)
            feed_forward = layer.feed_forward
            transformed = F.linear(hidden, feed_forward.intermediate.weight, feed_forward.intermediate.bias)
            transformed = F.linear(feed_forward.activation(transformed), feed_forward.output.weight, feed_forward.output.bias)
            hidden = feed_forward.LayerNorm(hidden + transformed)
        return hidden

    def image_key_values(self, image_embeds: torch.Tensor) -> list:
        """Every block's cross-attention keys and values of `image_embeds` (None for blocks without cross-attention):
        computed once, they serve several passes over the same images (index the rows for other pairings)."""
        return [
            layer.cross_attention.attention.image_key_value(image_embeds) if layer.cross_attention is not None else None
            for layer in self.layers
        ]


def _single_query_scores(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """`query @ key.transpose(-1, -2)` for `(B, H, 1, D)` x `(B, H, S, D)`: the same `bmm` that `matmul` ends in,
    called directly (one decoding step calls it 8 times: matmul's broadcasting and reshapes cost more than it)."""
    batch, heads, _, dim = query.shape
    scores = torch.bmm(query.reshape(batch * heads, 1, dim), key.reshape(batch * heads, -1, dim).transpose(1, 2))
    return scores.view(batch, heads, 1, -1)


def _single_query_context(probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`probs @ value` for `(B, H, 1, S)` x `(B, H, S, D)`, as one direct `bmm` (see `_single_query_scores`)."""
    batch, heads, _, length = probs.shape
    context = torch.bmm(probs.reshape(batch * heads, 1, length), value.reshape(batch * heads, length, -1))
    return context.view(batch, heads, 1, -1)


def _select_key_values(image_key_values: list, rows: torch.Tensor) -> list:
    """The cross-attention keys/values of the images `rows` (a 1-D index), for every block."""
    return [None if pair is None else (pair[0].index_select(0, rows), pair[1].index_select(0, rows)) for pair in image_key_values]


def _kept_query_mask(mask, is_causal: bool, keep: slice, length: int, past_length: int, device) -> tuple[torch.Tensor | None, bool]:
    """The attention mask of the kept queries: the rows `keep` of the full mask (SDPA's `is_causal` aligns the
    diagonal top-left, so a causal pass over fewer queries than keys gets an explicit mask)."""
    if mask is None and is_causal:
        query_positions = torch.arange(past_length, past_length + length, device=device)[keep]
        key_positions = torch.arange(past_length + length, device=device)
        return key_positions[None, :] <= query_positions[:, None], False
    if mask is not None and mask.shape[-2] == length and length > 1:
        return mask[..., keep, :], is_causal
    return mask, is_causal


class MVaEMaLMTransform(nn.Module):
    """BERT's prediction-head transform (dense, activation, LayerNorm) before the tied vocabulary projection."""

    def __init__(self, config: MVaEMaTextConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.activation(self.dense(hidden_states)))


# ----------------------------------------------------------------------------------------------------
# Pre-trained model base and the question-answering head


class MVaEMaPreTrainedModel(TorchOperationsMixin, PreTrainedModel):
    config_class = MVaEMaConfig
    base_model_prefix = "mvaema"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["MVaEMaVisionLayer", "MVaEMaTextLayer", "MVaEMaTextEmbeddings"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MVaEMaVisionEmbeddings):
            std = self.config.vision_config.initializer_range
            init.trunc_normal_(module.class_embedding, mean=0.0, std=std)
            init.trunc_normal_(module.position_embedding, mean=0.0, std=std)
            if module.conv_stem is not None:  # here, not on the stem itself: it owns no parameters directly
                module.conv_stem.reset_parameters()
        elif isinstance(module, MVaEMaForQuestionAnswering):
            if module.itc_temperature is not None:
                init.constant_(module.itc_temperature, self.config.itc_temperature)
            if module.image_label_embeddings is not None:  # the scale of the layer-normed image tokens beside it
                init.normal_(module.image_label_embeddings, std=1.0)


class MVaEMaForQuestionAnswering(MVaEMaPreTrainedModel, GenerationMixin):
    r"""
    MVaEMa: image encoder, text encoder, image-grounded text encoder and image-grounded text decoder.

    Training: `model(pixel_values, input_ids, attention_mask, labels, itc_input_ids, itc_attention_mask)`
    (what `MVaEMaProcessor(images=..., text=questions, answers=...)` returns) gives `loss`, `loss_itc`,
    `loss_itm` and `loss_lm`. The decoder input is `[DEC] (caption) question [SEP] answer [EOS]`; `labels`
    equal `input_ids` on the answer and [EOS] and -100 elsewhere (the model shifts them).

    Inference: `model.generate(pixel_values=..., input_ids=prompt_ids, attention_mask=...)` continues the
    left-padded prompt `[DEC] question [SEP]` until [EOS] and returns prompt + answer ids
    (`processor.batch_decode` keeps the answers). `model.classify(pixel_values, processor)` returns
    probabilities over `config.id2label`.
    """

    _tied_weights_keys = {"lm_head.weight": "text_model.embeddings.word_embeddings.weight"}
    # LoRA defaults (train/publishing/lora.py): every attention and feed-forward projection; the heads train in full
    _lora_target_modules = ["qkv", "out_proj", "query", "key_value", "fc1", "fc2", "intermediate", "output"]
    _lora_modules_to_save = ["itm_head", "vision_projection", "text_projection"]

    def __init__(self, config: MVaEMaConfig):
        super().__init__(config)
        vision_hidden = config.vision_config.hidden_size
        text_hidden = config.text_config.hidden_size
        self.vision_model = MVaEMaVisionModel(config.vision_config)
        self.text_model = MVaEMaTextModel(config)
        if config.use_itc:
            self.vision_projection = nn.Linear(vision_hidden, config.projection_dim)
            self.text_projection = nn.Linear(text_hidden, config.projection_dim)
            self.itc_temperature = nn.Parameter(torch.tensor(float(config.itc_temperature)))
        else:
            self.vision_projection = self.text_projection = self.itc_temperature = None
        self.itm_head = nn.Linear(text_hidden, 1) if config.use_itm else None
        self.image_label_head = nn.Linear(vision_hidden, config.num_labels) if config.image_label_loss_weight > 0 else None
        # the class token's embedding per class (config.image_label_token; see `get_image_embeds`)
        self.image_label_embeddings = (
            nn.Parameter(torch.zeros(config.num_labels, vision_hidden)) if getattr(config, "image_label_token", False) else None
        )
        # the class token, projected and added to every decoder input embedding (config.image_label_condition)
        self.image_label_condition = (
            nn.Linear(vision_hidden, text_hidden) if getattr(config, "image_label_condition", False) else None
        )
        self.lm_transform = MVaEMaLMTransform(config.text_config)
        self.lm_head = nn.Linear(text_hidden, config.text_config.vocab_size)
        self.post_init()
        if self.generation_config is not None and self.generation_config.max_new_tokens is None:
            self.generation_config.max_new_tokens = 128  # the 20-token default `max_length` is below most prompts

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_model.embeddings.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    # -- encoders ----------------------------------------------------------------------------------

    def get_image_embeds(self, pixel_values: torch.Tensor, recording: MVaEMaRecording | None = None) -> torch.Tensor:
        """Image tokens (B, 1 + num_patches, vision_hidden), [CLS] first, then (with `config.image_label_token`) the
        class token last: the class head's predicted distribution (detached: only the class loss trains the head)
        times the learned class embeddings. What the text side cross-attends to, and what `image_embeds` arguments
        take. A `recording` collects the image encoder's hidden states and attention weights."""
        image_embeds = self.vision_model(pixel_values, recording)
        if self.image_label_embeddings is None:
            return image_embeds
        probabilities = self.image_label_head(image_embeds[:, 0]).detach().float().softmax(dim=-1)
        label_token = (probabilities.to(image_embeds.dtype) @ self.image_label_embeddings).unsqueeze(1)
        return torch.cat([image_embeds, label_token], dim=1)

    def decoder_condition(self, image_embeds: torch.Tensor) -> torch.Tensor | None:
        """With `config.image_label_condition`: the class token (the last image token) projected to the decoder's
        width, added to each of its input embeddings; otherwise None."""
        if self.image_label_condition is None:
            return None
        return self.image_label_condition(image_embeds[:, -1])

    def get_image_features(self, pixel_values=None, image_embeds=None) -> torch.Tensor:
        """L2-normalised ITC image embeddings (B, projection_dim)."""
        self._require_itc("get_image_features")
        if image_embeds is None:
            image_embeds = self.vision_model(pixel_values)  # only [CLS] is read
        return F.normalize(self.vision_projection(image_embeds[:, 0]), dim=-1)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised ITC text embeddings (B, projection_dim) of `[CLS] text [SEP]` sequences."""
        self._require_itc("get_text_features")
        text_hidden = self.text_model(input_ids, attention_mask, keep=slice(0, 1))  # only [CLS] is read
        return F.normalize(self.text_projection(text_hidden[:, 0]), dim=-1)

    def image_text_matching(self, input_ids, attention_mask=None, pixel_values=None, image_embeds=None) -> torch.Tensor:
        """ITM probability that each text matches its image (B,). `input_ids` start with [CLS] or [ENC]."""
        if self.itm_head is None:
            raise ValueError("image_text_matching needs the ITM head, but this model was built with use_itm=False")
        if image_embeds is None:
            image_embeds = self.get_image_embeds(pixel_values)
        input_ids = input_ids.clone()
        input_ids[:, 0] = self.config.text_config.enc_token_id
        grounded = self.text_model(input_ids, attention_mask, image_embeds=image_embeds, keep=slice(0, 1))
        return torch.sigmoid(self.itm_head(grounded[:, 0]).squeeze(-1))

    def _require_itc(self, name: str) -> None:
        if self.vision_projection is None:
            raise ValueError(f"{name} needs the ITC projections, but this model was built with use_itc=False")

    # -- forward -----------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        itc_input_ids: torch.LongTensor | None = None,
        itc_attention_mask: torch.LongTensor | None = None,
        image_ids: torch.LongTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        image_labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> MVaEMaOutput | tuple:
        r"""
        pixel_values (`(B, 3, 224, 224)`): micrographs from the image processor. Or pass `image_embeds`.
        input_ids, attention_mask (`(B, L)`): decoder sequences `[DEC] (caption) question [SEP] (answer [EOS])`.
        labels (`(B, L)`): `input_ids` on the answer and [EOS], -100 elsewhere; gives `loss_lm`.
        itc_input_ids, itc_attention_mask (`(B, L')`): `[CLS] answer [SEP]`; gives `loss_itc` and `loss_itm`.
        image_ids (`(B,)`, optional): integer id of each row's image; rows with the same id are all positives
            in ITC and are never drawn as each other's ITM negatives.
        image_labels (`(B,)`, optional): class index of each row's image; with `config.image_label_loss_weight > 0`
            gives `loss_image_label` (a training target only; a model without the head ignores it).
        cache, use_cache, position_ids, logits_to_keep: decoding state, as in any causal LM (`past_key_values` is
            the name transformers < 5.24 passes the cache under; both are accepted).
        output_attentions, output_hidden_states: return the decoder's and the image encoder's attention weights /
            hidden states (see `MVaEMaOutput`); the weights are then computed explicitly instead of by SDPA.
        Other keyword arguments passed by `generate` are accepted and ignored.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        if cache is not None and past_key_values is not None:
            raise ValueError("pass the decoding cache as `cache` or `past_key_values`, not both")
        cache = cache if cache is not None else past_key_values
        use_cache = use_cache if use_cache is not None else cache is not None
        vision_recording = None
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("MVaEMa needs pixel_values (or precomputed image_embeds)")
            vision_recording = MVaEMaRecording.asked(output_hidden_states, output_attentions)
            image_embeds = self.get_image_embeds(pixel_values, vision_recording)
        batch_size = image_embeds.shape[0]
        for name, tensor in (("input_ids", input_ids), ("itc_input_ids", itc_input_ids), ("labels", labels)):
            if tensor is not None and tensor.shape[0] != batch_size:
                raise ValueError(f"{name} has batch size {tensor.shape[0]} but there are {batch_size} images")
        if labels is not None and (input_ids is None or labels.shape != input_ids.shape):
            raise ValueError("labels must have the same shape as input_ids (the decoder sequence)")

        losses: dict[str, torch.Tensor] = {}
        logits = None
        decoder_recording = MVaEMaRecording.asked(output_hidden_states, output_attentions, cross_attentions=True)
        matching = itc_input_ids is not None and config.use_itm
        image_key_values = None
        if matching and config.use_cross_attention and not use_cache:
            # the image's cross-attention keys/values, projected once for the ITM pairs and the decoder
            image_key_values = self.text_model.image_key_values(image_embeds)
        if input_ids is None:
            cache = None
        else:
            if use_cache and cache is None:
                cache = new_mvaema_cache()
            elif cache is not None and not isinstance(cache, EncoderDecoderCache):
                cache = EncoderDecoderCache(cache, DynamicCache())
            if labels is not None:
                # the last block runs only from the first position that predicts a label (the question before it
                # still gives keys and values)
                supervised = labels[:, 1:] != -100
                first = int(supervised.any(dim=0).int().argmax()) if bool(supervised.any()) else 0
                keep = slice(first, None)
            else:
                first, keep = 0, slice(-logits_to_keep, None) if logits_to_keep else None
            decoder_states = self.text_model(
                input_ids,
                attention_mask,
                image_embeds=image_embeds,
                causal=True,
                position_ids=position_ids,
                past_key_values=cache,
                recording=decoder_recording,
                image_key_values=image_key_values,
                keep=keep,
                condition=self.decoder_condition(image_embeds),
            )
            if labels is not None:
                if decoder_recording is not None:  # the recorded pass returns every position
                    decoder_states = decoder_states[:, first:]
                losses["lm"] = self._answer_loss(decoder_states, labels[:, first:])
            else:
                kept = decoder_states[:, -logits_to_keep:] if logits_to_keep else decoder_states
                logits = self.lm_head(self.lm_transform(kept))

        image_features = text_features = logits_per_image = itm_logits = itm_labels = None
        if itc_input_ids is not None and (config.use_itc or config.use_itm):
            itc = None
            if config.use_itc:
                image_features = F.normalize(self.vision_projection(image_embeds[:, 0]), dim=-1)
                text_features = self.get_text_features(itc_input_ids, itc_attention_mask)
                temperature = self.itc_temperature.clamp(config.itc_temperature_min, config.itc_temperature_max)
                itc = contrastive_loss(
                    image_features, text_features, temperature, image_ids, gather=config.itc_gather_distributed
                )
                losses["itc"] = itc.loss
                logits_per_image = itc.logits_per_image[itc.offset : itc.offset + batch_size]
            if config.use_itm:
                itm_logits, itm_labels = self._matching_logits(
                    image_embeds, itc_input_ids, itc_attention_mask, image_ids, itc, image_key_values
                )
                losses["itm"] = itm_loss(itm_logits, itm_labels)

        if image_labels is not None and self.image_label_head is not None:
            losses["image_label"] = F.cross_entropy(self.image_label_head(image_embeds[:, 0]).float(), image_labels.to(image_embeds.device))
        weights = {"itc": config.itc_loss_weight, "itm": config.itm_loss_weight, "lm": config.lm_loss_weight,
                   "image_label": config.image_label_loss_weight}
        loss = sum(weights[name] * value for name, value in losses.items()) if losses else None
        output = MVaEMaOutput(
            loss=loss,
            loss_itc=losses.get("itc"),
            loss_itm=losses.get("itm"),
            loss_lm=losses.get("lm"),
            loss_image_label=losses.get("image_label"),
            logits=logits,
            **{CACHE_NAME: cache if use_cache else None},
            image_embeds=image_embeds,
            image_features=image_features,
            text_features=text_features,
            logits_per_image=logits_per_image,
            itm_logits=itm_logits,
            itm_labels=itm_labels,
            hidden_states=_recorded(decoder_recording, "hidden_states") if input_ids is not None else None,
            attentions=_recorded(decoder_recording, "attentions") if input_ids is not None else None,
            cross_attentions=_recorded(decoder_recording, "cross_attentions") if input_ids is not None else None,
            vision_hidden_states=_recorded(vision_recording, "hidden_states"),
            vision_attentions=_recorded(vision_recording, "attentions"),
        )
        return output if return_dict else output.to_tuple()

    def _answer_loss(self, decoder_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy, with the LM head run only where a label exists (the answer and [EOS]).
        `decoder_states` and `labels` cover the same positions (the decoder's output from some position on)."""
        next_labels = labels[:, 1:]
        supervised = next_labels != -100
        if not bool(supervised.any()):
            return decoder_states.sum() * 0.0
        states = self.lm_transform(decoder_states[:, :-1][supervised])
        if type(self.lm_head) is nn.Linear:  # (a LoRA-style wrapper computes its own projection)
            # the vocabulary projection and the cross-entropy in one pass, chunk by chunk (the logits are not stored)
            return linear_cross_entropy(states, self.lm_head.weight, self.lm_head.bias, next_labels[supervised], self.config.label_smoothing)
        return lm_loss(self.lm_head(states), next_labels[supervised], self.config.label_smoothing)

    def _matching_logits(self, image_embeds, itc_input_ids, itc_attention_mask, image_ids, itc, image_key_values=None):
        """ITM on every positive pair plus one sampled negative text per image and one negative image per text.
        `image_key_values` (optional): the images' cross-attention keys/values, indexed for the pairs instead of
        projecting the repeated image tokens again."""
        batch_size = image_embeds.shape[0]
        device = image_embeds.device
        if itc is not None:
            local = slice(itc.offset, itc.offset + batch_size)
            positive_mask = itc.positive_mask[local, local]
            similarity_i2t = itc.logits_per_image[local, local].detach()
            similarity_t2i = itc.logits_per_text[local, local].detach()
        else:
            ids = image_ids.to(device) if image_ids is not None else torch.arange(batch_size, device=device)
            positive_mask = ids[:, None] == ids[None, :]
            similarity_i2t = similarity_t2i = torch.zeros(batch_size, batch_size, device=device)
        negative_texts = sample_hard_negatives(similarity_i2t, positive_mask)  # a text for each image
        negative_images = sample_hard_negatives(similarity_t2i, positive_mask)  # an image for each text
        has_text, has_image = negative_texts >= 0, negative_images >= 0

        enc_ids = itc_input_ids.clone()
        enc_ids[:, 0] = self.config.text_config.enc_token_id
        mask = itc_attention_mask if itc_attention_mask is not None else torch.ones_like(enc_ids)
        texts = torch.cat([enc_ids, enc_ids[negative_texts[has_text]], enc_ids[has_image]])
        masks = torch.cat([mask, mask[negative_texts[has_text]], mask[has_image]])
        rows = torch.arange(batch_size, device=device)
        image_rows = torch.cat([rows, rows[has_text], negative_images[has_image]])
        if image_key_values is not None:
            pair_key_values = _select_key_values(image_key_values, image_rows)
            grounded = self.text_model(texts, masks, image_key_values=pair_key_values, keep=slice(0, 1))
        else:
            grounded = self.text_model(texts, masks, image_embeds=image_embeds[image_rows], keep=slice(0, 1))
        itm_logits = self.itm_head(grounded[:, 0]).squeeze(-1)
        itm_labels = torch.cat([torch.ones(batch_size, device=device), torch.zeros(texts.shape[0] - batch_size, device=device)])
        return itm_logits, itm_labels

    # -- generation --------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        fast_greedy: bool = True,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Answer the prompts `[DEC] (caption) question [SEP]` (left-padded) about the images.

        Encodes the images once, then runs `GenerationMixin.generate` over the decoder with a self- and
        cross-attention KV cache: greedy, beam search (`num_beams`) and sampling (`do_sample`) all work.
        Without `input_ids` the decoder starts from [DEC] alone (captioning). Returns prompt + generated ids.

        Plain greedy decoding (only `max_new_tokens`, `min_new_tokens`, `repetition_penalty`, `do_sample=False`,
        `num_beams=1`, `use_cache` given, and a generation config without other settings) takes a shorter loop of its own
        (`fast_greedy=False` turns it off): the same prefill, then `MVaEMaTextModel.decode_step` per token, with
        GenerationMixin's stopping rules ([EOS], then padding; `min_new_tokens` holds [EOS] back) and its repetition
        penalty (on every prompt and generated token but the left padding). It returns the
        same ids as the GenerationMixin loop (bit-identical logits; tested). That path runs, image encoder included,
        under `torch.inference_mode()`, which skips the view and version bookkeeping `no_grad` still does (on one
        CPU thread: about 7% of a batch-48 call, 16% at batch 1); the ids it returns are ordinary tensors.
        """
        generation_config = generate_kwargs.get("generation_config", self.generation_config)
        use_cache = generate_kwargs.get("use_cache", generation_config.use_cache)
        max_new_tokens = generate_kwargs.get("max_new_tokens", generation_config.max_new_tokens)
        if fast_greedy and self._plain_greedy(generate_kwargs) and use_cache is not False:
            with torch.inference_mode():
                image_embeds, input_ids, attention_mask = self._generation_inputs(pixel_values, input_ids, attention_mask, image_embeds)
                capacity = input_ids.shape[1] + max_new_tokens
                sequences = self._greedy_decode(image_embeds, input_ids, attention_mask, generate_kwargs, capacity)
            return sequences.clone()  # out of inference mode: a tensor that autograd may save (e.g. as a later input)
        image_embeds, input_ids, attention_mask = self._generation_inputs(pixel_values, input_ids, attention_mask, image_embeds)
        capacity = input_ids.shape[1] + max_new_tokens if isinstance(max_new_tokens, int) else None
        if use_cache is not False and generate_kwargs.get(CACHE_NAME) is None:
            generate_kwargs[CACHE_NAME] = new_mvaema_cache(capacity)
        return super().generate(
            input_ids=input_ids, attention_mask=attention_mask, image_embeds=image_embeds, **generate_kwargs
        )

    def _generation_inputs(self, pixel_values, input_ids, attention_mask, image_embeds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`generate`'s image tokens (encoded once), prompt ids ([DEC] alone when none are given) and attention mask."""
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("generate needs pixel_values (or precomputed image_embeds)")
            image_embeds = self.get_image_embeds(pixel_values)
        batch_size = image_embeds.shape[0]
        if input_ids is None:
            input_ids = torch.full((batch_size, 1), self.config.text_config.bos_token_id, device=image_embeds.device)
        if input_ids.shape[0] != batch_size:
            raise ValueError(f"input_ids has batch size {input_ids.shape[0]} but there are {batch_size} images")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return image_embeds, input_ids, attention_mask

    # generate() arguments and generation-config fields the short greedy loop implements (anything else: GenerationMixin)
    _GREEDY_ARGUMENTS = frozenset({"max_new_tokens", "min_new_tokens", "repetition_penalty", "do_sample", "num_beams", "use_cache"})
    _GREEDY_CONFIG_FIELDS = frozenset({
        "max_new_tokens", "min_new_tokens", "repetition_penalty", "do_sample", "num_beams", "use_cache", "pad_token_id", "bos_token_id",
        "eos_token_id", "decoder_start_token_id", "output_attentions", "output_hidden_states", "return_dict_in_generate",
        "_from_model_config", "transformers_version",
    })

    def _plain_greedy(self, generate_kwargs: dict) -> bool:
        """Whether this call is plain greedy decoding that `_greedy_decode` reproduces exactly."""
        if self.training or not set(generate_kwargs) <= self._GREEDY_ARGUMENTS:
            return False
        if generate_kwargs.get("do_sample", False) or generate_kwargs.get("num_beams", 1) != 1:
            return False
        config = self.generation_config
        changed = config.to_diff_dict()
        if not set(changed) <= self._GREEDY_CONFIG_FIELDS or config.do_sample or (config.num_beams or 1) != 1:
            return False
        if config.output_attentions or config.output_hidden_states or config.return_dict_in_generate:
            return False
        if not isinstance(generate_kwargs.get("max_new_tokens", config.max_new_tokens), int):
            return False
        if config.pad_token_id is None and config.eos_token_id is not None:
            return False
        linears = [module for layer in self.text_model.layers for module in layer.modules() if isinstance(module, nn.Linear)]
        return all(type(module) is nn.Linear for module in [*linears, self.lm_head, self.lm_transform.dense])

    def _greedy_decode(self, image_embeds, input_ids, attention_mask, generate_kwargs: dict, capacity: int) -> torch.LongTensor:
        """Greedy decoding as GenerationMixin does it (its prefill call, its stopping rules), one `decode_step` per token."""
        config = self.generation_config
        max_new_tokens = generate_kwargs.get("max_new_tokens", config.max_new_tokens)
        min_new_tokens = generate_kwargs.get("min_new_tokens", config.min_new_tokens) or 0
        penalty = generate_kwargs.get("repetition_penalty", config.repetition_penalty)
        penalty = None if penalty is None or penalty == 1.0 else float(penalty)
        eos = config.eos_token_id
        eos = None if eos is None else torch.tensor([eos] if isinstance(eos, int) else list(eos), device=input_ids.device)
        batch_size, prompt_length = input_ids.shape
        sequences = input_ids.new_empty((batch_size, prompt_length + max_new_tokens))
        sequences[:, :prompt_length] = input_ids
        if max_new_tokens <= 0:
            return sequences[:, :prompt_length]
        cache = new_mvaema_cache(capacity)
        position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        outputs = self(image_embeds=image_embeds, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       **{CACHE_NAME: cache}, use_cache=True, logits_to_keep=1, return_dict=True)
        logits = outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32)
        bias = None
        if not bool(attention_mask.all()):  # left padding of the prompts: -inf on those keys, 0 elsewhere
            bias = torch.zeros(batch_size, 1, 1, capacity, dtype=logits.dtype, device=logits.device)
            bias[:, 0, 0, :prompt_length].masked_fill_(attention_mask == 0, float("-inf"))
        next_positions = position_ids[:, -1] + 1
        condition = self.decoder_condition(image_embeds)
        unfinished = torch.ones(batch_size, dtype=torch.bool, device=input_ids.device)
        length = prompt_length
        if penalty is not None:
            # GenerationMixin's RepetitionPenaltyLogitsProcessor: every token so far but the left padding (mapped to
            # an extra column that is dropped); negative logits are multiplied by the penalty, positive ones divided
            vocab_size = logits.shape[-1]
            left_padding = (attention_mask != 0).int().argmax(dim=1)
            padding = torch.arange(prompt_length, device=input_ids.device)[None, :] < left_padding[:, None]
            sequences[:, :prompt_length] = input_ids.masked_fill(padding, vocab_size)
        for step in range(max_new_tokens):
            if penalty is not None:
                seen = sequences[:, :length].clamp(max=vocab_size)
                padded = F.pad(logits, (0, 1))
                score = padded.gather(1, seen)
                logits = padded.scatter(1, seen, torch.where(score < 0, score * penalty, score / penalty))[:, :vocab_size]
            if eos is not None and step < min_new_tokens:
                logits[:, eos] = float("-inf")
            # the first maximum, as argmax gives it (ties and NaN alike); argmax's CPU kernel takes about 3x as long
            # over a (batch, vocabulary) row block, and this runs once per generated token
            next_tokens = logits.max(dim=-1).indices
            if eos is not None:
                next_tokens = torch.where(unfinished, next_tokens, config.pad_token_id)
                unfinished &= ~torch.isin(next_tokens, eos)
            sequences[:, length] = next_tokens
            length += 1
            if step == max_new_tokens - 1 or (eos is not None and not bool(unfinished.any())):
                break
            hidden = self.text_model.decode_step(next_tokens, next_positions + step, cache, bias, condition)
            # a fresh tensor each step: changed in place above without the copy the prefill's logits need
            logits = self.lm_head(self.lm_transform(hidden))[:, -1, :].float()
        if penalty is not None:
            sequences[:, :prompt_length] = input_ids
        return sequences[:, :length]

    # -- zero-shot classification ------------------------------------------------------------------

    @torch.no_grad()
    def classify(
        self,
        pixel_values: torch.FloatTensor | None = None,
        tokenizer=None,
        *,
        image_embeds: torch.FloatTensor | None = None,
        candidates: list[str] | None = None,
        class_texts: list[list[str]] | None = None,
        method: str | None = None,
        question: str | None = None,
        answer_templates: tuple[str, ...] = BASICS_ANSWER_TEMPLATES,
        rerank_top_k: int = 0,
        length_normalize: bool = True,
    ) -> torch.Tensor:
        """Label-free zero-shot classification: probabilities (B, num_candidates).

        `method` (default: `"retrieval"` when the model has ITC, else `"answer_form"`):

        - `"retrieval"` (BLIP's zero-shot retrieval): each class's texts (`class_texts[k]`, default: the
          `answer_templates` filled with `candidates[k]`) are embedded by the ITC text encoder, averaged into a
          class prototype, and an image's scores are its ITC similarities to the prototypes / temperature,
          softmaxed. `rerank_top_k` > 0 re-scores the top k classes by the mean ITM probability of their texts.
          It compares the image with texts of the form the model was trained to match (its answers).
        - `"answer_form"`: the decoder's likelihood of each candidate inside the answer openings it was
          trained to write (`answer_templates`, the Basics family's, after the Basics question `question`):
          log of the summed likelihood over the openings.
        - `"likelihood"`: the decoder's likelihood of `candidate [EOS]` after `config.classification_question`
          (the original form: a question and an answer form the instruction data never contains).

        Candidates default to `config.id2label` with underscores as spaces, lowercased; for a model trained on
        oracle answers pass the names the answers use (e.g. `"a film (coated surface)"`).
        `tokenizer` may be the tokenizer or an `MVaEMaProcessor`.
        """
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        if tokenizer is None:
            raise ValueError("classify needs the model's tokenizer (or its MVaEMaProcessor) to spell the candidates")
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("classify needs pixel_values (or precomputed image_embeds)")
            image_embeds = self.get_image_embeds(pixel_values)
        if candidates is None and class_texts is None:
            if category_display_name is None:
                raise ValueError("without emvision installed, pass the candidate answers: classify(..., candidates=[...])")
            candidates = [category_display_name(self.config.id2label[index]) for index in sorted(self.config.id2label)]
        method = method or ("retrieval" if self.config.use_itc else "answer_form")
        if method == "retrieval":
            if class_texts is None:
                class_texts = [[template.format(candidate) for template in answer_templates] for candidate in candidates]
            return self._classify_by_retrieval(image_embeds, tokenizer, class_texts, rerank_top_k)
        if candidates is None:
            raise ValueError(f"classify(method={method!r}) scores candidate names: pass candidates")
        if method == "answer_form":
            question = question if question is not None else BASICS_QUESTION
            return self._classify_by_answer_form(image_embeds, tokenizer, question, answer_templates, candidates)
        if method != "likelihood":
            raise ValueError(f"unknown classify method {method!r}: expected 'retrieval', 'answer_form' or 'likelihood'")
        return self._classify_by_likelihood(image_embeds, tokenizer, candidates, question, length_normalize)

    def _classify_by_likelihood(self, image_embeds, tokenizer, candidates, question, length_normalize) -> torch.Tensor:
        """`classify(method="likelihood")`.


        Each candidate answer (default: `config.id2label`, e.g. `"films coated surface"`) is scored by the
        decoder's log-likelihood of `candidate [EOS]` after the label-free prompt
        `[DEC] classification_question [SEP]`, averaged over its tokens (`length_normalize`), and the scores are
        softmaxed over the candidates (Top-1 / Top-5 follow from the ranking). The image and the prompt are
        encoded once per image; the KV cache (self- and cross-attention) is then repeated for the candidates.
        """
        text = self.config.text_config
        question = question if question is not None else self.config.classification_question
        batch_size, device = image_embeds.shape[0], image_embeds.device

        question_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
        prompt = torch.tensor([[text.bos_token_id, *question_ids, text.sep_token_id]], device=device)
        prompt = prompt.expand(batch_size, -1)
        answers = [ids + [text.eos_token_id] for ids in tokenizer(list(candidates), add_special_tokens=False)["input_ids"]]
        num_candidates, longest = len(answers), max(len(ids) for ids in answers)
        answer_ids = torch.full((num_candidates, longest), text.pad_token_id, device=device)
        answer_mask = torch.zeros((num_candidates, longest), dtype=torch.long, device=device)
        for index, ids in enumerate(answers):
            answer_ids[index, : len(ids)] = torch.tensor(ids, device=device)
            answer_mask[index, : len(ids)] = 1

        cache = new_mvaema_cache()
        prompt_states = self.text_model(prompt, None, image_embeds, causal=True, past_key_values=cache, keep=slice(-1, None))
        first_logprobs = F.log_softmax(self.lm_head(self.lm_transform(prompt_states[:, -1])).float(), dim=-1)  # (B, V)
        cache.batch_repeat_interleave(num_candidates)

        # Feed every candidate but its last token; position t predicts candidate token t + 1.
        fed = answer_ids[:, :-1].repeat(batch_size, 1)
        fed_mask = torch.cat([torch.ones(num_candidates, prompt.shape[1], dtype=torch.long, device=device), answer_mask[:, :-1]], 1)
        token_logprobs = first_logprobs[:, answer_ids[:, 0]].unsqueeze(-1)  # (B, C, 1)
        if longest > 1:
            states = self.text_model(
                fed,
                fed_mask.repeat(batch_size, 1),
                image_embeds.repeat_interleave(num_candidates, dim=0),
                causal=True,
                past_key_values=cache,
            )
            logprobs = F.log_softmax(self.lm_head(self.lm_transform(states)).float(), dim=-1)
            rest = logprobs.gather(-1, answer_ids[:, 1:].repeat(batch_size, 1).unsqueeze(-1)).squeeze(-1)
            token_logprobs = torch.cat([token_logprobs, rest.view(batch_size, num_candidates, -1)], dim=-1)
        token_logprobs = token_logprobs * answer_mask[None]
        scores = token_logprobs.sum(-1)
        if length_normalize:
            scores = scores / answer_mask.sum(-1)[None]
        return scores.softmax(dim=-1)

    def _classify_by_answer_form(self, image_embeds, tokenizer, question, answer_templates, candidates, chunk_size: int = 256) -> torch.Tensor:
        """`classify(method="answer_form")`: the openings continue, so no [EOS] and no length normalisation;
        the punctuation after the name in each template keeps `"a film"` from matching `"a film (coated surface)"`."""
        text = self.config.text_config
        device = image_embeds.device
        prompt = [text.bos_token_id, *tokenizer(question, add_special_tokens=False)["input_ids"], text.sep_token_id]
        openings = tokenizer([t.format(c) for t in answer_templates for c in candidates], add_special_tokens=False)["input_ids"]
        count, longest, plen = len(openings), max(len(o) for o in openings), len(prompt)
        ids = torch.full((count, plen + longest), text.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, opening in enumerate(openings):
            ids[row, : plen + len(opening)] = torch.tensor(prompt + opening, device=device)
            mask[row, : plen + len(opening)] = 1
        targets, target_mask = ids[:, plen:], mask[:, plen:].float()
        batch_size = image_embeds.shape[0]
        scores = torch.empty(batch_size, count, device=device)
        per = max(1, chunk_size // count)
        for start in range(0, batch_size, per):
            images = image_embeds[start : start + per]
            n = images.shape[0]
            states = self.text_model(ids.repeat(n, 1), mask.repeat(n, 1), images.repeat_interleave(count, 0), causal=True)
            logprobs = F.log_softmax(self.lm_head(self.lm_transform(states[:, plen - 1 : -1])).float(), dim=-1)
            picked = logprobs.gather(-1, targets.repeat(n, 1).unsqueeze(-1)).squeeze(-1)
            scores[start : start + n] = (picked * target_mask.repeat(n, 1)).sum(-1).view(n, count)
        return scores.view(batch_size, len(answer_templates), len(candidates)).logsumexp(1).softmax(dim=-1)

    def _classify_by_retrieval(self, image_embeds, tokenizer, class_texts, rerank_top_k: int, max_length: int = 32) -> torch.Tensor:
        """`classify(method="retrieval")`: ITC prototypes of the class texts, optionally re-ranked by ITM."""
        self._require_itc("classify(method='retrieval')")
        text = self.config.text_config
        device = image_embeds.device
        flat = [t for texts in class_texts for t in texts]
        owner = torch.tensor([k for k, texts in enumerate(class_texts) for _ in texts], device=device)
        rows = [[text.cls_token_id, *ids[: max_length - 2], text.sep_token_id] for ids in tokenizer(flat, add_special_tokens=False)["input_ids"]]
        longest = max(len(r) for r in rows)
        ids = torch.tensor([r + [text.pad_token_id] * (longest - len(r)) for r in rows], device=device)
        mask = (torch.arange(longest, device=device)[None] < torch.tensor([len(r) for r in rows], device=device)[:, None]).long()
        text_features = self.get_text_features(ids, mask)
        prototypes = F.normalize(torch.stack([text_features[owner == k].mean(0) for k in range(len(class_texts))]), dim=-1)
        temperature = self.itc_temperature.clamp(self.config.itc_temperature_min, self.config.itc_temperature_max)
        probs = (self.get_image_features(image_embeds=image_embeds) @ prototypes.t() / temperature).softmax(dim=-1)
        if rerank_top_k and self.itm_head is None:
            raise ValueError("rerank_top_k re-scores the classes with the ITM head, but this model was built with use_itm=False")
        if rerank_top_k:
            reranked = torch.zeros_like(probs)
            for i, top in enumerate(probs.topk(min(rerank_top_k, probs.shape[1]), dim=-1).indices.tolist()):
                for k in top:
                    chosen = (owner == k).nonzero().squeeze(1)
                    matched = self.image_text_matching(ids[chosen], mask[chosen], image_embeds=image_embeds[i : i + 1].expand(len(chosen), -1, -1))
                    reranked[i, k] = matched.mean()
            probs = reranked / reranked.sum(-1, keepdim=True).clamp_min(1e-12)
        return probs

    # -- initialisation from pre-trained components ------------------------------------------------

    @classmethod
    def from_pretrained_components(
        cls,
        vision_model_name_or_path: str | None = None,
        text_model_name_or_path: str | None = None,
        tokenizer=None,
        config: MVaEMaConfig | None = None,
        **config_kwargs,
    ) -> MVaEMaForQuestionAnswering:
        """A new MVaEMa whose image encoder starts from a ViT checkpoint and/or whose text side starts from a
        BERT-style checkpoint (local folder or Hub id; any `ViTModel` / `BertModel` / `RobertaModel` weights).

        Widths, depths, heads and activations then come from those checkpoints. The BERT self-attention
        initialises both the encoder's and the decoder's (causal) self-attention, as in BLIP; cross-attention,
        projections and heads start fresh. The text checkpoint's tokenizer (or `tokenizer`) gets MVaEMa's
        special tokens ([ENC], [DEC], [EOS], ...) and the vocabulary grows to fit; save that tokenizer with the
        model (`MVaEMaProcessor(image_processor, tokenizer)`), since the token ids are now part of the model.
        `config` / `config_kwargs` set everything else (ablations, loss weights, ...).
        """
        from transformers import AutoModel, AutoTokenizer

        if add_mvaema_special_tokens is None:
            raise ImportError("from_pretrained_components needs emvision installed (its vocabulary of special tokens)")
        config = copy.deepcopy(config) if config is not None else MVaEMaConfig(**config_kwargs)
        vision_source = text_source = None
        if vision_model_name_or_path is not None:
            vision_source = AutoModel.from_pretrained(vision_model_name_or_path, use_kernels=False)  # see torch_operations.py
            config.vision_config = MVaEMaVisionConfig(**_vision_config_from(vision_source, config.vision_config))
        if text_model_name_or_path is not None:
            text_source = AutoModel.from_pretrained(text_model_name_or_path, use_kernels=False)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path)
        if tokenizer is not None:
            add_mvaema_special_tokens(tokenizer)
            text_fields = _text_config_from(text_source, config.text_config) if text_source is not None else config.text_config.to_dict()
            text_fields.pop("model_type", None)
            text_fields.update(vocab_size=len(tokenizer), **special_token_ids(tokenizer))
            config.text_config = MVaEMaTextConfig(**text_fields)
        model = cls(config)
        if vision_source is not None:
            _load_vit_weights(model.vision_model, vision_source)
        if text_source is not None:
            _load_bert_weights(model.text_model, text_source)
        model.tie_weights()
        return model


# ----------------------------------------------------------------------------------------------------
# Weight mapping from ViT / BERT checkpoints


def _vision_config_from(vit, current: MVaEMaVisionConfig) -> dict:
    source = vit.config
    if not hasattr(vit, "embeddings") or not hasattr(vit.embeddings, "patch_embeddings"):
        raise ValueError(f"vision checkpoint must be a ViT (ViTModel-style weights), got {type(vit).__name__}")
    fields = current.to_dict()
    fields.pop("model_type", None)
    patch_size = source.patch_size if isinstance(source.patch_size, int) else source.patch_size[0]
    fields.update(
        num_channels=source.num_channels,
        patch_size=patch_size,
        hidden_size=source.hidden_size,
        num_hidden_layers=source.num_hidden_layers,
        num_attention_heads=source.num_attention_heads,
        intermediate_size=source.intermediate_size,
        hidden_act=source.hidden_act,
        layer_norm_eps=source.layer_norm_eps,
        patch_embedding="linear",  # a ViT checkpoint brings its own linear patch embedding, whatever the config asked
    )
    return fields


def _text_config_from(bert, current: MVaEMaTextConfig) -> dict:
    source = bert.config
    if getattr(source, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ValueError(f"text checkpoint uses {source.position_embedding_type} positions; MVaEMa needs absolute ones")
    if not hasattr(bert, "encoder") or not hasattr(bert.encoder, "layer"):
        raise ValueError(f"text checkpoint must be BERT-style (BertModel-like weights), got {type(bert).__name__}")
    fields = current.to_dict()
    fields.pop("model_type", None)
    fields.update(
        hidden_size=source.hidden_size,
        num_hidden_layers=source.num_hidden_layers,
        num_attention_heads=source.num_attention_heads,
        intermediate_size=source.intermediate_size,
        hidden_act=source.hidden_act,
        layer_norm_eps=source.layer_norm_eps,
        max_position_embeddings=source.max_position_embeddings - _position_offset(bert),
    )
    return fields


def _position_offset(bert) -> int:
    """RoBERTa-family models number positions from padding_idx + 1."""
    return bert.config.pad_token_id + 1 if bert.config.model_type in ("roberta", "xlm-roberta", "camembert") else 0


def _vit_blocks(vit):
    """The sub-modules of each ViT block, in both transformers layouts (`layers` with q/k/v/o_proj and
    `mlp`, or the older `encoder.layer` with `attention.attention.query` and `intermediate`/`output`)."""
    if hasattr(vit, "layers"):
        for layer in vit.layers:
            attention = layer.attention
            yield dict(
                query=attention.q_proj, key=attention.k_proj, value=attention.v_proj, out=attention.o_proj,
                fc1=layer.mlp.fc1, fc2=layer.mlp.fc2, before=layer.layernorm_before, after=layer.layernorm_after,
            )
    elif hasattr(vit, "encoder") and hasattr(vit.encoder, "layer"):
        for layer in vit.encoder.layer:
            attention = layer.attention
            yield dict(
                query=attention.attention.query, key=attention.attention.key, value=attention.attention.value,
                out=attention.output.dense, fc1=layer.intermediate.dense, fc2=layer.output.dense,
                before=layer.layernorm_before, after=layer.layernorm_after,
            )
    else:
        raise ValueError(f"unrecognised ViT layout in {type(vit).__name__}: no `layers` or `encoder.layer`")


@torch.no_grad()
def _load_vit_weights(vision: MVaEMaVisionModel, vit) -> None:
    embeddings = vision.embeddings
    embeddings.patch_embedding.weight.copy_(vit.embeddings.patch_embeddings.projection.weight)
    embeddings.patch_embedding.bias.copy_(vit.embeddings.patch_embeddings.projection.bias)
    embeddings.class_embedding.copy_(vit.embeddings.cls_token)
    embeddings.position_embedding.copy_(_resize_positions(vit.embeddings.position_embeddings, embeddings.position_embedding.shape[1]))
    for layer, source in zip(vision.layers, _vit_blocks(vit), strict=True):
        _copy_qkv(layer.attention, source["query"], source["key"], source["value"])
        _copy_linear(layer.attention.out_proj, source["out"])
        _copy_linear(layer.fc1, source["fc1"])
        _copy_linear(layer.fc2, source["fc2"])
        _copy_norm(layer.layernorm_before, source["before"])
        _copy_norm(layer.layernorm_after, source["after"])
    _copy_norm(vision.post_layernorm, vit.layernorm)


@torch.no_grad()
def _load_bert_weights(text: MVaEMaTextModel, bert) -> None:
    embeddings = text.embeddings
    source_words = bert.embeddings.word_embeddings.weight
    embeddings.word_embeddings.weight[: source_words.shape[0]].copy_(source_words)
    offset = _position_offset(bert)
    positions = bert.embeddings.position_embeddings.weight[offset : offset + embeddings.position_embeddings.weight.shape[0]]
    token_type = getattr(bert.embeddings, "token_type_embeddings", None)
    if token_type is not None:  # every MVaEMa token is segment 0: fold that embedding into the positions
        positions = positions + token_type.weight[0]
    embeddings.position_embeddings.weight.copy_(positions)
    _copy_norm(embeddings.LayerNorm, bert.embeddings.LayerNorm)
    for layer, source in zip(text.layers, bert.encoder.layer, strict=True):
        attention = source.attention
        for block in (layer.self_attention, layer.causal_self_attention):
            if block is None:
                continue
            _copy_qkv(block.attention, attention.self.query, attention.self.key, attention.self.value)
            _copy_linear(block.attention.out_proj, attention.output.dense)
            _copy_norm(block.LayerNorm, attention.output.LayerNorm)
        _copy_linear(layer.feed_forward.intermediate, source.intermediate.dense)
        _copy_linear(layer.feed_forward.output, source.output.dense)
        _copy_norm(layer.feed_forward.LayerNorm, source.output.LayerNorm)


def _copy_qkv(attention: MVaEMaAttention, query: nn.Linear, key: nn.Linear, value: nn.Linear) -> None:
    attention.qkv.weight.copy_(torch.cat([query.weight, key.weight, value.weight]))
    biases = [layer.bias if layer.bias is not None else torch.zeros_like(layer.weight[:, 0]) for layer in (query, key, value)]
    attention.qkv.bias.copy_(torch.cat(biases))


def _copy_linear(target: nn.Linear, source: nn.Linear) -> None:
    target.weight.copy_(source.weight)
    if source.bias is not None:
        target.bias.copy_(source.bias)
    else:
        target.bias.zero_()


def _copy_norm(target: nn.LayerNorm, source: nn.LayerNorm) -> None:
    target.weight.copy_(source.weight)
    target.bias.copy_(source.bias)


def _resize_positions(position_embeddings: torch.Tensor, target_length: int) -> torch.Tensor:
    """Bicubic resize of a ViT's (1, 1 + n*n, D) position grid to (1, target_length, D); [CLS] kept as is."""
    if position_embeddings.shape[1] == target_length:
        return position_embeddings
    cls_position, grid = position_embeddings[:, :1], position_embeddings[:, 1:]
    source_side, target_side = math.isqrt(grid.shape[1]), math.isqrt(target_length - 1)
    grid = grid.reshape(1, source_side, source_side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(target_side, target_side), mode="bicubic", align_corners=False)
    return torch.cat([cls_position, grid.permute(0, 2, 3, 1).reshape(1, target_side * target_side, -1)], dim=1)


__all__ = ["MVaEMaCacheLayer", "MVaEMaDynamicCache", "MVaEMaForQuestionAnswering", "MVaEMaOutput", "MVaEMaPreTrainedModel", "new_mvaema_cache"]
