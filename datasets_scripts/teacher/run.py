"""A whole teacher run: ask for every pair the cache lacks, then rebuild the subsets and the card from the cache."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .cache import TeacherCache
from .card import write_card
from .client import RateLimiter, RetryPolicy, redact
from .cost import CostCeiling, Pricing
from .outputs import CACHE_NAME, FAILURES_NAME, RUNS_NAME, check_outputs_replaceable, output_lock, write_subsets
from .payloads import iter_jobs
from .planning import TeacherSettings, load_images, plan_requests
from .runner import RunSummary, run_jobs


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
