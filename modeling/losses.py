"""MVaEMa's losses as pure functions: image-text contrast (ITC), hard negatives, matching (ITM), LM.

`gather_features` follows open_clip's `loss.py`: under `torch.distributed` every process all-gathers the
features of all others, then puts its own tensor back in its slot, so the contrastive loss sees the global
batch as negatives while gradients flow through the local features only (each process back-propagates
its own part; data-parallel gradient averaging combines them, see `contrastive_loss`).

Copied next to the weights as remote code: imports only torch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_features(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather `(B_local, ...)` rows from every process into `(B_global, ...)`.

    Returns the gathered tensor and the row offset of this process's own rows in it. Those rows are
    `features` itself (autograd graph kept); the other processes' rows carry no gradient. Processes may hold
    different batch sizes (e.g. the last batch of an epoch). With no process group, or a single process,
    returns `(features, 0)`.
    """
    world_size, rank = _world()
    if world_size == 1:
        return features, 0
    local_size = torch.tensor([features.shape[0]], device=features.device)
    sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    dist.all_gather(sizes, local_size)
    sizes = [int(size.item()) for size in sizes]
    padded = features.new_zeros((max(sizes), *features.shape[1:]))
    padded[: features.shape[0]] = features.detach()
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    pieces = [chunk[:size] for chunk, size in zip(gathered, sizes)]
    pieces[rank] = features
    return torch.cat(pieces, dim=0), sum(sizes[:rank])


class ContrastiveOutput(NamedTuple):
    loss: torch.Tensor
    logits_per_image: torch.Tensor  # (N, N) over the global batch: images (rows) against texts, / temperature
    logits_per_text: torch.Tensor  # (N, N): its transpose
    positive_mask: torch.Tensor  # (N, N) bool: pairs that show the same image
    offset: int  # row of this process's first pair in the global batch


def _scale_gradient(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """Same value; the gradient flowing back through it is multiplied by `factor`."""
    return tensor * factor - tensor.detach() * (factor - 1)


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    temperature: torch.Tensor | float,
    image_ids: torch.Tensor | None = None,
    gather: bool = True,
) -> ContrastiveOutput:
    """Symmetric InfoNCE between L2-normalised image and text features of matching rows.

    `logits = image_features @ text_features.T / temperature`; the loss is the mean of the image-to-text
    and the text-to-image cross-entropies. Row `i` is the pair (image i, text i). `image_ids` (optional,
    `(B,)` integers) marks rows that show the same image: all of them count as positives, the target mass
    spread evenly over them (BLIP's retrieval targets).

    With `gather=True` under `torch.distributed` (world size W), every process computes the loss of the
    global batch from gathered features, in which only its own rows carry gradient. That gradient is
    scaled by W, so that data-parallel averaging reproduces exactly the gradient a single process would
    get on the global batch; the loss value and the temperature's gradient are the global ones already.
    """
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image and text features differ in shape: {tuple(image_features.shape)} vs {tuple(text_features.shape)}"
        )
    world_size = _world()[0] if gather else 1
    offset = 0
    if world_size > 1:
        all_image_features, offset = gather_features(_scale_gradient(image_features, world_size))
        all_text_features, _ = gather_features(_scale_gradient(text_features, world_size))
    else:
        all_image_features, all_text_features = image_features, text_features
    if image_ids is None:
        all_ids = torch.arange(all_image_features.shape[0], device=image_features.device)
    else:
        all_ids = image_ids.to(image_features.device)
        if world_size > 1:
            all_ids = gather_features(all_ids)[0]

    logits_per_image = all_image_features @ all_text_features.t() / temperature
    logits_per_text = logits_per_image.t()
    positive_mask = all_ids[:, None] == all_ids[None, :]
    targets = positive_mask.to(logits_per_image.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)  # symmetric, so the same for both directions
    loss_i2t = -(F.log_softmax(logits_per_image, dim=1) * targets).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(logits_per_text, dim=1) * targets).sum(dim=1).mean()
    return ContrastiveOutput((loss_i2t + loss_t2i) / 2, logits_per_image, logits_per_text, positive_mask, offset)


@torch.no_grad()
def sample_hard_negatives(
    similarity: torch.Tensor, positive_mask: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One negative column per row, drawn with probability proportional to `softmax(similarity)`.

    Columns where `positive_mask` is True (the positive itself, or anything sharing its image) get weight
    zero and can never be drawn. A small floor (BLIP's 1e-4) keeps every true negative reachable even when
    the softmax underflows. Rows without any negative get -1.
    """
    weights = F.softmax(similarity.float(), dim=1) + 1e-4
    weights = weights.masked_fill(positive_mask, 0.0)
    has_negative = weights.sum(dim=1) > 0
    negatives = torch.full((similarity.shape[0],), -1, dtype=torch.long, device=similarity.device)
    if has_negative.any():
        drawn = torch.multinomial(weights[has_negative], 1, generator=generator).squeeze(1)
        negatives[has_negative] = drawn
    return negatives


def itm_loss(itm_logits: torch.Tensor, itm_labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a sigmoid matching head (1 = the text belongs to the image)."""
    return F.binary_cross_entropy_with_logits(itm_logits.float(), itm_labels.float())


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Token-mean cross-entropy; `logits[..., t, :]` predicts `labels[..., t]`; -100 labels are ignored."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )


__all__ = ["ContrastiveOutput", "contrastive_loss", "gather_features", "itm_loss", "lm_loss", "sample_hard_negatives"]
