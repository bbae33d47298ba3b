"""VQA metrics (the local evaluate module), offline WordNet, classification metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import emvision.train.metrics
from emvision.train.metrics import wordnet_data
from emvision.train.metrics.classification import (
    classification_report,
    load_classification_report,
    save_classification_report,
)
from emvision.train.metrics.vqa_loader import VQA_METRIC_DIR, load_vqa_metric

REFERENCE_ROWS = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "vqa_metric_examples.jsonl"  # the MVaEMa paper's Table 7
VQA_KEYS = {"bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"}


@pytest.fixture(scope="module")
def vqa_metric():
    return load_vqa_metric()


def _reference_rows():
    if not REFERENCE_ROWS.is_file():
        pytest.fail(f"reference figures not found at {REFERENCE_ROWS}")
    return [json.loads(line) for line in REFERENCE_ROWS.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- VQA metrics


def test_paper_reference_rows_reproduced(vqa_metric):
    rows = _reference_rows()
    result = vqa_metric.compute(
        predictions=[row["prediction"] for row in rows],
        references=[row["reference"] for row in rows],
        return_per_example=True,
    )
    assert VQA_KEYS <= set(result)
    for index, row in enumerate(rows):
        for key in ("bleu2", "rougeL", "meteor"):
            assert result["per_example"][key][index] == pytest.approx(row[key], abs=0.002), (index, key)


def test_bleu_agrees_with_nltk_where_every_order_matches(vqa_metric):
    from nltk.translate.bleu_score import sentence_bleu

    rows = _reference_rows()
    result = vqa_metric.compute(
        predictions=[row["prediction"] for row in rows],
        references=[row["reference"] for row in rows],
        return_per_example=True,
    )
    for index, row in enumerate(rows):
        reference, hypothesis = row["reference"].lower().split(), row["prediction"].lower().split()
        assert result["per_example"]["bleu2"][index] == pytest.approx(sentence_bleu([reference], hypothesis, weights=(0.5, 0.5)))
        assert result["per_example"]["bleu4"][index] == pytest.approx(sentence_bleu([reference], hypothesis))


def test_module_loads_by_relative_and_installed_path(repo_root, monkeypatch):
    import evaluate

    assert Path(emvision.train.metrics.__file__).parent / "vqa" == VQA_METRIC_DIR
    monkeypatch.chdir(repo_root)
    metric = evaluate.load("train/metrics/vqa")
    result = metric.compute(predictions=["rod-shaped particles"], references=["rod-shaped particles"])
    assert set(result) == VQA_KEYS
    assert result["bleu2"] == pytest.approx(1.0) and result["rougeL"] == pytest.approx(1.0)


def test_meteor_synonym_stage_runs(vqa_metric):
    # "scattered" and "spread" match only through a WordNet synset (not exactly, not by Porter stem).
    kwargs = dict(predictions=["rods are scattered randomly"], references=["rods are spread randomly"])
    with_synonyms = vqa_metric.compute(**kwargs)
    without_synonyms = vqa_metric.compute(**kwargs, meteor_synonyms=False)
    assert "meteor" not in without_synonyms
    assert with_synonyms["meteor"] > without_synonyms["meteor_without_synonyms"] + 0.2
    # BLEU and ROUGE do not see synonyms
    assert with_synonyms["bleu2"] == without_synonyms["bleu2"]


def test_bleu4_is_zero_without_a_4gram_match(vqa_metric):
    result = vqa_metric.compute(
        predictions=["the rods are long", "rods are thin"],
        references=["the rods are short", "rods are thin"],
        return_per_example=True,
    )
    assert result["per_example"]["bleu4"] == [0.0, 0.0]  # no smoothing: exactly zero
    assert result["per_example"]["bleu2"][0] == pytest.approx((3 / 4 * 2 / 3) ** 0.5)
    assert result["per_example"]["bleu2"][1] == pytest.approx(1.0)


def test_corpus_figure_is_mean_of_sentence_figures(vqa_metric):
    predictions = ["porous sponge-like network", "dense film with cracks", "long thin nanowires on a substrate"]
    references = ["a porous, sponge-like network", "a dense film covered in cracks", "thin nanowires lying on the substrate"]
    corpus = vqa_metric.compute(predictions=predictions, references=references)
    singles = [vqa_metric.compute(predictions=[p], references=[r]) for p, r in zip(predictions, references)]
    for key in VQA_KEYS:
        assert corpus[key] == pytest.approx(np.mean([single[key] for single in singles])), key
    assert len({single["bleu2"] for single in singles}) == 3  # the examples really differ


def test_multiple_references_and_empty_prediction(vqa_metric):
    result = vqa_metric.compute(
        predictions=["dispersed spherical particles", ""],
        references=[["a thin film", "dispersed spherical particles"], ["a thin film"]],
        return_per_example=True,
    )
    for key in ("bleu2", "rouge1", "rougeL"):
        assert result["per_example"][key] == [pytest.approx(1.0), 0.0], key
    single = vqa_metric.compute(predictions=["dispersed spherical particles"], references=["dispersed spherical particles"])
    assert result["per_example"]["meteor"][0] == pytest.approx(single["meteor"])
    assert result["per_example"]["meteor"][1] == 0.0


def test_empty_reference_is_an_error(vqa_metric):
    with pytest.raises(ValueError, match=r"references\[1\]"):
        vqa_metric.compute(predictions=["a", "b"], references=["a", "  "])


def test_missing_wordnet_fails_before_scoring(tmp_path):
    empty_data, empty_home = tmp_path / "nltk_data", tmp_path / "home"
    empty_data.mkdir()
    empty_home.mkdir()
    env = {**os.environ, "NLTK_DATA": str(empty_data), "HOME": str(empty_home), "HF_HUB_OFFLINE": "1"}
    # NLTK also searches system-wide folders; drop them so a copy elsewhere on the machine cannot mask the test.
    # `sys.modules["transformers"] = None` only spares the child evaluate's import of transformers'
    # pipelines (its optional Evaluator, unused here), which would triple this test's run time.
    script = (
        "import contextlib, io, sys\n"
        "sys.modules['transformers'] = None\n"
        "import nltk\n"
        f"nltk.data.path[:] = [p for p in nltk.data.path if p.startswith({str(tmp_path)!r})]\n"
        "from emvision.train.metrics.wordnet_data import main\n"
        "with contextlib.redirect_stderr(io.StringIO()) as err:\n"
        "    code = main(['check'])\n"
        "print('check exit code', code, err.getvalue())\n"
        "from emvision.train.metrics.vqa_loader import load_vqa_metric\n"
        "metric = load_vqa_metric()\n"
        "print('scored', metric.compute(predictions=['a b'], references=['a b']))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "check exit code 1 error: WordNet 3.0 is not installed" in run.stdout
    assert run.returncode != 0
    assert "scored" not in run.stdout
    assert "WordNetNotFoundError" in run.stderr
    assert "apt-get install wordnet-base wordnet-sense-index" in run.stderr
    assert "python -m emvision.train.metrics.wordnet_data install" in run.stderr


def test_meteor_checks_wordnet_again_at_compute_time(vqa_metric, tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(wordnet_data, "_loaded", {})
    with pytest.raises(wordnet_data.WordNetNotFoundError, match="wordnet_data install"):
        vqa_metric.compute(predictions=["a b"], references=["a b"])


# ---------------------------------------------------------------- WordNet set-up


def test_wordnet_install_converts_debian_files(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))  # install registers tmp_path's copy
    if not (wordnet_data.DEBIAN_WORDNET_DIR / "index.sense").is_file():
        pytest.fail("Debian's WordNet is missing: apt-get install wordnet-base wordnet-sense-index")
    # install() returns only after NLTK has loaded the copy as WordNet 3.0 (version, a known synset
    # with its lexicographer file, a known synonym); it raises otherwise.
    target = wordnet_data.install(data_root=tmp_path)
    assert target == tmp_path / "corpora" / "wordnet"
    for name in wordnet_data.DATABASE_FILES:
        assert (target / name).stat().st_size == (wordnet_data.DEBIAN_WORDNET_DIR / name).stat().st_size, name
    lexnames = (target / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[5] == "05\tnoun.animal\t1" and lexnames[44] == "44\tadj.ppl\t3"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".wordnet-")]  # no staging left behind


def test_lexnames_from_man_page_or_builtin_list(tmp_path, monkeypatch):
    text, origin = wordnet_data.lexnames_text()
    assert [line.split("\t")[1] for line in text.splitlines()] == list(wordnet_data.WORDNET30_LEXNAMES)
    monkeypatch.setattr(wordnet_data, "LEXNAMES_MAN_PAGES", ())  # images that strip man pages
    builtin_text, builtin_origin = wordnet_data.lexnames_text()
    assert builtin_text == text and "built into" in builtin_origin
    bad = tmp_path / "lexnames.5WN"
    bad.write_text("00\tadj.all\tall adjective clusters\n02\tadv.all\tall adverbs\n")
    with pytest.raises(ValueError, match="not 00, 01"):
        wordnet_data.lexnames_text(bad)


def test_install_without_debian_files_names_the_packages(tmp_path, capsys):
    assert wordnet_data.main(["install", "--source", str(tmp_path / "nothing"), "--nltk-data", str(tmp_path)]) == 1
    assert "apt-get install wordnet-base wordnet-sense-index" in capsys.readouterr().err
    assert not (tmp_path / "corpora" / "wordnet").exists()


# ---------------------------------------------------------------- classification


def _one_hot_logits(predictions, num_classes):
    logits = np.zeros((len(predictions), num_classes))
    logits[np.arange(len(predictions)), predictions] = 3.0
    return logits


def test_hand_checked_confusion_case():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 2, 2]
    report = classification_report(_one_hot_logits(predictions, 4), np.array(labels), ["a", "b", "c", "never"])

    assert report["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    # by hand: precision = TP / predicted, recall = TP / true
    expected = {"a": (2 / 2, 2 / 3), "b": (1 / 2, 1 / 2), "c": (1 / 2, 1 / 1)}
    f1s = []
    for name, (precision, recall) in expected.items():
        f1 = 2 * precision * recall / (precision + recall)
        f1s.append(f1)
        assert report["per_class"][name]["precision"] == pytest.approx(precision)
        assert report["per_class"][name]["recall"] == pytest.approx(recall)
        assert report["per_class"][name]["f1"] == pytest.approx(f1)
    assert report["per_class"]["a"]["support"] == 3
    assert report["per_class"]["never"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # a class neither present nor predicted does not drag macro-F1 down
    assert report["macro_averaged_over"] == ["a", "b", "c"]
    assert report["macro_f1"] == pytest.approx(sum(f1s) / 3)  # (0.8 + 0.5 + 2/3) / 3
    assert report["top1_accuracy"] == pytest.approx(4 / 6)
    assert report["label_conditioned"] is False and report["protocol"] == "label-free"


def test_top5_on_logits():
    # the true class (0) ranks 1st, 5th and 6th among 7 classes
    logits = torch.tensor(
        [
            [9.0, 1, 2, 3, 4, 5, 6],
            [5.0, 9, 8, 7, 6, 1, 2],
            [4.0, 9, 8, 7, 6, 5, 1],
        ]
    )
    report = classification_report(logits, torch.tensor([0, 0, 0]), [f"class{i}" for i in range(7)])
    assert report["top1_accuracy"] == pytest.approx(1 / 3)
    assert report["top5_accuracy"] == pytest.approx(2 / 3)
    # softmax probabilities give the same report
    probs = classification_report(logits.softmax(-1), torch.tensor([0, 0, 0]), [f"class{i}" for i in range(7)])
    assert probs["top5_accuracy"] == report["top5_accuracy"] and probs["macro_f1"] == report["macro_f1"]


def test_saved_report_round_trips_with_plot(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=64)
    logits = rng.normal(size=(64, 10))
    names = [f"category_{i}" for i in range(10)]
    report = classification_report(logits, labels, names, metadata={"split": "fold 0", "source": "synthetic"})
    paths = save_classification_report(report, tmp_path / "eval")

    assert load_classification_report(tmp_path / "eval") == report
    confusion = json.loads(paths["confusion_json"].read_text())
    assert confusion["matrix"] == report["confusion_matrix"] and confusion["class_names"] == names
    assert sum(map(sum, confusion["matrix"])) == 64
    with Image.open(paths["confusion_png"]) as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 300
        image.verify()


def test_label_conditioned_marker_in_saved_metrics(tmp_path):
    report = classification_report(
        _one_hot_logits([0, 1], 2), [0, 1], ["x", "y"], label_conditioned=True, protocol="hnf-paper-true-description"
    )
    paths = save_classification_report(report, tmp_path)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["label_conditioned"] is True
    assert metrics["protocol"] == "hnf-paper-true-description"
    assert metrics["protocol_note"].startswith("LABEL-CONDITIONED")
    assert json.loads(paths["confusion_json"].read_text())["label_conditioned"] is True


def test_bad_classification_input_is_named():
    with pytest.raises(ValueError, match="labels must lie in"):
        classification_report(np.zeros((2, 3)), [0, 3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="class_names has 2"):
        classification_report(np.zeros((2, 3)), [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        classification_report(np.zeros(3), [0, 1, 2], ["a", "b", "c"])
