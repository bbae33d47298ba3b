"""The demo app: a micrograph in, its information bar, classes, answers and where the models looked out.

    emvision demo --model outputs/vqa --classifier outputs/classify      # http://127.0.0.1:7860

Gradio (the optional extra `emvision[demo]`), bound to 127.0.0.1 unless told otherwise, and offline:
no analytics, no web fonts (the theme uses the system's), no share link, no server-side rendering.
Without `--classifier`, MVaEMa classifies zero-shot and the saliency panel shows its attention for
the classification question instead of HNF's gradients.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

from emvision.processing.micrograph import to_working_array
from emvision.vocabulary import CLASSIFICATION_QUESTION, PROMPT_FAMILIES

from .explain import explain_answer, explain_classification, map_onto_image, overlay_heatmap
from .infobar import FrameInfo, read_frame_info
from .models import Assistant, Classifier
from .predict import decode

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
SAMPLES_CREDIT = "NFFA-EUROPE SEM dataset, Aversa et al. 2018, CC BY 4.0"
DEFAULT_QUESTION = "Describe the overall shape and morphology of the nanomaterials."
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "DejaVu Sans Mono", "monospace"]


def sample_paths() -> list[str]:
    """The bundled sample micrographs (see samples/ATTRIBUTION.md)."""
    return sorted(str(path) for path in SAMPLES_DIR.iterdir() if path.suffix.lower() in (".jpg", ".png"))


def outline_bar(array: np.ndarray, frame: FrameInfo) -> PIL.Image.Image:
    """The micrograph in RGB with the micrograph part framed in green and the information bar in red."""
    image = PIL.Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    draw = PIL.ImageDraw.Draw(image)
    line = max(2, frame.width // 250)
    left, top, right, bottom = frame.crop_box
    draw.rectangle((left, top, right - 1, bottom - 1), outline=(40, 200, 80), width=line)
    if frame.bar_row is not None:
        draw.rectangle((0, frame.bar_row, frame.width - 1, frame.height - 1), outline=(230, 40, 40), width=line)
    return image


class DemoModels:
    """What the app runs: the assistant, and a classifier (HNF) or the assistant's zero-shot ranking."""

    def __init__(self, model: str, classifier: str | None = None, device: str | None = None, max_new_tokens: int = 64):
        self.assistant = Assistant(model, device)
        self.classifier = Classifier(classifier or model, self.assistant.device, assistant=self.assistant)
        self.max_new_tokens = max_new_tokens

    def analyse(self, path: str, question: str) -> dict:
        with open(path, "rb") as handle:
            image = decode(os.path.basename(path), handle.read())
        array = to_working_array(image)
        frame = read_frame_info(array, image)

        pixel_values = self.classifier.pixel_values([array])
        probabilities = self.classifier.probabilities(pixel_values)[0].tolist()
        classes = dict(zip(self.classifier.labels, probabilities))
        best = max(classes, key=classes.get)
        if self.classifier.assistant is None:
            saliency = explain_classification(self.classifier.model, pixel_values)[0].cpu()
            model_frame = frame if self.classifier.image_processor.do_remove_info_bar else _whole(frame)
            where = overlay_heatmap(array, map_onto_image(saliency, model_frame))
            where_label = f"Where {self.classifier.kind} looked for '{best}' (gradient saliency)"
        else:
            _, attention = explain_answer(self.assistant.model, self.assistant.processor, image, CLASSIFICATION_QUESTION)
            where = overlay_heatmap(array, attention)
            where_label = "Where MVaEMa looked for the category (cross-attention, zero-shot)"

        family_answers = self.assistant.answers(
            self.assistant.pixel_values([array]), [family.question for family in PROMPT_FAMILIES], self.max_new_tokens
        )[0]
        question = (question or "").strip() or DEFAULT_QUESTION
        answer, attention = explain_answer(self.assistant.model, self.assistant.processor, image, question, self.max_new_tokens)
        return dict(
            frame_image=outline_bar(array, frame),
            frame_text=frame.describe(),
            prediction=f"Predicted: {best} ({classes[best]:.0%}, {self.classifier.kind})",
            classes=classes,
            saliency=where,
            saliency_label=where_label,
            families=[(family.question_id, family.name, text) for family, text in zip(PROMPT_FAMILIES, family_answers)],
            answer=answer,
            attention=overlay_heatmap(array, attention),
        )


def _whole(frame: FrameInfo) -> FrameInfo:
    return FrameInfo(frame.width, frame.height, None, frame.pixel_size_nm, frame.scale_source)


def _families_markdown(rows) -> str:
    lines = ["| # | prompt family | answer |", "| --- | --- | --- |"]
    lines += [f"| {number} | {name} | {text.replace('|', '/') or '(empty)'} |" for number, name, text in rows]
    return "\n".join(lines)


def build_demo(models: DemoModels):
    """The Gradio Blocks app over `models` (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def run(path, question):
        if not path:
            raise gr.Error("Upload a micrograph or pick a sample first.")
        result = models.analyse(path, question)
        return (
            result["frame_image"],
            result["frame_text"],
            f"### {result['prediction']}",
            result["classes"],
            gr.update(value=result["saliency"], label=result["saliency_label"]),
            result["answer"],
            result["attention"],
            _families_markdown(result["families"]),
        )

    with gr.Blocks(title="emvision demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "## emvision: what the models see in a micrograph\n"
            f"Assistant: `{models.assistant.folder}` (MVaEMa). Classifier: `{models.classifier.folder}` "
            f"({models.classifier.kind}). Everything runs on this machine."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Micrograph", sources=["upload"], elem_id="micrograph", height=300)
                gr.Examples(examples=[[path] for path in sample_paths()], inputs=[image], label=f"Samples ({SAMPLES_CREDIT})")
                question = gr.Textbox(label="Your question", value=DEFAULT_QUESTION, elem_id="question")
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=1):
                frame_image = gr.Image(label="Information bar (red) and the micrograph the models see (green)", elem_id="frame", height=300)
                frame_text = gr.Markdown(elem_id="frame_text")
        with gr.Row():
            with gr.Column(scale=1):
                prediction = gr.Markdown(elem_id="prediction")
                classes = gr.Label(num_top_classes=10, label="Class probabilities", elem_id="classes")
            with gr.Column(scale=1):
                saliency = gr.Image(label="Where the classifier looked", elem_id="saliency", height=300)
        with gr.Row():
            with gr.Column(scale=1):
                answer = gr.Textbox(label="Answer to your question", elem_id="answer", lines=3)
            with gr.Column(scale=1):
                attention = gr.Image(label="Where MVaEMa looked while answering (cross-attention)", elem_id="attention", height=300)
        families = gr.Markdown(elem_id="families")
        button.click(run, inputs=[image, question], outputs=[frame_image, frame_text, prediction, classes, saliency, answer, attention, families])
    return demo


def launch(model: str, classifier: str | None = None, host: str = "127.0.0.1", port: int = 7860, max_new_tokens: int = 64,
           device: str | None = None) -> None:
    """Load the models and serve the app until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError('emvision demo needs Gradio: pip install "emvision[demo]"') from error
    demo = build_demo(DemoModels(model, classifier, device, max_new_tokens))
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)
    print(f"emvision demo on http://{host}:{port} (Ctrl+C stops it)", flush=True)
    demo.queue().launch(server_name=host, server_port=port, share=False, inbrowser=False, theme=theme, ssr_mode=False,
                         allowed_paths=[str(SAMPLES_DIR)])
