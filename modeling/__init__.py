"""emvision models. Importing this package registers every class with the transformers Auto classes."""

from .sem_categories import ARCHIVE_PREFIX_TO_CATEGORY, SEM_CATEGORIES, category_display_name

# --- MVaEMa (registration lines live next to the imports) ---
# --- HNF ---
