"""The layers import one way (ARCHITECTURE.md): vocabulary at the bottom; models and data code beside each other."""

import ast
import subprocess
import sys

import pytest

# package folder -> emvision packages its modules may never import (at any depth)
FORBIDDEN = {
    "vocabulary": ("emvision.modeling", "emvision.processing", "emvision.datasets_scripts", "emvision.train"),
    "modeling": ("emvision.processing", "emvision.datasets_scripts", "emvision.train"),
    "processing": ("emvision.modeling", "emvision.datasets_scripts", "emvision.train"),
    "datasets_scripts": ("emvision.modeling", "emvision.train"),
}
REGISTRATION_MODULE = "modeling/__init__.py"  # the one place where models meet processing/


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_go_one_way(repo_root, folder):
    offenders = []
    for path in sorted((repo_root / folder).rglob("*.py")):
        if path.relative_to(repo_root).as_posix() == REGISTRATION_MODULE:
            continue
        for name in _imports(path):
            if name.startswith(FORBIDDEN[folder]):
                offenders.append(f"{path.relative_to(repo_root)} imports {name}")
    assert not offenders, offenders


def test_data_code_and_vocabulary_load_without_torch(repo_root):
    modules = ["emvision.vocabulary", "emvision.datasets_scripts.build_sem", "emvision.datasets_scripts.generate_qa",
               "emvision.datasets_scripts.synthesize", "emvision.processing.micrograph"]
    code = f"import sys; import {', '.join(modules)}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
