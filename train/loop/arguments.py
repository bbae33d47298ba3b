"""The training protocol's command-line arguments, shared by ``train/vqa.py`` and ``train/classify.py``, the
checks that run at parse time, and the quick-start step budget of runs on the embedded synthetic set.

Nothing here imports torch, transformers or datasets: ``--help`` and a mistyped argument answer at once.
"""

from __future__ import annotations

import argparse
import os

SCHEDULERS = ("plateau", "cosine")  # train/loop/schedule.py
OPTIMIZERS = ("adam", "adamw")

MIN_FOLDS = 3  # a test fold, a validation fold and at least one training fold


class ScriptArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``script.py: error: ...``), not the usage block first."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless the help already says it or there is none to show."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)


def _bounded_int(minimum: int, what: str = ""):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer{what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}{what}, got {value}")
        return value

    return parse


positive_int = _bounded_int(1)
non_negative_int = _bounded_int(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def lr_factor(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1): the learning rate is multiplied by it, got {text}")
    return value


def checkpointing_steps(text: str) -> str:
    if text in ("epoch", "no"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'epoch', 'no' or a number of optimizer steps >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'epoch', 'no' or a number of optimizer steps >= 1, got {value}")
    return text


num_folds_type = _bounded_int(MIN_FOLDS, " (a test fold, a validation fold and at least one training fold)")


def check_fold(parser: argparse.ArgumentParser, fold: int, num_folds: int, option: str = "--fold") -> None:
    """``--fold`` names one of the ``--num_folds`` folds: a one-line parse error otherwise."""
    if not 0 <= fold < num_folds:
        parser.error(f"argument {option}: must be in 0..{num_folds - 1} for --num_folds {num_folds}, got {fold}")


def installed_trackers() -> list[str]:
    """The experiment trackers accelerate finds installed (tensorboard, wandb, ...), by name."""
    from accelerate.tracking import get_available_trackers

    return [str(tracker) for tracker in get_available_trackers()]


def add_training_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training protocol (paper defaults)")
    group.add_argument("--learning_rate", type=positive_float, default=1e-3, help="peak learning rate")
    group.add_argument("--weight_decay", type=non_negative_float, default=0.0, help="weight decay (see --optimizer)")
    group.add_argument("--per_device_train_batch_size", type=positive_int, default=48, help="training batch per process")
    group.add_argument("--per_device_eval_batch_size", type=positive_int, default=96, help="validation and test batch per process")
    group.add_argument("--gradient_accumulation_steps", type=positive_int, default=1, help="batches per optimizer step")
    group.add_argument("--num_train_epochs", type=positive_int, default=50, help="epoch cap")
    group.add_argument("--max_train_steps", type=non_negative_int, default=None,
                       help="stop after this many optimizer steps (0: the full schedule; default without --dataset: the quick-start budget)")
    group.add_argument("--early_stopping_patience", type=positive_int, default=10, help="epochs without a better validation loss before stopping")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                       help="adam: the papers' (weight decay as L2 on every parameter); adamw: decoupled decay on weight matrices only")
    group.add_argument("--lr_scheduler", choices=SCHEDULERS, default="plateau",
                       help="plateau: the papers' (constant, multiplied by --lr_factor after --lr_patience stagnant epochs); "
                            "cosine: decay to --min_lr_ratio x the peak at the run's last step")
    group.add_argument("--warmup_steps", type=non_negative_int, default=0, help="linear learning-rate warm-up, in optimizer steps")
    group.add_argument("--min_lr_ratio", type=non_negative_float, default=0.0, help="cosine schedule: the last step's rate / the peak")
    group.add_argument("--lr_patience", type=positive_int, default=5,
                       help="plateau schedule: the learning rate is multiplied by --lr_factor at this many epochs in a row without a better validation loss")
    group.add_argument("--lr_factor", type=lr_factor, default=0.5, help="learning-rate multiplier on a plateau")
    group.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="gradient clipping norm (0: no clipping)")
    group.add_argument("--seed", type=int, default=42, help="seed of the initial weights, the data order and every random draw")
    group.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="overrides accelerate's config")
    group.add_argument("--num_workers", type=non_negative_int, default=0, help="DataLoader workers per process")
    group.add_argument("--cpu_threads", type=positive_int, default=None,
                       help="torch threads per process on a CPU (default: the machine's cores shared out among this machine's "
                            "processes when `accelerate launch` left its own default of 1; otherwise torch's)")
    run = parser.add_argument_group("output, checkpoints and tracking")
    run.add_argument("--output_dir", type=str, default=None, help="model folder to write (default: outputs/<script>)")
    run.add_argument("--overwrite_output_dir", action="store_true",
                     help="train into a non-empty --output_dir from an earlier run (its checkpoints are removed first)")
    run.add_argument("--checkpointing_steps", type=checkpointing_steps, default="epoch",
                     help="'epoch', an integer number of optimizer steps, or 'no'")
    run.add_argument("--checkpoints_total_limit", type=positive_int, default=2, help="complete checkpoints kept (the newest)")
    run.add_argument("--resume_from_checkpoint", type=str, default=None,
                     help="a checkpoint folder, or 'latest' (the newest intact one under <output_dir>/checkpoints)")
    run.add_argument("--report_to", type=str, default=None,
                     help="accelerate trackers, comma-separated, or 'none' (default: the trackers installed, 'none' when there are none)")


def split_script_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """A runner's command line cut at its first ``--``: (the runner's own options, the options passed on to the
    training script it runs)."""
    if "--" not in argv:
        return list(argv), []
    split = argv.index("--")
    return list(argv[:split]), list(argv[split + 1:])


def refuse_reserved(parser: argparse.ArgumentParser, given: list[str], reserved: tuple[str, ...], runner: str, instead: str) -> None:
    """Stop with the runner's usage line when options it sets for each run were passed on to the script."""
    for option in reserved:
        if option in given:
            parser.error(f"{option} is set by {runner} for each run; {instead}")


def check_training_args(parser: argparse.ArgumentParser, args) -> None:
    """Parse-time checks that span several arguments."""
    check_fold(parser, args.fold, args.num_folds)


def given_options(parser: argparse.ArgumentParser, argv: list[str] | None, dests: tuple[str, ...]) -> list[str]:
    """The options among ``dests`` that the command line ``argv`` gives explicitly (a value equal to the default
    counts; abbreviations and ``--no-`` forms too), each named by its first option string."""
    unset = object()
    kept = {dest: parser.get_default(dest) for dest in dests}
    parser.set_defaults(**dict.fromkeys(dests, unset))
    try:
        probe = parser.parse_known_args(argv)[0]
    finally:
        parser.set_defaults(**kept)
    names = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    return [names[dest] for dest in dests if getattr(probe, dest) is not unset]


def refuse_with_trained_model(parser: argparse.ArgumentParser, args, argv: list[str] | None, dests: tuple[str, ...]) -> None:
    """Stop when options that describe a new model are given beside --model_name_or_path, whose own config decides
    them: they would otherwise be ignored without a word."""
    if not args.model_name_or_path:
        return
    given = given_options(parser, argv, dests)
    if given:
        parser.error(f"{', '.join(given)} {'describes' if len(given) == 1 else 'describe'} a new model, but "
                     f"--model_name_or_path {args.model_name_or_path} keeps the architecture and losses of its config.json: "
                     f"drop {'it' if len(given) == 1 else 'them'}, or train a new model without --model_name_or_path")


def report_to(args) -> str:
    """``--report_to`` as given, or the trackers installed ('none' when there are none)."""
    return args.report_to or ",".join(installed_trackers()) or "none"


def apply_step_budget(args, quick_start_steps: int) -> None:
    """On the embedded synthetic set (no --dataset) a run stops after ``quick_start_steps`` optimizer steps
    unless --max_train_steps says otherwise; ``--max_train_steps 0`` means the paper's full schedule."""
    args.quick_start = args.dataset is None and args.max_train_steps is None
    if args.quick_start:
        args.max_train_steps = quick_start_steps
    elif args.max_train_steps == 0:
        args.max_train_steps = None


def default_output_dir(script: str) -> str:
    return os.path.join("outputs", script)
