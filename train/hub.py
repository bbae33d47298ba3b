"""Publishing a finished model folder to the Hugging Face Hub in one commit."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

REQUIRED_FILES = ("config.json", "model.safetensors", "README.md")
EXCLUDED_DIRS = ("checkpoints",)  # training state (optimizer pickles) stays local


def check_upload_folder(folder: str | Path) -> list[str]:
    """The files that would be uploaded; raises if the folder is not a complete model folder."""
    folder = Path(folder)
    files = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] not in EXCLUDED_DIRS
    )
    missing = [name for name in REQUIRED_FILES if name not in files and not (name == "model.safetensors" and "adapter_model.safetensors" in files)]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete model folder: missing {', '.join(missing)}")
    unsafe = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    if unsafe:
        raise ValueError(f"{folder} holds pickled weights ({', '.join(unsafe)}); only safetensors are published")
    return files


def push_folder_to_hub(folder: str | Path, repo_id: str, *, private: bool = True, token: str | None = None, commit_message: str | None = None, api: HfApi | None = None) -> str:
    """Create (or reuse) the model repo and upload weights, processor, remote code and card in one commit."""
    files = check_upload_folder(folder)
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        commit_message=commit_message or f"Upload emvision model ({len(files)} files)",
        ignore_patterns=["checkpoints/*", "*.bin", "*.pt", "*.pth", "*.pkl"],
    )
    return str(getattr(commit, "commit_url", commit))
