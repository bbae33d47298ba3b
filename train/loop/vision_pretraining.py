"""Stage 1 of the fast MVaEMa recipe: supervised pre-training of the model's own image encoder on the training
images' class labels, before the instruction tuning (``train/vqa.py --vision_pretrain_steps``).

Why: trained from scratch at CPU budgets, MVaEMa is limited by what its small ViT sees, not by its language;
the image-text losses teach the encoder the classes slowly. A step of the image encoder and its class head
alone costs a fraction of a full ITC + ITM + LM step (no text encoder, no decoder, no hard-negative pass), so
a few hundred such steps on augmented training images put class information into the image [CLS] cheaply;
the full training then starts from it (and keeps the class loss as an auxiliary term). This is supervised
training on the training folds' labels; nothing reads a label at evaluation or prediction time.

Every process runs the same steps from the same seed on the same data, so the processes of a distributed
run start stage 2 with identical weights without communicating.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from emvision.train.data.augmentation import augment_micrographs
from emvision.train.data.collators import ImageCollator

from .reproducibility import seed_everything


def pretrain_image_encoder(model, train_images, image_processor, *, steps: int, batch_size: int, learning_rate: float,
                           weight_decay: float, seed: int, device, log=print) -> dict:
    """``steps`` AdamW steps (10% linear warm-up, cosine decay) of ``model.vision_model`` + ``model.image_label_head``
    on augmented ``train_images`` (rows of the ``images`` subset); returns the last loss and the CPU-seconds spent."""
    if model.image_label_head is None:
        raise ValueError("vision pre-training trains the image-label head: it needs image_label_loss_weight > 0")
    if len(train_images) == 0:
        raise ValueError("vision pre-training needs training images")
    modules = (model.vision_model, model.image_label_head)
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
    ], lr=learning_rate)
    warmup = max(1, steps // 10)
    collate = ImageCollator(image_processor)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    was_training = model.training
    model.train()
    started, loss = time.process_time(), float("nan")
    for step in range(steps):
        factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * factor
        if len(order) < batch_size:  # a fresh permutation of the training images when the last one runs out
            order = torch.randperm(len(train_images), generator=generator).tolist() * math.ceil(batch_size / len(train_images))
        chosen, order = order[:batch_size], order[batch_size:]
        batch = collate([train_images[index] for index in chosen])
        seed_everything(seed, step)
        pixel_values = augment_micrographs(batch["pixel_values"]).to(device)
        logits = model.image_label_head(model.vision_model(pixel_values)[:, 0])
        loss_value = F.cross_entropy(logits.float(), batch["labels"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        loss = loss_value.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"vision pre-training step {step + 1}/{steps}: class loss {loss:.4f}")
    model.train(was_training)
    return {"steps": steps, "final_loss": loss, "cpu_seconds": round(time.process_time() - started, 1)}
