"""What a training run checks before it builds a dataset, a model or takes a step: the output folder, the
resume target, the dataset path and every model path it was given. Each mistake is one line that says
what was wrong and what to do (``InputError``); ``run_script`` prints it without a traceback.

Nothing here imports torch, transformers or datasets, so these answers come at once.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

# What a training run writes into --output_dir besides its dataset copy, removed by --overwrite_output_dir
# where a stale copy would change what the folder loads as or what a resumed run continues from.
STALE_RUN_OUTPUTS = ("checkpoints", "merged", "model.safetensors", "adapter_model.safetensors", "adapter_config.json")
BUILT_DATASET_DIR = "dataset"  # an in-house --dataset built by an earlier start of this run (fingerprinted)
_WRITE_PROBE_PREFIX = ".emvision-write-probe-"


class InputError(ValueError):
    """A mistake in what the user gave a script: reported as one line, no traceback."""


class MissingInputError(InputError, FileNotFoundError):
    """An input path that does not exist."""


def run_script(main: Callable[[], object]) -> None:
    """Run a script's ``main()``; an ``InputError`` becomes ``<script>: error: <message>`` and exit status 2."""
    try:
        main()
    except InputError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(2)


# ---- the output folder -------------------------------------------------------------------------------

def earlier_run_entries(output_dir: Path) -> list[str]:
    """What an earlier run left in ``output_dir`` (its built dataset copy and write probes aside)."""
    if not output_dir.is_dir():
        return []
    return sorted(p.name for p in output_dir.iterdir() if p.name != BUILT_DATASET_DIR and not p.name.startswith(_WRITE_PROBE_PREFIX))


def check_output_dir(args) -> Path:
    """``--output_dir`` is a folder this run may write, and holds no earlier run unless the user said what to do
    with it (``--overwrite_output_dir`` or ``--resume_from_checkpoint``). Creates the folder."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output_dir {output_dir} is a file, not a folder: choose another --output_dir")
    earlier = earlier_run_entries(output_dir)
    overwrite = getattr(args, "overwrite_output_dir", False)
    resume = getattr(args, "resume_from_checkpoint", None)
    if earlier and not (overwrite or resume):
        shown = ", ".join(earlier[:4]) + (f" and {len(earlier) - 4} more" if len(earlier) > 4 else "")
        raise InputError(
            f"--output_dir {output_dir} already holds an earlier run ({shown}): pass --overwrite_output_dir to replace it, "
            "--resume_from_checkpoint latest to continue it, or choose another --output_dir"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f"{_WRITE_PROBE_PREFIX}{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(f"--output_dir {output_dir}: cannot write there ({reason}): choose a folder you can write") from None
    return output_dir


def remove_stale_outputs(output_dir: Path, log=print) -> None:
    """``--overwrite_output_dir`` without a resume: an earlier run's checkpoints and weights go before this run
    writes its own (a stale checkpoint would otherwise be resumed, a stale weights file loaded)."""
    removed = []
    for name in STALE_RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        log(f"--overwrite_output_dir: removed the earlier run's {', '.join(removed)} from {output_dir}")


# ---- the resume target -------------------------------------------------------------------------------

def check_resume_target(args) -> None:
    """An explicit ``--resume_from_checkpoint`` folder exists and is intact ('latest' is resolved at resume,
    falling back past damaged checkpoints)."""
    target = getattr(args, "resume_from_checkpoint", None)
    if not target or target == "latest":
        return
    from .checkpoints import checkpoint_problem

    path = Path(target)
    if not path.is_dir():
        raise MissingInputError(
            f"--resume_from_checkpoint {target}: no such checkpoint folder; give one of "
            f"{Path(args.output_dir) / 'checkpoints'}/step_* or 'latest'"
        )
    problem = checkpoint_problem(path)
    if problem:
        raise InputError(f"--resume_from_checkpoint {target} cannot be resumed: {problem}; "
                         "give an intact checkpoint or 'latest' (the newest intact one)")


# ---- dataset and model paths -------------------------------------------------------------------------

def _looks_local(value: str) -> bool:
    """A path the user meant as a folder on this machine (not an ``owner/name`` Hub id)."""
    if value.startswith((".", "/", "~")) or "\\" in value or value.count("/") != 1:
        return True
    return Path(value.split("/", 1)[0]).is_dir()  # "outputs/vqa" where outputs/ exists here


def _valid_hub_id(value: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def check_dataset_path(args) -> None:
    spec = getattr(args, "dataset", None)
    if spec is None or Path(spec).expanduser().exists():
        return
    if _looks_local(spec) or not _valid_hub_id(spec):
        raise MissingInputError(
            f"--dataset {spec}: no such folder or archive; give your images (category sub-folders, or metadata.jsonl/csv "
            "with file_name and label), a folder built by datasets_scripts/, or a Hub dataset id (owner/name)"
        )


def check_model_path(value: str | None, option: str, how_to_make: str) -> None:
    """``value`` is a local model folder, or a Hub model id that can be fetched (or is cached, offline)."""
    if not value:
        return
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{option} {value}: the folder holds no config.json, so it is not a saved model; {how_to_make}")
        return
    if path.exists():
        raise InputError(f"{option} {value} is a file, not a model folder; {how_to_make} or give a Hub id")
    missing = f"{option}: no such folder: {value}; {how_to_make} or give a Hub id"
    if _looks_local(value) or not _valid_hub_id(value):
        raise MissingInputError(missing)
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        hf_hub_download(value, "config.json")
    except (RepositoryNotFoundError, GatedRepoError):
        raise MissingInputError(f"{missing} (no Hub model {value} is visible to you)") from None
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set and it is not in the local Hub cache" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise MissingInputError(f"{missing} (as a Hub id: {reason})") from None
    except EntryNotFoundError:
        raise InputError(f"{option} {value}: the Hub repository holds no config.json, so it is not a saved model") from None
