"""One teacher request, sent through the ``openai`` client, with this project's own retry policy.

The client's built-in retries are off (``max_retries=0``) so that every attempt is counted and
``Retry-After`` is honoured exactly. Every attempt has a total deadline, ``request_timeout_s``, from
the connection to the last byte of the answer: the HTTP client's own timeouts bound each wait for
the next bytes, so a server that trickles its answer would never trip them. What happens to each
kind of response:

- 429 (rate limit), 408/409, 5xx, timeouts, dropped connections, bodies that are not a chat
  completion: retried with jittered exponential backoff, or after exactly the ``Retry-After`` /
  ``retry-after-ms`` delay when the server sends one (the whole run pauses for it, not just the
  request that was told);
- refusals (``message.refusal``, or a short answer opening like "I'm sorry, I can't ...") and empty
  answers: paid for, so retried at most ``max_unusable`` times, then reported; never stored;
- answers cut at ``max_tokens`` (``finish_reason="length"``): kept, with their finish reason in the cache;
- other 4xx (a request the server will never accept): reported at once, not retried;
- 401/403/404 and 429 ``insufficient_quota``: :class:`FatalTeacherError`; every request would fail
  alike, so the run stops.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openai

REFUSAL_MAX_CHARS = 400
_REFUSAL = re.compile(
    r"^\W*(?:(?:i'm|i am|we're|we are)\s+(?:very\s+|really\s+)?sorry|sorry|i apologi[sz]e|unfortunately)\b[^.!?\n]{0,80}?"
    r"\b(?:can't|cannot|can not|unable|won't|will not|not able|not allowed|not permitted)\b"
    r"|^\W*i\s+(?:can't|cannot|can not|won't|will not|am unable to|am not able to)\s+(?:help|assist|provide|comply|identify|analy[sz]e|describe|process|view|see|do)\b"
    r"|^\W*as an ai\b",
)


def is_refusal(text: str) -> bool:
    """A short answer that declines the task. Long answers that merely apologise for one detail are kept."""
    text = text.strip().lower().replace("\u2019", "'")
    return len(text) <= REFUSAL_MAX_CHARS and _REFUSAL.search(text) is not None


def retry_after_seconds(headers) -> float | None:
    """Seconds a response asks us to wait: ``retry-after-ms``, then ``retry-after`` (seconds or HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def redact(text: str, secret: str | None) -> str:
    """Remove an API key, and anything that looks like a (masked) OpenAI key, from a message."""
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"sk-[A-Za-z0-9_\-*]{2,}", "sk-***", text)


class FatalTeacherError(RuntimeError):
    """The server rejects the run itself (bad key, unknown model, no quota): stop, do not retry."""


@dataclass
class RetryPolicy:
    max_attempts: int = 8  # requests per key, all outcomes
    max_unusable: int = 2  # paid responses (refusals, empty answers) tolerated before giving up
    backoff_base_s: float = 2.0
    backoff_max_s: float = 120.0
    max_retry_after_s: float = 3600.0  # longer Retry-After values are capped to this
    request_timeout_s: float = 180.0

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Equal jitter: half the exponential delay, plus a uniform draw over the other half."""
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))
        return delay / 2 + rng.uniform(0, delay / 2)


class RateLimiter:
    """Spaces request starts ``60 / requests_per_minute`` seconds apart; ``pause_until`` stops all starts."""

    def __init__(self, requests_per_minute: float | None = None):
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError(f"requests per minute must be > 0, got {requests_per_minute}")
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next_start = 0.0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause_until(self, when: float) -> None:
        self._paused_until = max(self._paused_until, when)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                start = max(now, self._next_start, self._paused_until)
                if start <= now:
                    break
                await asyncio.sleep(start - now)
            self._next_start = now + self.interval


@dataclass
class TeacherReply:
    answer: str
    finish_reason: str | None
    response_model: str | None
    response_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    attempts: int


@dataclass
class TeacherFailure:
    reason: str
    attempts: int
    interrupted: bool = False  # the run was stopped while this key waited to retry: not a failure of the key


@dataclass
class AttemptLog:
    """What every attempt of a run came to (``sent`` counts requests that reached the client)."""

    sent: int = 0
    outcomes: Counter = field(default_factory=Counter)
    retry_after_waits: list[float] = field(default_factory=list)

    def note(self, outcome: str) -> None:
        self.outcomes[outcome] += 1


def _status_outcome(status: int) -> str:
    return "429" if status == 429 else "5xx" if status >= 500 else str(status)


def _usage(completion) -> tuple[int | None, int | None]:
    usage = getattr(completion, "usage", None)
    return getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)


def read_completion(completion) -> tuple[str | None, str]:
    """``(answer, "ok")`` for a usable chat completion, else ``(None, why)``."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        return None, "malformed: no choices"
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None:
        return None, "malformed: no message"
    if getattr(message, "refusal", None):
        return None, "refused"
    if getattr(choice, "finish_reason", None) == "content_filter":
        return None, "refused: content filter"
    content = getattr(message, "content", None)
    if not isinstance(content, str) or not content.strip():
        return None, "empty"
    if is_refusal(content):
        return None, "refused"
    return content.strip(), "ok"


async def _sleep_unless_stopped(seconds: float, stop: asyncio.Event | None) -> bool:
    """Sleep; True if ``stop`` was set before or during the sleep."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def request_answer(
    client: openai.AsyncOpenAI,
    body: dict,
    *,
    policy: RetryPolicy,
    limiter: RateLimiter,
    log: AttemptLog,
    rng: random.Random,
    secret: str | None = None,
    on_unusable: Callable[[str, int | None, int | None], bool] | None = None,
    stop: asyncio.Event | None = None,
) -> TeacherReply | TeacherFailure:
    """Send ``body`` (``chat.completions.create`` keyword arguments) until it yields a usable answer or the policy gives up.

    ``on_unusable(why, prompt_tokens, completion_tokens)`` is told of every paid response that was not
    usable and returns whether another paid attempt is allowed. Once ``stop`` is set, no further
    attempt is sent (a wait to retry is cut short); the request on the wire, if any, still finishes,
    within its deadline (``policy.request_timeout_s``, connection to last byte).
    """
    import openai  # here, not at the top: answering --help need not load the client library

    failures = unusable = 0
    last_reason = "not sent"
    for attempt in range(1, policy.max_attempts + 1):
        await limiter.acquire()
        if stop is not None and stop.is_set():
            return TeacherFailure(f"interrupted after: {last_reason}", attempt - 1, interrupted=True)
        log.sent += 1
        wait: float | None = None
        try:
            # the total deadline: httpx's timeout (passed too) bounds each wait for bytes, not the whole answer
            completion = await asyncio.wait_for(client.chat.completions.create(**body, timeout=policy.request_timeout_s), policy.request_timeout_s)
        except openai.APIStatusError as error:
            status = error.status_code
            code = getattr(error, "code", None)
            message = redact(str(getattr(error, "message", error)), secret)
            log.note(_status_outcome(status))
            if status in (401, 403, 404) or code == "insufficient_quota":
                raise FatalTeacherError(f"HTTP {status} from the teacher: {message}") from None
            last_reason = f"HTTP {status}: {message}"[:300]
            if not (status in (408, 409, 429) or status >= 500):
                return TeacherFailure(last_reason, attempt)
            wait = retry_after_seconds(error.response.headers)
            if wait is not None:
                wait = min(wait, policy.max_retry_after_s)
                limiter.pause_until(time.monotonic() + wait)
                log.retry_after_waits.append(wait)
        except (openai.APITimeoutError, TimeoutError):
            log.note("timeout")
            last_reason = f"timeout after {policy.request_timeout_s:g} s"
        except openai.APIConnectionError as error:
            log.note("connection")
            last_reason = redact(f"connection error: {error.__cause__ or error}", secret)[:300]
        except (openai.APIResponseValidationError, ValueError) as error:  # a 200 whose body is not JSON
            log.note("malformed")
            last_reason = redact(f"malformed response: {type(error).__name__}", secret)
        else:
            answer, why = read_completion(completion)
            prompt_tokens, completion_tokens = _usage(completion)
            if answer is not None:
                choice = completion.choices[0]
                log.note("ok, cut at max_tokens" if getattr(choice, "finish_reason", None) == "length" else "ok")
                return TeacherReply(
                    answer=answer,
                    finish_reason=getattr(choice, "finish_reason", None),
                    response_model=getattr(completion, "model", None),
                    response_id=getattr(completion, "id", None),
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    attempts=attempt,
                )
            log.note(why.split(":")[0])
            last_reason = why
            if why.startswith(("refused", "empty")):
                if on_unusable is not None and not on_unusable(why, prompt_tokens, completion_tokens):
                    return TeacherFailure(f"stopped (cost ceiling) after: {why}", attempt, interrupted=True)
                unusable += 1
                if unusable > policy.max_unusable:
                    return TeacherFailure(why, attempt)
        if attempt == policy.max_attempts:
            break
        failures += 1
        if await _sleep_unless_stopped(wait if wait is not None else policy.backoff(failures, rng), stop):
            return TeacherFailure(f"interrupted after: {last_reason}", attempt, interrupted=True)
    return TeacherFailure(last_reason, policy.max_attempts)
