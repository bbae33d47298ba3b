"""Model cards for trained emvision models, filled at save time from what the run actually used.

The card says where every image, answer and class description came from (real archive, in-house,
synthetic, oracle, teacher model, hand-written), which protocol produced the numbers, and whether
any number was label-conditioned. Results go into the card's ``model-index`` as eval results.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from emvision.datasets_scripts.storage import HUMAN_SOURCE, ORACLE_TEACHER, SYNTHETIC_SOURCE
from emvision.train.data.label_templates import BASICS, LABELS_TEMPLATE_TEACHER

IN_HOUSE_TEACHER = "in-house"  # build_sem's `teacher` for pairs from a source's metadata without a teacher column
NOT_A_MODEL = {ORACLE_TEACHER, HUMAN_SOURCE, IN_HOUSE_TEACHER, LABELS_TEMPLATE_TEACHER}

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
    "zero_shot_top1": "Zero-shot Top-1 accuracy",
    "zero_shot_top5": "Zero-shot Top-5 accuracy",
    "zero_shot_macro_f1": "Zero-shot Macro-F1",
    "basics_category_accuracy": "Basics answer names the category",
}
CITATIONS = resources.files("emvision.model_cards").joinpath("citations.md")
# What each family's saved code imports (the folder's remote code): the packages a user needs without emvision
MODEL_CODE_REQUIREMENTS = {
    "mvaema": ("torch", "transformers", "safetensors"),
    "hnf": ("torch", "transformers", "safetensors", "torch-geometric", "torchdiffeq"),
}


def teacher_label(teacher: str) -> str:
    """Where a question-answer pair came from, as the card says it."""
    return {
        ORACLE_TEACHER: "oracle answers derived from the synthetic generator's parameters (no language model wrote them)",
        HUMAN_SOURCE: "written by people (`teacher` = human)",
        IN_HOUSE_TEACHER: "taken from the in-house dataset's own metadata, author not recorded (`teacher` = in-house; "
        "no teacher model was run)",
        LABELS_TEMPLATE_TEACHER: f"templated from the class labels (`teacher` = {LABELS_TEMPLATE_TEACHER}): the Basics question "
        f"(\"{BASICS.question}\") answered by the caption sentence naming the image's class; no model or person wrote them",
    }.get(teacher, f"written by the teacher model `{teacher}`")


def description_label(source: str) -> str:
    return {
        ORACLE_TEACHER: "derived from the synthetic generator's parameter ranges",
        HUMAN_SOURCE: "hand-written",
    }.get(source, f"written by the model `{source}`")


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

    @property
    def model_teachers(self) -> list[str]:
        """The language models that wrote training answers (not the oracle, people, metadata or templates)."""
        return [teacher for teacher in self.teachers if teacher not in NOT_A_MODEL]

    @property
    def model_written_descriptions(self) -> list[str]:
        return [source for source in self.description_sources if source not in (ORACLE_TEACHER, HUMAN_SOURCE)]

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

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "image_sources": self.image_sources, "teachers": self.teachers,
                "description_sources": self.description_sources, "caption_in_prompt": self.caption_in_prompt}

    def summary(self) -> str:
        """One phrase: what the images were and who wrote the texts (for a model trained on top of this one)."""
        images = " and ".join(
            ("synthetic images" if kind == SYNTHETIC_SOURCE else "real or in-house images") for kind in self.image_sources
        ) or "images"
        texts = [f"question-answer pairs: {teacher_label(t).split(' (')[0]}" for t in self.teachers]
        texts += [f"class descriptions: {description_label(s)}" for s in self.description_sources]
        return f"`{self.dataset}`: {images}" + (f"; {'; '.join(texts)}" if texts else "")

    def to_markdown(self) -> str:
        lines = [f"- Dataset: `{self.dataset}`"]
        for kind, n in self.image_sources.items():
            label = "synthetic (procedurally generated, not real micrographs)" if kind == SYNTHETIC_SOURCE else kind
            lines.append(f"- Images, {label}: {n}")
        for teacher, n in self.teachers.items():
            lines.append(f"- Question-answer pairs, {teacher_label(teacher)}: {n}")
        for source, n in self.description_sources.items():
            lines.append(f"- Class descriptions, {description_label(source)}: {n}")
        if self.caption_in_prompt:
            lines.append(
                "- Training prompts carried a caption naming the true category (the MVaEMa paper's protocol). "
                "This is label-conditioned training input; the evaluation below says whether evaluation used it."
            )
        return "\n".join(lines)


@dataclass
class BaseModel:
    """The model a run started from: its Hub id when it has one, and what it was itself trained on."""

    name_or_path: str
    hub_id: str | None = None
    provenance: str | None = None  # the base's own data provenance, from its metrics.json

    def to_markdown(self) -> str:
        where = f"`{self.hub_id}` on the Hugging Face Hub" if self.hub_id else f"the local folder `{self.name_or_path}` (not on the Hub)"
        if self.hub_id and self.hub_id != self.name_or_path:
            where += f", read from `{self.name_or_path}`"
        trained = f"; it was trained on {self.provenance}" if self.provenance else "; its training data is not recorded with it"
        return f"- Base model: {where}{trained}"

    def to_json(self) -> dict:
        return {"name_or_path": self.name_or_path, "hub_id": self.hub_id, "provenance": self.provenance}


def _hub_id_of_cached_snapshot(path: Path) -> str | None:
    """``.../models--org--name/snapshots/<sha>`` (a Hub download) -> ``org/name``."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name[len("models--"):].replace("--", "/", 1)
    return None


def describe_base_model(name_or_path: str | None) -> BaseModel | None:
    """What the card says about ``--model_name_or_path``: a Hub id (given, recorded by the base's own run with
    ``--hub_model_id``, or read off the Hub cache's folder name) and the base's data provenance (its metrics.json)."""
    if not name_or_path:
        return None
    path = Path(name_or_path).expanduser()
    metrics = None
    if path.is_dir():
        hub_id = _hub_id_of_cached_snapshot(path.resolve())
        metrics_path = path / "metrics.json"
    else:  # a Hub id; its metrics.json is in the cache when emvision published it
        hub_id, metrics_path = name_or_path, None
        try:
            from huggingface_hub import hf_hub_download

            metrics_path = Path(hf_hub_download(name_or_path, "metrics.json"))
        except Exception:  # noqa: BLE001 - a base without metrics.json (not an emvision run) is described as such
            metrics_path = None
    if metrics_path is not None and metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except ValueError:
            metrics = None
    provenance = None
    if metrics:
        hub_id = hub_id or metrics.get("hub_model_id")
        recorded = metrics.get("data_provenance")
        if recorded:
            provenance = DataProvenance(**recorded).summary()
        elif metrics.get("dataset"):
            provenance = f"`{metrics['dataset']}`" + (" (synthetic data)" if metrics.get("synthetic_data") else "")
    return BaseModel(name_or_path=name_or_path, hub_id=hub_id, provenance=provenance)


def epochs_markdown(global_step: int, steps_per_epoch: int) -> str:
    """'0.9 epochs (150 of 167 steps)' or '2.4 epochs (400 optimizer steps, 167 per epoch)'."""
    epochs = global_step / max(steps_per_epoch, 1)
    if global_step < steps_per_epoch:
        return f"{epochs:.1f} epochs ({global_step} of {steps_per_epoch} steps)"
    return f"{epochs:.1f} epochs ({global_step} optimizer steps, {steps_per_epoch} per epoch)"


def optimizer_name(args) -> str:
    decay = f", weight decay {args.weight_decay:g}" if args.weight_decay else ""
    return ("AdamW (decay on weight matrices only" + decay + ")") if args.optimizer == "adamw" else ("Adam" + (f" (L2{decay})" if decay else ""))


def schedule_markdown(args) -> str:
    warmup = f"linear warm-up over {args.warmup_steps} steps, then " if args.warmup_steps else ""
    if args.lr_scheduler == "cosine":
        return f"{warmup}cosine decay to {args.min_lr_ratio:g} x the peak at the last step"
    return f"{warmup}learning rate x{args.lr_factor:g} after {args.lr_patience} epochs without a better validation loss (the papers')"


def training_procedure_markdown(args, state, num_processes: int, steps_per_epoch: int, details=(), base: BaseModel | None = None) -> str:
    """The card's training-procedure section: the shared protocol plus the script's own ``details`` lines."""
    lines = [
        *([base.to_markdown()] if base else []),
        f"- Optimizer: {optimizer_name(args)}, peak learning rate {args.learning_rate:g}, batch {args.per_device_train_batch_size} per process x "
        f"{num_processes} process(es) x {args.gradient_accumulation_steps} accumulation step(s)",
        f"- Schedule: {schedule_markdown(args)}; early stopping after {args.early_stopping_patience} epochs without a better "
        f"validation loss; at most {args.num_train_epochs} epochs" + (f", capped at {args.max_train_steps} optimizer steps" if args.max_train_steps else ""),
        f"- Ran {epochs_markdown(state.global_step, steps_per_epoch)}; best validation weights restored",
        *details,
        f"- Cross-validation: fold {args.fold} of {args.num_folds}, seed {args.seed}; the images of the training and validation "
        "splits are listed in `split.json`, and emvision refuses to evaluate this model on a test fold that holds any of them",
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


@dataclass
class Result:
    """One evaluation figure: its value, the test set it was measured on, and the chance level beside it."""

    key: str  # metrics.json name, e.g. "top1"
    value: float
    test_set: str  # e.g. "120 test images" or "8 test QA pairs (of 120)"
    chance: float | None = None  # the same metric for a guess that ignores the image
    note: str = ""  # e.g. "= Top-2: every class, 1 by construction"

    @property
    def name(self) -> str:
        return METRIC_NAMES.get(self.key, self.key)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def examples_markdown(examples: list[dict]) -> str:
    """Test-fold rows of question, generated answer and reference: what the figures above measure, readable."""
    rows = ["| question | generated answer | reference |", "| --- | --- | --- |"]
    rows += [f"| {_cell(e['question'])} | {_cell(e['prediction'])} | {_cell(e['reference'])} |" for e in examples]
    return f"Answers to the first {len(examples)} test-fold questions:\n\n" + "\n".join(rows)


def _evaluation_markdown(results: list[Result], label_conditioned: bool, protocol_note: str, chance_note: str,
                         examples: list[dict] = ()) -> str:
    if not results:
        return "No evaluation was run."
    rows = ["| metric | value | test set | chance level |", "| --- | --- | --- | --- |"]
    for result in results:
        chance = "n/a" if result.chance is None else f"{result.chance:.4f}"
        name = result.name + (f" ({result.note})" if result.note else "")
        rows.append(f"| {name} | {result.value:.4f} | {result.test_set} | {chance} |")
    conditioning = (
        "**Label-conditioned**: prompts or text inputs at evaluation carried each image's true category "
        "(the paper's protocol). These figures are not comparable with label-free results."
        if label_conditioned
        else "Label-free: no input at evaluation carried the image's category."
    )
    text = "\n".join(rows) + f"\n\n{chance_note}\n\n{conditioning}\n\n{protocol_note}".rstrip()
    return text + (f"\n\n{examples_markdown(list(examples))}" if examples else "")


def limitations_markdown(provenance: DataProvenance, label_conditioned: bool, extra: str = "") -> str:
    """Only the limitations that apply to this run."""
    lines = ["- A small model trained on one dataset: expect errors on instruments, materials and magnifications it has not seen."]
    if label_conditioned or provenance.caption_in_prompt:
        lines.append(
            "- Leakage: the MVaEMa paper's training captions and HNF's paper protocol put an image's true category into the "
            "model's input. This run used that (see above); results marked label-conditioned are not label-free figures."
        )
    if provenance.model_teachers:
        names = ", ".join(f"`{t}`" for t in provenance.model_teachers)
        lines.append(f"- Answers learned from the teacher model {names} inherit that teacher's mistakes.")
    if provenance.model_written_descriptions:
        names = ", ".join(f"`{s}`" for s in provenance.model_written_descriptions)
        lines.append(f"- Class descriptions written by {names} may carry that model's mistakes.")
    if LABELS_TEMPLATE_TEACHER in provenance.teachers:
        lines.append(
            "- Trained from class labels alone: the answers it learned are one sentence per class, so it names a "
            "micrograph's class but was not taught to describe it; BLEU/ROUGE/METEOR measure that sentence."
        )
    if provenance.synthetic:
        lines.append("- Synthetic training data: performance on real micrographs is unknown until evaluated on them.")
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def build_model_card(
    family: str,
    *,
    repo_id: str,
    provenance: DataProvenance,
    training_procedure: str,
    results: list[Result] = (),
    label_conditioned: bool = False,
    protocol_note: str = "",
    chance_note: str = "",
    base_model: BaseModel | None = None,
    extra_limitations: str = "",
    license: str = "apache-2.0",
    examples: list[dict] = (),
) -> ModelCard:
    """Fill ``model_cards/<family>.md`` with this run's provenance, procedure and results (and, for VQA,
    ``examples``: test-fold rows of question, generated answer and reference)."""
    if family not in TASKS:
        raise ValueError(f"family must be one of {sorted(TASKS)}, got {family!r}")
    task_type, task_name = TASKS[family]
    dataset_type = provenance.dataset
    dataset_name = ("emvision synthetic SEM (synthetic images)" if provenance.synthetic else provenance.dataset)
    eval_results = [
        EvalResult(
            task_type=task_type,
            task_name=task_name,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=f"test: {result.test_set}",
            metric_type=result.key,
            metric_name=result.name + (" (label-conditioned)" if label_conditioned else ""),
            metric_value=round(float(result.value), 6),
        )
        for result in results
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
        base_model=base_model.hub_id if base_model else None,  # the Hub accepts Hub ids only; a local base is in the text
        eval_results=eval_results or None,
    )
    synthetic_warning = (
        "> **Trained on synthetic data.** The images were procedurally generated and the answers derived "
        "from the generator's parameters. The figures below describe that synthetic benchmark, not real micrographs."
        if provenance.synthetic
        else ""
    )
    template = resources.files("emvision.model_cards").joinpath(f"{family}.md")
    return ModelCard.from_template(
        card_data,
        template_str=template.read_text(),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        synthetic_warning=synthetic_warning,
        data_provenance=provenance.to_markdown(),
        training_procedure=training_procedure,
        evaluation=_evaluation_markdown(list(results), label_conditioned, protocol_note, chance_note, examples),
        limitations=limitations_markdown(provenance, label_conditioned, extra_limitations),
        requirements=requirements_markdown(family),
        license_text=f"Model weights and code: {license}. The SEM dataset of Aversa et al. (2018) is CC BY 4.0.",
        citations=CITATIONS.read_text(),
    )


def classification_results(summary: dict, key_prefix: str = "") -> list[Result]:
    """The card rows of a classification summary (``evaluation.classifier.report_summary``)."""
    images = summary["num_images"]
    top_k, num_classes = summary.get("top_k_effective", 5), summary.get("num_classes")
    chance = summary.get("chance", {})
    results = []
    for key in ("top1", "top5", "macro_f1"):
        note = f"= Top-{top_k}: only {num_classes} classes, 1 by construction" if key == "top5" and top_k < 5 else ""
        results.append(Result(key_prefix + key, summary[key], f"{images} test image{'s' if images != 1 else ''}", chance.get(key), note))
    return results


def vqa_results(metrics: dict) -> list[Result]:
    """The card rows of ``evaluation.vqa.evaluate_vqa``'s BLEU/ROUGE/METEOR."""
    pairs, in_fold = metrics["num_test_pairs"], metrics.get("num_test_pairs_in_fold", metrics["num_test_pairs"])
    test_set = f"{pairs} test QA pair{'s' if pairs != 1 else ''}" + (
        f" (a seeded random sample of the {in_fold} in the test fold)" if in_fold > pairs else " (the whole test fold)")
    chance = metrics.get("chance", {})
    results = [Result(key, metrics[key], test_set, chance.get(key)) for key in ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor")
               if isinstance(metrics.get(key), float)]
    if isinstance(metrics.get("basics_category_accuracy"), float):
        answers = metrics["num_basics_answers"]
        results.append(Result("basics_category_accuracy", metrics["basics_category_accuracy"],
                              f"{answers} test Basics answer{'s' if answers != 1 else ''}", chance.get("basics_category_accuracy")))
    return results
