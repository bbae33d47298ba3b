"""Classification metrics: Top-1/Top-5 accuracy, per-class precision/recall/F1, macro-F1, confusion matrix.

``classification_report`` turns scores (logits or probabilities, shape ``(N, C)``) and integer
labels into a JSON-ready dict; ``save_classification_report`` writes it as
``classification_metrics.json`` beside ``confusion_matrix.json`` and ``confusion_matrix.png``.

Evaluation is label-free by default. A protocol in which the model saw the true class at prediction
time (the HNF paper feeding the true class's description, the MVaEMa paper's caption naming the
category) must pass ``label_conditioned=True``: the report, both JSON files and the plot then say
so, and its figures are not comparable with label-free ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

METRICS_FILE = "classification_metrics.json"
CONFUSION_JSON_FILE = "confusion_matrix.json"
CONFUSION_PNG_FILE = "confusion_matrix.png"

LABEL_FREE_NOTE = "label-free: no prediction saw its image's label"
LABEL_CONDITIONED_NOTE = (
    "LABEL-CONDITIONED: the model was given each image's true class at prediction time "
    "(paper protocol); not comparable with label-free figures"
)


def _as_numpy(array, name: str) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().float().cpu().numpy() if array.is_floating_point() else array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except Exception as error:  # noqa: BLE001
        raise TypeError(f"{name}: expected an array-like, got {type(array).__name__}") from error


def classification_report(
    logits_or_probs,
    labels,
    class_names: Sequence[str],
    label_conditioned: bool = False,
    protocol: str | None = None,
    top_k: int = 5,
    metadata: Mapping | None = None,
) -> dict:
    """Metrics of one evaluation run, as plain JSON types.

    Args:
        logits_or_probs: ``(N, C)`` scores, higher = more likely (any monotone transform gives the
            same report). A ``torch.Tensor`` or anything ``numpy.asarray`` accepts.
        labels: ``(N,)`` true class indices in ``[0, C)``.
        class_names: the ``C`` class names, in index order.
        label_conditioned: the model saw each image's true label (see the module docstring).
        protocol: a name for the evaluation protocol, stored as is (default ``"label-free"`` or
            ``"label-conditioned"``).
        top_k: the k of the Top-k accuracy besides Top-1 (key ``top{k}_accuracy``); with fewer than
            k classes it is 1.0 by construction, and ``top_k_effective`` says so.
        metadata: extra JSON-serializable facts stored under ``metadata`` (dataset, split, checkpoint,
            whether the images are synthetic, ...).

    Macro-F1 follows scikit-learn's default: the unweighted mean over the classes present among the
    labels or the predictions (``macro_averaged_over`` lists them), so a class absent from a fold
    and never predicted does not count as a zero.
    """
    from sklearn.metrics import confusion_matrix
    from sklearn.metrics import precision_recall_fscore_support

    scores = _as_numpy(logits_or_probs, "logits_or_probs")
    labels = _as_numpy(labels, "labels")
    class_names = [str(name) for name in class_names]
    if scores.ndim != 2:
        raise ValueError(f"logits_or_probs must have shape (N, C), got {scores.shape}")
    num_examples, num_classes = scores.shape
    if num_examples == 0:
        raise ValueError("logits_or_probs holds no examples")
    if num_classes != len(class_names):
        raise ValueError(f"logits_or_probs has {num_classes} columns but class_names has {len(class_names)} names")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names has duplicates: {class_names}")
    if labels.shape != (num_examples,):
        raise ValueError(f"labels must have shape ({num_examples},) to match logits_or_probs, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from {labels.min()} to {labels.max()}")
    if not np.isfinite(scores).all():
        raise ValueError("logits_or_probs contains NaN or infinite values")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")

    predictions = scores.argmax(axis=1)
    k = min(top_k, num_classes)
    # the true class is in the top k iff fewer than k classes score strictly higher (ties count for it)
    true_scores = scores[np.arange(num_examples), labels]
    in_top_k = (scores > true_scores[:, None]).sum(axis=1) < k

    all_classes = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=all_classes, zero_division=0
    )
    averaged = sorted(set(labels.tolist()) | set(predictions.tolist()))
    matrix = confusion_matrix(labels, predictions, labels=all_classes)

    return {
        "label_conditioned": bool(label_conditioned),
        "protocol": protocol or ("label-conditioned" if label_conditioned else "label-free"),
        "protocol_note": LABEL_CONDITIONED_NOTE if label_conditioned else LABEL_FREE_NOTE,
        "num_examples": int(num_examples),
        "num_classes": int(num_classes),
        "top1_accuracy": float((predictions == labels).mean()),
        f"top{top_k}_accuracy": float(in_top_k.mean()),
        "top_k_effective": int(k),
        "macro_f1": float(np.mean(f1[averaged])),
        "macro_precision": float(np.mean(precision[averaged])),
        "macro_recall": float(np.mean(recall[averaged])),
        "macro_averaged_over": [class_names[i] for i in averaged],
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "class_names": class_names,
        "confusion_matrix": matrix.astype(int).tolist(),  # rows: true class, columns: predicted class
        "metadata": dict(metadata) if metadata else {},
    }


def save_classification_report(report: Mapping, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``classification_metrics.json``, ``confusion_matrix.json`` and ``confusion_matrix.png``.

    Returns the three paths by kind (``metrics``, ``confusion_json``, ``confusion_png``).
    """
    for key in ("class_names", "confusion_matrix", "label_conditioned", "protocol_note"):
        if key not in report:
            raise KeyError(f"report lacks '{key}'; build it with classification_report()")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": output_dir / METRICS_FILE,
        "confusion_json": output_dir / CONFUSION_JSON_FILE,
        "confusion_png": output_dir / CONFUSION_PNG_FILE,
    }
    paths["metrics"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    confusion = {
        "class_names": report["class_names"],
        "matrix": report["confusion_matrix"],
        "rows": "true class",
        "columns": "predicted class",
        "label_conditioned": report["label_conditioned"],
        "protocol_note": report["protocol_note"],
    }
    paths["confusion_json"].write_text(json.dumps(confusion, indent=2) + "\n", encoding="utf-8")
    plot_confusion_matrix(report, paths["confusion_png"])
    return paths


def load_classification_report(path: str | os.PathLike) -> dict:
    """Read back a ``classification_metrics.json`` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no classification metrics at {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def plot_confusion_matrix(report: Mapping, path: str | os.PathLike) -> Path:
    """A PNG of the confusion matrix: counts in the cells, colour = share of the true class (row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(report["class_names"])
    counts = np.asarray(report["confusion_matrix"], dtype=np.int64)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape, dtype=float), where=row_totals > 0)

    size = max(4.0, 0.55 * len(names) + 2.5)
    figure = Figure(figsize=(size + 1.5, size), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # Agg, whatever pyplot's backend is
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of true class")
    axes.set_xticks(range(len(names)), labels=names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), labels=names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    for row in range(len(names)):
        for column in range(len(names)):
            if counts[row, column]:
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=7, color=colour)
    title = f"top-1 {report.get('top1_accuracy', float('nan')):.3f}, macro-F1 {report.get('macro_f1', float('nan')):.3f}"
    if report["label_conditioned"]:
        title = "LABEL-CONDITIONED (paper protocol)\n" + title
    axes.set_title(title, fontsize=9)
    figure.savefig(path, format="png")
    return Path(path)
