"""End to end: a tiny MVaEMa learns 8 image-question-answer triples by heart, then survives save and load.

Images: four real micrographs from tests/fixtures/real_sem and four synthetic patterns drawn here. The answers
are short hand-written stand-ins for teacher answers, written for this test (not model output).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor

from emvision.modeling import MVaEMaConfig, MVaEMaForQuestionAnswering
from emvision.processing import MVaEMaProcessor, build_default_processor

WHAT = "What type of nanomaterial is shown in this image?"
SHAPE = "Describe the overall shape and morphology of the nanomaterials."
# (image, question, answer); each question is asked about several images, so answers depend on the image
ANSWERS = [
    ("Nanowires", WHAT, "nanowires standing on the substrate."),
    ("Nanowires", SHAPE, "long thin wires, about 50 nm wide."),
    ("Patterned_surface", WHAT, "a patterned surface with a square array."),
    ("Porous_Sponge", SHAPE, "an open sponge with pores of 1 µm."),
    ("synthetic-stripes", WHAT, "a grating of vertical lines."),
    ("synthetic-checkerboard", SHAPE, "squares in a checkerboard, 30 nm each."),
    ("synthetic-disc", WHAT, "one round particle in the centre."),
    ("synthetic-dots", SHAPE, "small dots, evenly spaced and separate."),
]


def _synthetic_images(folder):
    """Four synthetic 256x256 grayscale patterns, saved as PNG files."""
    y, x = np.mgrid[0:256, 0:256]
    patterns = {
        "synthetic-stripes": (np.sin(x / 6.0) > 0) * 200 + 20,
        "synthetic-checkerboard": ((x // 32 + y // 32) % 2) * 255,
        "synthetic-disc": ((x - 128) ** 2 + (y - 128) ** 2 < 60**2) * 230 + 10,
        "synthetic-dots": (((x % 32) - 16) ** 2 + ((y % 32) - 16) ** 2 < 36) * 220 + 15,
    }
    paths = {}
    for name, pattern in patterns.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(pattern.astype(np.uint8)).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_sem_dir):
    folder = tmp_path_factory.mktemp("overfit")
    images = {name: str(path) for name, path in _synthetic_images(folder).items()}
    for category in ("Nanowires", "Patterned_surface", "Porous_Sponge"):
        images[category] = str(sorted((real_sem_dir / category).iterdir())[0])
    paths = [images[name] for name, _, _ in ANSWERS]
    questions = [question for _, question, _ in ANSWERS]
    answers = [answer for _, _, answer in ANSWERS]

    processor = build_default_processor()
    batch = processor(images=paths, text=questions, answers=answers)
    torch.manual_seed(0)
    config = MVaEMaConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
        projection_dim=16,
    )
    model = MVaEMaForQuestionAnswering(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0, foreach=True)
    prompts = processor(images=paths, text=questions)
    for step in range(600):
        model.train()
        out = model(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if out.loss_lm.item() < 0.02 and step % 10 == 0:
            model.eval()
            if processor.batch_decode(model.generate(**prompts, max_new_tokens=24)) == answers:
                break
    model.eval()
    return dict(model=model, processor=processor, paths=paths, questions=questions, answers=answers, steps=step + 1, folder=folder)


def test_overfits_and_generates_every_answer_exactly(trained):
    model, processor = trained["model"], trained["processor"]
    prompts = processor(images=trained["paths"], text=trained["questions"])
    generated = model.generate(**prompts, max_new_tokens=24)
    assert processor.batch_decode(generated) == trained["answers"], f"after {trained['steps']} steps"
    tokenizer = processor.tokenizer
    for row, answer in zip(generated.tolist(), trained["answers"]):
        expected = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert row[prompts["input_ids"].shape[1] :][: len(expected)] == expected  # token for token, then [EOS]
    # the same through beam search
    beams = model.generate(**prompts, max_new_tokens=24, num_beams=3)
    assert processor.batch_decode(beams) == trained["answers"]


def test_save_and_load_with_auto_classes(trained, tmp_path):
    model, processor = trained["model"], trained["processor"]
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))

    loaded = AutoModel.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, MVaEMaForQuestionAnswering) and isinstance(loaded_processor, MVaEMaProcessor)
    assert isinstance(AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path), MVaEMaForQuestionAnswering)

    inputs = loaded_processor(images=trained["paths"], text=trained["questions"])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)
    assert torch.equal(model.generate(**inputs, max_new_tokens=24), loaded.generate(**inputs, max_new_tokens=24))
    probs = loaded.classify(inputs["pixel_values"], loaded_processor)
    assert torch.equal(probs, model.classify(inputs["pixel_values"], processor))


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["emvision"] = None  # this process cannot import emvision
    import json
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoProcessor

    folder, request, output = sys.argv[1:4]
    request = json.load(open(request))
    torch.set_num_threads(1)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(images=request["paths"], text=request["questions"])
    with torch.no_grad():
        logits = model(**inputs).logits
    generated = model.generate(**inputs, max_new_tokens=24)
    save_file({"logits": logits.contiguous(), "generated": generated.contiguous()}, output)
    print(json.dumps({
        "model": type(model).__module__,
        "processor": type(processor).__module__,
        "image_processor": type(processor.image_processor).__module__,
        "answers": processor.batch_decode(generated),
    }))
    """
)


def test_remote_code_without_emvision_gives_identical_outputs(trained, tmp_path):
    model, processor = trained["model"], trained["processor"]
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for name in ("modeling_mvaema.py", "configuration_mvaema.py", "losses.py", "processing_mvaema.py"):
        assert (folder / name).is_file(), name
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"paths": trained["paths"], "questions": trained["questions"]}))
    output = tmp_path / "remote.safetensors"
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder), str(request), str(output)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"].startswith("transformers_modules") and report["processor"].startswith("transformers_modules")
    assert report["image_processor"].startswith("transformers_modules")
    assert report["answers"] == trained["answers"]

    remote = load_file(output)
    inputs = processor(images=trained["paths"], text=trained["questions"])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, remote["logits"])
    assert torch.equal(model.generate(**inputs, max_new_tokens=24), remote["generated"])
