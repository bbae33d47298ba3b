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


class _LinearCrossEntropy(torch.autograd.Function):
    """`lm_loss(F.linear(hidden, weight, bias), targets)` with the gradients computed chunk by chunk in the forward.

    The (rows, vocabulary) logits are never stored whole: each chunk of rows is projected into one reused buffer,
    turned into its softmax in place, and its contribution to the three gradients added right away (the approach
    of fused linear cross-entropy kernels such as Liger Kernel's). What autograd would otherwise allocate and
    fill per step (the logits, their log-softmax, the gradient of each, the zeroed buffer of the NLL backward;
    each rows x vocabulary floats) is replaced by one chunk-sized buffer and fewer passes over it.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, label_smoothing: float, chunk_size: int):
        rows, vocab = hidden.shape[0], weight.shape[0]
        smoothing = float(label_smoothing)
        needs = ctx.needs_input_grad
        grad_hidden = torch.empty_like(hidden) if needs[0] else None
        grad_weight = torch.zeros_like(weight) if needs[1] else None
        grad_bias = torch.zeros_like(bias) if bias is not None and needs[2] else None
        total = hidden.new_zeros((), dtype=torch.float32)
        buffer = hidden.new_empty((min(chunk_size, rows), vocab))
        for start in range(0, rows, chunk_size):
            chunk = hidden[start : start + chunk_size]
            count = chunk.shape[0]
            logits = buffer[:count]
            if bias is None:
                torch.mm(chunk, weight.t(), out=logits)
            else:
                torch.addmm(bias, chunk, weight.t(), out=logits)
            chunk_targets = targets[start : start + count]
            losses = -(1.0 - smoothing) * logits.gather(1, chunk_targets[:, None]).squeeze(1)
            if smoothing:
                losses -= smoothing * logits.mean(dim=1)
            # one exponential pass: exp(logits - max) in place gives both the normalizer and the softmax
            maximum = logits.amax(dim=1, keepdim=True)
            exponentials = logits.sub_(maximum).exp_()
            sums = exponentials.sum(dim=1, keepdim=True)
            total += (losses + maximum.squeeze(1) + sums.squeeze(1).log()).sum()
            if grad_hidden is None and grad_weight is None and grad_bias is None:
                continue
            # d loss_row / d logits = softmax - (1 - smoothing) * one_hot - smoothing / vocab; the mean over rows: / rows
            probs = exponentials.mul_(sums.reciprocal_().div_(rows))
            probs[torch.arange(count, device=probs.device), chunk_targets] -= (1.0 - smoothing) / rows
            if smoothing:
                probs -= smoothing / (vocab * rows)
            if grad_hidden is not None:
                torch.mm(probs, weight, out=grad_hidden[start : start + count])
            if grad_weight is not None:
                torch.addmm(grad_weight, probs.t(), chunk, out=grad_weight)  # (not addmm_: FLOP counters skip it)
            if grad_bias is not None:
                grad_bias += probs.sum(dim=0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return total / rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = lambda grad: grad * grad_output if grad is not None else None  # noqa: E731
        return scale(grad_hidden), scale(grad_weight), scale(grad_bias), None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Token-mean cross-entropy of `F.linear(hidden, weight, bias)` against `targets`, without storing the logits.

    hidden `(N, d)`, weight `(V, d)`, bias `(V,)` or None, targets `(N,)` class indices (no ignored entries:
    select the supervised rows first). Same value and gradients as `lm_loss(F.linear(hidden, weight, bias),
    targets, label_smoothing)` up to float rounding, computed `chunk_size` rows at a time in float32 (other
    dtypes, and autocast, take the plain path). The gradients are computed in the forward, so call it where the
    loss will be back-propagated; under `torch.no_grad()` it only computes the loss.
    """
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (N, d) and targets (N,), got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    plain = (
        hidden.dtype != torch.float32
        or weight.dtype != torch.float32
        or torch.is_autocast_enabled(hidden.device.type)
        or hidden.shape[0] == 0
    )
    if plain:
        return lm_loss(F.linear(hidden, weight, bias), targets, label_smoothing)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, label_smoothing, chunk_size)


__all__ = [
    "ContrastiveOutput",
    "contrastive_loss",
    "gather_features",
    "itm_loss",
    "linear_cross_entropy",
    "lm_loss",
    "sample_hard_negatives",
]
