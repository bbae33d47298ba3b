"""The `emvision` command: every subcommand has --help, the aliases run the project's scripts, `ask` answers."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from emvision.apps.cli import main
from emvision.apps.models import Assistant


def test_the_installed_command_lists_its_subcommands_outside_a_checkout(tmp_path):
    script = Path(sys.executable).parent / "emvision"
    assert script.is_file(), "pip install did not put the `emvision` console script next to python"
    result = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    for command in ("predict", "ask", "demo", "build", "synthesize", "teacher", "train vqa", "train classify", "train kfold"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["predict", "--help"], "--vqa_model"),
        (["ask", "--help"], "--heatmap"),
        (["demo", "--help"], "127.0.0.1"),
        (["build", "--help"], "--num_folds"),
        (["synthesize", "--help"], "--num_images"),
        (["teacher", "--help"], "--base_url"),
        (["train", "vqa", "--help"], "--dataset"),
        (["train", "classify", "--help"], "--mvaema_model"),
        (["train", "kfold", "--help"], "--folds"),
    ],
)
def test_every_subcommand_has_help(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert expected in text
    if argv[0] in ("predict", "ask", "demo"):
        assert len(text.splitlines()) < 50, "help fits on a screen"


def test_unknown_commands_say_what_exists(capsys):
    assert main(["predcit"]) == 2
    assert "unknown command 'predcit'" in capsys.readouterr().err
    assert main(["train", "nothing"]) == 2
    assert "emvision train {vqa,classify,kfold}" in capsys.readouterr().out


def test_synthesize_alias_runs_the_script_with_its_flags(tmp_path):
    assert main(["synthesize", "--output", str(tmp_path / "syn"), "--num_images", "10", "--short_side", "32", "--num_workers", "1", "--quiet"]) == 0
    assert (tmp_path / "syn" / "images").is_dir()


def test_ask_prints_the_answer_and_saves_where_it_looked(mvaema_folder, real_sem_images, tmp_path, capsys):
    image = str(real_sem_images[0])
    question = "Describe the overall shape and morphology of the nanomaterials."
    heatmap = tmp_path / "looked.png"
    assert main(["ask", image, question, "--model", str(mvaema_folder), "--max_new_tokens", "5", "--heatmap", str(heatmap)]) == 0
    printed = capsys.readouterr().out.strip()
    assistant = Assistant(mvaema_folder, "cpu")
    expected = assistant.answers(assistant.pixel_values([image]), [question], 5)[0][0]
    assert printed == expected
    with PIL.Image.open(image) as original, PIL.Image.open(heatmap) as drawn:
        assert drawn.size == original.size and drawn.mode == "RGB"
        assert np.asarray(drawn).std() > 0
    assert main(["ask", str(tmp_path / "nothing.png"), question, "--model", str(mvaema_folder)]) == 2
    assert "no such image file" in capsys.readouterr().err
