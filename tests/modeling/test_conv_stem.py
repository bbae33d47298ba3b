"""The convolutional stem (`patch_embedding="conv_stem"`) of both image encoders: same token grids, one stem pass
per forward, running statistics saved and used in evaluation, clear config errors, and ViT checkpoints keeping
their own linear patch embedding."""

import pytest
import torch
from transformers import AutoModel

from emvision.modeling import HNFForImageClassification, MVaEMaConfig, MVaEMaForQuestionAnswering
from emvision.modeling.conv_stem import MicrographConvStem, stem_stage_for
from emvision.modeling.modeling_hnf import HNFLayer
from tiny_models import tiny_hnf_config, tiny_mvaema_config


def stem_mvaema(**vision) -> MVaEMaForQuestionAnswering:
    config = tiny_mvaema_config()
    fields = {**config.vision_config.to_dict(), "patch_embedding": "conv_stem", "conv_stem_channels": [8, 16], **vision}
    fields.pop("model_type", None)
    return MVaEMaForQuestionAnswering(tiny_mvaema_config(vision_config=fields))


def test_each_patch_size_reads_the_deepest_stem_map_it_tiles():
    assert [stem_stage_for(patch, 3) for patch in (4, 8, 16, 28, 32)] == [0, 1, 2, 0, 2]
    with pytest.raises(ValueError, match="patch size 6 is not a multiple of 4"):
        stem_stage_for(6, 3)


def test_mvaema_stem_keeps_the_token_grid_and_trains():
    torch.manual_seed(0)
    model = stem_mvaema()
    embeddings = model.vision_model.embeddings
    assert isinstance(embeddings.conv_stem, MicrographConvStem) and embeddings.stem_stage == 1  # 8-px patches: stride-8 map
    pixels = torch.randn(3, 3, 32, 32)
    tokens = model.vision_model(pixels)
    assert tokens.shape == (3, 1 + 16, 24)  # [CLS] + 4x4 patches, as with linear patches
    tokens.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in embeddings.conv_stem.parameters())
    # He initialisation of the stem, not the 0.02 normal of the linear layers
    first = embeddings.conv_stem.stages[0][0].weight
    assert first.std().item() == pytest.approx((2 / (8 * 4 * 4)) ** 0.5, rel=0.25)


def test_hnf_runs_the_stem_once_per_forward_for_all_scales():
    torch.manual_seed(0)
    model = HNFForImageClassification(tiny_hnf_config(use_text_branch=False, patch_embedding="conv_stem"))
    stem = model.hnf.image_encoder.conv_stem
    layers = [m for m in model.modules() if isinstance(m, HNFLayer)]
    assert [layer.patch_embedding.stem_stage for layer in layers] == [0, 1, 2]  # 4, 8, 16 px patches
    assert [layer.patch_embedding.num_patches for layer in layers] == [64, 16, 4]
    calls = []
    stem.register_forward_hook(lambda *_: calls.append(1))
    output = model(pixel_values=torch.randn(3, 3, 32, 32), labels=torch.tensor([1, 2, 3]))
    output.loss.backward()
    assert len(calls) == 1 and output.logits.shape == (3, 10)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stem.parameters())
    vit = HNFForImageClassification(tiny_hnf_config(use_text_branch=False, image_encoder="vit", patch_embedding="conv_stem"))
    assert vit(pixel_values=torch.randn(2, 3, 32, 32)).logits.shape == (2, 10)


@pytest.mark.parametrize("family", ["mvaema", "hnf"])
def test_running_statistics_are_saved_and_evaluation_is_per_image(family, tmp_path):
    torch.manual_seed(0)
    model = stem_mvaema() if family == "mvaema" else HNFForImageClassification(
        tiny_hnf_config(use_text_branch=False, patch_embedding="conv_stem"))
    encode = (lambda m, x: m.vision_model(x)) if family == "mvaema" else (lambda m, x: m(pixel_values=x).logits)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # training-mode forwards move the batch-norm running statistics off their start
            encode(model, torch.randn(8, 3, 32, 32) * 0.5 + 0.3)
    running_mean = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean
    assert running_mean.abs().sum() > 0
    model.eval()
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        together = encode(model, pixels)
        alone = encode(model, pixels[:1])
    torch.testing.assert_close(alone, together[:1], atol=1e-5, rtol=1e-5)  # no dependence on the rest of the batch
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path) if family == "mvaema" else HNFForImageClassification.from_pretrained(tmp_path)
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(encode(reloaded, pixels), together)
    assert (tmp_path / "conv_stem.py").exists()  # copied with the remote code that imports it


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: MVaEMaConfig(vision_config={"patch_embedding": "conv"}), "patch_embedding must be one of"),
        (lambda: MVaEMaConfig(vision_config={"patch_embedding": "conv_stem", "image_size": 30, "patch_size": 6}),
         "patch_size 6 must be a multiple of 4"),
        (lambda: MVaEMaConfig(vision_config={"patch_embedding": "conv_stem", "conv_stem_channels": [8, 0]}), "positive widths"),
        (lambda: tiny_hnf_config(patch_embedding="convolutional"), "patch_embedding='convolutional'"),
        (lambda: tiny_hnf_config(patch_embedding="conv_stem", patch_sizes=[2, 8, 16]), "2 is not a multiple of 4"),
    ],
)
def test_config_rejects_bad_stem_settings(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_vit_checkpoint_keeps_its_linear_patch_embedding(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=48), add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    model = MVaEMaForQuestionAnswering.from_pretrained_components(
        vision_model_name_or_path=str(tmp_path / "vit"), config=MVaEMaConfig(vision_config={"patch_embedding": "conv_stem"}))
    assert model.config.vision_config.patch_embedding == "linear"
    assert model.vision_model.embeddings.conv_stem is None
