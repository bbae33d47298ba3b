import os

# Tests never touch the network; set before transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SEM_DIR = REPO_ROOT.parent / "shared" / "real_sem"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_sem_dir() -> Path:
    if not REAL_SEM_DIR.is_dir():
        pytest.fail(f"real SEM smoke images not found at {REAL_SEM_DIR} (shared/ must sit beside the checkout)")
    return REAL_SEM_DIR


@pytest.fixture(scope="session")
def real_sem_images(real_sem_dir) -> list[Path]:
    """All 18 real micrographs, as (path) sorted; the parent folder is the category."""
    return sorted(p for p in real_sem_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
