"""emvision models. Importing this package registers every class with the transformers Auto classes."""

from .sem_categories import ARCHIVE_PREFIX_TO_CATEGORY, SEM_CATEGORIES, category_display_name

# --- MVaEMa (registration lines live next to the imports) ---
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForVisualQuestionAnswering  # noqa: E402
from transformers import AutoProcessor, AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from .configuration_mvaema import MVaEMaConfig, MVaEMaTextConfig, MVaEMaVisionConfig  # noqa: E402
from .modeling_mvaema import MVaEMaForQuestionAnswering, MVaEMaOutput, MVaEMaPreTrainedModel  # noqa: E402

AutoConfig.register(MVaEMaConfig.model_type, MVaEMaConfig, exist_ok=True)
AutoModel.register(MVaEMaConfig, MVaEMaForQuestionAnswering, exist_ok=True)
AutoModelForVisualQuestionAnswering.register(MVaEMaConfig, MVaEMaForQuestionAnswering, exist_ok=True)
MVaEMaConfig.register_for_auto_class()
MVaEMaForQuestionAnswering.register_for_auto_class("AutoModel")
from emvision.processing.image_processing_micrograph import MicrographImageProcessor  # noqa: E402
from emvision.processing.processing_mvaema import MVaEMaProcessor  # noqa: E402

AutoImageProcessor.register(MVaEMaConfig, image_processor_classes={"pil": MicrographImageProcessor}, exist_ok=True)
AutoProcessor.register(MVaEMaConfig, MVaEMaProcessor, exist_ok=True)
AutoTokenizer.register(MVaEMaConfig, fast_tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)
MVaEMaProcessor.register_for_auto_class()
MicrographImageProcessor.register_for_auto_class("AutoImageProcessor")  # its file travels with saved processors
# --- HNF ---
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification  # noqa: E402

from .configuration_hnf import HNFConfig  # noqa: E402
from .modeling_hnf import HNFForImageClassification, HNFModel, HNFPreTrainedModel  # noqa: E402

AutoConfig.register(HNFConfig.model_type, HNFConfig, exist_ok=True)
AutoModel.register(HNFConfig, HNFModel, exist_ok=True)
AutoModelForImageClassification.register(HNFConfig, HNFForImageClassification, exist_ok=True)
HNFConfig.register_for_auto_class()
HNFModel.register_for_auto_class("AutoModel")
HNFForImageClassification.register_for_auto_class("AutoModelForImageClassification")
from emvision.processing.image_processing_micrograph import MicrographImageProcessor  # noqa: E402

AutoImageProcessor.register(HNFConfig, image_processor_classes={"pil": MicrographImageProcessor}, exist_ok=True)
