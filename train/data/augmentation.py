"""Label-preserving augmentation of processed micrograph tensors, for training batches only.

The stored images are already cropped and resized (schema version 2), so augmentation runs on the
collated ``pixel_values`` (B, C, H, W) in [-1, 1], not on PIL images:

- the 8 symmetries of the square (a random flip times a random quarter turn): a micrograph's texture has
  no preferred orientation once the information bar is cut, and these maps move pixels exactly (no
  interpolation, no border);
- a small brightness/contrast jitter per image: detector gain and offset vary between acquisitions.

Random resized crops were measured too and cost accuracy (they change the apparent particle size,
which carries class information at a fixed magnification), so they are not offered. Validation and
test batches are never augmented: ``ImageCollator(augment=False)``, the default, is what evaluation uses.
"""

from __future__ import annotations

import torch

DEFAULT_JITTER = 0.15


def augment_micrographs(pixel_values: torch.Tensor, generator: torch.Generator | None = None, *,
                        jitter: float = DEFAULT_JITTER) -> torch.Tensor:
    """An augmented copy of ``pixel_values`` (B, C, H, W), H == W, values in [-1, 1]: one of the 8 dihedral
    maps per image, then contrast x (1 +- jitter) about the image's mean and brightness +- jitter, clamped."""
    if pixel_values.dim() != 4 or pixel_values.shape[-1] != pixel_values.shape[-2]:
        raise ValueError(f"augment_micrographs needs square (B, C, H, W) pixel values, got {tuple(pixel_values.shape)}")
    batch, device = pixel_values.shape[0], pixel_values.device
    flips = torch.randint(0, 2, (batch,), generator=generator).tolist()
    turns = torch.randint(0, 4, (batch,), generator=generator).tolist()
    # one copy: each image is written once, through a (view of a) flip and a quarter turn, into the output
    out = torch.empty_like(pixel_values, memory_format=torch.contiguous_format)
    for target, image, flip, turn in zip(out, pixel_values, flips, turns):
        image = image.flip(-1) if flip else image
        target.copy_(torch.rot90(image, turn, dims=(-2, -1)) if turn else image)
    if jitter:
        contrast = 1 + jitter * (2 * torch.rand(batch, 1, 1, 1, generator=generator) - 1)
        brightness = jitter * (2 * torch.rand(batch, 1, 1, 1, generator=generator) - 1)
        # (x - mean) * contrast + mean + brightness in one pass: x * contrast + (mean * (1 - contrast) + brightness);
        # a dihedral map moves pixels only, so the mean is the input image's
        contrast = contrast.to(device=device, dtype=out.dtype)
        mean = pixel_values.mean(dim=(1, 2, 3), keepdim=True)
        offset = mean * (1 - contrast) + brightness.to(device=device, dtype=out.dtype)
        out.mul_(contrast).add_(offset).clamp_(-1, 1)
    return out
