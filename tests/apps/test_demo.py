"""The demo's analysis without a browser: what each panel gets, with HNF and with MVaEMa's zero-shot ranking."""

from pathlib import Path

import numpy as np
import PIL.Image

from emvision.apps.demo import DemoModels, outline_bar, sample_paths
from emvision.apps.infobar import FrameInfo
from emvision.vocabulary import PROMPT_FAMILIES


def test_bundled_samples_are_the_attributed_fixtures(real_sem_dir):
    samples = sample_paths()
    assert len(samples) == 3
    attribution = (Path(samples[0]).parent / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in attribution and "Aversa et al." in attribution
    fixtures = {path.read_bytes() for path in real_sem_dir.rglob("*.jpg")}
    assert all(open(sample, "rb").read() in fixtures for sample in samples)


def test_analysis_with_hnf_and_zero_shot(hnf_folder, mvaema_folder, real_sem_dir):
    micrograph = str(real_sem_dir / "Nanowires" / "L6_0a6f18702a4a32677c74ed390f3af7af.jpg")
    with_hnf = DemoModels(str(mvaema_folder), str(hnf_folder), device="cpu", max_new_tokens=4)
    result = with_hnf.analyse(micrograph, "How large are the wires?")
    assert abs(sum(result["classes"].values()) - 1) < 1e-4 and len(result["classes"]) == 10
    best = max(result["classes"], key=result["classes"].get)
    assert result["prediction"].startswith(f"Predicted: {best} (") and "HNF classifier" in result["prediction"]
    assert "gradient saliency" in result["saliency_label"]
    assert [row[:2] for row in result["families"]] == [(f.question_id, f.name) for f in PROMPT_FAMILIES]
    assert "information bar: rows" in result["frame_text"]
    for panel in ("frame_image", "saliency", "attention"):
        assert result[panel].size == (1024, 768), panel

    zero_shot = DemoModels(str(mvaema_folder), None, device="cpu", max_new_tokens=4).analyse(micrograph, "")
    assert "MVaEMa zero-shot" in zero_shot["prediction"] and "cross-attention" in zero_shot["saliency_label"]


def test_the_bar_is_outlined_in_red_and_the_micrograph_in_green():
    array = np.full((60, 80), 100, np.uint8)
    drawn = np.asarray(outline_bar(array, FrameInfo(width=80, height=60, bar_row=50)))
    assert tuple(drawn[55, 0]) == (230, 40, 40) and tuple(drawn[10, 0]) == (40, 200, 80)
    assert tuple(drawn[30, 40]) == (100, 100, 100)
