"""The README walked as a new user walks it: every command of its ```bash and ```python blocks, in order, as
subprocesses, from a fresh copy of the repository (its tracked and unignored files only, in a temporary
folder with nothing beside it), on small sizes given through the scripts' own flags.

Every README command must match a step below, or the walk fails: a new command cannot go unwalked, and a
changed one cannot drift from what runs. A command that needs what only its user has (the real archive, an
API key, their own images, a released model) is run as written first where it can be, and must stop with the
one-line message the README announces; then it runs against what the test has instead (the 18 real fixture
micrographs as the archive, tests/openai_fake_server.py as the teacher's server, images copied from the
fixtures as the lab's, the set-up's model as the released one).

The launcher runs the set-up's line and the two-process line; any other one-process ``accelerate launch
SCRIPT ARGS`` runs as ``python SCRIPT ARGS``, which is what the launcher starts for one process (each launcher
costs seconds of CPU to import torch, and CI walks the README twice).
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openai_fake_server import FakeOpenAIServer
from ports import free_port

REPO = Path(__file__).resolve().parents[1]
TINY_MVAEMA = "vision_config.num_hidden_layers=1,text_config.num_hidden_layers=1"
TINY_HNF = "patch_sizes=[32,32],num_neighbors=[4,4],hidden_size=32,intermediate_size=64,fusion_num_heads=2,num_attention_heads=2"
SMALL_BATCHES = {"--per_device_train_batch_size": "8", "--per_device_eval_batch_size": "16", "--max_eval_samples": "16"}
SMALL_VQA = {"--config_overrides": TINY_MVAEMA, "--max_train_steps": "2", "--vision_pretrain_steps": "2", "--max_generate_samples": "4", "--max_new_tokens": "4", **SMALL_BATCHES}
SMALL_HNF = {"--config_overrides": TINY_HNF, "--max_train_steps": "2", **SMALL_BATCHES}
SMALL_SYNTHETIC = {"--synthetic_num_images": "60", "--num_folds": "5"}
SMALL_MLM = {"--max_train_steps": "2", "--hidden_size": "16", "--num_attention_heads": "2", "--intermediate_size": "32", "--max_length": "64"}
NOISE = ("Removed shared tensor", "no supported trackers are currently installed")
LAUNCH_DEFAULTS_NOTICE = "were not passed to `accelerate launch`"


@dataclass
class Step:
    command: str  # as run (after the walk's substitutions)
    returncode: int
    output: str
    seconds: float
    cpu_seconds: float
    readme_command: str  # the README line it stands for
    after_accelerate_config: bool


@dataclass
class Walk:
    root: Path  # the fresh copy
    readme: str
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the commands (user + system), which a shared machine's load does not stretch

    def outputs_of(self, pattern: str) -> list[Step]:
        return [step for step in self.steps if re.search(pattern, step.command)]


# ---- reading the README ------------------------------------------------------------------------------

def readme_commands(text: str) -> list[tuple[str, str]]:
    """(language, command) for every command of every ```bash and ```python block, in order.

    Bash lines are joined at trailing backslashes, comments dropped, and ``a && b`` split into its commands;
    a python block is one command (its whole text)."""
    commands = []
    for language, body in re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S):
        if language == "python":
            commands.append(("python", body))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if not tokens:
                continue
            part: list[str] = []
            for token in [*tokens, "&&"]:
                if token == "&&":
                    commands.append(("bash", shlex.join(part)))
                    part = []
                else:
                    part.append(token)
    return commands


def with_flags(tokens: list[str], flags: dict[str, str], before: str | None = None) -> list[str]:
    """``tokens`` with each flag set to its value: replaced where the command has it, else added (before the
    token ``before`` when given, e.g. kfold's '--')."""
    tokens = list(tokens)
    stop = tokens.index(before) if before in tokens else len(tokens)
    for flag, value in flags.items():
        if flag in tokens[:stop]:
            tokens[tokens.index(flag) + 1] = value
        else:
            tokens[stop:stop] = [flag, value]
            stop += 2
    return tokens


# ---- the walk ----------------------------------------------------------------------------------------

class Walker:
    def __init__(self, root: Path, scratch: Path, readme: str, server: FakeOpenAIServer):
        self.root, self.scratch, self.server = root, scratch, server
        self.walk = Walk(root=root, readme=readme)
        self.env = {
            **os.environ,
            "HF_HOME": str(scratch / "hf_home"),  # a new user's: no accelerate config, nothing in the Hub cache
            "EMVISION_CACHE": str(scratch / "emvision_cache"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        }
        for name in ("PYTHONPATH", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ACCELERATE_CONFIG_FILE"):
            self.env.pop(name, None)
        self.accelerate_configured = False
        self.lab_images = self._lab_images()

    def _lab_images(self) -> Path:
        """A lab's folder of category sub-folders (Clean, Defect), from the fixture micrographs."""
        folder = self.scratch / "lab_images"
        for index, path in enumerate(sorted((self.root / "tests" / "fixtures" / "real_sem").rglob("*.*"))):
            if path.suffix.lower() in (".jpg", ".png"):
                target = folder / ("Clean" if index % 2 else "Defect") / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        return folder

    def run(self, tokens: list[str], readme_command: str, *, fails_with: str | None = None, through_launcher: bool = False,
            timeout: int = 600) -> Step:
        env = dict(self.env)
        while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # VAR=value prefixes
            name, value = tokens[0].split("=", 1)
            env[name] = value
            tokens = tokens[1:]
        if tokens[:2] == ["accelerate", "launch"] and not through_launcher and "--num_processes" not in tokens:
            tokens = ["python", *tokens[2:]]  # one process: what the launcher would start
        elif tokens[:2] == ["accelerate", "launch"] and "--main_process_port" not in tokens:
            tokens = [*tokens[:2], "--main_process_port", str(free_port()), *tokens[2:]]  # runs side by side never collide
        if tokens[0] in ("python", "accelerate"):
            tokens = [sys.executable, *tokens[1:]] if tokens[0] == "python" else [str(Path(sys.executable).parent / "accelerate"), *tokens[1:]]
        started, cpu_before = time.perf_counter(), _children_cpu()
        result = subprocess.run(tokens, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)
        output = result.stdout + result.stderr
        step = Step(shlex.join(tokens), result.returncode, output, time.perf_counter() - started, _children_cpu() - cpu_before,
                    readme_command, self.accelerate_configured)
        self.walk.steps.append(step)
        if fails_with is None:
            assert result.returncode == 0, f"README command failed: {readme_command}\nran: {step.command}\n{output[-4000:]}"
        else:
            assert result.returncode != 0, f"expected to stop: {step.command}\n{output[-2000:]}"
            assert fails_with in output, f"expected the one-line message {fails_with!r}\nran: {step.command}\n{output[-3000:]}"
            script_lines = [line for line in output.splitlines() if fails_with in line]
            assert len(script_lines) == 1 and ": error: " in script_lines[0], output[-3000:]
            tracebacks = output.count("Traceback (most recent call last)")
            launcher_only = tracebacks == 1 and "subprocess.CalledProcessError" in output and tokens[0].endswith("accelerate")
            assert tracebacks == 0 or launcher_only, f"a traceback besides the message:\n{output[-4000:]}"
        return step

    @property
    def emvision(self) -> str:
        """The console script the package installs, beside this interpreter."""
        return str(Path(sys.executable).parent / "emvision")

    def predict(self, tokens: list[str], command: str) -> None:
        """The user's scans, globs and archive: the fixture micrographs stand in for all three (a folder, a glob,
        a .zip); a rerun of the same command resumes and adds no row."""
        fixtures = self.root / "tests" / "fixtures" / "real_sem"
        archive = self.scratch / "run42.zip"
        if not archive.exists():
            with zipfile.ZipFile(archive, "w") as handle:
                for path in sorted(fixtures.rglob("*.jpg"))[:3]:
                    handle.write(path, path.name)
        stand_ins = {"scans/": str(fixtures), "more/**/*.tif": str(fixtures / "**" / "*.png"), "run42.zip": str(archive)}
        args = [stand_ins.get(t, t) for t in tokens[1:]]
        self.run([self.emvision, *args], command)
        output = self.root / tokens[tokens.index("--output") + 1]
        rows = output.read_text().splitlines()
        assert len(rows) > 1, rows
        self.run([self.emvision, *args], command + "  [rerun: resumes]")
        assert output.read_text().splitlines() == rows, "a rerun adds no row"

    # one handler per kind of README command; each returns True when it walked the command
    def walk_command(self, language: str, command: str) -> None:
        if language == "python":
            return self.python_snippet(command)
        tokens = shlex.split(command)
        head = " ".join(t for t in tokens if not re.fullmatch(r"[A-Z_]+=\S*", t))[:200]
        if tokens[:2] == ["pip", "install"] or tokens[:2] == ["apt-get", "install"]:
            return  # the environment running this test was installed by them; tests/test_readme.py checks the lines
        if tokens[:3] == ["python", "-m", "pytest"] or "wordnet_data install" in command:
            return  # the test command: this suite
        if tokens[0] == "export":
            name, value = tokens[1].split("=", 1)
            self.env[name] = "sk-walk-test-key" if value == "..." else value
            return
        if tokens[:3] == ["accelerate", "config", "default"]:
            self.run(tokens, command)
            self.accelerate_configured = True
            return
        if "datasets_scripts/synthesize.py" in head:
            self.run(with_flags(tokens, {"--num_images": "60"}), command)
            return
        if "datasets_scripts/build_sem.py" in head:
            source = tokens[tokens.index("datasets_scripts/build_sem.py") + 1]
            if source == "/data/SEM_dataset":  # the real archive: only its user has it
                if not Path(source).exists():
                    self.run(tokens, command, fails_with=f"SOURCE {source}: no such file or folder")
                stand_in = str(self.root / "tests" / "fixtures" / "real_sem")
            else:  # lab_images/: the user's own folder
                stand_in = str(self.lab_images)
            self.run([stand_in if t == source else t for t in tokens], command)
            return
        if "datasets_scripts/generate_qa.py" in head:
            self.run(tokens, command)  # the dry run: counts and prices, sends nothing
            assert "dry run, nothing sent" in self.walk.steps[-1].output
            real = [t for t in tokens if t != "--dry_run"] + ["--base_url", self.server.base_url, "--no_progress"]
            self.run(real, command + "  [without --dry_run, against the fake server]")
            return
        if "train/kfold.py" in head:
            small = with_flags(tokens, {"--folds": "0"}, before="--")
            self.run([*small, *(f for kv in SMALL_HNF.items() for f in kv)], command)
            return
        if "train/pretrain_text_mlm.py" in head:
            self.run(with_flags(tokens, SMALL_MLM), command)
            return
        if "train/vqa.py" in head and "--lora" in tokens:
            return self.lora(tokens, command)
        if "train/vqa.py" in head:
            setup = not self.walk.steps  # the set-up's line, the first a user runs: through the launcher
            self.run(with_flags(tokens, {**SMALL_VQA, **({} if "--dataset" in tokens else SMALL_SYNTHETIC)}), command, through_launcher=setup)
            return
        if "train/classify.py" in head:
            self.run(with_flags(tokens, {**SMALL_HNF, **({} if "--dataset" in tokens else SMALL_SYNTHETIC)}), command)
            return
        if tokens[:3] == ["python", "-m", "emvision.datasets_scripts.storage.convert"]:
            # a dataset in the version-1 layout is the user's: without one the command says so, then a written one converts
            old, new = tokens[3], tokens[4]
            self.run(tokens, command, fails_with=f"{old} holds no images subset")
            from v1_datasets import write_v1_dataset

            write_v1_dataset(self.root / old)
            converted = f"{new}_converted"  # the walk's data/sem came from build_sem above: not overwritten
            self.run([*tokens[:4], converted], command + "  [a version-1 dataset written first, into a new folder]")
            assert (self.root / converted / "images" / "dataset_info.json").is_file()
            shutil.rmtree(self.root / old)
            return
        if tokens[:2] == ["emvision", "demo"]:
            return  # a server that runs until stopped: tests/apps/test_demo_browser.py starts it and drives it in Chromium
        if tokens[:2] == ["emvision", "predict"]:
            return self.predict(tokens, command)
        if tokens[:2] == ["emvision", "ask"]:  # the user's micrograph: a fixture stands in
            image = next(p for p in sorted((self.root / "tests" / "fixtures" / "real_sem").rglob("*.jpg")))
            step = self.run([self.emvision, *[str(image) if t == "micrograph.tif" else t for t in tokens[1:]]], command)
            assert step.output.strip() and (self.root / "looked.png").is_file(), step.output[-2000:]
            return
        if "tests/benchmarks/run_all.py" in head:
            return  # the benchmarks (~12 min): run on demand, not in the suite
        pytest.fail(f"README command not covered by the walk: {command!r}; add it to tests/test_readme_walk.py")

    def lora(self, tokens: list[str], command: str) -> None:
        """The in-house fine-tuning line: /secure/lab_images and released/mvaema are the user's."""
        dataset = tokens[tokens.index("--dataset") + 1]
        model = tokens[tokens.index("--model_name_or_path") + 1]
        self.run(tokens, command, fails_with=f"--dataset {dataset}: no such folder or archive")
        own_images = [str(self.lab_images) if t == dataset else t for t in tokens]
        self.run(own_images, command, fails_with=f"--model_name_or_path: no such folder: {model}")
        released = [("outputs/vqa" if t == model else t) for t in own_images]
        # outputs/vqa is already small; the options that describe a new model are refused beside it
        tuning = {key: value for key, value in SMALL_VQA.items() if key not in ("--config_overrides", "--vision_pretrain_steps")}
        self.run(with_flags(released, {**tuning, "--num_folds": "3", "--lora_r": "4", "--max_train_steps": "3",
                                       "--per_device_train_batch_size": "4"}), command)

    def python_snippet(self, code: str) -> None:
        image = next((self.root / "tests" / "fixtures" / "real_sem").rglob("*.png"))
        script = self.scratch / "readme_snippet.py"
        script.write_text(code.replace('"micrograph.png"', repr(str(image))))
        self.run(["python", str(script)], code.strip().splitlines()[0] + " ... [the README's python block]")


def fresh_copy(destination: Path) -> Path:
    """The repository as a clone would have it: tracked and unignored files, nothing else, under git."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True)
    subprocess.run(["git", "add", "-A"], cwd=destination, check=True)
    return destination


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Walk:
    scratch = tmp_path_factory.mktemp("readme_walk")
    root = fresh_copy(scratch / "clone" / "emvision")  # nothing beside it: no ../shared
    readme = (root / "README.md").read_text()
    started, cpu_before = time.perf_counter(), _children_cpu()
    with FakeOpenAIServer() as server:
        walker = Walker(root, scratch, readme, server)
        for language, command in readme_commands(readme):
            walker.walk_command(language, command)
        # the set-up's command again: the output folder holds its first run, which is kept
        walker.run(["python", "train/vqa.py", *SMALL_SYNTHETIC_ARGS], "accelerate launch train/vqa.py  [again]",
                   fails_with="--output_dir outputs/vqa already holds an earlier run")
    walker.walk.seconds, walker.walk.cpu_seconds = time.perf_counter() - started, _children_cpu() - cpu_before
    print(f"\nREADME walk: {len(walker.walk.steps)} commands in {walker.walk.seconds:.0f} s ({walker.walk.cpu_seconds:.0f} s of CPU)")
    for step in walker.walk.steps:
        print(f"  {step.seconds:6.1f} s ({step.cpu_seconds:5.1f} s CPU)  rc={step.returncode}  {step.readme_command[:100]}")
    return walker.walk


SMALL_SYNTHETIC_ARGS = [f for kv in {**SMALL_VQA, **SMALL_SYNTHETIC}.items() for f in kv]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_every_readme_command_runs_in_order_or_says_what_must_come_first(walk):
    commands = [command for _, command in readme_commands(walk.readme)]
    assert any("train/vqa.py" in c for c in commands) and any("build_sem.py" in c for c in commands)
    walked = {step.readme_command for step in walk.steps}
    for command in commands:
        if "train/" in command or "datasets_scripts/" in command:
            assert command in walked or any(w.startswith(command) for w in walked), f"not walked: {command}"
    assert (walk.root / "outputs" / "vqa" / "model.safetensors").is_file()
    assert (walk.root / "outputs" / "classify" / "model.safetensors").is_file()
    assert (walk.root / "outputs" / "lab_adapter" / "adapter_model.safetensors").is_file()
    assert (walk.root / "outputs" / "text_mlm" / "model.safetensors").is_file()
    # what the README says must come first is the message a user meets without it
    assert "SOURCE /data/SEM_dataset: no such file or folder" in walk.readme


@pytest.mark.slow
def test_the_walk_is_quiet_and_leaves_only_ignored_files(walk):
    launched = [step for step in walk.steps if step.after_accelerate_config and "/accelerate launch" in step.command]
    assert launched, "no command ran through `accelerate launch` after `accelerate config default`"
    for step in walk.steps:
        for noise in NOISE:
            assert noise not in step.output, f"{noise!r} in the output of {step.command}"
        if step.after_accelerate_config:
            assert LAUNCH_DEFAULTS_NOTICE not in step.output, step.command
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=walk.root,
                            capture_output=True, text=True, check=True).stdout
    assert [line for line in status.splitlines() if line.startswith("??")] == [], "the walk left files .gitignore does not cover"


@pytest.mark.slow
def test_the_walk_writes_cards_that_tell_provenance_test_sizes_and_chance(walk):
    outputs = walk.root / "outputs"
    classify = (outputs / "classify" / "README.md").read_text()
    assert re.search(r"Ran \d+\.\d epochs \(2 of \d+ steps\)", classify), classify
    assert "| Top-1 accuracy |" in classify and "test images |" in classify and "| chance level |" in classify
    assert "teacher" not in classify.split("## Limitations", 1)[1]  # no teacher was used: no teacher boilerplate
    assert "Leakage" not in classify

    lab = (outputs / "lab_adapter" / "README.md").read_text()
    header = lab.split("---", 2)[1]
    assert "base_model" not in header, "a local base folder is not a Hub id"
    assert "the local folder `outputs/vqa` (not on the Hub)" in lab and "synthetic images" in lab
    assert "templated from the class labels (`teacher` = labels-template)" in lab
    assert "inherit" not in lab and "written by the teacher model" not in lab
    for row in re.findall(r"^\| (?:BLEU|ROUGE|METEOR|Zero-shot)[^\n]*$", lab, flags=re.M):
        assert re.search(r"\| \d+ test (QA pairs?|images?)", row) and re.search(r"\| \d\.\d{4} \|$", row), row

    teacher_card = (outputs / "vqa_sem" / "README.md").read_text()
    assert "written by the teacher model `gpt-4o`" in teacher_card and "inherit that teacher's mistakes" in teacher_card


@pytest.mark.slow
def test_the_walk_time(walk):
    print(f"README walk: {walk.seconds:.0f} s ({walk.cpu_seconds:.0f} s of CPU) for {len(walk.steps)} commands")
    # about 7 minutes alone on the 2-core machine; CI walks it in two test sessions side by side (.ci/run)
    assert walk.seconds < 1500, "the README walk is meant to stay a few minutes"


def test_a_fresh_clone_has_every_source_file():
    """.gitignore covers what the README's commands write (data/, outputs/ at the top), never the package's own
    files (a bare `data/` pattern once hid new modules under train/data/ from every clone)."""
    hidden = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--", "train", "modeling", "processing",
                             "vocabulary", "datasets_scripts", "model_cards", "tests"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    hidden = [name for name in hidden.splitlines() if "__pycache__" not in name and not name.endswith(".pyc")]
    assert hidden == [], f"source files a clone would not get: {hidden}"
    for written in ("data/sem/images/data-00000-of-00001.arrow", "outputs/vqa/model.safetensors"):
        assert subprocess.run(["git", "check-ignore", "-q", written], cwd=REPO).returncode == 0, f"{written} is not ignored"
