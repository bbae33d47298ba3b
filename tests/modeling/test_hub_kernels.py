"""Loading MVaEMa and HNF never swaps their layers for Hub kernels unless asked.

transformers >= 5.25 defaults `from_pretrained(..., use_kernels=None)` to kernelizing every layer it has a Hub
kernel for (its GELU among them), fetched at load time. The models keep torch's own operations, the ones their
tests fix, and load offline; `use_kernels=True` still reaches transformers when a user asks for it.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, PreTrainedModel

from emvision.modeling import HNFForImageClassification, MVaEMaConfig, MVaEMaForQuestionAnswering
from tiny_models import narrow_hnf_config


@pytest.fixture
def asked(monkeypatch) -> list:
    """The `use_kernels` each `PreTrainedModel.from_pretrained` call receives."""
    seen = []
    original = PreTrainedModel.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        seen.append(kwargs.get("use_kernels", "not passed"))
        if kwargs.get("use_kernels"):
            return None  # transformers would kernelize (and need the `kernels` package): not this test's business
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(recording))
    return seen


def test_saved_models_load_with_torch_operations_unless_kernels_are_asked_for(tmp_path, asked):
    torch.manual_seed(0)
    mvaema = MVaEMaForQuestionAnswering(MVaEMaConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        projection_dim=16,
    ))
    hnf = HNFForImageClassification(narrow_hnf_config())
    mvaema.save_pretrained(tmp_path / "mvaema")
    hnf.save_pretrained(tmp_path / "hnf")

    loaded = [AutoModel.from_pretrained(tmp_path / "mvaema"), AutoModelForImageClassification.from_pretrained(tmp_path / "hnf"),
              MVaEMaForQuestionAnswering.from_pretrained(tmp_path / "mvaema")]
    assert asked == [False, False, False]
    assert [type(model) for model in loaded] == [MVaEMaForQuestionAnswering, HNFForImageClassification, MVaEMaForQuestionAnswering]
    assert torch.equal(loaded[0].lm_head.weight, mvaema.lm_head.weight)
    AutoModel.from_pretrained(tmp_path / "mvaema", use_kernels=True)
    assert asked[-1] is True, "a user's explicit choice is passed on"
