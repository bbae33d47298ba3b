"""The training loop both scripts share: the paper's protocol on top of Accelerate.

The papers' protocol by default: Adam at lr 1e-3, batch 48, up to 50 epochs, the learning rate halved
after 5 epochs without a better validation loss, early stopping on validation loss, best weights restored
at the end; ``--optimizer``, ``--lr_scheduler``, ``--warmup_steps`` choose others (``schedule.py``).
Checkpoints are written with ``accelerator.save_state`` every N optimizer steps or every epoch,
and a run resumed from one (``--resume_from_checkpoint latest``) ends with the same weights as an
uninterrupted run: the data order depends only on (seed, epoch), and every optimizer step reseeds
the random generators from (seed, step, process), so nothing depends on where a run was cut.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .arguments import report_to
from .checkpoints import (
    BEST_WEIGHTS,
    STATE_FILE,
    TrainingState,
    checkpoint_problem,
    complete_checkpoints,
    find_latest_checkpoint,
    json_load,
    json_safe,
    mark_complete,
    step_checkpoints,
)
from .preflight import InputError
from .protocol import EarlyStopping
from .schedule import LearningRateSchedule, build_optimizer
from .reproducibility import EpochShuffleSampler, ImageQuestionSampler, seed_everything

from emvision.train.data.augmentation import augment_micrographs

Collate = Callable[[list[dict]], dict]


def make_accelerator(args) -> Accelerator:
    """The Accelerator for a run; also seeds everything, so a new model's initial weights follow --seed.

    Trackers: ``--report_to`` as given, else those installed (none: no tracker, and no warning about it).
    """
    seed_everything(args.seed)
    trackers = report_to(args)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if trackers == "none" else trackers.split(","),
        project_dir=args.output_dir,
    )
    accelerator.register_save_state_pre_hook(_save_tied_weights_once)
    set_cpu_threads(accelerator, getattr(args, "cpu_threads", None))
    return accelerator


def placement(accelerator: Accelerator) -> str:
    """Where a run trains, for its first line: processes, device and, on a CPU, torch threads per process."""
    threads = f", {torch.get_num_threads()} CPU thread(s) per process" if accelerator.device.type == "cpu" else ""
    return f"{accelerator.num_processes} process(es), device {accelerator.device}{threads}"


def set_cpu_threads(accelerator: Accelerator, requested: int | None) -> int | None:
    """Torch threads per process on a CPU run; returns the number (None off the CPU).

    ``accelerate launch`` without ``--cpu`` or a config starts each process with OMP_NUM_THREADS=1, which on a
    2-core machine leaves a core idle in a one-process run (about a third of HNF's step time here). Unless
    ``--cpu_threads`` says otherwise, a process started that way gets the cores it may run on, shared out
    among this machine's processes; a run started any other way keeps torch's setting (OMP_NUM_THREADS).
    """
    if accelerator.device.type != "cpu":
        return None
    if requested is None and os.environ.get("OMP_NUM_THREADS") == "1" and "ACCELERATE_MIXED_PRECISION" in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        requested = max(1, cores // max(1, local_processes))
    if requested is not None and requested != torch.get_num_threads():
        torch.set_num_threads(requested)
    return torch.get_num_threads()


def _tied_targets(model) -> list[str]:
    """The parameter names a model declares tied to another (``_tied_weights_keys``: transformers saves the
    source and re-ties the target on loading), with their module prefixes."""
    targets = []
    for prefix, module in model.named_modules():
        declared = getattr(module, "_tied_weights_keys", None) or ()
        for key in declared:  # a dict {target: source} in transformers 5, a list of targets before
            targets.append(f"{prefix}.{key}" if prefix else key)
    return targets


def _save_tied_weights_once(models, weights, output_dir) -> None:
    """``save_state`` hook: a tensor shared by two names (MVaEMa's LM head and word embeddings) is saved once,
    under the name its model keeps, as ``save_pretrained`` does; loading re-ties it. Without this, accelerate
    finds the shared storage itself, drops a name and warns at every checkpoint."""
    from accelerate.utils import id_tensor_storage

    for model, state_dict in zip(models, weights):
        targets = _tied_targets(model)
        groups: dict = {}
        for name, tensor in state_dict.items():
            if torch.is_tensor(tensor):
                groups.setdefault(id_tensor_storage(tensor), []).append(name)
        for names in groups.values():
            if len(names) < 2:
                continue
            tied = [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]
            keep = next((n for n in names if n not in tied), names[0])
            for name in names:
                if name != keep:
                    del state_dict[name]


class TrainingLoop:
    """Runs the protocol for a model whose forward returns an output with ``.loss``."""

    augment_batches = False  # training batches' pixel_values augmented after each step's reseeding (from_splits)

    def __init__(self, accelerator: Accelerator, args, model, optimizer, train_loader, eval_loader, sampler: EpochShuffleSampler):
        self.accelerator, self.args = accelerator, args
        self.model, self.optimizer = model, optimizer
        self.train_loader, self.eval_loader, self.sampler = train_loader, eval_loader, sampler
        self.output_dir = Path(args.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.early_stopping = EarlyStopping(args.early_stopping_patience)
        self.state = TrainingState()
        self.steps_per_epoch = max(1, math.ceil(len(train_loader) / args.gradient_accumulation_steps))
        self.max_steps = args.max_train_steps or self.steps_per_epoch * args.num_train_epochs
        self.scheduler = LearningRateSchedule.from_args(optimizer, args, total_steps=self.max_steps)
        self.checkpoint_every = None if args.checkpointing_steps in ("epoch", "no") else int(args.checkpointing_steps)
        self._cpu_started = time.process_time()

    @classmethod
    def from_splits(cls, accelerator: Accelerator, args, model, train_split, val_split, collate: "Collate", project: str,
                    eval_collate: "Collate | None" = None, sampler: "EpochShuffleSampler | ImageQuestionSampler | None" = None) -> "TrainingLoop":
        """The data loaders and the optimizer (``--optimizer``) for ``model``, prepared by Accelerate, trackers started.
        ``eval_collate`` (default: ``collate``) builds the validation batches, e.g. without the training augmentation;
        ``sampler`` (default: every training row once per epoch) orders the training rows."""
        sampler = EpochShuffleSampler(len(train_split), seed=args.seed) if sampler is None else sampler
        train_loader = DataLoader(train_split, batch_size=args.per_device_train_batch_size, sampler=sampler, collate_fn=collate,
                                  num_workers=args.num_workers, drop_last=len(sampler) > args.per_device_train_batch_size)
        val_loader = DataLoader(val_split, batch_size=args.per_device_eval_batch_size, collate_fn=eval_collate or collate,
                                num_workers=args.num_workers)
        optimizer = build_optimizer(model, args)
        model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
        if accelerator.is_main_process:
            accelerator.init_trackers(project, config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})
        loop = cls(accelerator, args, model, optimizer, train_loader, val_loader, sampler)
        if getattr(collate, "augment", False):
            # applied in fit(), after the per-step reseeding: the loader collates ahead of the step (and a resumed run
            # restarts it), so random draws made in the collator would differ between a resumed and a straight run
            collate.augment, loop.augment_batches = False, True
        return loop

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """``accelerator.save_state`` + the loop's state, then the completion marker, last."""
        state = self.state
        state.early_stopping, state.scheduler = asdict(self.early_stopping), self.scheduler.state_dict()
        path = self.checkpoint_dir / f"step_{state.global_step:08d}"
        if self.accelerator.is_main_process and path.exists():  # an earlier, unfinished save of this step
            shutil.rmtree(path)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(path))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            (path / STATE_FILE).write_text(json.dumps(json_safe(asdict(state)), indent=1))
            mark_complete(path)
            complete = complete_checkpoints(self.checkpoint_dir)
            unfinished = [p for p in step_checkpoints(self.checkpoint_dir) if p not in complete]
            for old in [*complete[: -self.args.checkpoints_total_limit], *unfinished]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def resume(self, checkpoint: str) -> None:
        """Continue from ``checkpoint`` ('latest': the newest intact one, naming each damaged one passed over)."""
        if checkpoint == "latest":
            path = find_latest_checkpoint(self.checkpoint_dir, log=self.accelerator.print)
            if path is None:
                self.accelerator.print(f"No intact checkpoint under {self.checkpoint_dir}: starting from scratch")
                return
        else:
            path = Path(checkpoint)
            problem = checkpoint_problem(path)
            if problem:
                raise InputError(f"--resume_from_checkpoint {path} cannot be resumed: {problem}")
        try:
            saved = json_load(json.loads((path / STATE_FILE).read_text()))
            self.accelerator.load_state(str(path))
        except Exception as error:  # noqa: BLE001 - re-raised naming the checkpoint
            raise InputError(f"checkpoint {path} could not be loaded: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error
        self.state = TrainingState(**saved)
        self.early_stopping = EarlyStopping(**self.state.early_stopping)
        self.scheduler.load_state_dict(self.state.scheduler, self.state.global_step)
        self.accelerator.print(f"Resumed from {path} (epoch {self.state.epoch}, step {self.state.global_step})")

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def validation_loss(self) -> dict[str, float]:
        """Mean of every loss field over the validation set (gathered across processes)."""
        self.model.eval()
        seed_everything(self.args.seed, 7, self.state.epoch)  # ITM negatives are sampled: same ones every time
        sums: dict[str, float] = {}
        count = 0
        for batch in self.eval_loader:
            outputs = self.model(**batch)
            batch_size = next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
            for name, value in outputs.items():
                if name.startswith("loss") and value is not None:
                    per_sample = self.accelerator.gather_for_metrics(value.detach().float().reshape(1).repeat(batch_size))
                    sums[name] = sums.get(name, 0.0) + per_sample.sum().item()
            count += self.accelerator.gather_for_metrics(torch.ones(batch_size, device=self.accelerator.device)).sum().item()
        self.model.train()
        return {f"val_{k}": v / max(count, 1) for k, v in sums.items()}

    def _end_of_epoch(self) -> None:
        metrics = self.validation_loss()
        val_loss = metrics["val_loss"]
        halved = self.scheduler.epoch_end(val_loss, self.state.global_step)
        improved = self.early_stopping.step(val_loss, self.state.epoch)
        if improved:
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                partial = self.checkpoint_dir / f".{BEST_WEIGHTS}.partial"  # a kill mid-save keeps the previous best
                save_model(self.accelerator.unwrap_model(self.model), str(partial))
                os.replace(partial, self.checkpoint_dir / BEST_WEIGHTS)
        lr = self.optimizer.param_groups[0]["lr"]
        # this process's CPU-seconds since fit() began (validation included; a resumed run counts from its resume)
        cpu = time.process_time() - self._cpu_started
        record = {"epoch": self.state.epoch, "step": self.state.global_step, "lr": lr, "cpu_seconds": round(cpu, 1), **metrics}
        self.state.history.append(record)
        self.accelerator.log(record, step=self.state.global_step)
        self.accelerator.print(
            f"epoch {self.state.epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()) + f" lr={lr:g}" + (" *" if improved else "")
        )

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> TrainingState:
        args, accelerator, state = self.args, self.accelerator, self.state
        if args.resume_from_checkpoint:
            self.resume(args.resume_from_checkpoint)
            state = self.state
        self.model.train()
        self._cpu_started = time.process_time()
        progress = tqdm(total=self.max_steps, initial=state.global_step, desc="training", disable=not accelerator.is_local_main_process)
        while not state.finished and state.epoch < args.num_train_epochs and state.global_step < self.max_steps:
            loader = self.train_loader
            if state.batches_in_epoch:
                loader = accelerator.skip_first_batches(self.train_loader, state.batches_in_epoch)
            # Accelerate's loaders re-set their sampler's epoch from their own counter when iterated
            # (a fresh skip loader counts from 0): set it on the loader itself.
            for target in (loader, self.sampler):
                if hasattr(target, "set_epoch"):
                    target.set_epoch(state.epoch)
            for batch in loader:
                seed_everything(args.seed, state.global_step, state.batches_in_epoch, accelerator.process_index)
                if self.augment_batches:
                    batch["pixel_values"] = augment_micrographs(batch["pixel_values"])
                with accelerator.accumulate(self.model):
                    loss = self.model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm:
                        accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                state.batches_in_epoch += 1
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                self.scheduler.step(state.global_step)
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}", epoch=state.epoch)
                accelerator.log({"train_loss": loss.item()}, step=state.global_step)
                if self.checkpoint_every and state.global_step % self.checkpoint_every == 0:
                    self.save_checkpoint()
                if state.global_step >= self.max_steps:
                    break
            self._end_of_epoch()
            state.epoch += 1
            state.batches_in_epoch = 0
            if self.early_stopping.should_stop:
                accelerator.print(f"Early stopping: no better validation loss for {self.early_stopping.patience} epochs")
                state.finished = True
            if state.global_step >= self.max_steps:
                state.finished = True
            if args.checkpointing_steps == "epoch" or (state.finished and args.checkpointing_steps != "no"):
                self.save_checkpoint()
        progress.close()
        self.restore_best()
        return state

    def restore_best(self) -> None:
        best = self.checkpoint_dir / BEST_WEIGHTS
        self.accelerator.wait_for_everyone()
        if best.is_file():
            load_model(self.accelerator.unwrap_model(self.model), str(best))
            self.accelerator.print(
                f"Restored the best weights (epoch {self.early_stopping.best_epoch}, val_loss {self.early_stopping.best:.4f})"
            )
