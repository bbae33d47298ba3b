"""The README's two set-up commands are the ones the project actually runs."""

import re


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command(repo_root):
    readme = (repo_root / "README.md").read_text()
    blocks = _bash_blocks(readme)
    test_commands = [b for b in blocks if "pytest" in b and "\n" not in b]
    assert test_commands, "README.md has no one-line test command"
    ci_lines = [line.strip() for line in (repo_root / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0] in ci_lines, ".ci/run must run the README's test command verbatim"


def test_readme_main_job_is_the_vqa_training_script(repo_root):
    blocks = _bash_blocks((repo_root / "README.md").read_text())
    main_job = blocks[0]
    assert main_job.startswith("pip install torch==2.13.0")
    script = re.search(r"accelerate launch (\S+\.py)", main_job).group(1)
    assert (repo_root / script).is_file(), f"the README's main job runs {script}, which does not exist"
