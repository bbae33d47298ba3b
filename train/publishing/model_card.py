"""Model cards for trained emvision models, filled at save time from what the run actually used.

The card says where every image, answer and class description came from (real archive, in-house,
synthetic, oracle, teacher model, hand-written), which protocol produced the numbers, and whether
any number was label-conditioned. Results go into the card's ``model-index`` as eval results.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata, resources

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from emvision.datasets_scripts.storage import HUMAN_SOURCE, ORACLE_TEACHER, SYNTHETIC_SOURCE

TASKS = {
    "mvaema": ("visual-question-answering", "Visual Question Answering"),
    "hnf": ("image-classification", "Image Classification"),
}
METRIC_NAMES = {
    "bleu2": "BLEU-2",
    "bleu4": "BLEU-4",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "meteor": "METEOR",
    "top1": "Top-1 accuracy",
    "top5": "Top-5 accuracy",
    "macro_f1": "Macro-F1",
    "accuracy": "Accuracy",
}
CITATIONS = resources.files("emvision.model_cards").joinpath("citations.md")
# What each family's saved code imports (the folder's remote code): the packages a user needs without emvision
MODEL_CODE_REQUIREMENTS = {
    "mvaema": ("torch", "transformers", "safetensors"),
    "hnf": ("torch", "transformers", "safetensors", "torch-geometric", "torchdiffeq"),
}


@dataclass
class DataProvenance:
    """What a model was trained on, counted from the rows themselves."""

    dataset: str
    image_sources: dict[str, int] = field(default_factory=dict)  # "synthetic" / "real or in-house" -> images
    teachers: dict[str, int] = field(default_factory=dict)  # teacher -> QA pairs
    description_sources: dict[str, int] = field(default_factory=dict)  # source -> class descriptions
    caption_in_prompt: bool = False  # training prompts carried the true category (paper protocol)

    @property
    def synthetic(self) -> bool:
        return self.image_sources.get(SYNTHETIC_SOURCE, 0) > 0 or ORACLE_TEACHER in self.teachers

    @classmethod
    def from_rows(cls, dataset: str, image_sources=(), teachers=(), description_sources=(), caption_in_prompt=False):
        kinds = Counter(SYNTHETIC_SOURCE if s == SYNTHETIC_SOURCE else "real or in-house" for s in image_sources)
        return cls(
            dataset=dataset,
            image_sources=dict(sorted(kinds.items())),
            teachers=dict(sorted(Counter(teachers).items())),
            description_sources=dict(sorted(Counter(description_sources).items())),
            caption_in_prompt=caption_in_prompt,
        )

    def to_markdown(self) -> str:
        lines = [f"- Dataset: `{self.dataset}`"]
        for kind, n in self.image_sources.items():
            label = "synthetic (procedurally generated, not real micrographs)" if kind == SYNTHETIC_SOURCE else kind
            lines.append(f"- Images, {label}: {n}")
        for teacher, n in self.teachers.items():
            label = (
                "oracle answers derived from the synthetic generator's parameters (no language model wrote them)"
                if teacher == ORACLE_TEACHER
                else f"written by the teacher model `{teacher}`"
            )
            lines.append(f"- Question-answer pairs, {label}: {n}")
        for source, n in self.description_sources.items():
            label = {
                ORACLE_TEACHER: "derived from the synthetic generator's parameter ranges",
                HUMAN_SOURCE: "hand-written",
            }.get(source, f"written by `{source}`")
            lines.append(f"- Class descriptions, {label}: {n}")
        if self.caption_in_prompt:
            lines.append(
                "- Training prompts carried a caption naming the true category (the MVaEMa paper's protocol). "
                "This is label-conditioned training input; the evaluation below says whether evaluation used it."
            )
        return "\n".join(lines)


def training_procedure_markdown(args, state, num_processes: int, details=()) -> str:
    """The card's training-procedure section: the shared protocol plus the script's own ``details`` lines."""
    lines = [
        f"- Optimizer: Adam, learning rate {args.learning_rate:g}, batch {args.per_device_train_batch_size} per process x {num_processes} process(es)"
        f" x {args.gradient_accumulation_steps} accumulation step(s)",
        f"- Schedule: learning rate x{args.lr_factor} after {args.lr_patience} epochs without a better validation loss; "
        f"early stopping after {args.early_stopping_patience}; at most {args.num_train_epochs} epochs"
        + (f", capped at {args.max_train_steps} optimizer steps" if args.max_train_steps else ""),
        f"- Ran {state.epoch} epoch(s), {state.global_step} optimizer steps; best validation weights restored",
        *details,
        f"- Cross-validation: fold {args.fold} of {args.num_folds}, seed {args.seed}",
    ]
    if getattr(args, "lora", False):
        lines.append(f"- LoRA adapters: rank {args.lora_r}, alpha {args.lora_alpha}, dropout {args.lora_dropout}")
    return "\n".join(lines)


def requirements_markdown(family: str) -> str:
    """The card's Requirements section: each package the folder's code imports, with emvision's declared range
    (whose floor the test suite has passed on) and the version this model was saved with."""
    declared = {}
    for requirement in metadata.requires("emvision") or ():
        if "extra ==" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        declared[_canonical(name)] = requirement.split(";")[0].strip()
    lines = []
    for package in MODEL_CODE_REQUIREMENTS[family]:
        try:
            saved_with = metadata.version(package)
        except metadata.PackageNotFoundError:
            saved_with = "not installed"
        lines.append(f"- `{declared.get(_canonical(package), package)}` (saved with {saved_with})")
    return (
        "Loading the folder's own code (`trust_remote_code=True`, no emvision) needs:\n\n" + "\n".join(lines)
        + "\n\nA missing package is named by transformers before any model code runs. With emvision installed "
        "(this project's package), `import emvision.modeling` registers the classes and `trust_remote_code` is not needed."
    )


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _evaluation_markdown(results: dict, label_conditioned: bool, protocol_note: str) -> str:
    if not results:
        return "No evaluation was run."
    rows = ["| metric | value |", "| --- | --- |"]
    for key, value in results.items():
        if isinstance(value, (int, float)):
            rows.append(f"| {METRIC_NAMES.get(key, key)} | {value:.4f} |")
    conditioning = (
        "**Label-conditioned**: prompts or text inputs at evaluation carried each image's true category "
        "(the paper's protocol). These figures are not comparable with label-free results."
        if label_conditioned
        else "Label-free: no input at evaluation carried the image's category."
    )
    return "\n".join(rows) + f"\n\n{conditioning}\n\n{protocol_note}".rstrip()


def build_model_card(
    family: str,
    *,
    repo_id: str,
    provenance: DataProvenance,
    training_procedure: str,
    results: dict | None = None,
    label_conditioned: bool = False,
    protocol_note: str = "",
    base_model: str | None = None,
    extra_limitations: str = "",
    license: str = "apache-2.0",
) -> ModelCard:
    """Fill ``model_cards/<family>.md`` with this run's provenance, procedure and results."""
    if family not in TASKS:
        raise ValueError(f"family must be one of {sorted(TASKS)}, got {family!r}")
    results = results or {}
    task_type, task_name = TASKS[family]
    dataset_type = provenance.dataset
    dataset_name = ("emvision synthetic SEM (synthetic images)" if provenance.synthetic else provenance.dataset)
    eval_results = [
        EvalResult(
            task_type=task_type,
            task_name=task_name,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            metric_type=key,
            metric_name=METRIC_NAMES.get(key, key) + (" (label-conditioned)" if label_conditioned else ""),
            metric_value=round(float(value), 6),
        )
        for key, value in results.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    tags = ["emvision", family, "electron-microscopy", "sem", "nanomaterials"]
    if provenance.synthetic:
        tags.append("synthetic-data")
    if label_conditioned:
        tags.append("label-conditioned-evaluation")
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        license=license,
        tags=tags,
        pipeline_tag=task_type,
        base_model=base_model,
        eval_results=eval_results or None,
    )
    synthetic_warning = (
        "> **Trained on synthetic data.** The images were procedurally generated and the answers derived "
        "from the generator's parameters. The figures below describe that synthetic benchmark, not real micrographs."
        if provenance.synthetic
        else ""
    )
    limitations = [
        "- Leakage: the MVaEMa paper's training captions and HNF's paper protocol can put an image's true "
        "category into the model's input. Results marked label-conditioned used that; default evaluation is label-free.",
        "- A small model trained on one dataset: expect errors on instruments, materials and magnifications it has not seen.",
        "- Answers learned from a teacher model inherit that teacher's mistakes.",
    ]
    if provenance.synthetic:
        limitations.append("- Synthetic training data: performance on real micrographs is unknown until evaluated on them.")
    if extra_limitations:
        limitations.append(extra_limitations)
    template = resources.files("emvision.model_cards").joinpath(f"{family}.md")
    return ModelCard.from_template(
        card_data,
        template_str=template.read_text(),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        synthetic_warning=synthetic_warning,
        data_provenance=provenance.to_markdown(),
        training_procedure=training_procedure,
        evaluation=_evaluation_markdown(results, label_conditioned, protocol_note),
        limitations="\n".join(limitations),
        requirements=requirements_markdown(family),
        license_text=f"Model weights and code: {license}. The SEM dataset of Aversa et al. (2018) is CC BY 4.0.",
        citations=CITATIONS.read_text(),
    )
