"""Small model configurations and text stand-ins shared by the model tests (importable: tests/ is on pythonpath)."""

from __future__ import annotations

from emvision.modeling import HNFConfig, MVaEMaConfig

# HAND-WRITTEN STAND-INS for the LLM-written class descriptions (short, written for these tests; not model output).
HAND_WRITTEN_DESCRIPTIONS = {
    "Biological": ["Cells and bacteria with soft, irregular membranes and thin protrusions."],
    "Fibres": ["Long curved filaments crossing each other in entangled mats."],
    "Films_Coated_Surface": ["A continuous layer with grains, nodules and polygonal cracks."],
    "MEMS_devices_and_electrodes": ["Lithographic structures: straight edges, pads, combs and cantilevers."],
    "Nanowires": ["Thin straight wires, dense forests or random networks of rods."],
    "Particles": ["Separate round or faceted particles of similar size on a substrate."],
    "Patterned_surface": ["Regular periodic arrays of holes, pillars or lines."],
    "Porous_Sponge": ["A continuous skeleton full of dark rounded pores.", "An open sponge-like foam."],
    "Powder": ["Agglomerated grains of many sizes piled in clumps."],
    "Tips": ["A single sharp conical probe tip narrowing to an apex."],
}
ONE_DESCRIPTION_PER_CLASS = {name: texts[:1] for name, texts in HAND_WRITTEN_DESCRIPTIONS.items()}

# HNF's text encoder at a toy size (byte-level vocabulary of 384)
TINY_TEXT_CONFIG = dict(
    vocab_size=384, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=128
)
MVAEMA_TINY_VOCAB = 64


def tiny_hnf_config(**changes) -> HNFConfig:
    """A 32-px HNF (4, 8 and 16 px patches: 64, 16 and 4 patches) with every branch, for fast architecture tests."""
    settings = dict(
        image_size=32,
        patch_sizes=[4, 8, 16],
        num_neighbors=[6, 4, 2],
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        fusion_num_heads=2,
        text_config=TINY_TEXT_CONFIG,
        description_max_length=96,
        class_descriptions=HAND_WRITTEN_DESCRIPTIONS,
        class_descriptions_source="human (hand-written test stand-ins)",
    )
    settings.update(changes)
    return HNFConfig(**settings)


def narrow_hnf_config(**changes) -> HNFConfig:
    """The default geometry (224 px; 16, 28, 32 px patches) at a small width."""
    settings = dict(
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        fusion_num_heads=2,
        text_config=TINY_TEXT_CONFIG,
        description_max_length=96,
        class_descriptions=ONE_DESCRIPTION_PER_CLASS,
        class_descriptions_source="human (hand-written test stand-ins)",
    )
    settings.update(changes)
    return HNFConfig(**settings)


def tiny_mvaema_config(**overrides) -> MVaEMaConfig:
    """A 32-px MVaEMa (8 px patches) with a 64-token vocabulary."""
    options = dict(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48),
        text_config=dict(vocab_size=MVAEMA_TINY_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=48),
        projection_dim=16,
    )
    options.update(overrides)
    return MVaEMaConfig(**options)


def one_layer_mvaema_config(vocab_size: int, image_size: int = 64) -> MVaEMaConfig:
    """The paper's widths with one vision and one text block, on `image_size` px images (two 32-px patches a side)."""
    config = MVaEMaConfig()
    config.vision_config.image_size, config.vision_config.patch_size = image_size, 32
    config.vision_config.num_hidden_layers = config.text_config.num_hidden_layers = 1
    config.text_config.vocab_size = vocab_size
    return config
