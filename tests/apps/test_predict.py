"""`emvision predict`: one row per micrograph of files, folders, globs and archives; bad files are rows; reruns resume."""

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from emvision.apps.cli import main
from emvision.apps.models import Assistant, Classifier
from emvision.apps.predict import output_columns, predict
from emvision.vocabulary import FAMILY_BY_ID


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text().splitlines()]


def _console_command() -> str:
    """The installed `emvision` script next to this Python (what `pip install` put on the PATH)."""
    script = Path(sys.executable).parent / "emvision"
    if not script.is_file():
        pytest.fail(f"the console script {script} is missing: reinstall the package (pip install -e .)")
    return str(script)


def test_the_installed_command_predicts_the_real_fixtures_and_a_rerun_adds_nothing(hnf_folder, real_sem_dir, real_sem_images, tmp_path,
                                                                                     capsys):
    output = tmp_path / "p.csv"
    command = [_console_command(), "predict", str(real_sem_dir), "--model", str(hnf_folder), "--output", str(output), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "18 images predicted, 2 rejected, 0 already in" in first.stdout and "images/s" in first.stdout

    rows = _rows(output)
    images = [row for row in rows if row["status"] == "ok"]
    assert sorted(row["path"] for row in images) == sorted(path.as_posix() for path in real_sem_images)
    rejects = {Path(row["path"]).name: row for row in rows if row["status"] != "ok"}
    assert set(rejects) == {"README.md", "manifest.csv"}
    assert all(row["status"] == "not_image" and "not an image format" in row["reason"] for row in rejects.values())

    manifest = {row["path"]: row for row in csv.DictReader(open(real_sem_dir / "manifest.csv"))}
    labels = set(json.loads((hnf_folder / "config.json").read_text())["id2label"].values())
    for row in images:
        relative = Path(row["path"]).relative_to(real_sem_dir).as_posix()
        assert row["sha256"] == manifest[relative]["sha256"]
        assert (int(row["width"]), int(row["height"])) == (int(manifest[relative]["width"]), int(manifest[relative]["height"]))
        assert {row["label_1"], row["label_2"], row["label_3"]} <= labels
        assert 1.0 >= float(row["prob_1"]) >= float(row["prob_2"]) >= float(row["prob_3"]) > 0
        left, top, right, bottom = map(int, row["crop_box"].split())
        assert (left, top, right) == (0, 0, int(row["width"])) and bottom + int(row["bar_height"]) == int(row["height"])
    # the 1024x768 NFFA JPEGs carry the information bar; the 256 px crops do not
    by_name = {Path(row["path"]).name: row for row in images}
    assert 600 < int(by_name["L6_0a6f18702a4a32677c74ed390f3af7af.jpg"]["bar_row"]) < 768
    assert by_name["goyal_sponge_test_1.jpg"]["bar_row"] == "" and by_name["goyal_sponge_test_1.jpg"]["bar_height"] == "0"

    assert main(command[1:]) == 0  # the same command again, in this process
    assert "0 images predicted, 0 rejected, 20 already in" in capsys.readouterr().out
    assert _rows(output) == rows


def test_archives_globs_bad_files_and_a_killed_run(hnf_folder, real_sem_images, tmp_path):
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in real_sem_images[:3]:
            zipped.write(path, f"scans/{path.name}")
        zipped.writestr("scans/empty.png", b"")
        zipped.writestr("scans/notes.png", b"this is text, not a PNG")
    loose = tmp_path / "loose"
    loose.mkdir()
    for path in real_sem_images[3:5]:
        shutil.copy(path, loose / path.name)
    truncated = real_sem_images[-1].read_bytes()
    (loose / "truncated.jpg").write_bytes(truncated[: len(truncated) // 3])

    output = tmp_path / "out.jsonl"
    inputs = [str(archive), str(loose / "*.png"), str(loose / "*.jpg"), str(tmp_path / "missing.tif")]
    classifier = Classifier(hnf_folder, "cpu")
    summary = predict(inputs, classifier, output, top_k=2, batch_size=2, progress=False)
    rows = _rows(output)
    assert list(rows[0]) == output_columns(2, [])
    status = {row["path"].replace(str(tmp_path) + "/", ""): row["status"] for row in rows}
    assert status["batch.zip/scans/empty.png"] == "empty"
    assert status["batch.zip/scans/notes.png"] == "not_image"
    assert status["missing.tif"] == "missing"
    assert status["loose/truncated.jpg"] == "corrupt"
    ok = [path for path, value in status.items() if value == "ok"]
    assert len(ok) == 5 and sum(path.startswith("batch.zip/scans/") for path in ok) == 3
    assert (summary.predicted, summary.rejected, summary.skipped) == (5, 4, 0)

    # a run killed mid-line: the half line is dropped and its file predicted again; the rest is kept
    text = output.read_text()
    output.write_text(text[: len(text) - 40])
    summary = predict(inputs, classifier, output, top_k=2, batch_size=2, progress=False)
    assert (summary.predicted + summary.rejected, summary.skipped) == (1, 8)
    assert _rows(output) == rows

    with pytest.raises(ValueError, match="other columns"):
        predict(inputs, classifier, output, top_k=3, progress=False)


def test_answers_to_chosen_prompt_families(hnf_folder, mvaema_folder, real_sem_images, tmp_path):
    output = tmp_path / "answers.csv"
    code = main(["predict", *map(str, real_sem_images[:2]), "--model", str(hnf_folder), "--vqa_model", str(mvaema_folder),
                 "--questions", "1,3", "--max_new_tokens", "4", "--output", str(output), "--quiet"])
    assert code == 0
    rows = _rows(output)
    assert len(rows) == 2 and list(rows[0])[-2:] == ["answer_q1", "answer_q3"]
    assistant = Assistant(mvaema_folder, "cpu")
    direct = assistant.answers(assistant.pixel_values([str(real_sem_images[0])]), [FAMILY_BY_ID[1].question, FAMILY_BY_ID[3].question], 4)[0]
    assert [rows[0]["answer_q1"], rows[0]["answer_q3"]] == direct


def test_mistakes_are_reported_with_the_fix(hnf_folder, tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "p.csv")]) == 2
    assert "not a saved model folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--model", str(hnf_folder), "--questions", "1", "--output", str(tmp_path / "p.csv")]) == 2
    assert "--questions needs --vqa_model" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--model", str(hnf_folder), "--output", str(tmp_path / "p.txt")]) == 2
    assert ".csv or .jsonl" in capsys.readouterr().err
