"""LoRA on a model with a convolutional stem: the stem's batch-norm running statistics stay the base model's, so
base + adapter reloads as the model that was trained and evaluated."""

import argparse

import torch

from emvision.modeling import MVaEMaForQuestionAnswering
from emvision.train.publishing.lora import apply_lora
from tiny_models import tiny_mvaema_config


def test_lora_keeps_the_stems_running_statistics(tmp_path):
    from peft import PeftModel

    torch.manual_seed(0)
    config = tiny_mvaema_config()
    vision = {**config.vision_config.to_dict(), "patch_embedding": "conv_stem", "conv_stem_channels": [8, 16]}
    vision.pop("model_type")
    base = MVaEMaForQuestionAnswering(tiny_mvaema_config(vision_config=vision))
    base.save_pretrained(tmp_path / "base")
    args = argparse.Namespace(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=None, lora_modules_to_save=None)
    messages = []
    model = apply_lora(base, args, log=messages.append)
    assert any("2 frozen batch-norm layers keep the base model's running statistics" in m for m in messages)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [norm.running_mean.clone() for norm in norms]
    model.train()
    with torch.no_grad():
        model.base_model.model.vision_model(torch.randn(8, 3, 32, 32) * 0.5 + 0.4)  # a training-mode forward
    assert all(torch.equal(norm.running_mean, mean) for norm, mean in zip(norms, before))
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(MVaEMaForQuestionAnswering.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
    model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded.base_model.model.vision_model(pixels), model.base_model.model.vision_model(pixels))
