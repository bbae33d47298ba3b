"""The teacher's prompts: the MVaEMa paper's ten prompt families and HNF's class-description prompts.

The wording of the ten families is the paper's. ``PROMPT_VERSION`` is stored on every QA row;
change it whenever a wording here changes, so answers to different prompts are never mixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .categories import category_display_name

PROMPT_VERSION = "mvaema-paper-v1"


@dataclass(frozen=True)
class PromptFamily:
    question_id: int
    name: str
    question: str


PROMPT_FAMILIES: tuple[PromptFamily, ...] = (
    PromptFamily(1, "Basics", "This image depicts a nanomaterial. Identify the specific type of nanomaterial depicted in the image. Additionally, find image scale: real-world length per unit measurement."),
    PromptFamily(2, "Morphology and Structure", "Describe the overall shape and morphology of the nanomaterials. Identify any visible layers, phases, or distinct domains. Assess consistency in size and shape, or note any variability."),
    PromptFamily(3, "Size and Distribution", "Estimate size/size range of nanostructures. Describe distribution - evenly spaced, clustered, or random. Comment on any aggregation or bundling visible."),
    PromptFamily(4, "Surface Characteristics", "Describe surface textures - smooth, rough, distinct textures. Comment on any visible imperfections like defects, pores, or impurities."),
    PromptFamily(5, "Composition and Elements", "Note any visible evidence of compositional variations (color, brightness, contrast differences). Identify any labels or markers pointing to specific elements/compounds."),
    PromptFamily(6, "Interactions and Boundaries", "Describe visual interactions: touching, fused, or separate. Can you distinguish boundaries between structures/phases? Or do they blend without defined borders?"),
    PromptFamily(7, "External Environment", "Note any visible signs of interaction between nanomaterials and surroundings (solvents, polymers, etc.). Identify and describe any non-nanomaterial structures/objects present."),
    PromptFamily(8, "Image Technique and Modifications", "Identify imaging technique used (SEM, TEM, etc.). Note any visible post-processing or modifications like false coloring or 3D rendering."),
    PromptFamily(9, "Functional Features", "Identify any visible functional elements or regions with distinct properties. Note if the image shows any dynamic processes, or if it is primarily static."),
    PromptFamily(10, "Context and Application", "Identify intended use/application of nanomaterials. Are they experimental samples or theoretical/simulation-based representations?"),
)

FAMILY_BY_ID = {family.question_id: family for family in PROMPT_FAMILIES}

# The zero-shot classification question (no caption: label-free).
CLASSIFICATION_QUESTION = "What type of nanomaterial is shown in this image?"

# The Basics family's question, and the openings with which the synthetic set's oracle answers it ("{}": the
# category's name as the answer writes it, e.g. "a film (coated surface)"). MVaEMa's zero-shot classification
# fills the class names into these, the form its instruction data taught it (``MVaEMaForQuestionAnswering.classify``).
BASICS_QUESTION = FAMILY_BY_ID[1].question
BASICS_ANSWER_TEMPLATES = ("The image shows {}:", "This micrograph shows {}, specifically", "The nanomaterial is {};")

# The teacher's system message: context-augmented multimodal zero-shot chain-of-thought.
TEACHER_SYSTEM_PROMPT = (
    "You are an expert in nanomaterials and electron microscopy. Examine the micrograph carefully, "
    "think step by step about what is visible, and answer the instruction accurately and concisely. "
    "Describe only what the image shows."
)


def caption_for(category: str) -> str:
    """The paper's training caption. It names the ground-truth category: label-conditioned."""
    return f"This is a scanning electron micrograph of {category_display_name(category)}."


def class_description_prompt(category: str) -> str:
    """HNF's zero-shot chain-of-thought prompt for one class's technical description (text only)."""
    name = category_display_name(category)
    return (
        f"Let's think step by step. Write a detailed technical description of {name} as seen in "
        f"scanning electron microscopy images of nanomaterials. Cover: (1) structure and morphology, "
        f"(2) common synthesis or fabrication methods, (3) physical and chemical properties, "
        f"(4) applications, and (5) how they are characterised and what distinguishes them in SEM "
        f"images from other nanomaterial categories. Answer in one or two paragraphs."
    )
