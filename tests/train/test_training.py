"""The training scripts as a user runs them: model folders, exact resume, two-process DDP, LoRA on a
released model with the network blocked, the Hub upload, k-fold summaries."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from ports import free_port

REPO = Path(__file__).resolve().parents[2]
TINY_MVAEMA = "vision_config.num_hidden_layers=1,text_config.num_hidden_layers=1"
TINY_HNF = "patch_sizes=[32,32],num_neighbors=[4,4],hidden_size=32,intermediate_size=64,fusion_num_heads=2,num_attention_heads=2"
FAST = ["--report_to", "none", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--num_folds", "5"]
SMALL_RUN = ["--max_generate_samples", "8", "--max_new_tokens", "8", "--max_eval_samples", "16", *FAST]


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    from emvision.datasets_scripts.synthesize import load_or_create_synthetic

    return load_or_create_synthetic(num_images=60, seed=3, num_folds=5, cache_dir=tmp_path_factory.mktemp("synthetic"), progress=False)


def _vqa_args(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--dataset", str(dataset), "--output_dir", str(output_dir), "--config_overrides", TINY_MVAEMA, "--vision_pretrain_steps", "2",
            *SMALL_RUN, *extra]


def _tuning_args(dataset: Path, output_dir: Path, base: Path, *extra: str) -> list[str]:
    """`_vqa_args` for a run that starts from the trained model `base` (which keeps its own architecture)."""
    return ["--dataset", str(dataset), "--output_dir", str(output_dir), "--model_name_or_path", str(base), *SMALL_RUN, *extra]


def _env(**extra) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **extra}
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="session")
def trained_vqa(synthetic_dir, tmp_path_factory) -> tuple[Path, dict]:
    from emvision.train.vqa import main

    output_dir = tmp_path_factory.mktemp("vqa") / "model"
    metrics = main(_vqa_args(synthetic_dir, output_dir, "--max_train_steps", "6", "--checkpointing_steps", "no"))
    return output_dir, metrics


def test_vqa_script_writes_a_complete_model_folder(trained_vqa, real_sem_images):
    from transformers import AutoModel, AutoProcessor

    output_dir, metrics = trained_vqa
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "modeling_mvaema.py", "processor_config.json",
                 "tokenizer.json", "zero_shot_classification/confusion_matrix.png"):
        assert (output_dir / name).is_file(), name
    assert not list(output_dir.glob("*.bin")), "weights must be safetensors only"
    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved["synthetic_data"] is True and saved["label_conditioned"] is False
    for key in ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["optimizer_steps"] == 6 and saved["num_test_pairs"] == 8
    assert 0.0 <= saved["zero_shot_classification"]["top1"] <= saved["zero_shot_classification"]["top5"] <= 1.0
    card = (output_dir / "README.md").read_text()
    assert "Trained on synthetic data" in card and "model-index" in card and "oracle answers derived" in card
    assert "Label-free" in card
    assert "`transformers>=" in card.split("## Requirements", 1)[1] and "torchdiffeq" not in card
    # the decoding was chosen on the validation fold (the best ROUGE-L of the candidates), and the saved model uses it
    decoding = saved["decoding"]
    assert decoding["chosen_on"].startswith("validation fold") and decoding["num_validation_pairs"] > 0
    scores = {float(penalty): score for penalty, score in decoding["validation_rougeL"].items()}
    assert scores[decoding["repetition_penalty"]] == max(scores.values())
    assert f"repetition penalty {decoding['repetition_penalty']:g}" in card

    model = AutoModel.from_pretrained(output_dir).eval()
    assert model.generation_config.repetition_penalty == decoding["repetition_penalty"]
    processor = AutoProcessor.from_pretrained(output_dir)
    inputs = processor(images=real_sem_images[0], text="Describe the surface texture.", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=5)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(processor.batch_decode(generated)[0], str)


def test_no_module_in_train_shadows_an_importable_one(tmp_path):
    """`python train/vqa.py` puts train/ first on sys.path, so every module and package there is importable under its
    bare name: none may share it with a standard-library or installed module, and no script edits sys.path."""
    train = REPO / "train"
    names = sorted(p.stem for p in train.iterdir()
                   if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file()))
    assert {"vqa", "classify", "kfold", "pretrain_text_mlm", "metrics"} <= set(names)
    probe = "import importlib.util, sys; print(*[n for n in sys.argv[1:] if n in sys.stdlib_module_names or importlib.util.find_spec(n)])"
    result = subprocess.run([sys.executable, "-c", probe, *names], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [], f"train/ would shadow: {result.stdout}"
    assert not [p for p in train.rglob("*.py") if "sys.path" in p.read_text()]


def _run(args: list[str], log: Path, env=None, script="train/vqa.py") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, script, *args], cwd=REPO, env=env or _env(), stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_run_killed_with_sigkill_and_resumed_ends_with_the_same_weights(synthetic_dir, tmp_path):
    # 3 steps per epoch, validation and a checkpoint after every 2 steps: the kill lands mid-epoch
    # (every question-answer row once per epoch, as the paper trains, with the cosine schedule: its position resumes too)
    common = ["--max_train_samples", "24", "--max_train_steps", "9", "--checkpointing_steps", "2", "--max_generate_samples", "2",
              "--recipe", "paper", "--vision_pretrain_steps", "0", "--lr_scheduler", "cosine", "--warmup_steps", "2"]
    straight = _run(_vqa_args(synthetic_dir, tmp_path / "straight", *common), tmp_path / "straight.log")
    interrupted_dir = tmp_path / "interrupted"
    interrupted = _run(_vqa_args(synthetic_dir, interrupted_dir, *common), tmp_path / "interrupted.log")
    marker = interrupted_dir / "checkpoints" / "step_00000004" / "checkpoint_complete.json"
    deadline = time.time() + 240
    while not marker.is_file():
        assert interrupted.poll() is None, (tmp_path / "interrupted.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint at step 4"
        time.sleep(0.2)
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait()
    assert not (interrupted_dir / "model.safetensors").exists(), "the run finished before it was killed"

    resumed = _run(_vqa_args(synthetic_dir, interrupted_dir, *common, "--resume_from_checkpoint", "latest"), tmp_path / "resumed.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert straight.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    assert "Resumed from" in (tmp_path / "resumed.log").read_text()
    for log in ("straight.log", "resumed.log"):  # tied weights are saved once, without accelerate's warning
        assert "Removed shared tensor" not in (tmp_path / log).read_text()

    expected = load_file(tmp_path / "straight" / "model.safetensors")
    got = load_file(interrupted_dir / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    history = json.loads((interrupted_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]


def test_two_process_ddp_training_with_gloo(synthetic_dir, tmp_path):
    output_dir = tmp_path / "ddp"
    # accelerate 1.x runs `launch --cpu --num_processes 2` as ONE process; two CPU processes with gloo need the
    # distributed launcher plus ACCELERATE_USE_CPU (the form the README documents)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", "train/vqa.py",
        *_vqa_args(synthetic_dir, output_dir, "--max_train_steps", "3", "--checkpointing_steps", "no", "--max_generate_samples", "6"),
    ]
    result = subprocess.run(command, cwd=REPO, env=_env(ACCELERATE_USE_CPU="true"), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "on 2 process(es), device cpu" in result.stdout + result.stderr
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["optimizer_steps"] == 3
    assert metrics["num_test_pairs"] == 6  # gathered from both processes, duplicates from padding dropped


BLOCK_NETWORK = """
import socket, os
_log = os.environ["NETWORK_ATTEMPTS_LOG"]
def _refuse(*args, **kwargs):
    with open(_log, "a") as f:
        f.write(repr(args[:2]) + "\\n")
    raise OSError("network blocked by the test")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


def _inhouse_folder(real_sem_images, root: Path) -> Path:
    """A company's folder: category sub-folders plus metadata.jsonl holding its own questions and answers."""
    rows = []
    for index, path in enumerate(real_sem_images):
        category = path.parent.name
        target = root / category / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        rows.append({
            "file_name": f"{category}/{path.name}",
            "question": "What does the micrograph show?",
            "answer": f"an in-house {category.replace('_', ' ').lower()} sample, image {index}",
        })
    (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def test_lora_fine_tuning_of_a_released_model_offline_with_the_network_blocked(trained_vqa, real_sem_images, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel, AutoProcessor

    base_dir, _ = trained_vqa
    inhouse = _inhouse_folder(real_sem_images, tmp_path / "inhouse")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_NETWORK)
    attempts = tmp_path / "attempts.log"
    env = _env(PYTHONPATH=str(tmp_path / "site"), NETWORK_ATTEMPTS_LOG=str(attempts), HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    output_dir = tmp_path / "adapter"
    args = [
        "--model_name_or_path", str(base_dir), "--dataset", str(inhouse), "--output_dir", str(output_dir),
        "--lora", "--merge_lora", "--lora_r", "4", "--max_train_steps", "3", "--checkpointing_steps", "no",
        "--max_generate_samples", "4", "--max_new_tokens", "6", "--report_to", "none", "--per_device_train_batch_size", "4",
        "--num_folds", "3",
    ]
    result = subprocess.run([sys.executable, "train/vqa.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert not attempts.exists(), f"network connections were attempted: {attempts.read_text()}"
    assert "trainable params" in log
    assert (output_dir / "adapter_model.safetensors").is_file() and (output_dir / "adapter_config.json").is_file()
    assert not (output_dir / "model.safetensors").exists(), "--lora must save only the adapter"
    assert json.loads((output_dir / "metrics.json").read_text())["synthetic_data"] is False
    assert "in-house" in json.loads((output_dir / "metrics.json").read_text())["dataset"]
    card = (output_dir / "README.md").read_text()
    assert "taken from the in-house dataset's own metadata, author not recorded (`teacher` = in-house" in card
    assert "written by the teacher model" not in card and "inherit" not in card  # no teacher model wrote these pairs
    assert "base_model" not in card.split("---", 2)[1], "a local base folder is not a Hub id"
    assert f"- Base model: the local folder `{base_dir}` (not on the Hub); it was trained on `" in card
    assert "`: synthetic images; question-answer pairs: oracle answers" in card  # the base's own data provenance
    assert re.search(r"\| BLEU-2 \| [\d.]+ \| 4 test QA pairs \(a seeded random sample of the \d+ in the test fold\) \| [\d.]+ \|", card), card

    processor = AutoProcessor.from_pretrained(output_dir)
    inputs = processor(images=real_sem_images[3], text="What does the micrograph show?", answers="a sample", return_tensors="pt")
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(AutoModel.from_pretrained(base_dir), output_dir).eval()
        merged = AutoModel.from_pretrained(output_dir / "merged").eval()
        base = AutoModel.from_pretrained(base_dir).eval()
        keys = ("pixel_values", "input_ids", "attention_mask")
        adapted_logits = adapted(**{k: inputs[k] for k in keys}).logits
        torch.testing.assert_close(merged(**{k: inputs[k] for k in keys}).logits, adapted_logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(base(**{k: inputs[k] for k in keys}).logits, adapted_logits), "the adapter changed nothing"


class FakeHfApi:
    calls: list = []

    def __init__(self, token=None):
        pass

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        FakeHfApi.calls.append(("upload_folder", repo_id, {"files": files, **kwargs}))
        return f"https://huggingface.co/{repo_id}/commit/0"


def test_classify_script_trains_hnf_and_uploads_the_model_folder(synthetic_dir, real_sem_images, tmp_path, monkeypatch):
    from transformers import pipeline

    import emvision.train.publishing.hub as hub
    from emvision.train.classify import main

    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    output_dir = tmp_path / "hnf"
    metrics = main([
        "--dataset", str(synthetic_dir), "--output_dir", str(output_dir), "--config_overrides", TINY_HNF + ",use_text_branch=true",
        "--max_train_steps", "4",
        "--push_to_hub", "--hub_model_id", "lab/hnf-test", *FAST,
    ])
    assert metrics["label_conditioned"] is False and metrics["synthetic_data"] is True
    assert metrics["class_descriptions_source"] and "oracle-synthetic" in metrics["class_descriptions_source"]
    assert (output_dir / "classification" / "confusion_matrix.png").is_file()
    (create, repo, options), (upload, repo2, upload_kwargs) = FakeHfApi.calls
    assert (create, repo, options["private"]) == ("create_repo", "lab/hnf-test", True)
    assert upload == "upload_folder" and repo2 == "lab/hnf-test"
    uploaded = set(upload_kwargs["files"]) - {f for f in upload_kwargs["files"] if f.startswith("checkpoints/")}
    for required in ("config.json", "model.safetensors", "README.md", "preprocessor_config.json", "modeling_hnf.py", "configuration_hnf.py"):
        assert required in uploaded
    assert "checkpoints/*" in upload_kwargs["ignore_patterns"]
    requirements = (output_dir / "README.md").read_text().split("## Requirements", 1)[1].split("\n## ", 1)[0]
    for package in ("torch", "transformers", "torch-geometric", "torchdiffeq"):
        assert f"`{package}>=" in requirements, package

    classifier = pipeline("image-classification", model=str(output_dir), trust_remote_code=False)
    predictions = classifier(str(real_sem_images[0]), top_k=10)
    assert sorted(p["label"] for p in predictions) == sorted(json.loads((output_dir / "config.json").read_text())["id2label"].values())


def test_paper_protocol_is_marked_label_conditioned(synthetic_dir, tmp_path):
    from emvision.train.classify import main

    output_dir = tmp_path / "paper"
    metrics = main(["--dataset", str(synthetic_dir), "--output_dir", str(output_dir), "--config_overrides", TINY_HNF,
                    "--max_train_steps", "1", "--paper_protocol", "--checkpointing_steps", "no", *FAST])
    assert metrics["label_conditioned"] is True
    saved = json.loads((output_dir / "classification" / "classification_metrics.json").read_text())
    assert saved["label_conditioned"] is True
    assert "Label-conditioned" in (output_dir / "README.md").read_text()


def test_kfold_runner_reports_mean_and_std(synthetic_dir, tmp_path):
    from emvision.train.kfold import main

    summary = main(["classify", "--num_folds", "5", "--folds", "0,1", "--output_dir", str(tmp_path / "cv"), "--",
                    "--dataset", str(synthetic_dir), "--config_overrides", TINY_HNF, "--max_train_steps", "1",
                    "--checkpointing_steps", "no", "--report_to", "none", "--per_device_train_batch_size", "8"])
    top1 = summary["metrics"]["top1"]
    assert len(top1["per_fold"]) == 2 and top1["mean"] == pytest.approx(sum(top1["per_fold"]) / 2)
    assert summary["synthetic_data"] is True
    assert (tmp_path / "cv" / "fold_1" / "metrics.json").is_file()
    assert f"| top1 | {top1['mean']:.4f} | {top1['std']:.4f} |" in (tmp_path / "cv" / "kfold_summary.md").read_text()


def test_leakage_audit_trains_both_protocols_on_one_split_and_tables_the_difference(synthetic_dir, tmp_path):
    from emvision.train.leakage_audit import main

    output_dir = tmp_path / "audit"
    audit = main(["--num_folds", "5", "--fold", "1", "--output_dir", str(output_dir), "--hnf_args", f"--config_overrides {TINY_HNF}",
                  "--mvaema_args", f"--config_overrides {TINY_MVAEMA} --max_generate_samples 4 --max_new_tokens 4 --max_eval_samples 16 --vision_pretrain_steps 2",
                  "--", "--dataset", str(synthetic_dir), "--max_train_steps", "1", "--checkpointing_steps", "no", "--report_to", "none",
                  "--per_device_train_batch_size", "8"])
    markdown = (output_dir / "leakage_audit.md").read_text()
    assert json.loads((output_dir / "leakage_audit.json").read_text()) == audit
    assert "**synthetic data**" in markdown and "| metric | label-free | label-conditioned | difference | test set | chance level |" in markdown
    for model, first_key in (("hnf", "top1"), ("mvaema", "bleu2")):
        free, conditioned = (json.loads((output_dir / f"{model}_{protocol}" / "metrics.json").read_text())
                             for protocol in ("label_free", "label_conditioned"))
        assert (free["label_conditioned"], conditioned["label_conditioned"]) == (False, True)
        assert free["split"] == conditioned["split"] and free["split"]["fold"] == 1  # one split for both protocols
        rows = audit["models"][model]["rows"]
        assert (rows[0]["key"], rows[0]["label_free"], rows[0]["label_conditioned"]) == (first_key, free[first_key], conditioned[first_key])
        for row in rows:
            assert row["difference"] == pytest.approx(row["label_conditioned"] - row["label_free"])
            assert row["test_set"].split()[0].isdigit() and row["chance"] is not None
        for protocol in ("label_free", "label_conditioned"):
            card = (output_dir / f"{model}_{protocol}" / "README.md").read_text()
            assert card.index("## Leakage audit") < card.index("## Limitations") and f"| {rows[0]['metric']} | " in card
    assert audit["models"]["mvaema"]["rows"][-1]["test_set"].endswith("test images")  # zero-shot: no caption in either run
    assert "--paper_protocol" in markdown and "--caption_protocol --eval_with_captions" in markdown


# ---- what a run checks before its first step, and says in one line ------------------------------------

def _script(script: str, *args: str, cwd: Path = REPO, timeout: int = 300) -> tuple[int, str]:
    result = subprocess.run([sys.executable, str(REPO / "train" / script), *args], cwd=cwd, env=_env(), capture_output=True,
                            text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def _one_line_error(code: int, output: str, *expected: str) -> str:
    assert code == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = output.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], output[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("script, args, expected", [
    ("vqa.py", ["--num_folds", "0"], ["--num_folds", ">= 3", "got 0"]),
    ("classify.py", ["--num_folds", "1"], ["--num_folds", ">= 3", "got 1"]),
    ("vqa.py", ["--fold", "10"], ["--fold", "0..9", "--num_folds 10", "got 10"]),
    ("classify.py", ["--num_folds", "5", "--fold", "5"], ["--fold", "0..4", "got 5"]),
    ("classify.py", ["--fold", "-1"], ["--fold", ">= 0"]),
    ("kfold.py", ["classify", "--num_folds", "1"], ["--num_folds", ">= 3"]),
    ("kfold.py", ["classify", "--num_folds", "5", "--folds", "0,7"], ["--folds", "0..4", "0,7"]),
    ("vqa.py", ["--checkpointing_steps", "0"], ["--checkpointing_steps", "'epoch', 'no' or a number"]),
    ("classify.py", ["--per_device_train_batch_size", "0"], ["--per_device_train_batch_size", ">= 1"]),
    ("leakage_audit.py", ["--models", "hnf,vit"], ["--models", "hnf, mvaema", "'hnf,vit'"]),
    ("leakage_audit.py", ["--", "--paper_protocol"], ["--paper_protocol is set by leakage_audit.py"]),
    ("leakage_audit.py", ["--num_folds", "4", "--fold", "4"], ["--fold", "0..3"]),
])
def test_argument_mistakes_are_one_line_errors_at_parse_time(script, args, expected, tmp_path):
    code, output = _script(script, *args, "--output_dir", str(tmp_path / "out"), cwd=tmp_path) if script not in ("kfold.py", "leakage_audit.py") \
        else _script(script, *args, cwd=tmp_path)
    _one_line_error(code, output, *expected)
    assert not (tmp_path / "out").exists(), "nothing is written before the arguments are right"


def test_every_option_of_every_script_has_help():
    from emvision.train import classify, kfold, leakage_audit, pretrain_text_mlm, vqa

    for module in (vqa, classify, kfold, pretrain_text_mlm, leakage_audit):
        for action in module.build_parser()._actions:
            assert action.help and action.help.strip(), f"{module.__name__}: {action.option_strings or action.dest} has no --help text"
    code, output = _script("kfold.py", "--help")
    assert code == 0 and "--num_folds" in output and "K: the dataset's folds" in output


def test_a_missing_model_path_says_no_such_folder_in_one_line(tmp_path):
    (tmp_path / "outputs").mkdir()
    code, output = _script("classify.py", "--mvaema_model", "outputs/vqa", "--output_dir", str(tmp_path / "o1"), cwd=tmp_path)
    _one_line_error(code, output, "--mvaema_model: no such folder: outputs/vqa", "accelerate launch train/vqa.py", "or give a Hub id")
    code, output = _script("vqa.py", "--model_name_or_path", "released/mvaema", "--output_dir", str(tmp_path / "o2"), cwd=tmp_path)
    _one_line_error(code, output, "no such folder: released/mvaema", "HF_HUB_OFFLINE is set and it is not in the local Hub cache")
    assert "huggingface.co" not in output
    (tmp_path / "not_a_model").mkdir()
    code, output = _script("classify.py", "--model_name_or_path", str(tmp_path / "not_a_model"), "--output_dir", str(tmp_path / "o3"))
    _one_line_error(code, output, "holds no config.json")


def test_output_dataset_and_resume_target_are_checked_before_the_first_step(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    code, output = _script("classify.py", "--output_dir", str(a_file))
    _one_line_error(code, output, f"--output_dir {a_file} is a file")
    code, output = _script("classify.py", "--output_dir", str(a_file / "model"))
    _one_line_error(code, output, "cannot write there")
    code, output = _script("vqa.py", "--dataset", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "o1"))
    _one_line_error(code, output, f"--dataset {tmp_path / 'nowhere'}: no such folder or archive")
    code, output = _script("vqa.py", "--resume_from_checkpoint", str(tmp_path / "o2" / "checkpoints" / "step_00000009"),
                           "--output_dir", str(tmp_path / "o2"))
    _one_line_error(code, output, "--resume_from_checkpoint", "no such checkpoint folder")
    if Path("/sys/kernel").is_dir():  # a folder even root cannot write (a read-only mount or sysfs)
        code, output = _script("classify.py", "--output_dir", "/sys/kernel/emvision-test-output")
        _one_line_error(code, output, "cannot write there")


def test_a_second_run_refuses_to_replace_an_earlier_one_before_training(trained_vqa, synthetic_dir, tmp_path):
    from emvision.train.vqa import main

    earlier, _ = trained_vqa
    output_dir = tmp_path / "earlier"
    shutil.copytree(earlier, output_dir)
    (output_dir / "checkpoints" / "step_00000099").mkdir(parents=True)  # a stale checkpoint of that run
    weights = (output_dir / "model.safetensors").read_bytes()
    started = time.time()
    code, output = _script("vqa.py", *_vqa_args(synthetic_dir, output_dir, "--max_train_steps", "1"))
    _one_line_error(code, output, f"--output_dir {output_dir} already holds an earlier run", "--overwrite_output_dir",
                    "--resume_from_checkpoint latest")
    assert time.time() - started < 60 and (output_dir / "model.safetensors").read_bytes() == weights

    metrics = main(_vqa_args(synthetic_dir, output_dir, "--max_train_steps", "2", "--overwrite_output_dir"))
    assert metrics["optimizer_steps"] == 2
    assert not (output_dir / "checkpoints" / "step_00000099").exists(), "the earlier run's checkpoints are removed first"
    assert (output_dir / "model.safetensors").read_bytes() != weights


def test_cards_tell_provenance_test_sizes_chance_and_the_real_epoch_fraction(trained_vqa):
    output_dir, metrics = trained_vqa
    card = (output_dir / "README.md").read_text()
    steps_per_epoch = metrics["steps_per_epoch"]
    assert steps_per_epoch == 36 // 8  # one question per training image per epoch: 3 training folds of 12 images, batch 8
    assert f"Ran {6 / steps_per_epoch:.1f} epochs (6 optimizer steps, {steps_per_epoch} per epoch)" in card
    assert metrics["epochs"] == pytest.approx(6 / steps_per_epoch, abs=1e-3)
    rows = re.findall(r"^\| (BLEU-2|ROUGE-L|METEOR|Zero-shot Top-1 accuracy) \| ([\d.]+) \| ([^|]+) \| ([\d.]+) \|$", card, flags=re.M)
    assert len(rows) == 4, card
    assert rows[0][2].strip() == f"8 test QA pairs (a seeded random sample of the {metrics['num_test_pairs_in_fold']} in the test fold)"
    assert rows[3][2].strip() == f"{metrics['zero_shot_classification']['num_images']} test images"
    assert float(rows[3][3]) == pytest.approx(0.1)  # 10 classes: a uniform guess is right 1 time in 10
    assert 0 < metrics["chance"]["rougeL"] < 1
    limitations = card.split("## Limitations", 1)[1].split("\n## ", 1)[0]
    assert "teacher" not in limitations and "Leakage" not in limitations  # oracle answers, label-free: neither applies
    assert set(metrics["data_provenance"]["teachers"]) == {"oracle-synthetic"}


def test_vqa_figures_cover_the_whole_test_fold_unless_a_spaced_sample_is_asked_for():
    from emvision.train.evaluation.vqa import spread_sample
    from emvision.train.publishing.model_card import vqa_results
    from emvision.train.vqa import parse_args

    assert parse_args(["--output_dir", "unused"]).max_generate_samples == 0
    assert spread_sample(1000, 0) == spread_sample(1000, 1000) == spread_sample(1000, 5000) == list(range(1000))
    # a fold of 100 images x 10 questions (rows grouped by image): the sample spans images and questions alike
    # (evenly spaced rows, every 10th, would all be the same question)
    sample = spread_sample(1000, 100)
    assert sample == spread_sample(1000, 100) == sorted(set(sample)) and len(sample) == 100
    assert len({index % 10 for index in sample}) == 10 and len({index // 10 for index in sample}) >= 60
    assert vqa_results({"bleu2": 0.5, "num_test_pairs": 1000, "num_test_pairs_in_fold": 1000})[0].test_set == \
        "1000 test QA pairs (the whole test fold)"


def test_trackers_default_to_those_installed():
    from emvision.train.loop.arguments import installed_trackers, report_to
    from emvision.train.vqa import parse_args

    args = parse_args(["--output_dir", "unused"])
    assert args.report_to is None
    assert report_to(args) == (",".join(installed_trackers()) or "none")
    assert report_to(parse_args(["--report_to", "tensorboard"])) == "tensorboard"


# ---- in-house category folders: labels alone, and a source that changes -------------------------------

def _category_folder(images: list[Path], root: Path, classes=("Clean", "Defect")) -> Path:
    """A lab's folder of category sub-folders (no metadata, no question-answer pairs)."""
    for index, path in enumerate(images):
        target = root / classes[index % len(classes)] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


def test_mvaema_trains_from_category_folders_alone_on_templated_label_rows(real_sem_images, tmp_path, capsys):
    from datasets import load_from_disk

    from emvision.train.vqa import main

    lab = _category_folder(real_sem_images, tmp_path / "lab")
    output_dir = tmp_path / "labels_only"
    metrics = main([
        "--dataset", str(lab), "--labels", "Clean,Defect", "--output_dir", str(output_dir), "--config_overrides", TINY_MVAEMA,
        "--max_train_steps", "2", "--num_folds", "3", "--max_generate_samples", "4", "--max_new_tokens", "12",
        "--report_to", "none", "--per_device_train_batch_size", "4", "--checkpointing_steps", "no", "--vision_pretrain_steps", "2",
    ])
    log = capsys.readouterr().out
    assert "no question-answer pairs: training on the class labels alone (teacher=labels-template)" in log
    assert not (output_dir / "dataset" / "vqa").exists(), "the templated rows are made in training, not written into the dataset"
    assert len(load_from_disk(str(output_dir / "dataset" / "images"))) == len(real_sem_images)
    assert metrics["labels_template"] is True and metrics["label_conditioned"] is False
    assert set(metrics["data_provenance"]["teachers"]) == {"labels-template"}
    assert {example["reference"] for example in metrics["examples"]} <= {
        "This is a scanning electron micrograph of clean.", "This is a scanning electron micrograph of defect."}
    assert all(example["question"].startswith("This image depicts a nanomaterial.") for example in metrics["examples"])
    card = (output_dir / "README.md").read_text()
    assert "templated from the class labels (`teacher` = labels-template)" in card
    assert "names a micrograph's class but was not taught to describe it" in card
    assert "written by the teacher model" not in card and "inherit" not in card


def test_a_changed_dataset_folder_is_rebuilt_or_refused_never_reused(real_sem_images, tmp_path, capsys):
    from datasets import load_from_disk

    from emvision.train.classify import main

    lab = _category_folder(real_sem_images[:12], tmp_path / "lab")
    output_dir = tmp_path / "hnf"
    common = ["--dataset", str(lab), "--labels", "Clean,Defect", "--output_dir", str(output_dir), "--config_overrides", TINY_HNF,
              "--max_train_steps", "1", "--num_folds", "3", "--report_to", "none", "--per_device_train_batch_size", "4"]
    main(common)
    built = output_dir / "dataset" / "images"
    assert len(load_from_disk(str(built))) == 12

    shutil.rmtree(lab / "Defect")  # a class deleted
    _category_folder(real_sem_images[12:], lab, classes=("Clean",))  # and images added
    code, output = _script("classify.py", *common, "--resume_from_checkpoint", "latest")
    _one_line_error(code, output, f"--dataset {lab} has changed since", "6 files added", "6 files removed",
                    "--overwrite_output_dir, without --resume_from_checkpoint")

    capsys.readouterr()
    main([*common, "--overwrite_output_dir"])
    assert "has changed since" in capsys.readouterr().out
    images = load_from_disk(str(built))
    assert len(images) == 12 and set(images["label"]) == {images.features["label"].names.index("Clean")}

    main([*common, "--overwrite_output_dir"])  # unchanged since: the copy is reused
    assert "which is unchanged (12 files): reused" in capsys.readouterr().out


# ---- split records: a reused model is never evaluated on images it saw --------------------------------

def test_a_model_folder_records_the_images_of_its_split(trained_vqa, synthetic_dir):
    from datasets import load_from_disk

    from emvision.train.data.split_record import ids_sha256

    output_dir, metrics = trained_vqa
    record = json.loads((output_dir / "split.json").read_text())
    images = load_from_disk(str(synthetic_dir / "images")).remove_columns("image")
    fold_of = dict(zip(images["image_id"], images["fold"]))
    by_fold = {fold: sorted(i for i, f in fold_of.items() if f == fold) for fold in range(5)}
    assert (record["fold"], record["num_folds"], record["seed"]) == (0, 5, 42)
    assert record["validation_image_ids"] == by_fold[1]  # fold 0 tests, fold 1 validates, the rest train
    assert set(record["train_image_ids"]) == {*by_fold[2], *by_fold[3], *by_fold[4]}
    assert record["sha256"]["test"] == ids_sha256(by_fold[0]) and record["num_images"]["test"] == len(by_fold[0])
    assert record["base_model"] is None and record["base_image_ids"] == [] and record["base_unrecorded"] is False
    assert metrics["split"]["sha256"] == record["sha256"] and "train_image_ids" not in metrics["split"]
    assert "listed in `split.json`" in (output_dir / "README.md").read_text()


def test_classify_refuses_an_mvaema_model_that_saw_its_test_fold(trained_vqa, synthetic_dir, tmp_path, capsys):
    """The tiny MVaEMa of ``trained_vqa`` trained on folds 2-4 and validated on fold 1 (``--fold 0``)."""
    from emvision.train.classify import main
    from emvision.train.loop.preflight import InputError

    mvaema_dir, _ = trained_vqa
    common = ["--dataset", str(synthetic_dir), "--config_overrides", TINY_HNF, "--mvaema_model", str(mvaema_dir),
              "--max_train_steps", "1", "--checkpointing_steps", "no", *FAST]
    code, output = _script("classify.py", *common, "--fold", "2", "--output_dir", str(tmp_path / "fold2"))
    # the dataset is read first (the test fold's images are needed), so the run's first lines precede the error's one line
    assert code == 2 and "Traceback" not in output, output[-3000:]
    line = output.strip().splitlines()[-1]
    for expected in (f"classify.py: error: --mvaema_model {mvaema_dir} saw ", "of this run's test fold 2 of 5", "in its training split",
                     "trained with --fold 0 --num_folds 5 --seed 42", "train it on the same --fold 2 --num_folds 5 --seed 42",
                     "or pass a model trained on other data"):
        assert expected in line, line
    counts = json.loads((mvaema_dir / "split.json").read_text())["num_images"]
    assert re.search(r"saw (\d+) of the \1 images", line), line  # every image of fold 2 was a training image
    assert not (tmp_path / "fold2" / "model.safetensors").exists(), "refused before training"
    with pytest.raises(InputError, match="in the validation fold that chose its weights"):
        main([*common, "--fold", "1", "--output_dir", str(tmp_path / "fold1")])

    metrics = main([*common, "--fold", "0", "--output_dir", str(tmp_path / "fold0")])  # its own test fold: accepted
    assert metrics["mvaema_zero_shot"]["num_images"] == counts["test"]
    assert "cannot be checked" not in capsys.readouterr().out


def test_a_fine_tuned_model_inherits_what_its_base_saw(trained_vqa, synthetic_dir, tmp_path):
    from emvision.train.loop.preflight import InputError
    from emvision.train.vqa import main

    base_dir, _ = trained_vqa
    with pytest.raises(InputError, match=r"--model_name_or_path .* saw \d+ of the \d+ images of this run's test fold 3 of 5"):
        main(_tuning_args(synthetic_dir, tmp_path / "leaky", base_dir, "--fold", "3"))
    assert not (tmp_path / "leaky" / "model.safetensors").exists()
    # a base trained on other data (records, but none of these images): accepted, and the new record carries the base's images
    foreign = tmp_path / "foreign_base"
    shutil.copytree(base_dir, foreign)
    record = json.loads((foreign / "split.json").read_text())
    record["train_image_ids"], record["validation_image_ids"] = ["0" * 64], ["1" * 64]
    (foreign / "split.json").write_text(json.dumps(record))
    main(_tuning_args(synthetic_dir, tmp_path / "tuned", foreign, "--fold", "3", "--max_train_steps", "1",
                      "--checkpointing_steps", "no", "--max_generate_samples", "2"))
    tuned = json.loads((tmp_path / "tuned" / "split.json").read_text())
    assert tuned["base_model"] == str(foreign) and tuned["base_image_ids"] == ["0" * 64, "1" * 64]


def test_a_trained_models_class_loss_follows_the_weight_given_and_the_datasets_classes(trained_vqa, synthetic_dir, tmp_path):
    from transformers import AutoModel

    from emvision.train.loop.preflight import InputError
    from emvision.train.vqa import build_model_and_processor, class_loss_of_run, main, parse_args
    from emvision.vocabulary import SEM_CATEGORIES

    base_dir, _ = trained_vqa
    run = ["--model_name_or_path", str(base_dir), "--output_dir", str(tmp_path / "o")]
    args = parse_args(run)
    kept, _ = build_model_and_processor(args, [])
    assert kept.config.image_label_loss_weight == 2.0 and kept.image_label_head is not None  # the base's own (fast recipe)
    assert class_loss_of_run(kept, args, list(SEM_CATEGORIES), "synthetic") == (True, None)
    # other classes than the head's: the run leaves the class loss out and says why; given a weight, it refuses
    on, note = class_loss_of_run(kept, args, ["Clean", "Defect"], "lab")
    assert not on and "lab's classes (Clean, Defect) are not those of" in note and "Biological, Fibres" in note
    weighted = parse_args([*run, "--image_label_loss_weight", "1"])
    assert build_model_and_processor(weighted, [])[0].config.image_label_loss_weight == 1.0
    with pytest.raises(InputError, match="--image_label_loss_weight 1: lab's classes .* would teach it the wrong classes"):
        class_loss_of_run(kept, weighted, ["Clean", "Defect"], "lab")
    # 0 turns the loss off for this run only: the saved config keeps the weight that builds the head and class token
    off_args = parse_args([*run, "--image_label_loss_weight", "0"])
    off, _ = build_model_and_processor(off_args, [])
    assert off.config.image_label_loss_weight == 2.0
    assert class_loss_of_run(off, off_args, list(SEM_CATEGORIES), "synthetic") == (False, "--image_label_loss_weight 0")
    foreign = tmp_path / "foreign_base"  # the base, recorded as trained on other images (see the test above)
    shutil.copytree(base_dir, foreign)
    record = json.loads((foreign / "split.json").read_text())
    record["train_image_ids"], record["validation_image_ids"] = ["0" * 64], ["1" * 64]
    (foreign / "split.json").write_text(json.dumps(record))
    main(_tuning_args(synthetic_dir, tmp_path / "tuned", foreign, "--fold", "3", "--max_train_steps", "1",
                      "--checkpointing_steps", "no", "--max_generate_samples", "2", "--image_label_loss_weight", "0"))
    tuned = AutoModel.from_pretrained(tmp_path / "tuned")
    assert tuned.config.image_label_token and tuned.image_label_head is not None, "the fine-tuned folder keeps its class token"
    assert "auxiliary class loss left out: --image_label_loss_weight 0" in (tmp_path / "tuned" / "README.md").read_text()
    headless = tmp_path / "headless"
    shutil.copytree(base_dir, headless)
    config = json.loads((headless / "config.json").read_text())
    config["image_label_loss_weight"], config["image_label_token"] = 0.0, False
    (headless / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="--image_label_loss_weight 1: .*headless has no image-label head"):
        build_model_and_processor(parse_args(["--model_name_or_path", str(headless), "--output_dir", str(tmp_path / "o"),
                                              "--image_label_loss_weight", "1"]), [])


def test_a_model_without_a_split_record_is_evaluated_with_a_warning(trained_vqa, tmp_path):
    from argparse import Namespace

    from emvision.train.data.split_record import check_reused_model

    unrecorded = tmp_path / "hub_like"
    shutil.copytree(trained_vqa[0], unrecorded)
    (unrecorded / "split.json").unlink()
    said = []
    args = Namespace(fold=2, num_folds=5, seed=42)
    assert check_reused_model("--mvaema_model", str(unrecorded), ["a" * 64], args, log=said.append) is None
    assert len(said) == 1 and "has no split.json" in said[0] and "cannot be checked" in said[0]


# ---- checkpoints: an incomplete or damaged one is named, and 'latest' falls back ----------------------

@pytest.fixture(scope="module")
def checkpointed_hnf(synthetic_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    from emvision.train.classify import main

    output_dir = tmp_path_factory.mktemp("checkpointed") / "hnf"
    args = ["--dataset", str(synthetic_dir), "--config_overrides", TINY_HNF, "--max_train_samples", "24", "--max_train_steps", "3",
            "--checkpointing_steps", "1", "--checkpoints_total_limit", "3", *FAST]
    main([*args, "--output_dir", str(output_dir)])
    return output_dir, args


def _copy_with_damage(run: Path, destination: Path, file_name: str | None) -> Path:
    shutil.copytree(run, destination)
    newest = destination / "checkpoints" / "step_00000003"
    if file_name:
        path = newest / file_name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return newest


@pytest.mark.parametrize("file_name", ["model.safetensors", "optimizer.bin", "training_state.json"])
def test_resuming_a_truncated_checkpoint_names_the_file(checkpointed_hnf, file_name, tmp_path):
    run, args = checkpointed_hnf
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000001", "step_00000002", "step_00000003"]
    newest = _copy_with_damage(run, tmp_path / "run", file_name)
    code, output = _script("classify.py", *args, "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", str(newest))
    _one_line_error(code, output, f"{newest} cannot be resumed: {file_name} is truncated (", " bytes)", "'latest'")


def test_latest_falls_back_past_damaged_and_unfinished_checkpoints_saying_so(checkpointed_hnf, tmp_path, capsys):
    from emvision.train.classify import main

    run, args = checkpointed_hnf
    output_dir = tmp_path / "run"
    _copy_with_damage(run, output_dir, "model.safetensors")
    (output_dir / "checkpoints" / "step_00000002" / "checkpoint_complete.json").unlink()  # a save cut short
    capsys.readouterr()
    main([*args, "--output_dir", str(output_dir), "--resume_from_checkpoint", "latest"])
    log = capsys.readouterr().out
    assert "step_00000003 cannot be resumed: model.safetensors is truncated (" in log
    assert "step_00000002 cannot be resumed: it has no checkpoint_complete.json (the save did not finish)" in log
    assert f"Resumed from {output_dir / 'checkpoints' / 'step_00000001'} (epoch 0, step 1)" in log
    expected, got = load_file(run / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
# ---- --streaming -----------------------------------------------------------------------------------------------------
# The comparison below trains the same model (transformers' ViT at HNF's width, the fastest one) from the same seed for
# the same 60 optimizer steps of 2 x 16 images on the same SYNTHETIC set, once map-style and once streamed, both on two
# gloo processes, and evaluates both on the same map-style test fold (200 images). Only the order of the training images
# differs, so the test metrics must agree within run-to-run noise. That noise was measured on this exact setting (seeds
# 1-3, each map-style and streamed, 6 runs): test top-1 0.175-0.31 (mean 0.24 both ways), best validation loss
# 1.94-2.14; the binomial standard error of a difference of two top-1s on 200 images is 0.044 at p = 0.25. Tolerances:
# top-1 within 0.14 (the measured range, 3 standard errors), validation loss within 0.2 (the measured range). Both
# runs must also have learned (top-1 >= 0.15, 2.4 standard errors above chance 0.10; validation loss <= 2.2 against
# ln 10 = 2.30 at chance), so a streamed run that trained on wrong rows (validation or test images, mismatched labels)
# fails. With seed 1 on this machine: top-1 0.23 map-style, 0.225 streamed; validation loss 2.048 and 1.956.
# (tests/train/test_data.py checks the streamed epochs themselves: every training image, no other, equal shares.)
STREAM_STEPS = ["--recipe", "paper", "--baseline", "vit", "--num_folds", "5", "--max_train_steps", "60", "--per_device_train_batch_size", "16",
                "--per_device_eval_batch_size", "100", "--report_to", "none", "--checkpointing_steps", "no", "--seed", "1"]


@pytest.fixture(scope="module")
def comparison_set(tmp_path_factory) -> Path:
    from emvision.datasets_scripts.synthesize import load_or_create_synthetic

    # 1,000 images (600 train / 200 validation / 200 test): drawn small (128 px frames) to build in about a minute
    return load_or_create_synthetic(num_images=1000, seed=3, num_folds=5, short_side=128, render_scale=1,
                                    cache_dir=tmp_path_factory.mktemp("synthetic1000"), progress=False)


def _launch_two(script: str, args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", script, *args]
    return subprocess.run(command, cwd=REPO, env=_env(ACCELERATE_USE_CPU="true"), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_process_streaming_run_matches_the_map_style_run(comparison_set, tmp_path):
    runs = {}
    for mode, extra in (("map", []), ("streaming", ["--streaming", "--shuffle_buffer_size", "200"])):
        output_dir = tmp_path / mode
        result = _launch_two("train/classify.py", ["--dataset", str(comparison_set), "--output_dir", str(output_dir), *STREAM_STEPS, *extra])
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        runs[mode] = json.loads((output_dir / "metrics.json").read_text())
    streamed, mapped = runs["streaming"], runs["map"]
    assert "600 train (streamed) / 200 validation / 200 test images" in result.stdout + result.stderr
    assert streamed["optimizer_steps"] == mapped["optimizer_steps"] == 60
    assert streamed["epochs"] == mapped["epochs"]  # 18 batches per process and epoch either way
    assert streamed["num_images"] == mapped["num_images"] == 200  # the same test fold, gathered from both processes
    for metrics in runs.values():  # both learned: clear of chance
        assert metrics["top1"] >= 0.15 and metrics["best_val_loss"] <= 2.2
    assert abs(streamed["top1"] - mapped["top1"]) <= 0.14, (streamed["top1"], mapped["top1"])
    assert abs(streamed["best_val_loss"] - mapped["best_val_loss"]) <= 0.2, (streamed["best_val_loss"], mapped["best_val_loss"])


def test_streamed_vqa_training_joins_images_to_their_text_rows(synthetic_dir, tmp_path):
    from emvision.train.vqa import main

    metrics = main(_vqa_args(synthetic_dir, tmp_path / "vqa_stream", "--streaming", "--max_train_steps", "3", "--checkpointing_steps", "no"))
    assert metrics["optimizer_steps"] == 3 and metrics["num_test_pairs"] == 8
    assert 0.0 <= metrics["zero_shot_classification"]["top1"] <= 1.0
