import os

# Tests never touch the network; set before transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
REAL_SEM_DIR = FIXTURES / "real_sem"  # 18 real NFFA-EUROPE micrographs (CC BY 4.0, manifest.csv)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models only lose time to intra-op threads (and a lot of it when the cores are shared)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_sem_dir() -> Path:
    if not REAL_SEM_DIR.is_dir():
        pytest.fail(f"real SEM fixture images not found at {REAL_SEM_DIR}")
    return REAL_SEM_DIR


@pytest.fixture(scope="session")
def real_sem_images(real_sem_dir) -> list[Path]:
    """All 18 real micrographs, as (path) sorted; the parent folder is the category."""
    return sorted(p for p in real_sem_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
