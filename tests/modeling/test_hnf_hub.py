"""HNF as a Hugging Face model: Auto classes, safetensors, remote code, the image-classification pipeline,
and the text encoder pre-trained by train/pretrain_text_mlm.py."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoTokenizer,
    pipeline,
)

from emvision.modeling import HNFConfig, HNFForImageClassification, HNFModel
from emvision.vocabulary import SEM_CATEGORIES
from emvision.processing.image_processing_micrograph import MicrographImageProcessor
from emvision.train import pretrain_text_mlm
from tiny_models import HAND_WRITTEN_DESCRIPTIONS, ONE_DESCRIPTION_PER_CLASS, narrow_hnf_config


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A small HNF (with the fast recipe's convolutional stem, its running statistics moved by training-mode
    forwards) saved with its image processor, and the logits it gives on a fixed batch."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hnf")
    model = HNFForImageClassification(narrow_hnf_config(patch_embedding="conv_stem")).train()
    with torch.no_grad():
        model(pixel_values=torch.rand(4, 3, 224, 224) * 2 - 1)
    model.eval()
    model.save_pretrained(folder)
    MicrographImageProcessor().save_pretrained(folder)
    pixels = torch.rand(3, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    save_file({"pixel_values": pixels, "logits": logits}, str(folder.parent / "probe.safetensors"))
    return folder, pixels, logits, model


def test_saved_folder_is_safetensors_with_code_and_image_processor(saved_model):
    folder, *_ = saved_model
    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_hnf.py", "configuration_hnf.py", "conv_stem.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "hnf"
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_hnf.HNFForImageClassification"
    assert config["id2label"]["3"] == "MEMS_devices_and_electrodes"
    assert config["class_descriptions"]["Tips"] == ONE_DESCRIPTION_PER_CLASS["Tips"]
    assert "hnf.text_encoder.description_input_ids" in load_file(str(folder / "model.safetensors"))
    assert isinstance(AutoImageProcessor.from_pretrained(folder), MicrographImageProcessor)


def test_auto_classes_reload_identical_logits(saved_model):
    folder, pixels, logits, model = saved_model
    assert isinstance(AutoConfig.from_pretrained(folder), HNFConfig)
    reloaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert isinstance(reloaded, HNFForImageClassification)
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=pixels).logits, logits)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    base = AutoModel.from_pretrained(folder).eval()
    assert isinstance(base, HNFModel)
    with torch.no_grad():
        expected = model.hnf(pixel_values=pixels).pooler_output
        assert torch.equal(base(pixel_values=pixels).pooler_output, expected)


def test_remote_code_round_trip_without_emvision(saved_model, tmp_path):
    folder, *_ = saved_model
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["emvision"] = None  # the package is not importable: only the folder's code may be used
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForImageClassification
        probe = load_file({str(folder.parent / "probe.safetensors")!r})
        model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(pixel_values=probe["pixel_values"]).logits
        print("max abs difference", (logits - probe["logits"]).abs().max().item())
        assert torch.equal(logits, probe["logits"])
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max abs difference 0.0" in result.stdout


def test_remote_code_names_a_missing_requirement_before_any_model_code_runs(saved_model, tmp_path):
    folder, *_ = saved_model
    script = textwrap.dedent(
        f"""
        import sys

        class NotInstalled:  # torchdiffeq and emvision behave as if they were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torchdiffeq", "emvision"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, NotInstalled())
        from transformers import AutoModelForImageClassification
        try:
            AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True)
        except ImportError as error:
            print("ERROR", error)
        print("MODEL MODULES", sorted(m for m in sys.modules if m.startswith("transformers_modules") and "modeling" in m))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ERROR This modeling file requires the following packages that were not found in your environment: torchdiffeq" in result.stdout
    assert "MODEL MODULES []" in result.stdout, result.stdout  # the check ran before the model code was imported


def test_pipeline_classifies_a_real_micrograph(saved_model, real_sem_dir):
    folder, *_ = saved_model
    classifier = pipeline("image-classification", model=str(folder), trust_remote_code=False)
    assert isinstance(classifier.image_processor, MicrographImageProcessor)
    micrograph = real_sem_dir / "Nanowires" / "L6_0a6f18702a4a32677c74ed390f3af7af.jpg"  # 1024x768 with info bar
    predictions = classifier(str(micrograph), top_k=10)
    assert sorted(p["label"] for p in predictions) == sorted(SEM_CATEGORIES)
    assert abs(sum(p["score"] for p in predictions) - 1) < 1e-4
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)


@pytest.fixture(scope="module")
def description_subset(tmp_path_factory):
    """A class_descriptions subset as the data scripts write it (hand-written rows, source="human")."""
    from datasets import Dataset

    from emvision.vocabulary import class_description_prompt
    from emvision.datasets_scripts.storage import HUMAN_SOURCE, class_descriptions_features

    rows = [
        {"label": index, "name": name, "description": HAND_WRITTEN_DESCRIPTIONS[name][0], "source": HUMAN_SOURCE,
         "prompt": class_description_prompt(name)}
        for index, name in enumerate(SEM_CATEGORIES)
    ]
    folder = tmp_path_factory.mktemp("data") / "class_descriptions"
    Dataset.from_list(rows, features=class_descriptions_features()).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def pretrained_text_folder(description_subset, tmp_path_factory):
    output = tmp_path_factory.mktemp("mlm")
    summary = pretrain_text_mlm.main([
        str(description_subset.parent), "--output_dir", str(output), "--hidden_size", "16", "--num_hidden_layers", "1",
        "--num_attention_heads", "2", "--intermediate_size", "32", "--max_length", "64", "--batch_size", "10",
        "--max_train_steps", "60", "--learning_rate", "3e-3", "--mlm_probability", "0.3",
    ])
    return output, summary


def test_class_descriptions_subset_feeds_the_config(description_subset):
    from datasets import load_from_disk

    from emvision.datasets_scripts.storage import class_descriptions_by_class

    descriptions, source = class_descriptions_by_class(load_from_disk(str(description_subset)), list(SEM_CATEGORIES))
    assert source == "human" and descriptions["Powder"] == ONE_DESCRIPTION_PER_CLASS["Powder"]
    model = HNFModel(narrow_hnf_config(class_descriptions=descriptions, class_descriptions_source=source))
    assert model.text_encoder.description_labels.tolist() == list(range(10))
    with pytest.raises(ValueError, match="row 1: label 'Gold'"):
        class_descriptions_by_class([{"label": 0, "description": "x"}, {"label": "Gold", "description": "y"}], list(SEM_CATEGORIES))


def test_mlm_pretraining_learns_and_saves_a_loadable_folder(pretrained_text_folder):
    output, summary = pretrained_text_folder
    assert summary["description_sources"] == ["human"] and summary["num_descriptions"] == 10
    assert summary["mlm_loss_after"] < summary["mlm_loss_before"] - 0.5
    assert (output / "model.safetensors").exists() and json.loads((output / "mlm_summary.json").read_text())["steps"] == 60
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert tokenizer.mask_token == "[MASK]" and tokenizer.tokenize("nanowires")  # no [UNK] for domain words
    assert "[UNK]" not in tokenizer.tokenize(HAND_WRITTEN_DESCRIPTIONS["MEMS_devices_and_electrodes"][0])
    assert AutoModelForMaskedLM.from_pretrained(output, use_kernels=False).config.hidden_size == 16  # (transformers >= 5.25: no Hub kernels)


def test_hnf_fine_tunes_the_pretrained_text_encoder(pretrained_text_folder, tmp_path):
    text_folder, _ = pretrained_text_folder
    local_copy = tmp_path / "text-encoder"
    shutil.copytree(text_folder, local_copy)
    config = narrow_hnf_config(text_config=None, text_model_name_or_path=str(local_copy), description_max_length=64)
    assert config.text_config.hidden_size == 16 and config.text_config.vocab_size == len(AutoTokenizer.from_pretrained(local_copy))
    torch.manual_seed(0)
    model = HNFForImageClassification(config).eval()

    pretrained = AutoModel.from_pretrained(local_copy, use_kernels=False).state_dict()
    for name, tensor in model.hnf.text_encoder.language_model.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name  # not re-initialised by post_init
    tokenizer = AutoTokenizer.from_pretrained(local_copy)
    expected = tokenizer(HAND_WRITTEN_DESCRIPTIONS["Biological"][0], padding="max_length", max_length=64, return_tensors="pt")
    assert torch.equal(model.hnf.text_encoder.description_input_ids[0], expected["input_ids"][0])

    folder = tmp_path / "hnf"
    model.save_pretrained(folder)
    shutil.rmtree(local_copy)  # the saved model must not need the text-encoder folder any more
    pixels = torch.rand(2, 3, 224, 224) * 2 - 1
    reloaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits)


def test_mlm_script_help_and_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        pretrain_text_mlm.main(["--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) <= 45
    with pytest.raises(FileNotFoundError, match="missing-descriptions"):
        pretrain_text_mlm.main([str(tmp_path / "missing-descriptions"), "--output_dir", str(tmp_path / "out")])
