# --- MVaEMa ---
from .processing_mvaema import MVaEMaProcessor, tidy_spacing
from .tokenization_micrograph import (
    build_default_processor,
    build_default_tokenizer,
    prepare_tokenizer,
    train_wordpiece_tokenizer,
)
