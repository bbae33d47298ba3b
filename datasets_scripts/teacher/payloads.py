"""The requests themselves: chat-completion bodies with the image as a data URL, and the jobs a run sends."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

from emvision.vocabulary import FAMILY_BY_ID, caption_for, class_description_prompt

from .cost import prompt_tokens
from .planning import Plan, TeacherSettings, vqa_user_text
from .runner import TeacherJob

SENDABLE_FORMATS = {b"\x89PNG": "png", b"\xff\xd8\xff": "jpeg", b"GIF8": "gif"}


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
