"""HNF (Hierarchical Network Fusion): a multi-scale micrograph classifier fusing patch sequences, patch graphs
and LLM-written class descriptions (arXiv 2408.13661). See `HNFConfig` for the architecture and its choices."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchdiffeq  # noqa: F401 - used by hnf_ode; imported here too so that transformers' remote-code check names it if missing
from torch import nn
from torch_geometric.nn import ChebConv
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.modeling_utils import get_torch_context_manager_or_global_device
from transformers.utils import ModelOutput

from .configuration_hnf import HNFConfig
from .conv_stem import MicrographConvStem
from .hnf_graph import HNFGraphBlock
from .hnf_ode import HNFBidirectionalODE, HNFFeedForward, HNFODEVectorField, HNFSelfAttention
from .hnf_text import HNFTextEncoder
from .torch_operations import TorchOperationsMixin


@dataclass
class HNFModelOutput(ModelOutput):
    r"""
    Outputs of [`HNFModel`].

    Args:
        pooler_output (`torch.FloatTensor` of shape `(batch_size, fused_size)`):
            The fused image-text embedding the classifier reads.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The hierarchical image embedding (the last layer's gate output).
        text_embeds (`torch.FloatTensor` of shape `(num_descriptions, hidden_size)`, *optional*):
            One embedding per stored class description (absent without the text branch).
        gate_weights (`tuple(torch.FloatTensor)`, one `(batch_size, 2)` tensor per HNF layer, *optional*):
            The gate's weights over the (sequence, graph) experts; each row sums to 1.
        hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`):
            One tensor per layer of shape `(batch_size, num_patches_l + 1, hidden_size)`: the layer's token states
            `[patch tokens, CLS]` after its sequence branch (the merged ODE end states). Layers cut the image at
            their own patch size, so `num_patches_l` differs between layers (196, 64 and 49 by default).
        label_conditioned (`bool`):
            True when the text side saw the images' labels (the paper's protocol).
    """

    pooler_output: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    gate_weights: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    label_conditioned: bool | None = None


@dataclass
class HNFImageClassifierOutput(ImageClassifierOutput):
    r"""
    Outputs of [`HNFForImageClassification`]: `ImageClassifierOutput` (`loss`, `logits`, `hidden_states` as in
    [`HNFModelOutput`]) plus HNF's embeddings, gate weights and the `label_conditioned` marker (see
    [`HNFModelOutput`]). `attentions` is always `None` (see `output_attentions` in `HNFModel.forward`).
    """

    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    gate_weights: tuple[torch.Tensor, ...] | None = None
    label_conditioned: bool | None = None


class HNFPatchEmbedding(nn.Module):
    """Cuts the image into non-overlapping `patch_size` patches, embeds each linearly, adds position embeddings.

    The same map as a stride-`patch_size` convolution, computed as one matmul (faster on CPU for large patches).
    With a convolutional stem (`HNFConfig.patch_embedding="conv_stem"`) the patches are cut from the stem's map
    instead (`stem_maps` in `forward`): a strided convolution of the map's features, on the same token grid.
    """

    def __init__(self, config: HNFConfig, patch_size: int, stem: MicrographConvStem | None = None):
        super().__init__()
        self.image_size = config.image_size
        self.num_channels = config.num_channels
        self.patch_size = patch_size
        self.grid_size = config.image_size // patch_size
        self.num_patches = self.grid_size**2
        if stem is None:
            self.stem_stage, self.projection = None, nn.Linear(config.num_channels * patch_size**2, config.hidden_size)
        else:
            self.stem_stage, self.projection = stem.projection(patch_size, config.hidden_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, self.num_patches, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor, stem_maps: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the patch contents (B, N, d) and the patch tokens with positions (B, N, d)."""
        if pixel_values.dim() != 4 or pixel_values.shape[1:] != (self.num_channels, self.image_size, self.image_size):
            raise ValueError(
                f"pixel_values must have shape (batch, {self.num_channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(pixel_values.shape)}; preprocess with the model's image processor"
            )
        if self.stem_stage is not None:
            if stem_maps is None:
                raise ValueError("this patch embedding reads the convolutional stem's maps: pass stem_maps")
            content = self.projection(stem_maps[self.stem_stage]).flatten(2).transpose(1, 2)
            return content, content + self.position_embedding
        batch, grid, size = pixel_values.shape[0], self.grid_size, self.patch_size
        # (B, C, gh, p, gw, p) -> (B, gh * gw, C * p * p), patches in row-major order
        patches = pixel_values.reshape(batch, self.num_channels, grid, size, grid, size).permute(0, 2, 4, 1, 3, 5)
        content = self.projection(patches.reshape(batch, self.num_patches, -1))
        return content, content + self.position_embedding


def build_conv_stem(config: HNFConfig) -> MicrographConvStem | None:
    """The image encoder's shared convolutional stem, or None for the paper's linear patch embeddings."""
    if getattr(config, "patch_embedding", "linear") != "conv_stem":
        return None
    return MicrographConvStem(config.num_channels, config.conv_stem_channels)


class HNFExpert(nn.Module):
    """One modality's expert: a residual pre-norm MLP on a summary vector."""

    def __init__(self, config: HNFConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = HNFFeedForward(config)

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        return summary + self.mlp(self.norm(summary))


class HNFModalityGate(nn.Module):
    """Mixture of experts over the two modalities: a softmax gate, computed from both summaries, weighs a
    sequence expert (on the CLS summary) against a graph expert (on the virtual-node summary). Without the
    graph branch (`use_graph_branch=False`) the sequence expert passes alone, with gate weights (1, 0)."""

    def __init__(self, config: HNFConfig):
        super().__init__()
        self.sequence_expert = HNFExpert(config)
        self.graph_expert = HNFExpert(config) if config.use_graph_branch else None
        self.router = nn.Linear(2 * config.hidden_size, 2) if config.use_graph_branch else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, cls_summary: torch.Tensor, virtual_summary: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph_expert is None:
            gate_weights = cls_summary.new_tensor([1.0, 0.0]).expand(cls_summary.shape[0], 2)
            return self.norm(self.sequence_expert(cls_summary)), gate_weights
        gate_weights = self.router(torch.cat([cls_summary, virtual_summary], dim=-1)).softmax(dim=-1)  # (B, 2)
        expert_outputs = torch.stack([self.sequence_expert(cls_summary), self.graph_expert(virtual_summary)], dim=1)
        return self.norm((gate_weights.unsqueeze(-1) * expert_outputs).sum(dim=1)), gate_weights


class HNFLayer(GradientCheckpointingLayer):
    """One scale: patch embedding, the ODE sequence branch and the graph branch side by side, then the gate."""

    def __init__(self, config: HNFConfig, layer_idx: int, stem: MicrographConvStem | None = None):
        super().__init__()
        self.patch_embedding = HNFPatchEmbedding(config, config.layer_patch_sizes[layer_idx], stem)
        self.cls_position = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.sequence_branch = HNFBidirectionalODE(config) if config.use_ode else HNFTransformerBlock(config)
        self.sequence_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.use_graph_branch:
            self.graph_branch = HNFGraphBlock(config, config.num_neighbors[layer_idx])
            self.graph_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        else:
            self.graph_branch = self.graph_norm = None
        self.gate = HNFModalityGate(config)

    def forward(
        self, pixel_values: torch.Tensor, cls_token: torch.Tensor, virtual_token: torch.Tensor, keep_tokens: bool = False,
        stem_maps: list[torch.Tensor] | None = None, keep_patch_nodes: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """cls_token, virtual_token: (B, d); `stem_maps`: the convolutional stem's maps, when the model has one.
        Returns the gate output (B, d), the gate weights (B, 2), with `keep_tokens` the sequence branch's token
        states (B, N + 1, d) [patches, CLS], and with `keep_patch_nodes` the graph branch's patch nodes (B, N, d)
        (else None: the graph convolution then computes the virtual node's output alone, the same numbers)."""
        patch_content, patch_tokens = self.patch_embedding(pixel_values, stem_maps)
        sequence = torch.cat([patch_tokens, cls_token.unsqueeze(1) + self.cls_position], dim=1)  # [patches, CLS]
        # only the CLS leaves the layer, so the ODE merges only that position unless every token is asked for
        if isinstance(self.sequence_branch, HNFBidirectionalODE):
            tokens = self.sequence_branch(sequence, keep=slice(None) if keep_tokens else slice(-1, None))
        else:  # "without the ODE" ablation: one transformer block
            tokens = self.sequence_branch(sequence)
        cls_summary = self.sequence_norm(tokens[:, -1])
        if self.graph_branch is None:  # "without the graph" ablation: the patch embeddings stand for the nodes
            summary, gate_weights = self.gate(cls_summary, None)
            return summary, gate_weights, tokens if keep_tokens else None, patch_tokens
        nodes = torch.cat([patch_tokens, virtual_token.unsqueeze(1)], dim=1)  # [patches, virtual node]
        if not keep_patch_nodes:  # only the virtual node leaves the layer
            virtual_node, _ = self.graph_branch(patch_content, nodes, virtual_node_only=True)
            summary, gate_weights = self.gate(cls_summary, self.graph_norm(virtual_node))
            return summary, gate_weights, tokens if keep_tokens else None, None
        nodes, _ = self.graph_branch(patch_content, nodes)
        virtual_summary = self.graph_norm(nodes[:, -1])
        summary, gate_weights = self.gate(cls_summary, virtual_summary)
        return summary, gate_weights, tokens if keep_tokens else None, nodes[:, :-1]


class HNFHierarchicalEncoder(nn.Module):
    """The inverted pyramid: each layer re-cuts the image at its own patch size; the gate output of a layer
    starts the CLS token and the virtual node of the next, and the last one is the image embedding."""

    def __init__(self, config: HNFConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, config.hidden_size))
        self.virtual_token = nn.Parameter(torch.zeros(1, config.hidden_size))
        self.conv_stem = build_conv_stem(config)
        self.layers = nn.ModuleList([HNFLayer(config, index, self.conv_stem) for index in range(config.num_hidden_layers)])

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False,
                return_patch_states: bool = True) -> tuple[torch.Tensor, tuple, tuple | None, torch.Tensor | None]:
        """The image embedding (B, d), the gate weights per layer, when asked each layer's token states, and the
        last layer's patch nodes (B, N, d), which the text side of the bidirectional fusion reads (None without
        `return_patch_states`: then no layer convolves its patch nodes, only its virtual node)."""
        batch = pixel_values.shape[0]
        cls_token, virtual_token = self.cls_token.expand(batch, -1), self.virtual_token.expand(batch, -1)
        stem_maps = self.conv_stem(pixel_values) if self.conv_stem is not None else None  # once, shared by the layers
        token_states, gate_weights = [], []
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            summary, weights, tokens, patch_states = layer(
                pixel_values, cls_token, virtual_token, keep_tokens=output_hidden_states, stem_maps=stem_maps,
                keep_patch_nodes=return_patch_states and index == last,
            )
            cls_token = virtual_token = summary
            token_states.append(tokens)
            gate_weights.append(weights)
        return summary, tuple(gate_weights), tuple(token_states) if output_hidden_states else None, patch_states


class HNFTransformerBlock(GradientCheckpointingLayer):
    """A pre-norm ViT block, for the "without HNF" ablation."""

    def __init__(self, config: HNFConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = HNFSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = HNFFeedForward(config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.attention_norm(tokens))
        return tokens + self.mlp(self.mlp_norm(tokens))


class HNFViTEncoder(nn.Module):
    """Ablation "without HNF": a plain ViT on `patch_sizes[0]` with as many blocks as HNF has layers."""

    def __init__(self, config: HNFConfig):
        super().__init__()
        self.conv_stem = build_conv_stem(config)
        self.patch_embedding = HNFPatchEmbedding(config, config.patch_sizes[0], self.conv_stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.layers = nn.ModuleList([HNFTransformerBlock(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False,
                return_patch_states: bool = True) -> tuple[torch.Tensor, None, tuple | None, torch.Tensor]:
        """As `HNFHierarchicalEncoder.forward`; the patch states are the last block's patch tokens."""
        stem_maps = self.conv_stem(pixel_values) if self.conv_stem is not None else None
        _, tokens = self.patch_embedding(pixel_values, stem_maps)
        tokens = torch.cat([tokens, self.cls_token.expand(tokens.shape[0], -1, -1)], dim=1)
        token_states = []
        for layer in self.layers:
            tokens = layer(tokens)
            token_states.append(tokens)
        return self.norm(tokens[:, -1]), None, tuple(token_states) if output_hidden_states else None, tokens[:, :-1]


class HNFTextToImageAttention(nn.Module):
    """Multi-head attention from every description embedding (queries) over one image's patch nodes (keys,
    values), with a residual: the text side of the bidirectional fusion, image-conditioned descriptions."""

    def __init__(self, config: HNFConfig):
        super().__init__()
        self.num_heads = config.fusion_num_heads
        self.query_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.patch_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key_value = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, text_embeds: torch.Tensor, patch_states: torch.Tensor) -> torch.Tensor:
        """text_embeds (D, d), patch_states (B, N, d) -> per-image description states (B, D, d)."""
        batch, _, width = patch_states.shape
        heads, head_dim = self.num_heads, width // self.num_heads
        query = self.query(self.query_norm(text_embeds)).view(1, -1, heads, head_dim).transpose(1, 2)  # (1, h, D, hd)
        key, value = self.key_value(self.patch_norm(patch_states)).view(batch, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query.expand(batch, -1, -1, -1), key, value)  # (B, h, D, hd)
        attended = attended.transpose(1, 2).reshape(batch, -1, width)
        return self.norm(text_embeds.unsqueeze(0) + self.dropout(self.out_proj(attended)))


class HNFCrossModalAttention(nn.Module):
    """Multi-head attention from the image embedding (query) over the description embeddings (keys, values).

    With `fusion_direction="bidirectional"` the descriptions first attend over the image's patch nodes
    (`text_to_image`), so the keys and values the image then reads depend on the image. The image-to-text
    weights keep the names of the one-way form, which is this module without `text_to_image`.
    """

    def __init__(self, config: HNFConfig):
        super().__init__()
        self.num_heads = config.fusion_num_heads
        self.text_to_image = HNFTextToImageAttention(config) if config.fusion_direction == "bidirectional" else None
        self.query_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.text_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key_value = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_mask: torch.Tensor | None = None,
        patch_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """image_embeds (B, d), text_embeds (D, d), text_mask (B, D) of bools (True = may attend), patch_states
        (B, N, d) (the bidirectional form reads them) -> (B, d)."""
        batch, width = image_embeds.shape
        head_dim = width // self.num_heads
        if self.text_to_image is not None:
            if patch_states is None:
                raise ValueError("bidirectional cross-modal attention needs the image's patch states")
            text = self.text_to_image(text_embeds, patch_states)  # (B, D, d)
        else:
            text = text_embeds.unsqueeze(0).expand(batch, -1, -1)
        query = self.query(self.query_norm(image_embeds)).view(batch, self.num_heads, 1, head_dim)
        key, value = self.key_value(self.text_norm(text)).view(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attn_mask = None if text_mask is None else text_mask[:, None, None, :]
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask).reshape(batch, width)
        return self.norm(image_embeds + self.dropout(self.out_proj(attended)))


class HNFPreTrainedModel(TorchOperationsMixin, PreTrainedModel):
    config_class = HNFConfig
    config: HNFConfig
    base_model_prefix = "hnf"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["HNFLayer", "HNFTransformerBlock", "HNFTextEncoder"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, HNFPatchEmbedding):
            init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, (HNFHierarchicalEncoder, HNFViTEncoder)):
            init.trunc_normal_(module.cls_token, std=std)
            if isinstance(module, HNFHierarchicalEncoder):
                init.trunc_normal_(module.virtual_token, std=std)
            if module.conv_stem is not None:  # here, not on the stem itself: it owns no parameters directly
                module.conv_stem.reset_parameters()
        elif isinstance(module, HNFLayer):
            init.zeros_(module.cls_position)
        elif isinstance(module, HNFODEVectorField):
            init.zeros_(module.time_embedding)
        elif isinstance(module, ChebConv):
            for linear in module.lins:
                init.xavier_uniform_(linear.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class HNFModel(HNFPreTrainedModel):
    """HNF without its classifier: the hierarchical image embedding fused with the class-description embeddings."""

    def __init__(self, config: HNFConfig):
        super().__init__(config)
        self.image_encoder = HNFHierarchicalEncoder(config) if config.image_encoder == "hnf" else HNFViTEncoder(config)
        self.text_encoder = HNFTextEncoder(config) if config.use_text_branch else None
        self.fusion = HNFCrossModalAttention(config) if config.use_text_branch and config.fusion == "cross_attention" else None
        self.post_init()
        # Reading descriptions and pre-trained text weights is skipped while `from_pretrained` builds the model on
        # the meta device: the saved buffers and fine-tuned weights are loaded right after.
        if self.text_encoder is not None and get_torch_context_manager_or_global_device() != torch.device("meta"):
            self.text_encoder.set_descriptions(config)
            if config.text_model_name_or_path is not None:
                self.text_encoder.load_pretrained_language_model(config.text_model_name_or_path)

    @property
    def fused_size(self) -> int:
        concat = self.config.use_text_branch and self.config.fusion == "concat"
        return 2 * self.config.hidden_size if concat else self.config.hidden_size

    def set_class_descriptions(self, class_descriptions: dict[str, list[str]], source: str | None = None, tokenizer=None):
        """Replace the stored descriptions (same number per class as before) and re-tokenize them."""
        if self.text_encoder is None:
            raise ValueError("this model has no text branch (use_text_branch=False)")
        previous = (self.config.class_descriptions, self.config.class_descriptions_source)
        self.config.class_descriptions = {name: list(texts) for name, texts in class_descriptions.items()}
        self.config.class_descriptions_source = source
        try:
            self.config._validate()
            self.text_encoder.set_descriptions(self.config, tokenizer)
        except ValueError:
            self.config.class_descriptions, self.config.class_descriptions_source = previous
            raise

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        conditioning_labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> HNFModelOutput | tuple:
        r"""
        conditioning_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Paper protocol only: restrict each image's text side to the descriptions of this class. Such outputs
            are marked `label_conditioned=True`. Leave unset for label-free predictions.
        output_hidden_states (`bool`, *optional*):
            Return each layer's token states (see [`HNFModelOutput`]).
        output_attentions (`bool`, *optional*):
            Not supported: an error. HNF has no single attention map per layer (its sequence branch evaluates
            attention inside an ODE solver, several times per layer and direction); for where the model looked,
            use gradient saliency over `pixel_values`.
        """
        if pixel_values is None:
            raise ValueError("HNFModel needs pixel_values")
        if output_attentions if output_attentions is not None else self.config.output_attentions:
            raise ValueError(
                "HNF returns no attention weights: its sequence branch evaluates attention inside an ODE solver "
                "(several times per layer and direction), so no single map per layer exists. For where the model "
                "looked, use gradient saliency over pixel_values; output_hidden_states=True gives each layer's tokens."
            )
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if conditioning_labels is not None and self.text_encoder is None:
            raise ValueError("conditioning_labels were given but this model has no text branch")
        image_embeds, gate_weights, token_states, patch_states = self.image_encoder(
            pixel_values, output_hidden_states=bool(output_hidden_states),
            return_patch_states=self.text_encoder is not None,  # only the text side's fusion reads them
        )
        fused, text_embeds = self._fuse(image_embeds, conditioning_labels, patch_states)

        output = HNFModelOutput(
            pooler_output=fused,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            gate_weights=gate_weights,
            hidden_states=token_states,
            label_conditioned=conditioning_labels is not None,
        )
        return output if return_dict else output.to_tuple()

    def _fuse(self, image_embeds: torch.Tensor, conditioning_labels: torch.Tensor | None,
              patch_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused embedding (B, fused_size) and the description embeddings (D, d), if there is a text branch."""
        if self.text_encoder is None:
            return image_embeds, None
        text_embeds = self.text_encoder().to(image_embeds.dtype)
        text_mask = None
        if conditioning_labels is not None:  # paper protocol: only the true class's descriptions are visible
            labels = conditioning_labels.to(self.text_encoder.description_labels.device)
            text_mask = self.text_encoder.description_labels.unsqueeze(0) == labels.unsqueeze(1)  # (B, D)
        if self.fusion is not None:
            return self.fusion(image_embeds, text_embeds, text_mask, patch_states), text_embeds
        # "concat" ablation: the image embedding beside the mean of the visible description embeddings
        if text_mask is None:
            visible = torch.ones(image_embeds.shape[0], text_embeds.shape[0], dtype=text_embeds.dtype, device=text_embeds.device)
        else:
            visible = text_mask.to(text_embeds.dtype)
        text_summary = (visible @ text_embeds) / visible.sum(dim=1, keepdim=True)
        return torch.cat([image_embeds, text_summary], dim=-1), text_embeds


class HNFForImageClassification(HNFPreTrainedModel):
    """HNF with a linear classifier on the fused embedding, trained with cross-entropy."""

    # LoRA defaults (train/publishing/lora.py): attention, MLP and text-encoder projections; the classifier trains in full
    _lora_target_modules = ["qkv", "out_proj", "fc1", "fc2", "query", "key", "value", "key_value", "dense"]
    _lora_modules_to_save = ["classifier"]

    def __init__(self, config: HNFConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.hnf = HNFModel(config)
        self.classifier = nn.Linear(self.hnf.fused_size, config.num_labels)
        self.post_init()

    @property
    def label_conditioned(self) -> bool:
        """True when this model's text side is conditioned on the true labels (the paper's audit protocol)."""
        return self.config.use_text_branch and self.config.text_conditioning == "paper_label_conditioned"

    def set_class_descriptions(self, class_descriptions: dict[str, list[str]], source: str | None = None, tokenizer=None):
        self.hnf.set_class_descriptions(class_descriptions, source=source, tokenizer=tokenizer)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> HNFImageClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class indices for the cross-entropy loss. By default they never reach the text side; only with
            `text_conditioning="paper_label_conditioned"` do they select the descriptions (and then they are
            required, and the output says `label_conditioned=True`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.label_conditioned and labels is None:
            raise ValueError(
                'text_conditioning="paper_label_conditioned" needs labels at every forward (it is the paper\'s '
                'label-conditioned protocol); use text_conditioning="all_classes" to predict from pixels alone'
            )
        outputs = self.hnf(
            pixel_values,
            conditioning_labels=labels if self.label_conditioned else None,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = F.cross_entropy(logits, labels.to(logits.device)) if labels is not None else None
        output = HNFImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            image_embeds=outputs.image_embeds,
            text_embeds=outputs.text_embeds,
            gate_weights=outputs.gate_weights,
            label_conditioned=outputs.label_conditioned,
        )
        return output if return_dict else output.to_tuple()


__all__ = ["HNFPreTrainedModel", "HNFModel", "HNFForImageClassification", "HNFModelOutput", "HNFImageClassifierOutput"]
