"""Uploading a build to the Hugging Face Hub: the card, each subset as a config, and rejects.jsonl."""

from __future__ import annotations

import os
from pathlib import Path

from emvision.datasets_scripts.storage import SUBSETS


def push_to_hub(output_dir: str | os.PathLike, repo_id: str, *, private: bool = True, token: str | None = None) -> str:
    """Upload a build: the card, each subset as a config of ``repo_id`` (split "train"), and rejects.jsonl."""
    from datasets import load_from_disk
    from huggingface_hub import DatasetCard, HfApi

    output_dir = Path(output_dir)
    if not (output_dir / "images").is_dir():
        raise FileNotFoundError(f"{output_dir}: no images subset; build the dataset before pushing it")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    # the card first: each subset's push then adds its config and dataset_info to the card's YAML
    DatasetCard.load(output_dir / "README.md").push_to_hub(repo_id, token=token, repo_type="dataset", commit_message="Dataset card")
    for subset in SUBSETS:
        if (output_dir / subset).is_dir():
            load_from_disk(str(output_dir / subset)).push_to_hub(
                repo_id,
                config_name=subset,
                set_default=subset == "images",
                split="train",
                private=private,
                token=token,
                commit_message=f"Add the {subset} subset",
            )
    api.upload_file(
        path_or_fileobj=str(output_dir / "rejects.jsonl"),
        path_in_repo="rejects.jsonl",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Build rejects (path, kind, reason)",
    )
    return str(url)
