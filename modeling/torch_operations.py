"""Loading that keeps emvision's models on torch's own operations (copied next to the weights as remote code)."""

from __future__ import annotations


class TorchOperationsMixin:
    """Put before `PreTrainedModel` in a model's bases: `from_pretrained` then computes with torch's own operations
    unless `use_kernels=True` is passed. transformers >= 5.25 otherwise swaps layers (its GELU among them) for
    kernels fetched from the Hub at load time: code these models were not tested with, and a download at run time."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        kwargs.setdefault("use_kernels", False)
        return super().from_pretrained(*args, **kwargs)
