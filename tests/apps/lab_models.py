"""Models the lab-tool tests build (tests/apps is on sys.path for its own test modules)."""

from emvision.modeling import MVaEMaConfig, MVaEMaForQuestionAnswering


def tiny_mvaema(image_size: int = 32, patch_size: int = 8, vision_layers: int = 1, text_layers: int = 1) -> MVaEMaForQuestionAnswering:
    """A small MVaEMa over the default tokenizer's vocabulary."""
    config = MVaEMaConfig(
        vision_config=dict(image_size=image_size, patch_size=patch_size, hidden_size=32, num_hidden_layers=vision_layers,
                           num_attention_heads=2, intermediate_size=64),
        text_config=dict(hidden_size=32, num_hidden_layers=text_layers, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=160),
        projection_dim=16,
    )
    return MVaEMaForQuestionAnswering(config)
