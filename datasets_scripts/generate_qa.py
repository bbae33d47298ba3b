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
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from emvision.datasets_scripts.teacher import (
    CACHE_NAME,
    Pricing,
    RetryPolicy,
    TeacherCache,
    TeacherSettings,
    estimate,
    generate_qa,
    load_images,
    plan_requests,
    redact,
)
from emvision.vocabulary import FAMILY_BY_ID


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _int_at_least(minimum: int, what: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{what}, got {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (low < value if low_open else low <= value) and value <= high):
            raise argparse.ArgumentTypeError(f"expected a number in {'(' if low_open else '['}{low:g}, {high:g}], got {text!r}")
        return value

    return parse


def _question_ids(text: str) -> list[int]:
    ids = _int_list(text)
    wrong = [value for value in ids if value not in FAMILY_BY_ID]
    if not ids or wrong:
        raise argparse.ArgumentTypeError(
            f"prompt families are {min(FAMILY_BY_ID)}-{max(FAMILY_BY_ID)} (comma-separated), got {text!r}"
        )
    return ids


def _folds(text: str) -> list[int]:
    folds = _int_list(text)
    if not folds or any(fold < 0 for fold in folds):
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers >= 0, got {text!r}")
    return folds


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
    p.add_argument("--limit_images", type=_int_at_least(1), metavar="N", help="only the first N images (by image_id)")
    p.add_argument("--folds", type=_folds, metavar="0,1", help="only these folds")
    p.add_argument("--question_ids", type=_question_ids, metavar="1,2", help="only these prompt families (1-10)")
    p.add_argument("--no_caption", action="store_true", help="label-free prompting: no caption naming the category")
    p.add_argument("--descriptions_per_class", type=_int_at_least(0), default=1, metavar="K", help="class descriptions per class (0: none)")
    p.add_argument("--description_model", metavar="NAME", help="model for the class descriptions (default: --model)")
    p.add_argument("--concurrency", type=_int_at_least(1), default=8, metavar="C", help="requests in flight (8)")
    p.add_argument("--requests_per_minute", type=_float_in(0, math.inf, low_open=True), metavar="R", help="rate limit on request starts")
    p.add_argument("--max_attempts", type=_int_at_least(1), default=8, metavar="N", help="requests per pair before it is reported failed (8)")
    p.add_argument("--max_unusable", type=_int_at_least(0), default=2, metavar="N", help="paid refusals/empty answers retried per pair (2)")
    p.add_argument("--request_timeout", type=_seconds, default=180.0, metavar="S", help="seconds per request, connection to last byte (180)")
    p.add_argument("--backoff_base", type=_float_in(0, 3600), default=2.0, metavar="S", help="first backoff delay; doubles, jittered (2)")
    p.add_argument("--temperature", type=_float_in(0, 2), default=0.25, metavar="T", help="(0.25, the paper's)")
    p.add_argument("--top_p", type=_float_in(0, 1, low_open=True), default=0.1, metavar="P", help="(0.1, the paper's)")
    p.add_argument("--max_tokens", type=_int_at_least(1), default=3500, metavar="N", help="output tokens per answer (3500, the paper's)")
    p.add_argument("--max_tokens_param", default="max_tokens", choices=["max_tokens", "max_completion_tokens"], help="how the API names it")
    p.add_argument("--image_detail", default="high", choices=["low", "high", "auto"], help="OpenAI image detail (high)")
    p.add_argument("--price_per_1k_input", type=_float_in(0, math.inf), default=0.0, metavar="USD", help="price per 1000 input tokens")
    p.add_argument("--price_per_1k_output", type=_float_in(0, math.inf), default=0.0, metavar="USD", help="price per 1000 output tokens")
    p.add_argument("--max_cost_usd", type=_float_in(0, math.inf, low_open=True), metavar="USD", help="stop before a request could take this run past it")
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
