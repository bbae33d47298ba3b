"""MVaEMa configuration: a vision sub-config, a text sub-config and the multimodal options.

The defaults are the paper's model: 224x224x3 micrographs cut into non-overlapping 32-pixel patches,
hidden size 64 for the patch and position embeddings of both modalities, and 4 attention heads of
16 dimensions in every self-, cross- and causal self-attention layer.

This file is copied next to the weights as remote code: it needs only `transformers`. The defaults of a new
config come from `emvision.vocabulary` when emvision is installed; a saved config carries its own values.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

PATCH_EMBEDDINGS = ("linear", "conv_stem")  # see MVaEMaVisionConfig.patch_embedding
DEFAULT_CONV_STEM_CHANNELS = (16, 32, 64, 64)  # strides 4, 8, 16, 32: the last one is the 32-pixel patch grid

try:  # emvision's vocabulary supplies the defaults of a new config (the 10 categories, the classification question)
    from emvision.vocabulary import BASICS_ANSWER_TEMPLATES, BASICS_QUESTION, CLASSIFICATION_QUESTION, SEM_CATEGORIES
except ImportError:  # loaded as Hub remote code without emvision: a saved config.json carries the config's values;
    # `classify` then needs its question and class texts passed
    CLASSIFICATION_QUESTION, SEM_CATEGORIES, BASICS_QUESTION, BASICS_ANSWER_TEMPLATES = None, (), None, None


class MVaEMaVisionConfig(PreTrainedConfig):
    r"""
    The image encoder: a ViT with a [CLS] token (pre-norm blocks, learned absolute position embeddings).

    Args:
        image_size (`int`, defaults to 224): side of the square input image, in pixels.
        num_channels (`int`, defaults to 3): input channels (grayscale micrographs are replicated to RGB).
        patch_size (`int`, defaults to 32): side of the non-overlapping square patches (7x7 = 49 patches).
        hidden_size (`int`, defaults to 64): width of the patch and position embeddings and of every block.
        num_hidden_layers (`int`, defaults to 4): ViT blocks. Not given in the paper; see `MVaEMaConfig`.
        num_attention_heads (`int`, defaults to 4): heads per self-attention (16 dimensions each).
        intermediate_size (`int`, defaults to 256): width of the feed-forward layer (4x hidden, as in ViT).
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation.
        layer_norm_eps (`float`, defaults to 1e-6).
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after attention and feed-forward outputs.
        attention_probs_dropout_prob (`float`, defaults to 0.0).
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal weight init.
        patch_embedding (`str`, defaults to `"linear"`): how patches become tokens. `"linear"` (the paper): one
            linear map of each non-overlapping patch's pixels. `"conv_stem"`: a small convolutional stem
            (`conv_stem.MicrographConvStem`: 4x4 stride-4, then 3x3 stride-2 convolutions with batch norm) reads the
            image and each patch token is a strided projection of its deepest map that fits the patch size; same
            token grid. Learns the classes much faster from scratch (the fast training recipe uses it).
        conv_stem_channels (`list[int]`, defaults to `[16, 32, 64, 64]`): the stem's widths, one stage each
            (strides 4, 8, 16, 32); only with `patch_embedding="conv_stem"`.
    """

    model_type = "mvaema_vision_model"
    base_config_key = "vision_config"

    def __init__(
        self,
        image_size: int = 224,
        num_channels: int = 3,
        patch_size: int = 32,
        hidden_size: int = 64,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 256,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        patch_embedding: str = "linear",
        conv_stem_channels: list[int] | None = None,
        **kwargs,
    ):
        self.image_size = image_size
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.patch_embedding = patch_embedding
        self.conv_stem_channels = [int(width) for width in (conv_stem_channels or DEFAULT_CONV_STEM_CHANNELS)]
        super().__init__(**kwargs)
        _check_heads("vision_config", hidden_size, num_attention_heads)
        if image_size % patch_size:
            raise ValueError(
                f"vision_config.image_size ({image_size}) must be a multiple of vision_config.patch_size ({patch_size})"
            )
        _check_patch_embedding("vision_config", patch_embedding, self.conv_stem_channels, [patch_size])

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class MVaEMaTextConfig(PreTrainedConfig):
    r"""
    The text side: one stack of BERT-like post-norm blocks used three ways.

    - text encoder: bidirectional self-attention + feed-forward, input `[CLS] text [SEP]`;
    - image-grounded text encoder: the same blocks plus cross-attention to the image tokens, input
      `[ENC] text [SEP]`; the `[ENC]` output feeds the image-text matching head;
    - image-grounded text decoder: causal self-attention (its own weights) + the same cross-attention and
      feed-forward layers, input `[DEC] question [SEP] answer [EOS]`; the LM head is tied to the embeddings.

    Args:
        vocab_size (`int`, defaults to 2048): size of the default domain WordPiece vocabulary.
        hidden_size (`int`, defaults to 64), num_hidden_layers (`int`, defaults to 4),
        num_attention_heads (`int`, defaults to 4), intermediate_size (`int`, defaults to 256),
        hidden_act (`str`, defaults to `"gelu"`): as in BERT.
        max_position_embeddings (`int`, defaults to 512): longest decoder sequence (prompt + answer).
        layer_norm_eps (`float`, defaults to 1e-12): BERT's value, so BERT checkpoints load unchanged.
        hidden_dropout_prob (`float`, defaults to 0.0), attention_probs_dropout_prob (`float`, defaults to 0.0).
        initializer_range (`float`, defaults to 0.02).
        pad_token_id, cls_token_id, sep_token_id, enc_token_id, bos_token_id ([DEC]), eos_token_id ([EOS]):
            ids of the special tokens; the defaults are those of the default tokenizer.
    """

    model_type = "mvaema_text_model"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size: int = 2048,
        hidden_size: int = 64,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 256,
        hidden_act: str = "gelu",
        max_position_embeddings: int = 512,
        layer_norm_eps: float = 1e-12,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        cls_token_id: int = 2,
        sep_token_id: int = 3,
        enc_token_id: int = 5,
        bos_token_id: int = 6,
        eos_token_id: int = 7,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.pad_token_id = pad_token_id
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.enc_token_id = enc_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        super().__init__(**kwargs)
        _check_heads("text_config", hidden_size, num_attention_heads)
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "enc_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < vocab_size:
                raise ValueError(f"text_config.{name} must be an id in [0, vocab_size={vocab_size}), got {value!r}")


class MVaEMaConfig(PreTrainedConfig):
    r"""
    Configuration of [`MVaEMaForQuestionAnswering`] (model type `"mvaema"`).

    Choices the paper leaves open, and why:

    - **Depths: 4 ViT blocks and 4 text blocks.** At width 64 every block already attends over the whole
      image (49 patches + [CLS]) and the whole text, so depth buys refinement rather than receptive field;
      4+4 keeps the paper-size model near one million parameters for about 21k micrographs x 10 questions,
      and keeps a batch-48 training step on a 2-core CPU under a second, so the paper's 50 epochs with
      early stopping stay affordable without a GPU.
    - **ITC temperature: learnable, initialised at 0.07 and clamped to [0.001, 0.5]**, BLIP's values (which
      follow CLIP/ALBEF): 0.07 gives a sharp enough softmax over a batch of 48 from the first step, and the
      clamp stops the learned value from collapsing or flattening the similarities.
    - **ITC/ITM text is the answer alone** (`[CLS] answer [SEP]`, at most `itc_max_length` tokens, set by the
      processor). The ten questions are the same for every image and carry no image-specific content;
      the answer is the part that describes the micrograph, so it is what should align with the image.
    - **ITM negatives**: one hard negative text per image and one hard negative image per text, sampled in
      proportion to the ITC softmax similarity of the local batch, with every pair that shares the positive's
      image (the positive itself, or rows with the same `image_ids`) excluded. Without ITC they are sampled
      uniformly among the same candidates.

    Ablations of the paper (its Tables 5-6), each removing the named part and its parameters:

    - `use_itc=False`: no contrastive loss, no projections, no temperature.
    - `use_itm=False`: no matching loss, no ITM head (the grounded encoder pass is skipped).
    - `use_self_attention=False`: the text encoder and the image-grounded text encoder lose their
      bidirectional self-attention (each text token only sees itself, plus the image through cross-attention);
      the ViT and the decoder's causal self-attention are untouched.
    - `use_cross_attention=False`: no cross-attention anywhere; the grounded encoder and the decoder no longer
      see the image (only ITC still uses it).
    - `use_causal_self_attention=False`: the decoder loses its causal self-attention; each position predicts
      the next token from its own token, its position and the image.

    Args:
        vision_config (`dict` or `MVaEMaVisionConfig`, *optional*): image encoder.
        text_config (`dict` or `MVaEMaTextConfig`, *optional*): text encoder / grounded encoder / decoder.
        projection_dim (`int`, defaults to 64): width of the ITC embedding space.
        itc_temperature (`float`, defaults to 0.07): initial ITC temperature (learnable).
        itc_temperature_min, itc_temperature_max (`float`, defaults to 0.001 and 0.5): clamp of the temperature.
        itc_gather_distributed (`bool`, defaults to `True`): under `torch.distributed`, ITC negatives come from
            the global batch (features of all processes are gathered; gradients flow to the local part).
        use_itc, use_itm, use_self_attention, use_cross_attention, use_causal_self_attention (`bool`): ablations.
        itc_loss_weight, itm_loss_weight, lm_loss_weight (`float`, default 1.0): `loss` is their weighted sum.
        label_smoothing (`float`, defaults to 0.0): label smoothing of the LM cross-entropy.
        image_label_loss_weight (`float`, defaults to 0.0): weight of an auxiliary cross-entropy of a linear head
            on the image encoder's [CLS] against the training image's class (`image_labels` in `forward`). 0 is the
            paper's model (no head, no extra loss). Not part of the paper: at CPU budgets the ITC/LM signal alone
            does not teach the from-scratch ViT to tell the classes apart. It is supervised training on the
            training labels; nothing reads a label at prediction time.
        image_label_token (`bool`, defaults to `False`): append to the image tokens that the grounded encoder and
            the decoder cross-attend to one more token: the class head's predicted distribution (detached) times a
            learned embedding per class, so that the text side reads the recognised category from one clean token
            (tag-guided generation, as in Tag2Text) instead of having to find it among the patch tokens. Needs
            `image_label_loss_weight > 0`. The prediction is the model's own, never the label: label-free. Not part
            of the paper.
        image_label_condition (`bool`, defaults to `False`): also add the class token, through a linear map to the
            text width, to every input embedding of the decoder (not the encoders), so that each decoding step
            starts from the recognised category instead of having to attend to it. Needs `image_label_token`.
        classification_question (`str`): the question `classify` asks (no caption: label-free).
        id2label (`dict[int, str]`, *optional*): the candidate classes of `classify`; defaults to the ten SEM
            categories. Each candidate's answer text is its name with underscores as spaces, lowercased.
        tie_word_embeddings (`bool`, defaults to `True`): tie the LM head to the word embeddings.
        initializer_range (`float`, defaults to 0.02).
    """

    model_type = "mvaema"
    sub_configs_defaults = {"vision_config": MVaEMaVisionConfig, "text_config": MVaEMaTextConfig}

    def __init__(
        self,
        vision_config: dict | MVaEMaVisionConfig | None = None,
        text_config: dict | MVaEMaTextConfig | None = None,
        projection_dim: int = 64,
        itc_temperature: float = 0.07,
        itc_temperature_min: float = 0.001,
        itc_temperature_max: float = 0.5,
        itc_gather_distributed: bool = True,
        use_itc: bool = True,
        use_itm: bool = True,
        use_self_attention: bool = True,
        use_cross_attention: bool = True,
        use_causal_self_attention: bool = True,
        itc_loss_weight: float = 1.0,
        itm_loss_weight: float = 1.0,
        lm_loss_weight: float = 1.0,
        label_smoothing: float = 0.0,
        image_label_loss_weight: float = 0.0,
        image_label_token: bool = False,
        image_label_condition: bool = False,
        classification_question: str = CLASSIFICATION_QUESTION,
        tie_word_embeddings: bool = True,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.vision_config = _sub_config(vision_config, MVaEMaVisionConfig, "vision_config")
        self.text_config = _sub_config(text_config, MVaEMaTextConfig, "text_config")
        self.projection_dim = projection_dim
        self.itc_temperature = itc_temperature
        self.itc_temperature_min = itc_temperature_min
        self.itc_temperature_max = itc_temperature_max
        self.itc_gather_distributed = itc_gather_distributed
        self.use_itc = use_itc
        self.use_itm = use_itm
        self.use_self_attention = use_self_attention
        self.use_cross_attention = use_cross_attention
        self.use_causal_self_attention = use_causal_self_attention
        self.itc_loss_weight = itc_loss_weight
        self.itm_loss_weight = itm_loss_weight
        self.lm_loss_weight = lm_loss_weight
        self.label_smoothing = label_smoothing
        self.image_label_loss_weight = image_label_loss_weight
        self.image_label_token = image_label_token
        self.image_label_condition = image_label_condition
        self.classification_question = classification_question
        self.tie_word_embeddings = tie_word_embeddings
        self.initializer_range = initializer_range
        if kwargs.get("id2label") is None and kwargs.get("num_labels") is None and SEM_CATEGORIES:
            kwargs["id2label"] = dict(enumerate(SEM_CATEGORIES))
        super().__init__(**kwargs)
        if self.label2id is None or set(self.label2id) != set(self.id2label.values()):
            self.label2id = {name: index for index, name in self.id2label.items()}
        if not 0 < itc_temperature_min <= itc_temperature <= itc_temperature_max:
            raise ValueError(
                "need 0 < itc_temperature_min <= itc_temperature <= itc_temperature_max, got "
                f"{itc_temperature_min}, {itc_temperature}, {itc_temperature_max}"
            )
        if image_label_loss_weight < 0:
            raise ValueError(f"image_label_loss_weight must be >= 0, got {image_label_loss_weight}")
        if image_label_token and not image_label_loss_weight > 0:
            raise ValueError("image_label_token reads the class head's prediction: it needs image_label_loss_weight > 0")
        if image_label_condition and not image_label_token:
            raise ValueError("image_label_condition adds the class token to the decoder's inputs: it needs image_label_token")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")


def _sub_config(value, config_class, field: str):
    if value is None:
        return config_class()
    if isinstance(value, dict):
        value = {key: item for key, item in value.items() if key != "model_type"}
        return config_class(**value)
    if isinstance(value, config_class):
        return value
    if isinstance(value, PreTrainedConfig):  # e.g. the same class loaded as remote code
        return config_class(**{key: item for key, item in value.to_dict().items() if key != "model_type"})
    raise TypeError(f"{field} must be a dict or a {config_class.__name__}, got {type(value).__name__}")


def _check_patch_embedding(field: str, patch_embedding: str, channels: list[int], patch_sizes: list[int]) -> None:
    if patch_embedding not in PATCH_EMBEDDINGS:
        raise ValueError(f"{field}.patch_embedding must be one of {PATCH_EMBEDDINGS}, got {patch_embedding!r}")
    if patch_embedding == "conv_stem":
        if not channels or min(channels) < 1:
            raise ValueError(f"{field}.conv_stem_channels must be positive widths, got {channels}")
        for patch_size in patch_sizes:
            if patch_size % 4:
                raise ValueError(
                    f"{field}.patch_size {patch_size} must be a multiple of 4 with patch_embedding='conv_stem' "
                    "(the stem's first stride)"
                )


def _check_heads(field: str, hidden_size: int, num_attention_heads: int) -> None:
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"{field}.hidden_size ({hidden_size}) must be a multiple of {field}.num_attention_heads "
            f"({num_attention_heads})"
        )


__all__ = ["MVaEMaConfig", "MVaEMaTextConfig", "MVaEMaVisionConfig"]
