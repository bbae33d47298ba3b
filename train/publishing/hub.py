"""Publishing a finished model folder to the Hugging Face Hub in one commit, and the scripts' Hub arguments."""

from __future__ import annotations

import argparse
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


def add_hub_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Hugging Face Hub")
    group.add_argument("--push_to_hub", action="store_true", help="upload the finished model folder in one commit")
    group.add_argument("--hub_model_id", type=str, default=None, help="repository to push to (owner/name)")
    group.add_argument("--hub_private", action=argparse.BooleanOptionalAction, default=True, help="private repository (default)")
    group.add_argument("--hub_token", type=str, default=None, help="token (default: the cached login or HF_TOKEN)")


def check_hub_args(args) -> None:
    if args.push_to_hub and not args.hub_model_id:
        raise SystemExit("--push_to_hub needs --hub_model_id owner/name")


def maybe_push(accelerator, args, output_dir: Path) -> None:
    if args.push_to_hub and accelerator.is_main_process:
        url = push_folder_to_hub(output_dir, args.hub_model_id, private=args.hub_private, token=args.hub_token)
        accelerator.print(f"Pushed {output_dir} to {url}")
