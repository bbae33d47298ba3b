"""LoRA adapters (PEFT) for enterprise fine-tuning of a released emvision model on in-house data.

``--lora`` wraps the model before training so only the adapters (and any new heads listed in
``modules_to_save``) train; the output folder then holds the adapter alone (``adapter_model.safetensors``
+ ``adapter_config.json``), loadable on top of the base with PEFT. ``--merge_lora`` also writes a
merged standalone model to ``<output_dir>/merged``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from emvision.train.loop.arguments import positive_int

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel


def add_lora_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LoRA (PEFT)")
    group.add_argument("--lora", action="store_true", help="train LoRA adapters instead of all weights")
    group.add_argument("--lora_r", type=positive_int, default=8, help="adapter rank")
    group.add_argument("--lora_alpha", type=positive_int, default=16, help="adapter scaling: updates are multiplied by alpha / r")
    group.add_argument("--lora_dropout", type=float, default=0.05, help="dropout on the adapters' input")
    group.add_argument(
        "--lora_target_modules",
        type=str,
        default=None,
        help="comma-separated module names (default: the model's attention and MLP projections)",
    )
    group.add_argument("--lora_modules_to_save", type=str, default=None, help="comma-separated modules trained in full (default: the model's task heads)")
    group.add_argument("--merge_lora", action="store_true", help="also write a merged standalone model to <output_dir>/merged")


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def lora_config_for(model, args) -> LoraConfig:
    """The model class names its defaults: ``_lora_target_modules`` and ``_lora_modules_to_save``."""
    from peft import LoraConfig

    targets = _split(args.lora_target_modules) or list(getattr(model, "_lora_target_modules", []))
    if not targets:
        raise ValueError(f"{type(model).__name__} names no default LoRA target modules: pass --lora_target_modules")
    modules_to_save = _split(args.lora_modules_to_save)
    if modules_to_save is None:
        # the heads this model has (an MVaEMa trained without ITM has no itm_head)
        modules_to_save = [name for name in getattr(model, "_lora_modules_to_save", []) if getattr(model, name, None) is not None] or None
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets, modules_to_save=modules_to_save)


def freeze_batch_norm_statistics(model) -> int:
    """Batch-norm layers whose weights LoRA leaves frozen (a convolutional stem's) keep their running statistics:
    the adapter folder holds no buffers of the base, so statistics moved by training would be lost on reload and
    the reloaded model would not be the one evaluated. Returns how many layers were frozen."""
    import torch

    frozen = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            module.momentum = 0.0  # running = (1 - momentum) * running + momentum * batch: unchanged
            frozen += 1
    return frozen


def apply_lora(model, args, log=print) -> PeftModel:
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config_for(model, args))
    if frozen := freeze_batch_norm_statistics(peft_model):
        log(f"LoRA: {frozen} frozen batch-norm layers keep the base model's running statistics")
    trainable, total = peft_model.get_nb_trainable_parameters()
    log(f"LoRA: trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")
    return peft_model
