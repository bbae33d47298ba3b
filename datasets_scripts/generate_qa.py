"""Write the ``vqa`` and ``class_descriptions`` subsets with a GPT-4-class teacher behind any OpenAI-compatible API.

For each micrograph of ``DATASET_DIR/images`` and each of the MVaEMa paper's ten prompt families,
the teacher gets the image (a base64 data URL), a caption naming the true category (the paper's
protocol, label-conditioned; ``--no_caption`` prompts label-free) and the question, at
temperature 0.25, top-p 0.1 and at most 3500 output tokens. For HNF, each class also gets a
zero-shot chain-of-thought description prompt, text only.

    OPENAI_API_KEY=... python datasets_scripts/generate_qa.py DATASET_DIR --output DIR \\
        --model gpt-4o --base_url https://api.openai.com/v1 --concurrency 8 --max_cost_usd 50 \\
        --price_per_1k_input 0.0025 --price_per_1k_output 0.01

Answers go to a durable cache (``DIR/teacher_cache.sqlite``) as they arrive; kill the run at any
moment and run the same command again to go on. ``--dry_run`` counts what is left and prices it
without sending anything. The subsets are rebuilt from the cache at the end of every run, in
(image_id, question_id) order; pairs that failed are listed in ``DIR/failures.jsonl`` and retried
by the next run. Subsets in DIR that another tool wrote (in-house QA from build_sem.py) are never
replaced without ``--overwrite``. The API key is read from the environment and never written anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emvision.vocabulary import (
    FAMILY_BY_ID,
    PROMPT_VERSION,
    TEACHER_SYSTEM_PROMPT,
    caption_for,
    class_description_prompt,
)
from emvision.datasets_scripts.storage import file_lock, progress_bars, save_subset, staged_write
from emvision.datasets_scripts.teacher_cache import TeacherCache, cache_key
from emvision.datasets_scripts.teacher_client import RateLimiter, RetryPolicy, redact
from emvision.datasets_scripts.teacher_cost import CostCeiling, Pricing, prompt_tokens
from emvision.datasets_scripts.teacher_runner import RunSummary, TeacherJob, run_jobs

CACHE_NAME = "teacher_cache.sqlite"
FAILURES_NAME = "failures.jsonl"
RUNS_NAME = "teacher_runs.jsonl"
LOCK_NAME = ".generate_qa.lock"
WRITTEN_BY = "emvision datasets_scripts/generate_qa.py"  # the subsets' info.description: ours to replace
CARD_BEGIN = "<!-- emvision generate_qa: begin -->"
CARD_END = "<!-- emvision generate_qa: end -->"
REQUIRED_IMAGE_COLUMNS = ("image", "image_id", "label", "fold")
SENDABLE_FORMATS = {b"\x89PNG": "png", b"\xff\xd8\xff": "jpeg", b"GIF8": "gif"}


@dataclass(frozen=True)
class TeacherSettings:
    """Everything an answer depends on besides the image and the question; all of it is in the cache key."""

    model: str
    temperature: float = 0.25
    top_p: float = 0.1
    max_tokens: int = 3500
    max_tokens_param: str = "max_tokens"  # newer OpenAI models want "max_completion_tokens"
    image_detail: str = "high"
    with_caption: bool = True  # the paper's protocol: the caption names the true category
    system_prompt: str = TEACHER_SYSTEM_PROMPT
    prompt_version: str = PROMPT_VERSION
    description_model: str | None = None  # defaults to ``model``

    def __post_init__(self):
        if self.image_detail not in ("low", "high", "auto"):
            raise ValueError(f"image_detail must be 'low', 'high' or 'auto', got {self.image_detail!r}")
        if self.max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(f"max_tokens_param must be 'max_tokens' or 'max_completion_tokens', got {self.max_tokens_param!r}")
        if not 0 <= self.temperature <= 2 or not 0 < self.top_p <= 1 or self.max_tokens < 1:
            raise ValueError(f"bad sampling parameters: temperature={self.temperature}, top_p={self.top_p}, max_tokens={self.max_tokens}")

    @property
    def descriptions_by(self) -> str:
        return self.description_model or self.model

    def sampling(self, model: str) -> dict:
        return {"model": model, "temperature": self.temperature, "top_p": self.top_p, self.max_tokens_param: self.max_tokens}


# ---------------------------------------------------------------- planning
@dataclass
class PlannedImage:
    row: int  # in the images subset
    image_id: str
    label: int
    fold: int
    keys: dict[int, str]  # question_id -> cache key


@dataclass
class Plan:
    settings: TeacherSettings
    label_names: list[str]
    question_ids: list[int]
    images: list[PlannedImage]  # sorted by image_id
    descriptions: list[tuple[int, int, str]] = field(default_factory=list)  # (label, sample, key)

    def keys(self) -> list[str]:
        return [key for image in self.images for key in image.keys.values()] + [key for _, _, key in self.descriptions]


def vqa_user_text(question: str, caption: str) -> str:
    return f"{caption}\n\n{question}" if caption else question


def vqa_key(settings: TeacherSettings, image_id: str, question_id: int, caption: str) -> str:
    return cache_key(
        {
            "kind": "vqa",
            "image_id": image_id,
            "question_id": question_id,
            "question": FAMILY_BY_ID[question_id].question,
            "caption": caption,
            "system_prompt": settings.system_prompt,
            "image_detail": settings.image_detail,
            "prompt_version": settings.prompt_version,
            **settings.sampling(settings.model),
        }
    )


def description_key(settings: TeacherSettings, label_name: str, sample: int) -> str:
    return cache_key(
        {
            "kind": "class_description",
            "label": label_name,
            "sample": sample,
            "prompt": class_description_prompt(label_name),
            "prompt_version": settings.prompt_version,
            **settings.sampling(settings.descriptions_by),
        }
    )


def load_images(dataset_dir: str | Path):
    """The ``images`` subset with undecoded images (raw bytes), and its class names."""
    from datasets import Image, load_from_disk

    path = Path(dataset_dir) / "images"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: DATASET_DIR must hold an 'images' subset saved with save_to_disk (datasets_scripts/build_sem.py writes one)")
    images = load_from_disk(str(path))
    missing = [name for name in REQUIRED_IMAGE_COLUMNS if name not in images.column_names]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; an images subset has {list(REQUIRED_IMAGE_COLUMNS)} (datasets_scripts/schema.py)")
    label_feature = images.features["label"]
    if not hasattr(label_feature, "names"):
        raise ValueError(f"{path}: 'label' must be a ClassLabel, got {label_feature}")
    return images.cast_column("image", Image(decode=False)), list(label_feature.names)


def plan_requests(
    images,
    label_names: Sequence[str],
    settings: TeacherSettings,
    *,
    question_ids: Sequence[int] | None = None,
    limit_images: int | None = None,
    folds: Sequence[int] | None = None,
    descriptions_per_class: int = 1,
) -> Plan:
    """Every request the run is responsible for (cached or not), images in image_id order."""
    if descriptions_per_class < 0 or (limit_images is not None and limit_images < 0):
        raise ValueError(f"descriptions_per_class and limit_images must be >= 0, got {descriptions_per_class} and {limit_images}")
    question_ids = sorted(set(question_ids or FAMILY_BY_ID))
    unknown = [q for q in question_ids if q not in FAMILY_BY_ID]
    if unknown:
        raise ValueError(f"unknown question id(s) {unknown}; the prompt families are {sorted(FAMILY_BY_ID)}")
    columns = images.select_columns(["image_id", "label", "fold"]).to_dict()
    rows = sorted(range(len(images)), key=lambda row: columns["image_id"][row])
    if folds is not None:
        wanted = set(folds)
        rows = [row for row in rows if columns["fold"][row] in wanted]
    if limit_images is not None:
        rows = rows[:limit_images]
    planned, seen = [], set()
    for row in rows:
        image_id, label = columns["image_id"][row], columns["label"][row]
        if image_id in seen:  # the same micrograph twice: one set of answers, one set of rows
            continue
        seen.add(image_id)
        caption = caption_for(label_names[label]) if settings.with_caption else ""
        keys = {q: vqa_key(settings, image_id, q, caption) for q in question_ids}
        planned.append(PlannedImage(row, image_id, label, columns["fold"][row], keys))
    descriptions = [(label, sample, description_key(settings, name, sample)) for label, name in enumerate(label_names) for sample in range(descriptions_per_class)]
    return Plan(settings, list(label_names), question_ids, planned, descriptions)


def image_payload(image: dict) -> tuple[str, tuple[int, int]]:
    """The image as a data URL (stored bytes sent as they are when PNG/JPEG/GIF, else re-encoded as PNG) and its size."""
    from PIL import Image as PILImage

    data = image.get("bytes")
    if data is None:
        data = Path(image["path"]).read_bytes()
    with PILImage.open(io.BytesIO(data)) as decoded:
        size = decoded.size
        kind = next((name for magic, name in SENDABLE_FORMATS.items() if data.startswith(magic)), None)
        if kind is None:
            buffer = io.BytesIO()
            decoded.convert("RGB" if decoded.mode not in ("L", "RGB", "RGBA") else decoded.mode).save(buffer, format="PNG")
            data, kind = buffer.getvalue(), "png"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}", size


def vqa_body(settings: TeacherSettings, data_url: str, question_id: int, caption: str) -> dict:
    text = vqa_user_text(FAMILY_BY_ID[question_id].question, caption)
    return {
        "messages": [
            {"role": "system", "content": settings.system_prompt},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url, "detail": settings.image_detail}}, {"type": "text", "text": text}]},
        ],
        **settings.sampling(settings.model),
    }


def iter_jobs(plan: Plan, images, done: set[str]) -> Iterator[TeacherJob]:
    """The plan's requests that are not in ``done``: class descriptions first, then each image's questions."""
    settings = plan.settings
    for label, sample, key in plan.descriptions:
        if key in done:
            continue
        prompt = class_description_prompt(plan.label_names[label])
        body = {"messages": [{"role": "user", "content": prompt}], **settings.sampling(settings.descriptions_by)}
        yield TeacherJob(key, "class_description", None, sample, plan.label_names[label], body, prompt_tokens([prompt]))
    for image in plan.images:
        pending = [q for q, key in image.keys.items() if key not in done]
        if not pending:
            continue
        caption = caption_for(plan.label_names[image.label]) if settings.with_caption else ""
        try:
            data_url, size = image_payload(images[image.row]["image"])
        except Exception as error:  # one unreadable image must not end a run of days: report its pairs
            reason = f"unreadable image (row {image.row}): {type(error).__name__}: {error}"
            for question_id in pending:
                yield TeacherJob(image.keys[question_id], "vqa", image.image_id, question_id, plan.label_names[image.label], {}, 0, error=reason)
            continue
        for question_id in pending:
            body = vqa_body(settings, data_url, question_id, caption)
            estimate = prompt_tokens([settings.system_prompt, vqa_user_text(FAMILY_BY_ID[question_id].question, caption)], [size], settings.image_detail)
            yield TeacherJob(image.keys[question_id], "vqa", image.image_id, question_id, plan.label_names[image.label], body, estimate)


# ---------------------------------------------------------------- estimate
@dataclass
class Estimate:
    total: int
    cached: int
    pending: int
    input_tokens: int
    expected_output_tokens: float
    expected_cost_usd: float
    worst_cost_usd: float

    def describe(self, pricing: Pricing) -> str:
        line = f"{self.pending} requests to send ({self.cached} of {self.total} already cached); ~{self.input_tokens:,} input tokens"
        if pricing.is_free:
            return line + "; no prices given (--price_per_1k_input/--price_per_1k_output), so no cost estimate"
        return line + (
            f"; estimated cost ${self.expected_cost_usd:,.2f} at ~{self.expected_output_tokens:.0f} output tokens per answer,"
            f" at most ${self.worst_cost_usd:,.2f} if every answer used max_tokens"
        )


def estimate(plan: Plan, images, done: set[str], pricing: Pricing, expected_output_tokens: float) -> Estimate:
    """Tokens and cost of the requests not in ``done`` (reads each pending image's header for its size)."""
    from PIL import Image as PILImage

    settings = plan.settings
    pending = input_tokens = 0
    for label, _, key in plan.descriptions:
        if key not in done:
            pending += 1
            input_tokens += prompt_tokens([class_description_prompt(plan.label_names[label])])
    for image in plan.images:
        todo = [q for q, key in image.keys.items() if key not in done]
        if not todo:
            continue
        raw = images[image.row]["image"]
        try:
            with PILImage.open(io.BytesIO(raw["bytes"]) if raw.get("bytes") is not None else raw["path"]) as decoded:
                size = decoded.size
        except Exception:  # counted at a typical size; the real run reports it as failed
            size = (256, 256)
        caption = caption_for(plan.label_names[image.label]) if settings.with_caption else ""
        for q in todo:
            pending += 1
            input_tokens += prompt_tokens([settings.system_prompt, vqa_user_text(FAMILY_BY_ID[q].question, caption)], [size], settings.image_detail)
    total = len(plan.keys())
    return Estimate(
        total=total,
        cached=total - pending,
        pending=pending,
        input_tokens=input_tokens,
        expected_output_tokens=expected_output_tokens,
        expected_cost_usd=pricing.cost(input_tokens, pending * expected_output_tokens),
        worst_cost_usd=pricing.cost(input_tokens, pending * settings.max_tokens),
    )


# ---------------------------------------------------------------- outputs
def _vqa_rows(dataset_dir: str, cache_path: str, plan_rows: tuple, label_names: tuple[str, ...], settings_json: str):
    """vqa rows from the cache; ``plan_rows`` = (row, image_id, label, fold, ((question_id, key), ...)) per image."""
    from datasets import Image

    from emvision.datasets_scripts.teacher_cache import TeacherCache as Cache

    settings = TeacherSettings(**json.loads(settings_json))
    images, _ = load_images(dataset_dir)
    images = images.cast_column("image", Image(decode=False))
    with Cache(cache_path, readonly=True) as cache:
        for row, image_id, label, fold, keys in plan_rows:
            answers = [(q, cache.get(key)) for q, key in keys]
            answers = [(q, a) for q, a in answers if a is not None]
            if not answers:
                continue
            image = images[row]["image"]
            caption = caption_for(label_names[label]) if settings.with_caption else ""
            for question_id, answer in answers:
                yield {
                    "image_id": image_id,
                    "image": image,
                    "label": label,
                    "question_id": question_id,
                    "question": FAMILY_BY_ID[question_id].question,
                    "caption": caption,
                    "answer": answer.answer,
                    "teacher": answer.model,
                    "prompt_version": settings.prompt_version,
                    "fold": fold,
                }


def written_by_generate_qa(subset_dir: Path) -> bool:
    info = subset_dir / "dataset_info.json"
    try:
        return json.loads(info.read_text()).get("description") == WRITTEN_BY
    except (OSError, ValueError):
        return False


def check_outputs_replaceable(output_dir: Path, overwrite: bool = False) -> None:
    """Refuse to replace a vqa / class_descriptions subset that another tool wrote (e.g. in-house QA from build_sem.py)."""
    for name in ("vqa", "class_descriptions"):
        subset = output_dir / name
        if subset.exists() and not overwrite and not written_by_generate_qa(subset):
            raise FileExistsError(f"{subset} exists and was not written by generate_qa.py; choose another --output, or pass --overwrite to replace it")


def write_subsets(output_dir: str | Path, dataset_dir: str | Path, plan: Plan, cache_path: str | Path, *, progress: bool = True) -> dict[str, int]:
    """Rebuild ``DIR/vqa`` and ``DIR/class_descriptions`` from the cache (rows in a fixed order). Returns row counts."""
    from emvision.datasets_scripts.storage import class_descriptions_features, vqa_features

    output_dir = Path(output_dir)
    with TeacherCache(cache_path, readonly=True) as cache:
        cached = cache.keys()
        descriptions = []
        for label, _, key in plan.descriptions:
            answer = cache.get(key)
            if answer is not None:
                name = plan.label_names[label]
                descriptions.append({"label": label, "name": name, "description": answer.answer, "source": answer.model, "prompt": class_description_prompt(name)})
    counts = {}
    with progress_bars(progress), staged_write(output_dir, ("class_descriptions", "vqa"), prefix="generate_qa") as staging:
        counts["class_descriptions"] = save_subset(staging / "class_descriptions", class_descriptions_features(plan.label_names), descriptions, description=WRITTEN_BY)
        features = vqa_features(plan.label_names)
        if not any(key in cached for image in plan.images for key in image.keys.values()):
            counts["vqa"] = save_subset(staging / "vqa", features, description=WRITTEN_BY)
        else:
            # tuples, not lists: datasets would shard a list of gen_kwargs over workers
            plan_rows = tuple((image.row, image.image_id, image.label, image.fold, tuple(sorted(image.keys.items()))) for image in plan.images)
            gen_kwargs = {"dataset_dir": str(dataset_dir), "cache_path": str(cache_path), "plan_rows": plan_rows, "label_names": tuple(plan.label_names), "settings_json": json.dumps(asdict(plan.settings))}
            counts["vqa"] = save_subset(staging / "vqa", features, generator=_vqa_rows, gen_kwargs=gen_kwargs, fingerprint=uuid.uuid4().hex, description=WRITTEN_BY)
    return counts


def write_card(output_dir: Path, plan: Plan, counts: dict[str, int], failures: int, total_cost_usd: float) -> None:
    """The dataset card's teacher section, in DIR/README.md (an existing card keeps its other sections)."""
    s = plan.settings
    protocol = (
        "**Label-conditioned (the MVaEMa paper's protocol).** Every request carried a caption naming the image's "
        "ground-truth category (`caption` column), so the answers may repeat the true label. Models trained on these "
        "answers must be evaluated with that in mind; label-free evaluation never shows the caption."
        if s.with_caption
        else "**Label-free.** The teacher saw no caption (`--no_caption`): the `caption` column is empty and the answers do not know the true category."
    )
    pairs = sum(len(image.keys) for image in plan.images)
    section = f"""{CARD_BEGIN}
## Teacher-written question-answer pairs (`vqa`) and class descriptions (`class_descriptions`)

- Teacher: `{s.model}` (class descriptions: `{s.descriptions_by}`), through an OpenAI-compatible chat-completions API;
  temperature {s.temperature}, top-p {s.top_p}, at most {s.max_tokens} output tokens, image detail `{s.image_detail}`.
- Prompts: the ten prompt families of the MVaEMa paper, prompt version `{s.prompt_version}`; the system message asks for
  context-augmented zero-shot chain-of-thought. Class descriptions: a zero-shot chain-of-thought prompt per class, text only.
- Caption protocol: {protocol}
- The answers are a model's output, not expert annotation: they can be wrong, and every row names its teacher (`teacher`, `source`).
- Rows: {counts.get('vqa', 0)} of {pairs} planned pairs ({len(plan.images)} images x {len(plan.question_ids)} prompt families);
  {counts.get('class_descriptions', 0)} of {len(plan.descriptions)} class descriptions. Pairs that failed: {failures} (see `{FAILURES_NAME}`).
- Spent so far (from the server's reported usage and the prices given): ${total_cost_usd:,.4f}.
- Written by `datasets_scripts/generate_qa.py` on {time.strftime('%Y-%m-%d')}; answers are cached in `{CACHE_NAME}` (no API key, no images).
{CARD_END}
"""
    path = output_dir / "README.md"
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if CARD_BEGIN in existing and CARD_END in existing:
        head, rest = existing.split(CARD_BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(CARD_END, 1)[1]
    elif existing:
        text = existing.rstrip("\n") + "\n\n" + section
    else:
        text = "---\nlicense: other\ntags:\n- electron-microscopy\n- visual-question-answering\n- llm-generated\n---\n\n# emvision teacher QA\n\n" + section
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def output_lock(output_dir: Path):
    """One run per output folder: two would ask for (and pay for) the same answers."""
    output_dir.mkdir(parents=True, exist_ok=True)
    busy = f"another generate_qa run is writing to {output_dir} (it holds {output_dir / LOCK_NAME}); wait for it or stop it"
    return file_lock(output_dir / LOCK_NAME, wait=False, busy_message=busy)


# ---------------------------------------------------------------- the whole run
@dataclass
class GenerateResult:
    summary: RunSummary
    counts: dict[str, int]
    failures: int


def generate_qa(
    dataset_dir: str | Path,
    output_dir: str | Path,
    settings: TeacherSettings,
    *,
    api_key: str,
    base_url: str | None = None,
    concurrency: int = 8,
    requests_per_minute: float | None = None,
    policy: RetryPolicy | None = None,
    pricing: Pricing = Pricing(),
    max_cost_usd: float | None = None,
    question_ids: Sequence[int] | None = None,
    limit_images: int | None = None,
    folds: Sequence[int] | None = None,
    descriptions_per_class: int = 1,
    cache_path: str | Path | None = None,
    progress: bool = True,
    handle_signals: bool = False,
    overwrite: bool = False,
) -> GenerateResult:
    """Ask the teacher for every pair the cache lacks, then rebuild the subsets from the cache."""
    import openai

    if max_cost_usd is not None and pricing.is_free:
        raise ValueError("--max_cost_usd needs prices: give --price_per_1k_input and --price_per_1k_output")
    output_dir = Path(output_dir)
    check_outputs_replaceable(output_dir, overwrite)
    cache_path = Path(cache_path) if cache_path else output_dir / CACHE_NAME
    policy = policy or RetryPolicy()
    images, names = load_images(dataset_dir)
    plan = plan_requests(images, names, settings, question_ids=question_ids, limit_images=limit_images, folds=folds, descriptions_per_class=descriptions_per_class)
    with output_lock(output_dir):
        with TeacherCache(cache_path) as cache:
            done = cache.keys()
            total = sum(1 for key in plan.keys() if key not in done)
            client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=policy.request_timeout_s)
            failures_path = output_dir / FAILURES_NAME
            failures_path.write_text("")  # this run's failures; earlier ones are retried below

            async def run() -> RunSummary:
                try:
                    return await run_jobs(
                        iter_jobs(plan, images, done),
                        total=total,
                        client=client,
                        cache=cache,
                        model_for_kind={"vqa": settings.model, "class_description": settings.descriptions_by},
                        policy=policy,
                        limiter=RateLimiter(requests_per_minute),
                        ceiling=CostCeiling(max_cost_usd, pricing),
                        max_output_tokens=settings.max_tokens,
                        concurrency=concurrency,
                        failures_path=failures_path,
                        secret=api_key,
                        progress=progress,
                        handle_signals=handle_signals,
                    )
                finally:
                    await client.close()

            summary = asyncio.run(run())
            total_cost = cache.total_cost_usd()
            with open(output_dir / RUNS_NAME, "a", encoding="utf-8") as runs:
                record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "settings": asdict(settings), "concurrency": concurrency, **summary.as_dict()}
                runs.write(redact(json.dumps(record), api_key) + "\n")
        failures = sum(1 for line in failures_path.read_text().splitlines() if line.strip())
        counts = write_subsets(output_dir, dataset_dir, plan, cache_path, progress=progress)
        write_card(output_dir, plan, counts, failures, total_cost)
    return GenerateResult(summary, counts, failures)


# ---------------------------------------------------------------- CLI
def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="generate_qa.py",
        usage="%(prog)s DATASET_DIR --output DIR --model NAME [--base_url URL] [options]",
        description="Write the vqa and class_descriptions subsets with a teacher model behind an OpenAI-compatible API. "
        "Resumable: answers are cached as they arrive; rerun the same command to go on.",
        epilog="The API key comes from $OPENAI_API_KEY (or --api_key_env); it is never written anywhere.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=36, width=110),
    )
    p.add_argument("dataset_dir", metavar="DATASET_DIR", help="folder holding the 'images' subset")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder: vqa/, class_descriptions/, cache, failures.jsonl, README.md")
    p.add_argument("--model", required=True, metavar="NAME", help="teacher model name, e.g. gpt-4o")
    p.add_argument("--base_url", metavar="URL", default=os.environ.get("OPENAI_BASE_URL"), help="OpenAI-compatible endpoint (vLLM, Ollama, a gateway); default: OpenAI")
    p.add_argument("--api_key_env", metavar="VAR", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--limit_images", type=int, metavar="N", help="only the first N images (by image_id)")
    p.add_argument("--folds", type=_int_list, metavar="0,1", help="only these folds")
    p.add_argument("--question_ids", type=_int_list, metavar="1,2", help="only these prompt families (1-10)")
    p.add_argument("--no_caption", action="store_true", help="label-free prompting: no caption naming the category")
    p.add_argument("--descriptions_per_class", type=int, default=1, metavar="K", help="class descriptions per class (0: none)")
    p.add_argument("--description_model", metavar="NAME", help="model for the class descriptions (default: --model)")
    p.add_argument("--concurrency", type=int, default=8, metavar="C", help="requests in flight (8)")
    p.add_argument("--requests_per_minute", type=float, metavar="R", help="rate limit on request starts")
    p.add_argument("--max_attempts", type=int, default=8, metavar="N", help="requests per pair before it is reported failed (8)")
    p.add_argument("--max_unusable", type=int, default=2, metavar="N", help="paid refusals/empty answers retried per pair (2)")
    p.add_argument("--request_timeout", type=float, default=180.0, metavar="S", help="seconds per request (180)")
    p.add_argument("--backoff_base", type=float, default=2.0, metavar="S", help="first backoff delay; doubles, jittered (2)")
    p.add_argument("--temperature", type=float, default=0.25, metavar="T", help="(0.25, the paper's)")
    p.add_argument("--top_p", type=float, default=0.1, metavar="P", help="(0.1, the paper's)")
    p.add_argument("--max_tokens", type=int, default=3500, metavar="N", help="output tokens per answer (3500, the paper's)")
    p.add_argument("--max_tokens_param", default="max_tokens", choices=["max_tokens", "max_completion_tokens"], help="how the API names it")
    p.add_argument("--image_detail", default="high", choices=["low", "high", "auto"], help="OpenAI image detail (high)")
    p.add_argument("--price_per_1k_input", type=float, default=0.0, metavar="USD", help="price per 1000 input tokens")
    p.add_argument("--price_per_1k_output", type=float, default=0.0, metavar="USD", help="price per 1000 output tokens")
    p.add_argument("--max_cost_usd", type=float, metavar="USD", help="stop before a request could take this run past it")
    p.add_argument("--dry_run", action="store_true", help="count and price what is left; send nothing")
    p.add_argument("--cache", metavar="PATH", help=f"cache file (default: DIR/{CACHE_NAME})")
    p.add_argument("--overwrite", action="store_true", help="replace vqa/class_descriptions subsets another tool wrote in DIR")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = TeacherSettings(
        model=args.model,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        max_tokens_param=args.max_tokens_param,
        image_detail=args.image_detail,
        with_caption=not args.no_caption,
        description_model=args.description_model,
    )
    pricing = Pricing(args.price_per_1k_input, args.price_per_1k_output)
    output = Path(args.output)
    cache_path = Path(args.cache) if args.cache else output / CACHE_NAME
    selection = {"question_ids": args.question_ids, "limit_images": args.limit_images, "folds": args.folds, "descriptions_per_class": args.descriptions_per_class}
    if args.dry_run:
        images, names = load_images(args.dataset_dir)
        plan = plan_requests(images, names, settings, **selection)
        done, expected = set(), 500.0
        if cache_path.exists():
            with TeacherCache(cache_path, readonly=True) as cache:
                done, expected = cache.keys(), cache.mean_completion_tokens() or expected
        print("dry run, nothing sent: " + estimate(plan, images, done, pricing, expected).describe(pricing))
        return 0
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        print(f"error: ${args.api_key_env} is not set; export the API key there (servers that need none accept any value, e.g. EMPTY)", file=sys.stderr)
        return 2
    policy = RetryPolicy(max_attempts=args.max_attempts, max_unusable=args.max_unusable, backoff_base_s=args.backoff_base, request_timeout_s=args.request_timeout)
    try:
        result = generate_qa(
            args.dataset_dir,
            output,
            settings,
            api_key=api_key,
            base_url=args.base_url,
            concurrency=args.concurrency,
            requests_per_minute=args.requests_per_minute,
            policy=policy,
            pricing=pricing,
            max_cost_usd=args.max_cost_usd,
            cache_path=cache_path,
            progress=not args.no_progress,
            handle_signals=True,
            overwrite=args.overwrite,
            **selection,
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {redact(str(error), api_key)}", file=sys.stderr)
        return 2
    s = result.summary
    stopped = f"; stopped early: {s.stopped}" if s.stopped else ""
    print(
        f"{s.stored} answers stored, {result.failures} failed, {s.not_sent} left for a later run; {s.log.sent} requests sent "
        f"in {s.elapsed_s:.0f} s, ${s.cost_usd:.4f}; vqa: {result.counts['vqa']} rows, class_descriptions: "
        f"{result.counts['class_descriptions']} rows -> {output}{stopped}"
    )
    return 1 if s.stopped and s.stopped.startswith(("fatal", "error")) else 0


if __name__ == "__main__":
    sys.exit(main())
