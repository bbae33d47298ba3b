"""The SEM dataset from real micrographs: the NFFA archive (Aversa et al. 2018) or a user's own folder.

- ``sources``: where the files come from (folders, tar/zip archives, flat ``L<k>_`` names,
  ``metadata.jsonl``/``.csv``), class names from folders, prefixes and labels;
- ``codec``: one file -> one checked, 8-bit image as the models read it (bar cropped, 224x224), or a reject;
- ``reading``: pass 1, every file decoded on all cores and spooled;
- ``assembly``: pass 2, labels, duplicates, folds, QA pairs and class descriptions;
- ``builder``: :func:`build_sem_dataset`, the whole build (``datasets_scripts/build_sem.py`` is its
  command line);
- ``card``: the dataset card; ``hub``: :func:`push_to_hub`.
"""

from .builder import LOCK_NAME, OUTPUT_NAMES, BuildReport, build_sem_dataset
from .card import ARCHIVE_CITATION, ARCHIVE_DOI, ARCHIVE_LICENSE, dataset_card
from .codec import DEFAULT_MAX_PIXELS, ImageOptions, ImageRejected, PreparedImage, prepare_image
from .hub import push_to_hub
from .sources import ClassMatcher, Reject, SourceFile, iter_source, normalize_class_name, read_table

__all__ = [
    "ARCHIVE_CITATION",
    "ARCHIVE_DOI",
    "ARCHIVE_LICENSE",
    "DEFAULT_MAX_PIXELS",
    "LOCK_NAME",
    "OUTPUT_NAMES",
    "BuildReport",
    "ClassMatcher",
    "ImageOptions",
    "ImageRejected",
    "PreparedImage",
    "Reject",
    "SourceFile",
    "build_sem_dataset",
    "dataset_card",
    "iter_source",
    "normalize_class_name",
    "prepare_image",
    "push_to_hub",
    "read_table",
]
