"""The ten SEM categories of Aversa et al. 2018 (NFFA-EUROPE), in the archive's label order.

Label ``k`` is the prefix ``L<k>_`` of the original archive file names; ``SEM_CATEGORIES`` sorts
the names alphabetically, which is the order of the ``ClassLabel`` feature in every emvision
dataset and of ``id2label`` in every emvision model.
"""

SEM_CATEGORIES = (
    "Biological",
    "Fibres",
    "Films_Coated_Surface",
    "MEMS_devices_and_electrodes",
    "Nanowires",
    "Particles",
    "Patterned_surface",
    "Porous_Sponge",
    "Powder",
    "Tips",
)

# archive prefix L<k> -> category name
ARCHIVE_PREFIX_TO_CATEGORY = {
    0: "Porous_Sponge",
    1: "Patterned_surface",
    2: "Particles",
    3: "Films_Coated_Surface",
    4: "Powder",
    5: "Tips",
    6: "Nanowires",
    7: "Biological",
    8: "MEMS_devices_and_electrodes",
    9: "Fibres",
}


def category_display_name(name: str) -> str:
    """'Films_Coated_Surface' -> 'films coated surface' (the words a question or an answer uses)."""
    return name.replace("_", " ").lower()
