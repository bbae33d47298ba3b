# --- MVaEMa ---
from .processing_mvaema import MVaEMaProcessor, tidy_spacing
from .tokenization_micrograph import (
    build_default_processor,
    build_default_tokenizer,
    prepare_tokenizer,
    train_wordpiece_tokenizer,
)

# --- image processor (shared by HNF and MVaEMa) ---
from .image_processing_micrograph import (
    MicrographImageError,
    MicrographImageProcessor,
    detect_info_bar,
    load_micrograph,
    micrograph_to_array,
    remove_info_bar,
)
