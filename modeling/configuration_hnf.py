"""HNF (Hierarchical Network Fusion) model configuration."""

from __future__ import annotations

from transformers import AutoConfig, BertConfig, PretrainedConfig

try:  # transformers >= 5
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # pragma: no cover - transformers 4.x
    SubConfigSpec = None

try:  # emvision's vocabulary supplies the defaults of a new config (the 10 categories and their display names)
    from emvision.vocabulary import SEM_CATEGORIES, category_display_name
except ImportError:  # loaded as Hub remote code without emvision: a saved config.json carries labels and descriptions
    SEM_CATEGORIES, category_display_name = (), None

IMAGE_ENCODERS = ("hnf", "vit")
FUSIONS = ("cross_attention", "concat")
FUSION_DIRECTIONS = ("bidirectional", "image_to_text")
TEXT_CONDITIONINGS = ("all_classes", "paper_label_conditioned")
PATCH_EMBEDDINGS = ("linear", "conv_stem")  # see HNFConfig.patch_embedding
DEFAULT_CONV_STEM_CHANNELS = (16, 32, 64)  # strides 4, 8, 16: patches of 16 and 32 px read the last map, 28 px the first
ODE_FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
ODE_ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
CLASS_NAME_DESCRIPTIONS_SOURCE = "class-names"

# A small BERT built from scratch when no `text_model_name_or_path` is given. Its vocabulary is the
# byte-level one of `ByT5Tokenizer` (256 bytes + 3 specials + 125 sentinels), which needs no files.
DEFAULT_TEXT_CONFIG = {
    "model_type": "bert",
    "vocab_size": 384,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "max_position_embeddings": 1024,  # whole descriptions: the synthetic set's run to ~1,000 bytes
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "pad_token_id": 0,
}


class HNFConfig(PretrainedConfig):
    r"""
    Configuration of an HNF classifier: [`HNFModel`] / [`HNFForImageClassification`].

    HNF ("Hierarchical Network Fusion for Multi-Modal Electron Micrograph Representation Learning with
    Foundational Large Language Models", arXiv 2408.13661) looks at a micrograph at several scales. Layer `l`
    re-cuts the image into non-overlapping patches of size `patch_sizes[l]` (an inverted pyramid: 16, 28 and
    32 px give 196, 64 and 49 patches at 224 px) and runs two branches on them:

    - a sequence branch: `[patch tokens, CLS]` refined by a bidirectional neural ODE (a forward-time and a
      backward-time vector field, both attention + MLP, from the same start state; the two end states are
      merged by a learned sigmoid gate);
    - a graph branch: a vision graph whose nodes are the patches, each joined to its `num_neighbors[l]` most
      cosine-similar patches, plus one virtual node joined to every patch; a Chebyshev graph convolution
      (order `chebyshev_k`, symmetric normalisation) with a residual.

    A softmax gate over one expert per modality mixes the CLS summary and the virtual-node summary; its output
    initialises the CLS token and the virtual node of the next layer, and the last one is the hierarchical
    image embedding. The text branch encodes technical descriptions of *every* class with a small language
    model and attention pooling; cross-modal multi-head attention lets the image embedding attend over them,
    and a linear classifier reads the result.

    Choices the paper leaves open, made here:

    - ODE: the vector field is a pre-norm attention + MLP block without its residual, with the time `t` added
      to its input through a learned vector. The default solver is fixed-step Euler with `ode_steps=1` over
      `[0, ode_integration_time]` (1 field evaluation per direction); the paper's RK4 (4 evaluations per
      direction, `ode_method="rk4"`, what `train/classify.py --recipe paper` uses) is the option. The choice was
      made by accuracy at equal training budget, not by speed: in the learning-curve benchmark
      (tests/benchmarks/learning_curves/hnf.py, same data, recipe and seed, 1 thread) Euler reached
      top-1 0.840 and RK4 0.566 after 800 training CPU-seconds on the synthetic set's 350 test images;
      RK4's more accurate integration of each layer's flow does not pay for its 3x step cost at these budgets.
      Set `ode_method="dopri5"` and `ode_adjoint=True` for an adaptive solver with the adjoint method (memory
      O(1) in the number of steps).
      The backward-time branch is solved jointly with the forward one, as `dh/ds = -f_b(-s, h)` for
      `s` in `[0, T]`, so one solver call serves both (the two fields are evaluated in one batched call). Cost:
      the ODE of the first layer dominates: rk4 makes 4 evaluations of both fields over 197 tokens, of which the
      last one only for the CLS (the only position read; euler and midpoint likewise prune their last stage).
      On an idle CPU (1 thread, batch 48) a training step costs about 1.2x that of a ViT of the same width and
      depth with Euler, 2.1x with `ode_method="midpoint"` and 3.9x with `"rk4"` (tests/benchmarks/run_all.py
      --only training).
    - Graph: edges are found on the patch embeddings before position embeddings are added (content
      similarity). The k-nearest-neighbour relation is made symmetric by adding its transpose (a pair of
      mutual neighbours gets weight 2); the virtual node is joined to every patch in both directions.
    - The CLS token and the virtual node of the first layer are learned vectors; later layers start both
      from the previous gate output.
    - Class descriptions live in the config (`class_descriptions`, class name -> list of texts) and are
      tokenized once, when the model is built, into persistent buffers saved with the weights; a saved
      model therefore predicts from pixels alone. Without `text_model_name_or_path` the text encoder is
      a small BERT over bytes (`ByT5Tokenizer`, no vocabulary file); with it, the tokenizer and the
      pre-trained weights of that folder (for example the output of `train/pretrain_text_mlm.py`) are used.
      Without `class_descriptions`, each class is described by its name only (source `"class-names"`).
    - In eval mode the text embeddings are computed once and cached; switching to train mode or changing
      any text-encoder weight invalidates the cache.

    Leakage: by default (`text_conditioning="all_classes"`) the image attends over the descriptions of all
    classes, so the prediction never sees the image's label. `text_conditioning="paper_label_conditioned"`
    restricts the text side to the descriptions of the *true* class, as the paper's protocol may have done:
    it needs `labels` at every forward and every output it produces says `label_conditioned=True`. Use it
    only to audit the paper's figure.

    Ablations of the paper: `image_encoder="vit"` (no HNF: a plain ViT on `patch_sizes[0]` with the same
    depth), `use_text_branch=False` (no LLM text), `use_ode=False` (a transformer block instead of the ODE),
    `use_graph_branch=False` (no graph), `fusion="concat"` (no cross-modal attention: the image
    embedding concatenated with the mean text embedding) and `multi_scale=False` (every layer uses
    `patch_sizes[0]`).

    Args:
        image_size (`int`, defaults to 224): Input side length.
        num_channels (`int`, defaults to 3): Input channels.
        patch_sizes (`list[int]`, defaults to `[16, 28, 32]`): Patch size per layer; one layer per entry.
        hidden_size (`int`, defaults to 64): Width of every image-side and fusion embedding.
        num_attention_heads (`int`, defaults to 4): Heads of the ODE vector fields (and of the ViT ablation).
        intermediate_size (`int`, defaults to 128): MLP width of the vector fields and of the gate experts (ratio 2,
            not ViT's 4: each RK4 step evaluates every field four times).
        hidden_act (`str`, defaults to `"gelu"`): Activation.
        hidden_dropout_prob (`float`, defaults to 0.0): Dropout on MLP, graph and fusion outputs.
        attention_probs_dropout_prob (`float`, defaults to 0.0): Dropout on attention probabilities.
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon.
        initializer_range (`float`, defaults to 0.02): Std of the truncated-normal initialiser.
        ode_method (`str`, defaults to `"euler"`): A torchdiffeq method; fixed-step or adaptive (the paper: `"rk4"`).
        ode_steps (`int`, defaults to 1): Steps of a fixed-step method over the integration interval.
        ode_integration_time (`float`, defaults to 1.0): The end time `T` of both directions.
        ode_adjoint (`bool`, defaults to `False`): Backpropagate with `odeint_adjoint`.
        ode_rtol, ode_atol (`float`, defaults to 1e-3, 1e-4): Tolerances of adaptive methods.
        num_neighbors (`list[int]`, defaults to `[8, 8, 8]`): k of the k-NN vision graph per layer.
        chebyshev_k (`int`, defaults to 3): Order of the Chebyshev graph convolution.
        image_encoder (`str`, defaults to `"hnf"`): `"hnf"` or `"vit"` (ablation).
        multi_scale (`bool`, defaults to `True`): `False` uses `patch_sizes[0]` in every layer (ablation).
        use_text_branch (`bool`, defaults to `True`): `False` drops the text side (ablation).
        use_ode (`bool`, defaults to `True`): `False` replaces each layer's bidirectional ODE by one pre-norm
            transformer block (attention + MLP with residuals) of the same width (ablation "without the ODE").
        use_graph_branch (`bool`, defaults to `True`): `False` drops the graph branch; the gate then passes the
            sequence expert alone (ablation "without the graph").
        fusion (`str`, defaults to `"cross_attention"`): `"cross_attention"` or `"concat"` (ablation).
        patch_embedding (`str`, defaults to `"linear"`): how each layer's patches become tokens. `"linear"` (the
            paper): a linear map of the patch's pixels. `"conv_stem"`: one small convolutional stem
            (`conv_stem.MicrographConvStem`, batch norm) reads the image once per forward, and each layer cuts the
            deepest stem map whose stride divides its patch size into its own patches (16 px: the stride-16 map,
            28 px: the stride-4 map, 32 px: the stride-16 map); same token grids. Learns much faster from scratch
            (the fast training recipe uses it).
        conv_stem_channels (`list[int]`, defaults to `[16, 32, 64]`): the stem's widths (strides 4, 8, 16).
        fusion_num_heads (`int`, defaults to 4): Heads of the cross-modal attention.
        fusion_direction (`str`, defaults to `"bidirectional"`): `"bidirectional"` (the paper's "Query, Key, Value
            projections for both modalities"): each description embedding first attends over the last layer's
            patch nodes (graph-branch output), so the text side depends on the image, then the image embedding
            attends over these image-conditioned descriptions. `"image_to_text"`: only the second attention, over
            description embeddings that do not depend on the image (with label-free descriptions they act as
            fixed class prototypes). A saved config without this field predates it and loads as
            `"image_to_text"`, the form its weights were trained in.
        text_conditioning (`str`, defaults to `"all_classes"`): `"all_classes"` (label-free) or
            `"paper_label_conditioned"` (needs labels; outputs are marked).
        text_config (`dict` or `PretrainedConfig`, *optional*): Config of the text encoder. Defaults to a
            2-layer, 64-wide byte-level BERT, or to the config of `text_model_name_or_path`.
        text_model_name_or_path (`str`, *optional*): Local folder (or Hub id) with a pre-trained encoder and its
            tokenizer. Its weights are loaded when a model is built from this config (not by `from_pretrained`,
            which restores the fine-tuned weights saved with the model).
        class_descriptions (`dict[str, list[str]]`, *optional*): Descriptions per class name (every class of
            `id2label` needs at least one).
        class_descriptions_source (`str`, *optional*): Where the descriptions came from (an LLM's name,
            `"oracle-synthetic"`, `"human"`); kept for model cards and metrics.
        description_max_length (`int`, *optional*): Tokens kept per description; defaults to the text encoder's
            `max_position_embeddings` (1024 bytes for the byte-level default, which holds every description of the
            synthetic set whole; 512 WordPiece tokens, ~400 words, for train/pretrain_text_mlm.py's encoder). The
            text encoder runs at every training step, so its cost grows with this length (quadratically).
    """

    model_type = "hnf"
    if SubConfigSpec is not None:
        sub_configs_defaults = {"text_config": SubConfigSpec(AutoConfig, model_type="bert")}
    else:  # pragma: no cover
        sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        image_size=224,
        num_channels=3,
        patch_sizes=(16, 28, 32),
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-6,
        initializer_range=0.02,
        ode_method="euler",
        ode_steps=1,
        ode_integration_time=1.0,
        ode_adjoint=False,
        ode_rtol=1e-3,
        ode_atol=1e-4,
        num_neighbors=(8, 8, 8),
        chebyshev_k=3,
        image_encoder="hnf",
        multi_scale=True,
        use_text_branch=True,
        use_ode=True,
        use_graph_branch=True,
        fusion="cross_attention",
        fusion_num_heads=4,
        fusion_direction="bidirectional",
        text_conditioning="all_classes",
        text_config=None,
        text_model_name_or_path=None,
        class_descriptions=None,
        class_descriptions_source=None,
        description_max_length=None,
        patch_embedding="linear",
        conv_stem_channels=None,
        **kwargs,
    ):
        if kwargs.get("id2label") is None and kwargs.get("num_labels") is None and SEM_CATEGORIES:
            kwargs["id2label"] = dict(enumerate(SEM_CATEGORIES))
        if kwargs.get("id2label") is not None and kwargs.get("label2id") is None:
            kwargs["label2id"] = {name: int(i) for i, name in kwargs["id2label"].items()}

        self.image_size = image_size
        self.num_channels = num_channels
        self.patch_sizes = [int(p) for p in patch_sizes]
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.ode_method = ode_method
        self.ode_steps = ode_steps
        self.ode_integration_time = ode_integration_time
        self.ode_adjoint = ode_adjoint
        self.ode_rtol = ode_rtol
        self.ode_atol = ode_atol
        self.num_neighbors = [int(k) for k in num_neighbors]
        self.chebyshev_k = chebyshev_k
        self.image_encoder = image_encoder
        self.multi_scale = multi_scale
        self.use_text_branch = use_text_branch
        self.use_ode = use_ode
        self.use_graph_branch = use_graph_branch
        self.fusion = fusion
        self.fusion_num_heads = fusion_num_heads
        self.fusion_direction = fusion_direction
        self.text_conditioning = text_conditioning
        self.patch_embedding = patch_embedding
        self.conv_stem_channels = [int(width) for width in (conv_stem_channels or DEFAULT_CONV_STEM_CHANNELS)]
        self.text_model_name_or_path = text_model_name_or_path
        self.class_descriptions = (
            {name: list(texts) for name, texts in class_descriptions.items()} if class_descriptions else None
        )
        self.class_descriptions_source = class_descriptions_source
        self.text_config = self._build_text_config(text_config, text_model_name_or_path)
        if description_max_length is None:
            description_max_length = getattr(self.text_config, "max_position_embeddings", None) or 512
        self.description_max_length = int(description_max_length)
        super().__init__(**kwargs)
        self._validate()

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """A saved config without `fusion_direction` was written before the field existed, when the only form was
        `"image_to_text"`: it loads as such, so its weights keep meaning what they meant. Likewise a config
        without `ode_method` loads with RK4, the default of its time."""
        if "fusion_direction" not in config_dict:
            config_dict = {**config_dict, "fusion_direction": "image_to_text"}
        if "ode_method" not in config_dict:  # written when RK4 was the default (configs are saved whole since)
            config_dict = {**config_dict, "ode_method": "rk4"}
        return super().from_dict(config_dict, **kwargs)

    @staticmethod
    def _build_text_config(text_config, text_model_name_or_path):
        if isinstance(text_config, PretrainedConfig):
            return text_config
        if text_config is None and text_model_name_or_path is not None:
            try:
                return AutoConfig.from_pretrained(text_model_name_or_path)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"text_model_name_or_path={text_model_name_or_path!r}: no text-encoder config could be read "
                    f"there ({error}). Give a folder written by `save_pretrained` (e.g. by train/pretrain_text_mlm.py)."
                ) from error
        text_config = dict(DEFAULT_TEXT_CONFIG if text_config is None else text_config)
        model_type = text_config.pop("model_type", "bert")
        if model_type == "bert":
            return BertConfig(**text_config)
        return AutoConfig.for_model(model_type, **text_config)

    @property
    def num_hidden_layers(self) -> int:
        return len(self.patch_sizes)

    @property
    def layer_patch_sizes(self) -> list[int]:
        """The patch size each layer actually uses (all `patch_sizes[0]` when `multi_scale=False`)."""
        return list(self.patch_sizes) if self.multi_scale else [self.patch_sizes[0]] * len(self.patch_sizes)

    @property
    def label_names(self) -> list[str]:
        return [self.id2label[i] for i in range(self.num_labels)]

    def descriptions_per_class(self) -> dict[str, list[str]]:
        """The texts the text branch encodes: `class_descriptions`, or each class's name when there are none."""
        if self.class_descriptions is None:
            display = category_display_name or str  # without emvision (remote code), the label names as they are
            return {name: [display(name)] for name in self.label_names}
        return {name: self.class_descriptions[name] for name in self.label_names}

    def _validate(self):
        def check_choice(field, value, choices):
            if value not in choices:
                raise ValueError(f"HNFConfig.{field}={value!r}; expected one of {list(choices)}")

        check_choice("image_encoder", self.image_encoder, IMAGE_ENCODERS)
        check_choice("fusion", self.fusion, FUSIONS)
        check_choice("fusion_direction", self.fusion_direction, FUSION_DIRECTIONS)
        check_choice("text_conditioning", self.text_conditioning, TEXT_CONDITIONINGS)
        check_choice("patch_embedding", self.patch_embedding, PATCH_EMBEDDINGS)
        if self.patch_embedding == "conv_stem":
            if min(self.conv_stem_channels, default=0) < 1:
                raise ValueError(f"HNFConfig.conv_stem_channels must be positive widths, got {self.conv_stem_channels}")
            for patch_size in self.layer_patch_sizes:
                if patch_size % 4:
                    raise ValueError(
                        f"HNFConfig.patch_sizes: {patch_size} is not a multiple of 4, the first stride of "
                        "patch_embedding='conv_stem'"
                    )
        check_choice("ode_method", self.ode_method, ODE_FIXED_STEP_METHODS + ODE_ADAPTIVE_METHODS)
        if not self.patch_sizes:
            raise ValueError("HNFConfig.patch_sizes is empty; give one patch size per layer, e.g. [16, 28, 32]")
        for patch_size in self.layer_patch_sizes:
            if patch_size <= 0 or self.image_size % patch_size:
                raise ValueError(
                    f"HNFConfig.patch_sizes: {patch_size} does not divide image_size={self.image_size}; "
                    "patches must tile the image exactly"
                )
        if len(self.num_neighbors) != len(self.patch_sizes):
            raise ValueError(
                f"HNFConfig.num_neighbors has {len(self.num_neighbors)} entries for {len(self.patch_sizes)} layers"
            )
        for patch_size, k in zip(self.layer_patch_sizes, self.num_neighbors):
            num_patches = (self.image_size // patch_size) ** 2
            if not 1 <= k < num_patches:
                raise ValueError(
                    f"HNFConfig.num_neighbors: k={k} for {num_patches} patches of {patch_size} px; need 1 <= k < {num_patches}"
                )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"HNFConfig: hidden_size={self.hidden_size} is not a multiple of num_attention_heads")
        if self.hidden_size % self.fusion_num_heads:
            raise ValueError(f"HNFConfig: hidden_size={self.hidden_size} is not a multiple of fusion_num_heads")
        if self.chebyshev_k < 1:
            raise ValueError(f"HNFConfig.chebyshev_k={self.chebyshev_k}; must be >= 1")
        if self.ode_steps < 1:
            raise ValueError(f"HNFConfig.ode_steps={self.ode_steps}; must be >= 1")
        max_positions = getattr(self.text_config, "max_position_embeddings", None)
        if max_positions is not None and self.description_max_length > max_positions:
            raise ValueError(
                f"HNFConfig.description_max_length={self.description_max_length} exceeds the text encoder's "
                f"max_position_embeddings={max_positions}"
            )
        if self.class_descriptions is not None:
            names = set(self.label_names)
            unknown = sorted(set(self.class_descriptions) - names)
            missing = sorted(name for name in names if not self.class_descriptions.get(name))
            if unknown:
                raise ValueError(f"HNFConfig.class_descriptions names unknown classes {unknown}; labels are {sorted(names)}")
            if missing:
                raise ValueError(f"HNFConfig.class_descriptions has no description for {missing}")


__all__ = ["HNFConfig"]
