"""The teacher: question-answer pairs and class descriptions from a model behind an OpenAI-compatible API.

- ``planning``: the run's settings and every request it is responsible for, each under a cache key;
- ``payloads``: the request bodies (the image as a data URL) and the jobs a run sends;
- ``client``: one request, with retries, rate limit and refusal detection;
- ``runner``: many requests at once (bounded concurrency, cost ceiling, signals);
- ``cache``: the durable answer cache a killed run resumes from;
- ``cost``: token and price estimates, the ceiling, the dry run's estimate;
- ``outputs``: the vqa / class_descriptions subsets rebuilt from the cache, and the run's lock;
- ``card``: the teacher's section of the dataset card;
- ``run``: :func:`generate_qa`, the whole run (``datasets_scripts/generate_qa.py`` is its command line).
"""

from .cache import CachedAnswer, TeacherCache, cache_key
from .card import CARD_BEGIN, CARD_END, write_card
from .client import FatalTeacherError, RateLimiter, RetryPolicy, is_refusal, redact, retry_after_seconds
from .cost import CostCeiling, Estimate, Pricing, estimate, image_tokens, prompt_tokens, text_tokens
from .outputs import (
    CACHE_NAME,
    FAILURES_NAME,
    LOCK_NAME,
    RUNS_NAME,
    WRITTEN_BY,
    check_outputs_replaceable,
    output_lock,
    write_subsets,
    written_by_generate_qa,
)
from .payloads import image_payload, iter_jobs, vqa_body
from .planning import Plan, PlannedImage, TeacherSettings, description_key, load_images, plan_requests, vqa_key, vqa_user_text
from .run import GenerateResult, generate_qa
from .runner import RunSummary, TeacherJob, run_jobs

__all__ = [
    "CACHE_NAME",
    "CARD_BEGIN",
    "CARD_END",
    "FAILURES_NAME",
    "LOCK_NAME",
    "RUNS_NAME",
    "WRITTEN_BY",
    "CachedAnswer",
    "CostCeiling",
    "Estimate",
    "FatalTeacherError",
    "GenerateResult",
    "Plan",
    "PlannedImage",
    "Pricing",
    "RateLimiter",
    "RetryPolicy",
    "RunSummary",
    "TeacherCache",
    "TeacherJob",
    "TeacherSettings",
    "cache_key",
    "check_outputs_replaceable",
    "description_key",
    "estimate",
    "generate_qa",
    "image_payload",
    "image_tokens",
    "is_refusal",
    "iter_jobs",
    "load_images",
    "output_lock",
    "plan_requests",
    "prompt_tokens",
    "redact",
    "retry_after_seconds",
    "run_jobs",
    "text_tokens",
    "vqa_body",
    "vqa_key",
    "vqa_user_text",
    "write_card",
    "write_subsets",
    "written_by_generate_qa",
]
