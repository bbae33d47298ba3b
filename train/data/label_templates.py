"""MVaEMa from class labels alone, for a dataset that has images and labels but no question-answer pairs
(an in-house folder of category sub-folders, a build before the teacher ran).

Every image gets one row: the Basics question of the MVaEMa paper (prompt family 1) answered by the caption
sentence that names its class, "This is a scanning electron micrograph of <class>." So ITC and ITM learn to
match each image with its class's caption (all images of a class are one another's positives), and LM learns
to say that sentence. The rows are labelled ``teacher="labels-template"``: no model and no person wrote them,
and the model card says so. Evaluation prompts carry the question only (label-free).
"""

from __future__ import annotations

from emvision.vocabulary import FAMILY_BY_ID, caption_for

LABELS_TEMPLATE_TEACHER = "labels-template"
LABELS_TEMPLATE_VERSION = "labels-template-v1"
BASICS = FAMILY_BY_ID[1]


def templated_answer(class_name: str) -> str:
    """The answer of a labels-template row: the caption wording, naming the class."""
    return caption_for(class_name)


def label_template_vqa(images):
    """A ``vqa``-shaped dataset (image_id, label, fold, question_id, question, caption, answer, teacher,
    prompt_version) with one templated row per row of the ``images`` subset: text joined to the images by
    ``image_id``, as the stored ``vqa`` subset is (schema version 2)."""
    from datasets import Value

    names = images.features["label"].names
    rows = images.select_columns(["image_id", "label", "fold"])
    labels = list(rows["label"])
    sentences = [templated_answer(names[label]) for label in labels]
    columns = {
        "question_id": ([BASICS.question_id] * len(labels), Value("int32")),
        "question": ([BASICS.question] * len(labels), Value("string")),
        "caption": (sentences, Value("string")),
        "answer": (sentences, Value("string")),
        "teacher": ([LABELS_TEMPLATE_TEACHER] * len(labels), Value("string")),
        "prompt_version": ([LABELS_TEMPLATE_VERSION] * len(labels), Value("string")),
    }
    for name, (values, feature) in columns.items():
        rows = rows.add_column(name, values, feature=feature)
    return rows


def describe(class_names) -> str:
    example = templated_answer(class_names[0]) if class_names else ""
    return (
        f"no question-answer pairs: training on the class labels alone (teacher={LABELS_TEMPLATE_TEACHER}): ITC/ITM against "
        f"each class's caption and the Basics question answered by it, e.g. {example!r}. For answers about the images "
        "themselves, add question/answer columns to metadata.jsonl or run datasets_scripts/generate_qa.py first"
    )
