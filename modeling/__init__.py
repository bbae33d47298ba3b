"""emvision models. Importing this package registers every class with the transformers Auto classes."""

from .sem_categories import ARCHIVE_PREFIX_TO_CATEGORY, SEM_CATEGORIES, category_display_name

# --- MVaEMa (registration lines live next to the imports) ---
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
