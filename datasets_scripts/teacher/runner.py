"""Many teacher requests at once: bounded concurrency, rate limit, cost ceiling, durable results.

``run_jobs`` takes the jobs not yet in the cache and works through them with ``concurrency``
workers. Each answer is committed to the cache as it arrives; each request that finally fails is
appended to ``failures.jsonl`` (kind, image_id, question_id, label, reason, attempts) and will be
tried again by the next run. The run stops taking new jobs, and lets the ones in flight finish,
when the next request could pass the cost ceiling, on the first SIGINT/SIGTERM (which also cancels
pending retries; a second one abandons the requests in flight), or when the server rejects the
run itself. Every request has a total deadline (``RetryPolicy.request_timeout_s``, connection to
last byte), so the requests in flight finish, or are cut off, within it: a first SIGTERM ends the
requests within one deadline, whatever the server does, and keeps every answer already committed.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .cache import CachedAnswer, TeacherCache
from .client import (
    AttemptLog,
    FatalTeacherError,
    RateLimiter,
    RetryPolicy,
    TeacherFailure,
    request_answer,
)
from .cost import CostCeiling, text_tokens


@dataclass
class TeacherJob:
    key: str
    kind: str  # "vqa" or "class_description"
    image_id: str | None
    question_id: int  # vqa: prompt family; class_description: sample index
    label: str
    body: dict  # keyword arguments of chat.completions.create
    prompt_tokens_estimate: int
    error: str | None = None  # the request could not be built (e.g. an unreadable image): reported, never sent


@dataclass
class RunSummary:
    pending: int = 0  # jobs this run was given
    stored: int = 0
    failed: int = 0
    not_sent: int = 0  # left for a later run (stopped early, interrupted)
    cost_usd: float = 0.0
    stopped: str | None = None  # why the run ended early, if it did
    elapsed_s: float = 0.0
    log: AttemptLog = field(default_factory=AttemptLog)

    def as_dict(self) -> dict:
        return {
            "pending": self.pending,
            "stored": self.stored,
            "failed": self.failed,
            "not_sent": self.not_sent,
            "requests_sent": self.log.sent,
            "outcomes": dict(self.log.outcomes),
            "retry_after_waits_s": round(sum(self.log.retry_after_waits), 3),
            "cost_usd": round(self.cost_usd, 6),
            "stopped": self.stopped,
            "elapsed_s": round(self.elapsed_s, 3),
        }


async def run_jobs(
    jobs: Iterable[TeacherJob],
    *,
    total: int,
    client,
    cache: TeacherCache,
    model_for_kind: dict[str, str],
    policy: RetryPolicy,
    limiter: RateLimiter,
    ceiling: CostCeiling,
    max_output_tokens: int,
    concurrency: int = 8,
    failures_path: str | Path | None = None,
    secret: str | None = None,
    progress: bool = True,
    handle_signals: bool = False,
    seed: int | None = None,
) -> RunSummary:
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    summary = RunSummary(pending=total)
    started = time.monotonic()
    stop_new = asyncio.Event()  # take no new job
    interrupt = asyncio.Event()  # also send no retry (requests on the wire still finish)
    queue: asyncio.Queue = asyncio.Queue(maxsize=2 * concurrency)
    rng = random.Random(seed)
    pricing = ceiling.pricing
    bar = tqdm(total=total, unit="pair", desc="teacher", disable=not progress, dynamic_ncols=True)
    failures_file = open(failures_path, "a", encoding="utf-8") if failures_path else None

    def stop(why: str, *, hard: bool = False) -> None:
        if summary.stopped is None:
            summary.stopped = why
        stop_new.set()
        if hard:
            interrupt.set()

    def report_failure(job: TeacherJob, reason: str, attempts: int) -> None:
        summary.failed += 1
        if failures_file is not None:
            record = {"kind": job.kind, "image_id": job.image_id, "question_id": job.question_id, "label": job.label, "reason": reason, "attempts": attempts}
            failures_file.write(json.dumps(record) + "\n")
            failures_file.flush()

    async def produce() -> None:
        try:
            for job in jobs:
                if stop_new.is_set():
                    break
                await queue.put(job)
        except Exception:  # e.g. the dataset cannot be read: the workers finish what they hold, then stop
            stop("error", hard=True)
            raise
        finally:
            for _ in range(concurrency):
                await queue.put(None)

    async def work() -> None:
        while (job := await queue.get()) is not None:
            if stop_new.is_set():
                continue
            if job.error is not None:
                report_failure(job, job.error, 0)
                bar.update(1)
                continue
            worst = pricing.cost(job.prompt_tokens_estimate, max_output_tokens)
            if not ceiling.reserve(worst):
                stop(f"cost ceiling: the next request could pass ${ceiling.max_usd:g}")
                continue

            def on_unusable(why: str, prompt_tokens, completion_tokens) -> bool:
                cost = pricing.cost(prompt_tokens or job.prompt_tokens_estimate, completion_tokens or 0)
                ceiling.charge(cost)
                summary.cost_usd += cost
                cache.record_usage(job.key, why, prompt_tokens, completion_tokens, cost)
                return ceiling.spent_usd + ceiling.reserved_usd <= (ceiling.max_usd if ceiling.max_usd is not None else float("inf"))

            try:
                result = await request_answer(
                    client, job.body, policy=policy, limiter=limiter, log=summary.log, rng=rng, secret=secret, on_unusable=on_unusable, stop=interrupt
                )
            except FatalTeacherError as error:
                stop(f"fatal: {error}", hard=True)
                continue
            finally:
                ceiling.release(worst)
            if isinstance(result, TeacherFailure):
                if not result.interrupted:
                    report_failure(job, result.reason, result.attempts)
                    bar.update(1)
                continue
            cost = pricing.cost(result.prompt_tokens or job.prompt_tokens_estimate, result.completion_tokens or text_tokens(result.answer))
            cache.put(
                CachedAnswer(
                    key=job.key,
                    kind=job.kind,
                    image_id=job.image_id,
                    question_id=job.question_id,
                    label=job.label,
                    model=model_for_kind[job.kind],
                    answer=result.answer,
                    finish_reason=result.finish_reason,
                    response_model=result.response_model,
                    response_id=result.response_id,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    attempts=result.attempts,
                    created=time.time(),
                ),
                cost_usd=cost,
            )
            ceiling.charge(cost)
            summary.cost_usd += cost
            summary.stored += 1
            bar.update(1)
            bar.set_postfix(stored=summary.stored, failed=summary.failed, sent=summary.log.sent, usd=f"{summary.cost_usd:.2f}", refresh=False)

    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()

    signals_received = []

    def on_signal() -> None:
        signals_received.append(time.monotonic())
        if len(signals_received) > 1:
            stop("interrupted twice: requests in flight abandoned", hard=True)
            for task in workers:
                task.cancel()
        else:
            stop("interrupted: finishing the requests in flight (interrupt again to abandon them)", hard=True)
            bar.write("interrupted: finishing the requests in flight; interrupt again to abandon them")

    async def guarded_work() -> None:
        try:
            await work()
        except Exception:  # a bug or a full disk: stop the others, then raise
            stop("error", hard=True)
            raise

    workers = [asyncio.create_task(guarded_work()) for _ in range(concurrency)]
    producer = asyncio.create_task(produce())
    for signum in signals:
        loop.add_signal_handler(signum, on_signal)
    try:
        results = await asyncio.gather(*workers, return_exceptions=True)
        if not producer.done():
            producer.cancel()
        results += await asyncio.gather(producer, return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        bar.close()
        if failures_file is not None:
            failures_file.close()
        summary.elapsed_s = time.monotonic() - started
    summary.not_sent = total - summary.stored - summary.failed
    return summary
