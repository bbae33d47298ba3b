"""Where a model looked: maps over the image, non-negative and summing to 1, for HNF and MVaEMa.

- HNF has no attention map to show (its sequence branch evaluates attention inside an ODE solver, several
  times per layer), so `explain_classification` uses gradient saliency: |gradient x input| of the class
  logit, pooled over the model's finest patches.
- MVaEMa's decoder reads the image through cross-attention. `explain_answer` generates the answer, runs
  the decoder once more over it with `output_attentions=True`, and averages the attention over image
  patches of the positions that produced the answer tokens, over heads and layers; the image [CLS] is
  dropped.

`map_onto_image` puts a map made on the model's input (224x224, information bar removed) back onto the
original micrograph; `overlay_heatmap` draws it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from emvision.processing.micrograph import load_micrograph, to_working_array

from .infobar import FrameInfo, read_frame_info


def _normalized(maps: torch.Tensor) -> torch.Tensor:
    """Each map of (B, H, W) divided by its sum (a uniform map where everything is zero)."""
    maps = maps.clamp_min(0)
    totals = maps.sum(dim=(-2, -1), keepdim=True)
    uniform = torch.full_like(maps, 1.0 / (maps.shape[-2] * maps.shape[-1]))
    return torch.where(totals > 0, maps / totals.clamp_min(torch.finfo(maps.dtype).tiny), uniform)


def _finest_patch_size(config: Any) -> int:
    sizes = getattr(config, "patch_sizes", None) or [getattr(config, "patch_size", 16)]
    return int(min(sizes))


def explain_classification(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    patch_size: int | None = None,
) -> torch.Tensor:
    """Gradient saliency of an image classifier: a (B, H, W) map per image of `pixel_values` (B, C, H, W).

    `target`: the class to explain, one for all images or one per image; default the predicted class.
    Each map is |d logit_target / d pixel x pixel| summed over the channels (gradient x input, with
    mid-grey, 0 after normalisation, as the reference: plain gradients saturate on the strong features a
    trained model relies on), averaged over `patch_size` patches (default: the model's finest) and spread
    back smoothly over the pixels; it sums to 1. The weights get no gradients; the model's mode is kept.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            inputs = pixel_values.detach().clone().requires_grad_(True)
            logits = model(pixel_values=inputs).logits
            if target is None:
                targets = logits.argmax(-1)
            else:
                targets = torch.as_tensor(target, device=logits.device).long().expand(logits.shape[0])
            score = logits.gather(1, targets[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, inputs)
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)
    saliency = (gradient * pixel_values).abs().sum(dim=1, keepdim=True).float()  # (B, 1, H, W)
    height, width = saliency.shape[-2:]
    patch = patch_size or _finest_patch_size(model.config)
    grid = F.adaptive_avg_pool2d(saliency, (max(1, height // patch), max(1, width // patch)))
    return _normalized(F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[:, 0])


@torch.no_grad()
def explain_answer(model, processor, image: Any, question: str, max_new_tokens: int = 64) -> tuple[str, np.ndarray]:
    """MVaEMa's answer to `question` about `image` and where it looked: a (H, W) map over the image as given.

    The map is the decoder's cross-attention over the image patches (the image [CLS] dropped), averaged
    over layers, heads and the positions that produced the answer tokens (the [SEP] that ends the question
    for the first one), upsampled from the patch grid onto the part of the image the model saw; rows of a
    removed information bar are zero. It sums to 1.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_micrograph(image)
    array = to_working_array(image)
    device = next(model.parameters()).device
    inputs = processor(images=array, text=question, return_tensors="pt").to(device)
    generated = model.generate(**inputs, max_new_tokens=max_new_tokens)
    answer = processor.decode(generated[0])

    prompt_length = inputs["input_ids"].shape[1]
    new_tokens = generated[0, prompt_length:].tolist()
    eos = model.config.text_config.eos_token_id
    num_answer = new_tokens.index(eos) if eos in new_tokens else len(new_tokens)
    sequence = generated[:, : prompt_length + max(num_answer - 1, 0)]
    outputs = model(
        pixel_values=inputs["pixel_values"],
        input_ids=sequence,
        attention_mask=torch.ones_like(sequence),
        output_attentions=True,
    )
    # (layers, heads, positions, [CLS] + patches (+ class token)) -> positions that predicted the answer tokens
    attention = torch.stack([layer[0] for layer in outputs.cross_attentions]).float()
    attention = attention[:, :, prompt_length - 1 : prompt_length - 1 + max(num_answer, 1)]
    vision = model.config.vision_config
    grid_height = vision.image_size // vision.patch_size
    patches = attention.mean(dim=(0, 1, 2))[1 : 1 + grid_height**2]
    grid = patches.reshape(grid_height, -1).cpu()
    frame = _frame(image, array, processor)
    return answer, map_onto_image(grid, frame)


def _frame(image: Any, array: np.ndarray, processor: Any) -> FrameInfo:
    image_processor = getattr(processor, "image_processor", processor)
    frame = read_frame_info(array, image)
    if not getattr(image_processor, "do_remove_info_bar", True):
        frame = FrameInfo(frame.width, frame.height, None, frame.pixel_size_nm, frame.scale_source)
    return frame


def map_onto_image(grid: torch.Tensor | np.ndarray, frame: FrameInfo) -> np.ndarray:
    """A map over the model's input (any (h, w) grid, e.g. 7x7 patches or 224x224 pixels) placed on the image:
    (frame.height, frame.width), stretched over the part above the information bar, zero on the bar, sum 1."""
    grid = torch.as_tensor(np.asarray(grid, dtype=np.float32))[None, None]
    left, top, right, bottom = frame.crop_box
    upsampled = F.interpolate(grid, size=(bottom - top, right - left), mode="bilinear", align_corners=False)[0, 0]
    full = torch.zeros(frame.height, frame.width)
    full[top:bottom, left:right] = upsampled
    return _normalized(full[None])[0].numpy()


def overlay_heatmap(image: Any, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "inferno") -> PIL.Image.Image:
    """The micrograph in grey with `heatmap` (its own (H, W)) in colour on top, scaled to its maximum."""
    from matplotlib import colormaps

    gray = to_working_array(image)
    if gray.ndim == 3:
        gray = gray.mean(axis=-1)
    gray = np.clip(gray, 0, 255).astype(np.float32) / 255.0
    if gray.shape != heatmap.shape:
        raise ValueError(f"heat-map of shape {heatmap.shape} does not match the image's {gray.shape}")
    peak = float(heatmap.max())
    scaled = heatmap / peak if peak > 0 else heatmap
    colour = colormaps[colormap](scaled)[..., :3]
    weight = alpha * np.sqrt(scaled)[..., None]  # faint where the model barely looked
    blended = (1 - weight) * gray[..., None] + weight * colour
    return PIL.Image.fromarray(np.clip(blended * 255 + 0.5, 0, 255).astype(np.uint8))
