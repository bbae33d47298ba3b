"""The README's two set-up commands are the ones the project actually runs."""

import re


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _readme_test_command(repo_root) -> str:
    blocks = _bash_blocks((repo_root / "README.md").read_text())
    test_commands = [b for b in blocks if "pytest" in b and "\n" not in b]
    assert test_commands, "README.md has no one-line test command"
    return test_commands[0]


def test_ci_runs_the_readme_test_command_with_the_lock_and_without(repo_root):
    command = _readme_test_command(repo_root)
    assert " -c constraints.txt" in command, "the README's test command must install against the lock"
    ci_lines = [line.strip() for line in (repo_root / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines, ".ci/run must run the README's test command verbatim"
    assert command.replace(" -c constraints.txt", "") in ci_lines, ".ci/run must also run it without the lock"
    assert any("venv" in line for line in ci_lines), ".ci/run must build brand-new virtual environments"


def test_readme_main_job_is_the_vqa_training_script_installed_against_the_lock(repo_root):
    blocks = _bash_blocks((repo_root / "README.md").read_text())
    main_job = blocks[0]
    assert main_job.startswith("pip install torch==2.13.0")
    assert "-c constraints.txt" in main_job
    script = re.search(r"accelerate launch (\S+\.py)", main_job).group(1)
    assert (repo_root / script).is_file(), f"the README's main job runs {script}, which does not exist"


def test_the_lock_pins_every_dependency_exactly(repo_root):
    lines = [line.strip() for line in (repo_root / "constraints.txt").read_text().splitlines()]
    pins = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    assert all(re.fullmatch(r"[\w.!+-]+", version) for version in pins.values()), "every line of the lock is name==version"
    names = {name.lower().replace("_", "-") for name in pins}
    pyproject = (repo_root / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", pyproject, flags=re.S | re.M).group(1)
    required = {re.match(r"\s*\"([A-Za-z0-9_.-]+)", line).group(1).lower().replace("_", "-")
                for line in dependencies.splitlines() if line.strip().startswith('"')}
    assert required <= names, f"the lock misses {sorted(required - names)}"
    assert pins["torch"] == "2.13.0", "the lock's torch is the README's first install step"
