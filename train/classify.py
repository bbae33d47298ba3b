#!/usr/bin/env python
"""Train HNF to classify micrographs with Accelerate; optionally evaluate MVaEMa's zero-shot classification.

    accelerate launch train/classify.py                       # embedded synthetic set, the fast recipe, ~10 minutes on a CPU
    accelerate launch train/classify.py --recipe paper        # the paper's protocol and HNF config instead
    accelerate launch train/classify.py --dataset data/sem --fold 2 --num_folds 10
    accelerate launch train/classify.py --dataset data/sem --text_model_name_or_path outputs/text_mlm
    accelerate launch train/classify.py --mvaema_model outputs/vqa    # also MVaEMa zero-shot, same test fold
    accelerate launch train/classify.py --baseline vit    # transformers' ViT at HNF's width/depth, same data and protocol

The image attends over the descriptions of every class (stored with the model), so predictions
need pixels only. --paper_protocol feeds each image its true class's descriptions instead (the
paper's label-conditioned protocol): its metrics are marked label-conditioned everywhere.

Two recipes (``--recipe``) set the defaults of the optimizer, schedule, augmentation, synthetic-set size and
HNF config; any of those options given explicitly wins over the recipe:

- ``fast`` (default): what reaches the best test accuracy within about ten minutes of a 2-core CPU
  (tests/benchmarks/learning_curves/hnf.py measures it): AdamW (lr 2e-3, weight decay 0.05 on weight
  matrices), 100 warm-up steps then a cosine decay over the step budget, the 8 flips/rotations of the square
  and a brightness/contrast jitter on training batches (train/data/augmentation.py), 3,500 synthetic images
  (2,800 to train) instead of 1,000, the one-step Euler solver for HNF's ODE (a third of RK4's cost per
  step, so three times the steps in the same time), and no text branch: encoding the 60 whole class
  descriptions of the synthetic set at every step costs ~70 times an image step on a CPU, and at equal
  CPU-seconds the branch did not pay for itself (README, "Training the classifier"). ``--paper_protocol`` and
  ``--text_model_name_or_path`` turn it back on.
- ``paper``: the papers' protocol, Adam at 1e-3, the learning rate halved after 5 stagnant epochs, no
  augmentation, HNF's default config with the paper's RK4 solver, and the 1,000-image synthetic set.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from emvision.train.data.sources import add_data_args, add_streaming_args, check_dataset_copy
from emvision.train.loop.arguments import (
    HelpFormatter,
    ScriptArgumentParser,
    add_training_args,
    apply_step_budget,
    check_training_args,
    default_output_dir,
    refuse_with_trained_model,
)
from emvision.train.loop.config_overrides import apply_config_overrides, parse_config_overrides
from emvision.train.loop.preflight import (
    check_dataset_path,
    check_model_path,
    check_output_dir,
    check_resume_target,
    remove_stale_outputs,
    run_script,
)
from emvision.train.publishing.hub import add_hub_args, check_hub_args
from emvision.train.publishing.lora import add_lora_args

BASELINE_CARD_NOTE = (
    "This folder is NOT HNF: it is the same-size transformers baseline (`ViTForImageClassification`, "
    "`--baseline vit`) trained by the same script on the same data, for comparison; it reads pixels only."
)
# Defaults each --recipe gives to options of the shared training protocol and the data (explicit flags win).
RECIPES = {
    "fast": {"optimizer": "adamw", "learning_rate": 2e-3, "weight_decay": 0.05, "lr_scheduler": "cosine", "warmup_steps": 100,
             "min_lr_ratio": 0.0, "augment": True, "synthetic_num_images": 3500},
    "paper": {"optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "lr_scheduler": "plateau", "warmup_steps": 0,
              "min_lr_ratio": 0.0, "augment": False, "synthetic_num_images": 1000},
}
# HNFConfig fields each recipe sets on a new model before --config_overrides (the config's defaults are the paper's but
# for its solver: Euler, chosen at equal budget; the paper recipe sets the paper's RK4).
# The fast recipe leaves the text branch out (measured: tests/benchmarks/learning_curves/hnf.py), unless
# --text_model_name_or_path or --paper_protocol asks for it, and reads the patches through a small convolutional
# stem (HNFConfig.patch_embedding; modeling/conv_stem.py) instead of the paper's linear patch embeddings. It reads
# 192-px images, cut into 16, 24 and 32-px patches (144, 64 and 36 tokens; the paper: 224 px, 16/28/32): a step
# costs about 30% less, so more steps fit the quick start's budget (measured in the README).
RECIPE_MODEL_CONFIGS = {"fast": {"ode_method": "euler", "use_text_branch": False, "patch_embedding": "conv_stem",
                                 "image_size": 192, "patch_sizes": [16, 24, 32]},
                        "paper": {"ode_method": "rk4"}}
# optimizer steps of a run on the embedded synthetic set (no --dataset, no --max_train_steps)
QUICK_START_STEPS = {"fast": 1400, "paper": 60}


def build_parser() -> argparse.ArgumentParser:
    parser = ScriptArgumentParser(
        description="Train HNF on micrograph classes (paper protocol: Adam 1e-3, batch 48, <=50 epochs, "
        "LR halved after 5 stagnant epochs, early stopping).",
        formatter_class=HelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", type=str, default=None, help="a trained HNF folder or Hub id to start from")
    model.add_argument("--text_model_name_or_path", type=str, default=None, help="pre-trained text encoder (e.g. from train/pretrain_text_mlm.py)")
    model.add_argument("--config_overrides", type=str, default=None, help="e.g. 'fusion=concat,multi_scale=false'")
    model.add_argument("--paper_protocol", action="store_true", help="label-conditioned text side (the paper's audit protocol; metrics marked)")
    model.add_argument("--baseline", choices=["vit"], default=None,
                       help="train transformers' ViTForImageClassification at HNF's width and depth instead (train/baselines.py)")
    model.add_argument("--mvaema_model", type=str, default=None, help="also evaluate this MVaEMa folder's zero-shot classification on the test fold")
    model.add_argument("--recipe", choices=sorted(RECIPES), default="fast",
                       help="defaults of the optimizer, schedule, augmentation, synthetic-set size and HNF config: 'fast' "
                            "(best model in ~10 CPU minutes) or 'paper' (the papers' protocol); explicit options win")
    model.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="flips/quarter turns and brightness/contrast jitter on training batches (default: the recipe's)")
    add_data_args(parser, default_synthetic_images=RECIPES["fast"]["synthetic_num_images"])
    add_streaming_args(parser)
    add_training_args(parser)
    add_lora_args(parser)
    add_hub_args(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    recipe = parser.parse_known_args(argv)[0].recipe
    parser.set_defaults(**RECIPES[recipe])  # the recipe's defaults; options given on the command line win
    args = parser.parse_args(argv)
    check_hub_args(args)
    check_training_args(parser, args)
    if args.baseline and (args.model_name_or_path or args.text_model_name_or_path or args.paper_protocol):
        parser.error("--baseline builds a new ViT from scratch: it cannot be combined with --model_name_or_path, "
                     "--text_model_name_or_path or --paper_protocol")
    refuse_with_trained_model(parser, args, argv, ("text_model_name_or_path", "config_overrides", "paper_protocol"))
    if args.output_dir is None:
        args.output_dir = default_output_dir("classify")
    apply_step_budget(args, QUICK_START_STEPS[args.recipe])
    return args


def preflight(args) -> None:
    """Everything this run was given, checked before a dataset is built or a model loaded."""
    check_output_dir(args)
    check_resume_target(args)
    check_dataset_path(args)
    check_dataset_copy(args)
    check_model_path(args.model_name_or_path, "--model_name_or_path", "train one with `accelerate launch train/classify.py`")
    check_model_path(args.text_model_name_or_path, "--text_model_name_or_path",
                     "pre-train one with `python train/pretrain_text_mlm.py DESCRIPTIONS --output_dir DIR`")
    check_model_path(args.mvaema_model, "--mvaema_model", "train one with `accelerate launch train/vqa.py`")


def build_model(args, class_names: list[str], descriptions, descriptions_source):
    from emvision.modeling import HNFConfig, HNFForImageClassification
    from emvision.processing.image_processing_micrograph import MicrographImageProcessor

    if args.model_name_or_path:
        from transformers import AutoImageProcessor

        model = HNFForImageClassification.from_pretrained(args.model_name_or_path)
        return model, AutoImageProcessor.from_pretrained(args.model_name_or_path)
    config = HNFConfig(
        id2label=dict(enumerate(class_names)),
        label2id={name: i for i, name in enumerate(class_names)},
        class_descriptions=descriptions,
        class_descriptions_source=descriptions_source,
        text_model_name_or_path=args.text_model_name_or_path,
        text_conditioning="paper_label_conditioned" if args.paper_protocol else "all_classes",
        **{**RECIPE_MODEL_CONFIGS[args.recipe], **({"use_text_branch": True} if args.paper_protocol or args.text_model_name_or_path else {})},
    )
    apply_config_overrides(config, parse_config_overrides(args.config_overrides))
    size = {"height": config.image_size, "width": config.image_size}  # the processor makes what the model reads
    return HNFForImageClassification(config), MicrographImageProcessor(size=size)


def main(argv=None) -> dict:
    args = parse_args(argv)
    preflight(args)

    from emvision.train.baselines import count_parameters
    from emvision.train.data.collators import ImageCollator
    from emvision.train.data.images import undecoded
    from emvision.train.data.sources import class_descriptions_from, description_sources, resolve_dataset
    from emvision.train.data.split_record import image_folds, source_image_folds, split_of_run
    from emvision.train.data.splits import split_by_fold
    from emvision.train.data.streaming import fold_sets, streamed_image_splits, streaming_training_loop
    from emvision.train.evaluation.chance import CLASSIFICATION_CHANCE_NOTE
    from emvision.train.evaluation.classifier import evaluate_classifier
    from emvision.train.evaluation.zero_shot import evaluate_mvaema_folder
    from emvision.train.loop.trainer import TrainingLoop, make_accelerator, placement
    from emvision.train.publishing.hub import maybe_push
    from emvision.train.publishing.lora import apply_lora
    from emvision.train.publishing.model_card import (
        DataProvenance,
        build_model_card,
        classification_results,
        describe_base_model,
        training_procedure_markdown,
    )
    from emvision.train.publishing.model_folder import save_model_folder

    accelerator = make_accelerator(args)
    if args.overwrite_output_dir and not args.resume_from_checkpoint and accelerator.is_main_process:
        remove_stale_outputs(Path(args.output_dir), log=accelerator.print)
    accelerator.wait_for_everyone()
    accelerator.print(f"HNF training on {placement(accelerator)}")
    if args.quick_start:
        accelerator.print(f"Embedded synthetic set, --recipe {args.recipe}: a budget of {args.max_train_steps} optimizer steps "
                          "(--max_train_steps 0 lifts it)")
    started = time.time()
    source = resolve_dataset(args, accelerator, output_dir=args.output_dir)
    if args.streaming:  # training images streamed, split across processes; validation and test folds map-style
        streamed = streamed_image_splits(source, args, accelerator)
        class_names, (train_split, val_split, test_split) = streamed.class_names, (streamed.train, streamed.validation, streamed.test)
        num_train, make_loop = streamed.num_train_rows, streaming_training_loop
        folds, train_folds = source_image_folds(source, streaming=True), fold_sets(args)[0]
        train_ids = [image_id for image_id, fold in folds.items() if fold % args.num_folds in train_folds]  # the stream may read any
    else:
        images = undecoded(source.load("images"))  # the collator decodes: a copy for schema-2 images
        class_names = images.features["label"].names
        train_split, val_split, test_split = split_by_fold(images, args)
        num_train, make_loop = len(train_split), TrainingLoop.from_splits
        folds, train_ids = image_folds(images), train_split["image_id"]
    accelerator.print(f"{source.name}: {num_train} train{' (streamed)' if args.streaming else ''} / {len(val_split)} validation / "
                      f"{len(test_split)} test images (fold {args.fold} of {args.num_folds})")
    # before any training: a reused model that saw this test fold is refused
    split = split_of_run(dataset=source.name, folds=folds, args=args, train_ids=train_ids, evaluated=[("--mvaema_model", args.mvaema_model)],
                         log=accelerator.print)

    descriptions, descriptions_source = class_descriptions_from(source, class_names)
    model, image_processor = build_model(args, class_names, descriptions, descriptions_source)
    if args.baseline:
        from emvision.train.baselines import build_vit_baseline

        model = build_vit_baseline(model.config)
        descriptions, descriptions_source = None, None  # a plain ViT reads pixels only
        accelerator.print("Baseline: transformers' ViTForImageClassification at HNF's width and depth")
    elif not model.config.use_text_branch:
        descriptions, descriptions_source = None, None  # without the text branch no description is read
        accelerator.print("HNF without its text branch (--recipe fast's default; --config_overrides use_text_branch=true adds it)")
    label_conditioned = bool(getattr(model, "label_conditioned", False))
    if args.lora:
        model = apply_lora(model, args, log=accelerator.print)
    total = count_parameters(model)
    accelerator.print(f"parameters: {total:,}")

    collate = ImageCollator(image_processor)  # validation (and, below, test) batches: never augmented
    train_collate = ImageCollator(image_processor, augment=True) if args.augment else collate
    loop = make_loop(accelerator, args, model, train_split, val_split, train_collate, project="emvision-classify", eval_collate=collate)
    model = loop.model
    state = loop.fit()

    results = evaluate_classifier(
        accelerator, model, image_processor, test_split, class_names, output_dir=Path(args.output_dir) / "classification",
        batch_size=args.per_device_eval_batch_size, label_conditioned=label_conditioned,
        metadata={"model": "ViT baseline" if args.baseline else "HNF", "dataset": source.name, "synthetic_data": source.synthetic},
    )
    # the model encodes every description of the dataset (or the true class's, under the paper protocol)
    provenance = DataProvenance.from_rows(
        source.name,
        image_sources=["synthetic" if source.synthetic else "real"] * num_train,
        description_sources=description_sources(source) if descriptions else (),
    )
    base = describe_base_model(args.model_name_or_path)
    metrics = {
        "label_conditioned": label_conditioned,
        "synthetic_data": source.synthetic,
        "protocol": f"fold {args.fold} of {args.num_folds} (test fold {args.fold}, validation fold {(args.fold + 1) % args.num_folds}); "
        + ("paper protocol: each image's text side held its TRUE class's descriptions" if label_conditioned
           else "label-free: every image attends over the descriptions of all classes"),
        "dataset": source.name,
        "data_provenance": provenance.to_json(),
        "base_model": base.to_json() if base else None,
        "hub_model_id": args.hub_model_id,
        "model": "ViT baseline (ViTForImageClassification at HNF's width and depth)" if args.baseline else "HNF",
        "class_descriptions_source": descriptions_source or (
            "class names only" if getattr(accelerator.unwrap_model(model).config, "use_text_branch", False) else "none (no text branch)"),
        "split": split.summary(),
        **results,
        "best_val_loss": loop.early_stopping.best if math.isfinite(loop.early_stopping.best) else None,
        "epochs": round(state.global_step / loop.steps_per_epoch, 3),
        "steps_per_epoch": loop.steps_per_epoch,
        "optimizer_steps": state.global_step,
        "train_seconds": round(time.time() - started, 1),
        "parameters": total,
        "history": state.history,
    }
    if args.mvaema_model:
        metrics["mvaema_zero_shot"] = evaluate_mvaema_folder(accelerator, args, source)

    card = build_model_card(
        "hnf",
        **({"extra_limitations": BASELINE_CARD_NOTE} if args.baseline else {}),
        repo_id=args.hub_model_id or Path(args.output_dir).name,
        provenance=provenance,
        training_procedure=training_procedure_markdown(args, state, accelerator.num_processes, loop.steps_per_epoch, base=base, details=[
            f"- Recipe `{args.recipe}`; augmentation of training batches: "
            + ("random flip x quarter turn and brightness/contrast jitter (+-15%)" if args.augment else "none"),
            *([f"- Text encoder initialised from `{args.text_model_name_or_path}` (MLM domain pre-training), fine-tuned inside HNF"]
              if args.text_model_name_or_path else []),
        ]),
        results=classification_results(results),
        label_conditioned=label_conditioned,
        protocol_note=metrics["protocol"],
        chance_note=CLASSIFICATION_CHANCE_NOTE,
        base_model=base,
    )
    output_dir = save_model_folder(accelerator, model, image_processor, args.output_dir, card=card, metrics=metrics, split=split,
                                   lora_args=args if args.lora else None)
    accelerator.end_training()
    accelerator.print(
        f"Done in {metrics['train_seconds']:.0f} s: top1={results['top1']:.4f} top5={results['top5']:.4f} macro_f1={results['macro_f1']:.4f} "
        f"({'synthetic data, ' if source.synthetic else ''}{'LABEL-CONDITIONED' if label_conditioned else 'label-free'}) -> {output_dir}"
    )
    maybe_push(accelerator, args, output_dir)
    return metrics


if __name__ == "__main__":
    run_script(main)
