"""Token and cost estimates for teacher requests, and the cost ceiling a run must stay under.

Image tokens follow OpenAI's published rule for GPT-4 Turbo / GPT-4o vision inputs:

- ``detail="low"``: a flat 85 tokens;
- ``detail="high"`` (and ``"auto"``, counted as high: an upper bound): the image is scaled down to fit
  a 2048 x 2048 square, then down so its short side is at most 768 px; each 512 px tile costs 170
  tokens, plus 85. A 256 x 341 micrograph (the dataset's default size) is one tile: 255 tokens.

Text tokens are estimated at one per 4 characters (rounded up) plus 4 per message and 3 per reply,
which is close for English with OpenAI's tokenizers; no tokenizer is downloaded. These estimates
drive the dry run (:func:`estimate`: what is left of a plan, and its price) and the ceiling's
reservations only: the cost charged to a run is computed from the ``usage`` the server returns.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emvision.vocabulary import FAMILY_BY_ID, caption_for, class_description_prompt

if TYPE_CHECKING:
    from .planning import Plan

LOW_DETAIL_TOKENS = 85
TILE_TOKENS = 170
TILE_SIZE = 512


def image_tokens(width: int, height: int, detail: str = "high") -> int:
    if detail == "low":
        return LOW_DETAIL_TOKENS
    if detail not in ("high", "auto"):
        raise ValueError(f"image detail must be 'low', 'high' or 'auto', got {detail!r}")
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    tiles = math.ceil(width / TILE_SIZE) * math.ceil(height / TILE_SIZE)
    return TILE_TOKENS * tiles + LOW_DETAIL_TOKENS


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def prompt_tokens(texts: list[str], image_sizes: list[tuple[int, int]] = (), detail: str = "high") -> int:
    """Estimated input tokens of one request: its messages' texts and images."""
    return sum(text_tokens(text) + 4 for text in texts) + 3 + sum(image_tokens(w, h, detail) for w, h in image_sizes)


@dataclass(frozen=True)
class Pricing:
    input_per_1k: float = 0.0
    output_per_1k: float = 0.0

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return input_tokens / 1000 * self.input_per_1k + output_tokens / 1000 * self.output_per_1k

    @property
    def is_free(self) -> bool:
        return self.input_per_1k == 0 and self.output_per_1k == 0


class CostCeiling:
    """Keeps a run's spending under ``max_usd``, counting requests in flight at their worst case.

    ``reserve(worst)`` before sending: refused when what is spent, plus every reservation still open,
    plus ``worst``, would pass the ceiling. ``settle(reservation, actual)`` when the answer is in.
    """

    def __init__(self, max_usd: float | None, pricing: Pricing):
        if max_usd is not None and max_usd < 0:
            raise ValueError(f"--max_cost_usd must be >= 0, got {max_usd}")
        self.max_usd = max_usd
        self.pricing = pricing
        self.spent_usd = 0.0
        self.reserved_usd = 0.0

    def reserve(self, worst_usd: float) -> bool:
        if self.max_usd is not None and self.spent_usd + self.reserved_usd + worst_usd > self.max_usd + 1e-12:
            return False
        self.reserved_usd += worst_usd
        return True

    def release(self, reserved_usd: float) -> None:
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)

    def charge(self, actual_usd: float) -> None:
        self.spent_usd += actual_usd


# ---------------------------------------------------------------------------------------------
# what is left of a plan, and its price


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

    from .planning import vqa_user_text

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
