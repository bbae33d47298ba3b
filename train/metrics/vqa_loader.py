"""Load the project's VQA metric module (``train/metrics/vqa``) from wherever emvision is installed."""

from __future__ import annotations

from pathlib import Path

VQA_METRIC_DIR = Path(__file__).resolve().parent / "vqa"


def load_vqa_metric(**kwargs):
    """``evaluate.load`` on the installed ``vqa`` module folder, offline.

    Keyword arguments go to ``evaluate.load`` (``experiment_id``, ``num_process``, ``process_id``
    for distributed evaluation, ...). Raises ``WordNetNotFoundError`` when WordNet 3.0 is missing.
    """
    import evaluate

    if not (VQA_METRIC_DIR / "vqa.py").is_file():
        raise FileNotFoundError(f"the VQA metric module is missing from the installed package: {VQA_METRIC_DIR / 'vqa.py'}")
    return evaluate.load(str(VQA_METRIC_DIR), **kwargs)
