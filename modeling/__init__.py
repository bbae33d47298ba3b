"""emvision models. Importing this package registers every class with the transformers Auto classes,
and marks them for ``register_for_auto_class`` so saved folders carry their code (Hub remote code).

This is the one place where the model layer meets ``emvision.processing`` (the processors registered
with the Auto classes); no model module imports processing, data or training code."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedTokenizerFast,
)

from emvision.processing.image_processing_micrograph import MicrographImageProcessor
from emvision.processing.processing_mvaema import MVaEMaProcessor

from .configuration_hnf import HNFConfig
from .configuration_mvaema import MVaEMaConfig, MVaEMaTextConfig, MVaEMaVisionConfig
from .modeling_hnf import HNFForImageClassification, HNFModel, HNFPreTrainedModel
from .modeling_mvaema import MVaEMaForQuestionAnswering, MVaEMaOutput, MVaEMaPreTrainedModel

# MVaEMa: config, model (also the VQA auto class), processor and tokenizer
AutoConfig.register(MVaEMaConfig.model_type, MVaEMaConfig, exist_ok=True)
AutoModel.register(MVaEMaConfig, MVaEMaForQuestionAnswering, exist_ok=True)
AutoModelForVisualQuestionAnswering.register(MVaEMaConfig, MVaEMaForQuestionAnswering, exist_ok=True)
AutoProcessor.register(MVaEMaConfig, MVaEMaProcessor, exist_ok=True)
AutoTokenizer.register(MVaEMaConfig, fast_tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)
MVaEMaConfig.register_for_auto_class()
MVaEMaForQuestionAnswering.register_for_auto_class("AutoModel")
MVaEMaProcessor.register_for_auto_class()

# HNF: config, base model and image classifier
AutoConfig.register(HNFConfig.model_type, HNFConfig, exist_ok=True)
AutoModel.register(HNFConfig, HNFModel, exist_ok=True)
AutoModelForImageClassification.register(HNFConfig, HNFForImageClassification, exist_ok=True)
HNFConfig.register_for_auto_class()
HNFModel.register_for_auto_class("AutoModel")
HNFForImageClassification.register_for_auto_class("AutoModelForImageClassification")

# The image processor both models share; its file travels with every saved processor
for _config in (MVaEMaConfig, HNFConfig):
    # positional: the keyword changed in transformers 5.10 (`image_processor_classes={"pil": ...}`); this form works in both
    AutoImageProcessor.register(_config, MicrographImageProcessor, exist_ok=True)
MicrographImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "HNFConfig",
    "HNFForImageClassification",
    "HNFModel",
    "HNFPreTrainedModel",
    "MVaEMaConfig",
    "MVaEMaForQuestionAnswering",
    "MVaEMaOutput",
    "MVaEMaPreTrainedModel",
    "MVaEMaTextConfig",
    "MVaEMaVisionConfig",
]
