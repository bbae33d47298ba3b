"""HNF's cross-modal attention in both directions, the ablation switches, old configs, whole descriptions."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from tiny_models import tiny_hnf_config

from emvision.modeling import HNFConfig, HNFForImageClassification


def _images(config, batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(seed))


def test_bidirectional_fusion_is_the_default_and_its_text_side_reads_the_image():
    config = tiny_hnf_config()
    assert config.fusion_direction == "bidirectional"
    torch.manual_seed(0)
    model = HNFForImageClassification(config)
    fusion = model.hnf.fusion
    assert fusion.text_to_image is not None
    text = model.hnf.text_encoder()
    num_patches = (config.image_size // config.patch_sizes[-1]) ** 2
    patches = torch.randn(3, num_patches, config.hidden_size)
    conditioned = fusion.text_to_image(text, patches)
    assert conditioned.shape == (3, text.shape[0], config.hidden_size)
    assert not torch.allclose(conditioned[0], conditioned[1]), "two images must see different description states"

    output = model(pixel_values=_images(config), labels=torch.tensor([0, 1, 2]))
    output.loss.backward()
    for name in ("text_to_image.query.weight", "text_to_image.key_value.weight", "query.weight", "key_value.weight"):
        gradient = dict(fusion.named_parameters())[name].grad
        assert gradient is not None and gradient.abs().sum() > 0, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.hnf.text_encoder.language_model.parameters())


def test_one_way_switch_has_no_text_to_image_weights():
    model = HNFForImageClassification(tiny_hnf_config(fusion_direction="image_to_text"))
    assert model.hnf.fusion.text_to_image is None
    assert not any("text_to_image" in name for name in model.state_dict())
    assert model(pixel_values=_images(model.config)).logits.shape == (3, 10)


def test_a_saved_config_without_the_field_loads_one_way_with_the_same_weights_and_outputs(tmp_path):
    torch.manual_seed(0)
    old = HNFForImageClassification(tiny_hnf_config(fusion_direction="image_to_text")).eval()
    old.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["fusion_direction"]  # what a folder written before the field existed holds
    (tmp_path / "config.json").write_text(json.dumps(saved))

    loaded, info = HNFForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    loaded.eval()
    assert loaded.config.fusion_direction == "image_to_text"
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert set(loaded.state_dict()) == set(load_file(tmp_path / "model.safetensors"))
    images = _images(old.config)
    torch.testing.assert_close(loaded(pixel_values=images).logits, old(pixel_values=images).logits)
    assert HNFConfig().fusion_direction == "bidirectional"  # a new config takes the paper's form


def test_ablation_switches_remove_their_branch_and_still_train():
    for changes, absent in (({"use_ode": False}, "ode"), ({"use_graph_branch": False}, "graph_branch")):
        torch.manual_seed(0)
        model = HNFForImageClassification(tiny_hnf_config(**changes))
        names = [name for name, _ in model.named_parameters()]
        assert not any(f".{absent}" in name or (absent == "ode" and "vector_field" in name) for name in names), changes
        output = model(pixel_values=_images(model.config), labels=torch.tensor([0, 1, 2]))
        output.loss.backward()
        unused = {"virtual_token"} if changes == {"use_graph_branch": False} else set()  # the graph's virtual node
        assert all(p.grad is not None for n, p in model.hnf.image_encoder.named_parameters() if n not in unused), changes
        if changes == {"use_graph_branch": False}:
            assert torch.equal(output.gate_weights[0], torch.tensor([[1.0, 0.0]] * 3))


def test_the_text_branch_sees_the_whole_description():
    long_text = "Porous sponge-like foam with dark rounded pores. " * 20  # 1,000 bytes: beyond the old 256-byte cut
    descriptions = {name: [long_text] for name in HNFConfig().label_names}
    config = HNFConfig(class_descriptions=descriptions, hidden_size=32, num_attention_heads=2, intermediate_size=64, fusion_num_heads=2)
    assert config.description_max_length == 1024
    model = HNFForImageClassification(config)
    kept = model.hnf.text_encoder.description_attention_mask.sum(dim=1)
    assert kept.tolist() == [len(long_text.encode()) + 1] * 10  # every byte and the end-of-sequence token


def test_a_saved_config_without_ode_method_loads_with_rk4_the_default_of_its_time(tmp_path):
    torch.manual_seed(0)
    old = HNFForImageClassification(tiny_hnf_config(ode_method="rk4")).eval()
    old.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["ode_method"]  # what a folder written while RK4 was the default may hold
    (tmp_path / "config.json").write_text(json.dumps(saved))

    loaded = HNFForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.ode_method == "rk4"
    images = _images(old.config)
    torch.testing.assert_close(loaded(pixel_values=images).logits, old(pixel_values=images).logits)
    assert HNFConfig().ode_method == "euler"  # a new config takes the solver chosen at equal budget
    fresh = tmp_path / "new"
    HNFForImageClassification(tiny_hnf_config()).save_pretrained(fresh)
    assert json.loads((fresh / "config.json").read_text())["ode_method"] == "euler", "saved configs name their solver"
