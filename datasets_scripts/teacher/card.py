"""The teacher's section of the dataset card (DIR/README.md): who answered, how, and at what cost."""

from __future__ import annotations

import time
from pathlib import Path

from .outputs import CACHE_NAME, FAILURES_NAME
from .planning import Plan

CARD_BEGIN = "<!-- emvision generate_qa: begin -->"
CARD_END = "<!-- emvision generate_qa: end -->"


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
