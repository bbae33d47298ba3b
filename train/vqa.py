#!/usr/bin/env python
"""Instruction-tune MVaEMa (ITC + ITM + LM) on micrograph question-answer pairs with Accelerate.

    accelerate launch train/vqa.py                      # embedded synthetic set, a few minutes on a CPU
    accelerate launch train/vqa.py --dataset data/sem_qa --fold 3 --num_folds 10
    accelerate launch train/vqa.py --model_name_or_path released/mvaema --dataset lab_images/ --lora
    accelerate launch train/vqa.py --baseline blip      # transformers' BLIP at MVaEMa's sizes, same data and protocol

Writes a complete model folder (weights, config, processor, remote code, metrics.json, README.md
model card) to --output_dir, evaluated on the test fold with BLEU-2/4, ROUGE-1/2/L, METEOR and
zero-shot classification. Evaluation prompts carry no caption unless --eval_with_captions
(then every metric is marked label-conditioned).
"""

from __future__ import annotations

import argparse
import math
import os
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
    given_options,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    refuse_with_trained_model,
)
from emvision.train.loop.config_overrides import apply_config_overrides, parse_config_overrides
from emvision.train.loop.preflight import (
    InputError,
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
    "This folder is NOT MVaEMa: it is the same-size transformers baseline (`BlipForQuestionAnswering`, "
    "`--baseline blip`) trained by the same script on the same data, for comparison. Load it with "
    "`BlipForQuestionAnswering.from_pretrained` and `emvision.train.baselines.load_blip_baseline`."
)
# Two named recipes; --recipe picks one, and any option given on the command line overrides its value.
# "paper": the MVaEMa paper's protocol (Adam 1e-3 on a plateau schedule, every QA row once per epoch).
# "fast" (the default): what learned most within the 15-minute quick-start budget on a 2-core CPU (README, "Training
# recipe"): AdamW with warm-up (without it ITC collapses to identical embeddings at Adam 1e-3 and ITM never
# learns) and cosine decay from a peak of 3e-3 (the small decoder learns the answers' language far faster than
# at 1e-3: validation LM loss 0.34 against 1.65 after the same 650 steps); one question per image per step, the
# Basics question (which names the category) drawn 4x as often; flips/quarter turns and brightness/contrast
# jitter of the training images; and an auxiliary class loss on the image encoder's [CLS] (supervised on the
# training labels): the from-scratch ViT is what limits the model, and the contrastive/answer losses alone teach
# it the classes too slowly; for the same reason its patches are read through a small convolutional stem
# (modeling/conv_stem.py) instead of the paper's linear patch embedding.
RECIPES = {
    "fast": {"optimizer": "adamw", "learning_rate": 3e-3, "weight_decay": 0.05, "lr_scheduler": "cosine", "warmup_steps": 100,
             "sampling": "image", "basics_weight": 4.0, "image_label_loss_weight": 2.0, "augment": True,
             "vision_pretrain_steps": 500, "synthetic_num_images": 4000, "repetition_penalty": "auto", "itm": False,
             "patch_embedding": "conv_stem", "image_label_token": True, "image_label_condition": False},
    "paper": {"optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "lr_scheduler": "plateau", "warmup_steps": 0,
              "sampling": "rows", "basics_weight": 1.0, "image_label_loss_weight": 0.0, "augment": False,
              "vision_pretrain_steps": 0, "synthetic_num_images": 1000, "repetition_penalty": "1.0", "itm": True,
              "patch_embedding": "linear", "image_label_token": False, "image_label_condition": False},
}
PENALTY_CANDIDATES = (1.0, 1.15, 1.3, 1.5)  # --repetition_penalty auto chooses among these on the validation fold


def penalty_or_auto(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        penalty = float(value)
    except ValueError:
        penalty = float("nan")
    if not penalty > 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {value!r}")
    return penalty


SCRIPT_STARTED = time.time()  # the closing line's wall-clock covers imports, data, training and evaluation
QUICK_START_STEPS = {"fast": 650, "paper": 150}  # the embedded synthetic set's default budget; --max_train_steps 0 lifts it
DEFAULT_SYNTHETIC_IMAGES = RECIPES["fast"]["synthetic_num_images"]
# options that describe a new model (or its stage-1 pre-training): refused beside --model_name_or_path, whose config decides
NEW_MODEL_OPTIONS = ("vision_model_name_or_path", "text_model_name_or_path", "config_overrides", "patch_embedding", "vocab_size",
                     "image_label_token", "image_label_condition", "itm", "vision_pretrain_steps",
                     "vision_pretrain_learning_rate", "vision_pretrain_batch_size")


def build_parser() -> argparse.ArgumentParser:
    parser = ScriptArgumentParser(
        description="Train MVaEMa on micrograph question-answer pairs (paper protocol: Adam 1e-3, batch 48, "
        "<=50 epochs, LR halved after 5 stagnant epochs, early stopping).",
        formatter_class=HelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", type=str, default=None, help="a trained MVaEMa folder or Hub id to start from")
    model.add_argument("--vision_model_name_or_path", type=str, default=None, help="initialise the image encoder from a ViT checkpoint")
    model.add_argument("--text_model_name_or_path", type=str, default=None, help="initialise the text side (and tokenizer) from a BERT-style checkpoint")
    model.add_argument("--config_overrides", type=str, default=None, help="e.g. 'use_itc=false,vision_config.num_hidden_layers=2'")
    model.add_argument("--patch_embedding", choices=["linear", "conv_stem"], default="conv_stem",
                       help="a new model's patch embedding: linear (the paper) or conv_stem (a small convolutional stem, "
                       "the fast recipe's; see MVaEMaVisionConfig). A --vision_model_name_or_path ViT keeps its linear one")
    model.add_argument("--vocab_size", type=positive_int, default=2048, help="size of the WordPiece tokenizer trained for a new model")
    model.add_argument("--baseline", choices=["blip"], default=None,
                       help="train transformers' BlipForQuestionAnswering at MVaEMa's sizes instead (see train/baselines.py)")
    task = parser.add_argument_group("prompts and evaluation")
    task.add_argument("--caption_protocol", action="store_true", help="train with the paper's captions naming the true category (label-conditioned)")
    task.add_argument("--eval_with_captions", action="store_true", help="evaluate with captions too: metrics marked label-conditioned")
    task.add_argument("--sampling", choices=["image", "rows"], default="image",
                      help="image: every training image once per epoch with one of its questions (distinct images per batch); "
                      "rows: every QA row once per epoch (the paper)")
    task.add_argument("--basics_weight", type=non_negative_float, default=4.0,
                      help="--sampling image: how much more often the Basics question (which names the category) is drawn")
    task.add_argument("--image_label_loss_weight", type=non_negative_float, default=2.0,
                      help="weight of the auxiliary class loss on the image [CLS] (training labels; 0: the paper's losses only)")
    task.add_argument("--vision_pretrain_steps", type=non_negative_int, default=500,
                      help="stage 1: steps of the image encoder + class head alone on the augmented training images "
                      "(train/loop/vision_pretraining.py) before the full training; needs --image_label_loss_weight > 0")
    task.add_argument("--vision_pretrain_learning_rate", type=positive_float, default=2e-3, help="stage 1's peak learning rate")
    task.add_argument("--vision_pretrain_batch_size", type=positive_int, default=64, help="stage 1's batch of images")
    task.add_argument("--image_label_token", action=argparse.BooleanOptionalAction, default=True,
                      help="a new model's class token: the class head's prediction as one more image token for the text "
                      "side (MVaEMaConfig.image_label_token; not with --image_label_loss_weight 0). On in the fast recipe")
    task.add_argument("--image_label_condition", action=argparse.BooleanOptionalAction, default=False,
                      help="also add the class token to every decoder input embedding (MVaEMaConfig.image_label_condition; "
                      "with the class token only)")
    task.add_argument("--itm", action=argparse.BooleanOptionalAction, default=False,
                      help="a new model's image-text matching loss (the paper's third loss; on in the paper recipe). The fast "
                      "recipe leaves it out: on the synthetic set it stays at its prior for 2,000 steps and costs a quarter of a step")
    task.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                      help="flip/rotate and jitter the training images (never the validation or test images; not with --streaming)")
    task.add_argument("--max_new_tokens", type=positive_int, default=96, help="longest generated answer, in tokens")
    task.add_argument("--num_beams", type=positive_int, default=1, help="beam-search width when answering (1: greedy)")
    task.add_argument("--repetition_penalty", type=penalty_or_auto, default="auto",
                      help="repetition penalty of the saved model's decoding (1.0: none), or auto: the candidate among "
                      f"{', '.join(map(str, PENALTY_CANDIDATES))} with the best ROUGE-L on validation-fold pairs (never the test fold)")
    task.add_argument("--max_generate_samples", type=non_negative_int, default=0,
                      help="test QA pairs answered for BLEU/ROUGE/METEOR, a seeded random sample of the test fold (default 0: all of them)")
    add_data_args(parser, default_synthetic_images=DEFAULT_SYNTHETIC_IMAGES)
    add_streaming_args(parser)
    add_training_args(parser)
    add_lora_args(parser)
    add_hub_args(parser)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="fast",
                        help="fast: the CPU recipe (AdamW, warm-up + cosine, image sampling, augmentation, class loss); "
                        "paper: the MVaEMa paper's protocol (Adam 1e-3, plateau halving, every QA row per epoch). "
                        "Options given explicitly override the recipe's values")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    recipe = parser.parse_known_args(argv)[0].recipe
    parser.set_defaults(**RECIPES[recipe])
    args = parser.parse_args(argv)
    check_hub_args(args)
    check_training_args(parser, args)
    if args.baseline and (args.model_name_or_path or args.vision_model_name_or_path or args.text_model_name_or_path or args.lora):
        parser.error("--baseline builds a new BLIP from scratch: it cannot be combined with --model_name_or_path, "
                     "--vision_model_name_or_path, --text_model_name_or_path or --lora")
    refuse_with_trained_model(parser, args, argv, NEW_MODEL_OPTIONS)
    # a trained model's class-loss weight is its config's unless given (see build_model_and_processor, class_loss_of_run)
    args.image_label_loss_weight_given = bool(args.model_name_or_path) and bool(given_options(parser, argv, ("image_label_loss_weight",)))
    if args.vision_pretrain_steps and not args.image_label_loss_weight and not (args.baseline or args.model_name_or_path):
        parser.error("--vision_pretrain_steps trains the image encoder's class head: it needs --image_label_loss_weight > 0 "
                     "(or --vision_pretrain_steps 0)")
    if args.output_dir is None:
        args.output_dir = default_output_dir("vqa")
    apply_step_budget(args, QUICK_START_STEPS[args.recipe])
    return args


def preflight(args) -> None:
    """Everything this run was given, checked before a dataset is built or a model loaded."""
    check_output_dir(args)
    check_resume_target(args)
    check_dataset_path(args)
    check_dataset_copy(args)
    check_model_path(args.model_name_or_path, "--model_name_or_path", "train one with `accelerate launch train/vqa.py`")
    check_model_path(args.vision_model_name_or_path, "--vision_model_name_or_path", "save a ViT there with `save_pretrained`")
    check_model_path(args.text_model_name_or_path, "--text_model_name_or_path",
                     "pre-train one with `python train/pretrain_text_mlm.py DESCRIPTIONS --output_dir DIR`")


def build_model_and_processor(args, train_texts: list[str], class_names: list[str] | None = None):
    """The model to train and its processor: the trained model of --model_name_or_path, or a new one whose class
    head (and `classify` candidates) are `class_names`, the dataset's classes (default: the ten SEM categories)."""
    from emvision.modeling import MVaEMaForQuestionAnswering
    from emvision.processing import MVaEMaProcessor, build_default_tokenizer, prepare_tokenizer
    from emvision.processing.image_processing_micrograph import MicrographImageProcessor

    if args.model_name_or_path:
        from transformers import AutoProcessor

        model = MVaEMaForQuestionAnswering.from_pretrained(args.model_name_or_path)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
        if getattr(args, "image_label_loss_weight_given", False) and args.image_label_loss_weight > 0:
            if model.image_label_head is None:
                raise InputError(f"--image_label_loss_weight {args.image_label_loss_weight:g}: {args.model_name_or_path} has no "
                                 "image-label head (its config's image_label_loss_weight is 0), so there is no class loss to weigh")
            # a positive weight keeps the head (the config's weight > 0 is what builds it); 0 is this run's alone: class_loss_of_run
            model.config.image_label_loss_weight = args.image_label_loss_weight
        return model, processor
    overrides = parse_config_overrides(args.config_overrides)
    if args.vision_model_name_or_path or args.text_model_name_or_path:
        tokenizer = None
        if args.text_model_name_or_path:
            from transformers import AutoTokenizer

            tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(args.text_model_name_or_path))
        else:
            tokenizer = build_default_tokenizer(vocab_size=args.vocab_size, extra_texts=train_texts)
        config = new_config(args, class_names)
        apply_config_overrides(config, overrides)
        model = MVaEMaForQuestionAnswering.from_pretrained_components(
            vision_model_name_or_path=args.vision_model_name_or_path,
            text_model_name_or_path=args.text_model_name_or_path,
            tokenizer=tokenizer,
            config=config,
        )
    else:
        tokenizer = build_default_tokenizer(vocab_size=args.vocab_size, extra_texts=train_texts)
        config = new_config(args, class_names)
        config.text_config.vocab_size = len(tokenizer)
        apply_config_overrides(config, overrides)
        model = MVaEMaForQuestionAnswering(config)
    return model, MVaEMaProcessor(image_processor=MicrographImageProcessor(), tokenizer=tokenizer)


def new_config(args, class_names: list[str] | None = None):
    """A new model's config from the options (the recipe's values unless given); `class_names`: its classes."""
    from emvision.modeling import MVaEMaConfig

    return MVaEMaConfig(image_label_loss_weight=args.image_label_loss_weight, use_itm=args.itm,
                        id2label=dict(enumerate(class_names)) if class_names else None,
                        image_label_token=(token := args.image_label_token and args.image_label_loss_weight > 0),
                        image_label_condition=token and args.image_label_condition,
                        vision_config={"patch_embedding": args.patch_embedding})


def class_loss_of_run(model, args, class_names: list[str], dataset_name: str) -> tuple[bool, str | None]:
    """Whether this run trains the class head on the dataset's labels, and why not when a trained model's head is
    left alone. The head's output i is the class `config.id2label[i]`: a trained model's head (and the class token
    its prediction feeds the text side) keeps its classes, so a dataset whose label i names another class would
    teach it the wrong one; such a run leaves the class loss out, and says so (an error when the weight was given).
    --image_label_loss_weight 0 beside a trained model turns it off for the run; the saved config keeps its weight,
    which is also what builds the head."""
    config = model.config
    if not getattr(config, "image_label_loss_weight", 0.0) > 0 or getattr(model, "image_label_head", None) is None:
        return False, None
    model_classes = [config.id2label[index] for index in sorted(config.id2label)]
    if not args.model_name_or_path:
        if len(class_names) > len(model_classes):
            raise InputError(f"{dataset_name} has {len(class_names)} classes but the model's image-label head {len(model_classes)}: "
                             f"pass --image_label_loss_weight 0, or --config_overrides num_labels={len(class_names)}")
        return True, None
    if getattr(args, "image_label_loss_weight_given", False) and args.image_label_loss_weight == 0:
        return False, "--image_label_loss_weight 0"
    if class_names != model_classes[: len(class_names)]:
        mismatch = (f"{dataset_name}'s classes ({', '.join(class_names)}) are not those of {args.model_name_or_path}'s class head "
                    f"({', '.join(model_classes)}), label by label")
        if getattr(args, "image_label_loss_weight_given", False):
            raise InputError(f"--image_label_loss_weight {args.image_label_loss_weight:g}: {mismatch}; its class loss would teach "
                             "it the wrong classes. Pass --image_label_loss_weight 0 (or nothing: the run then leaves the loss out)")
        return False, mismatch + " (the head and the class token it feeds stay the base model's)"
    return True, None


def provenance_for(source, train_split, caption_protocol: bool):
    from emvision.train.publishing.model_card import DataProvenance

    rows = train_split.select_columns(["image_id", "teacher"]).to_list() if len(train_split) else []
    image_sources = {row["image_id"]: ("synthetic" if source.synthetic else "real") for row in rows}
    return DataProvenance.from_rows(
        source.name,
        image_sources=image_sources.values(),
        teachers=[row["teacher"] for row in rows],
        caption_in_prompt=caption_protocol,
    )


def load_qa_pairs(source, args, log):
    """The dataset's ``vqa`` subset, or, when it has none, rows templated from its labels (labels-template)."""
    from emvision.train.data.label_templates import describe, label_template_vqa

    vqa = source.load("vqa", required=False)
    if vqa is not None:
        return vqa, False
    if args.caption_protocol or args.eval_with_captions:
        raise InputError(f"{source.name} has no question-answer pairs; trained from its labels, a caption would be the answer itself: "
                         "drop --caption_protocol/--eval_with_captions, or add question/answer pairs to the dataset")
    images = source.load("images")
    log(f"{source.name}: {describe(images.features['label'].names)}")
    return label_template_vqa(images), True


def main(argv=None) -> dict:
    args = parse_args(argv)
    preflight(args)

    import torch

    from emvision.train.baselines import count_parameters
    from emvision.train.data.collators import VQACollator
    from emvision.train.data.images import ImageTable
    from emvision.train.data.sources import resolve_dataset
    from emvision.train.data.split_record import source_image_folds, split_of_run
    from emvision.train.data.splits import split_by_fold
    from emvision.train.data.streaming import streamed_vqa_rows, streaming_training_loop
    from emvision.train.evaluation.chance import VQA_CHANCE_NOTE
    from emvision.train.evaluation.vqa import BASICS_QUESTION_ID, choose_repetition_penalty, evaluate_vqa
    from emvision.train.evaluation.zero_shot import evaluate_zero_shot
    from emvision.train.loop.trainer import TrainingLoop, make_accelerator, placement
    from emvision.train.publishing.hub import maybe_push
    from emvision.train.publishing.lora import apply_lora
    from emvision.train.publishing.model_card import (
        build_model_card,
        classification_results,
        describe_base_model,
        training_procedure_markdown,
        vqa_results,
    )
    from emvision.train.publishing.model_folder import save_model_folder

    accelerator = make_accelerator(args)
    if args.overwrite_output_dir and not args.resume_from_checkpoint and accelerator.is_main_process:
        remove_stale_outputs(Path(args.output_dir), log=accelerator.print)
    accelerator.wait_for_everyone()
    accelerator.print(f"MVaEMa training on {placement(accelerator)}")
    accelerator.print(f"Recipe {args.recipe!r}: {args.optimizer}, {args.lr_scheduler} schedule, {args.sampling} sampling"
                      + (", augmented training images" if args.augment else ""))
    if args.quick_start:
        accelerator.print(
            f"Embedded synthetic set, quick-start budget of {args.max_train_steps} optimizer steps "
            "(pass --max_train_steps 0 for the full schedule)"
        )
    started, cpu_started = time.time(), time.process_time()
    vision_pretraining = None
    source = resolve_dataset(args, accelerator, output_dir=args.output_dir)
    vqa, labels_template = load_qa_pairs(source, args, accelerator.print)
    train_split, val_split, test_split = split_by_fold(vqa, args)
    accelerator.print(f"{source.name}: {len(train_split)} train / {len(val_split)} validation / {len(test_split)} test QA pairs (fold {args.fold} of {args.num_folds})")
    # before any training: a base model that saw this test fold is refused (the images' folds: zero-shot reads them all)
    split = split_of_run(dataset=source.name, folds=source_image_folds(source, args.streaming), args=args, train_ids=train_split["image_id"],
                         log=accelerator.print)

    train_texts = [*train_split["question"], *train_split["answer"]]
    class_names = list(getattr(train_split.features.get("label"), "names", None) or [])
    model, processor = build_model_and_processor(args, train_texts, class_names)
    if args.baseline:
        from emvision.train.baselines import BlipBaselineProcessor, build_blip_baseline

        model = build_blip_baseline(model.config, processor.tokenizer)
        processor = BlipBaselineProcessor.from_mvaema_processor(processor)
        accelerator.print("Baseline: transformers' BlipForQuestionAnswering at MVaEMa's sizes (LM loss only)")
    if args.lora:
        model = apply_lora(model, args, log=accelerator.print)
    total = count_parameters(model)
    accelerator.print(f"parameters: {total:,}")

    with_labels, class_loss_note = class_loss_of_run(accelerator.unwrap_model(model), args, class_names, source.name)
    if class_loss_note:
        accelerator.print(f"Class loss off for this run: {class_loss_note}")
    if args.vision_pretrain_steps and not (args.baseline or args.streaming or args.resume_from_checkpoint or args.model_name_or_path or args.lora):
        from emvision.train.loop.vision_pretraining import pretrain_image_encoder

        train_images, _, _ = split_by_fold(source.load("images"), args)
        vision_pretraining = pretrain_image_encoder(
            model, train_images, processor.image_processor, steps=args.vision_pretrain_steps, batch_size=args.vision_pretrain_batch_size,
            learning_rate=args.vision_pretrain_learning_rate, weight_decay=args.weight_decay, seed=args.seed,
            device=accelerator.device, log=accelerator.print)
        accelerator.print(f"vision pre-training: {vision_pretraining['steps']} steps, {vision_pretraining['cpu_seconds']:.0f} CPU-s")
    if args.streaming:  # the images streamed and joined to the training folds' text rows; evaluation map-style
        streamed = streamed_vqa_rows(source, train_split, args, accelerator)
        train_rows, images, make_loop = streamed.train, streamed.images, streaming_training_loop
    else:
        # vqa rows hold no image: image_id -> row, built once
        train_rows, images, make_loop = train_split, ImageTable(source.load("images")), TrainingLoop.from_splits
    # BLIP takes no image ids (they mark ITC positives); labels-template rows of one class are all positives
    collate = VQACollator(processor, with_captions=args.caption_protocol, with_image_ids=not args.baseline,
                          positives_by_label=labels_template, images=images, with_image_labels=with_labels,
                          augment=args.augment and not args.streaming)
    eval_collate = VQACollator(processor, with_captions=args.caption_protocol, with_image_ids=not args.baseline,
                               positives_by_label=labels_template, images=images, with_image_labels=with_labels)
    if args.streaming:
        loop = make_loop(accelerator, args, model, train_rows, val_split, collate, project="emvision-vqa")
    else:
        sampler = None
        if args.sampling == "image":
            from emvision.train.loop.reproducibility import ImageQuestionSampler

            sampler = ImageQuestionSampler(train_rows["image_id"], train_rows["question_id"], seed=args.seed,
                                           question_weights={BASICS_QUESTION_ID: args.basics_weight})
            # validation likewise: one (fixed) question per image, a tenth of the rows to score every epoch
            val_split = val_split.select(sorted(ImageQuestionSampler(val_split["image_id"], val_split["question_id"], seed=args.seed)))
        loop = make_loop(accelerator, args, model, train_rows, val_split, collate, project="emvision-vqa",
                         eval_collate=eval_collate, sampler=sampler)
    model = loop.model
    state = loop.fit()

    unwrapped = accelerator.unwrap_model(model)
    eval_model = unwrapped.get_base_model() if args.lora else unwrapped
    decoding = {"repetition_penalty": args.repetition_penalty, "chosen_on": "--repetition_penalty (the recipe's or the command line's)"}
    if args.repetition_penalty == "auto":
        decoding = choose_repetition_penalty(accelerator, eval_model, processor, val_split, args, PENALTY_CANDIDATES, images=images)
        args.repetition_penalty = decoding["repetition_penalty"]
        accelerator.print(f"decoding: repetition penalty {args.repetition_penalty:g} (validation ROUGE-L by candidate: "
                          + ", ".join(f"{p}: {r:.3f}" for p, r in decoding["validation_rougeL"].items())
                          + f"; {decoding['num_validation_pairs']} validation pairs)")
    # saved with the model: from_pretrained(...).generate() decodes as evaluated here
    eval_model.generation_config.repetition_penalty = args.repetition_penalty
    vqa_metrics = evaluate_vqa(accelerator, eval_model, processor, test_split, args, train_split=train_split, images=images)
    # BLIP's VQA head has no likelihood classifier: zero-shot classification is MVaEMa's only
    zero_shot = {} if args.baseline else evaluate_zero_shot(accelerator, eval_model, processor, source, args)
    label_conditioned = args.eval_with_captions
    provenance = provenance_for(source, train_split, args.caption_protocol)
    base = describe_base_model(args.model_name_or_path)
    metrics = {
        "label_conditioned": label_conditioned,
        "synthetic_data": source.synthetic,
        "protocol": (
            f"fold {args.fold} of {args.num_folds} (test fold {args.fold}, validation fold {(args.fold + 1) % args.num_folds}); "
            + ("evaluation prompts carried captions naming the true category" if label_conditioned else "label-free evaluation prompts")
        ),
        "dataset": source.name,
        "data_provenance": provenance.to_json(),
        "labels_template": labels_template,
        "base_model": base.to_json() if base else None,
        "hub_model_id": args.hub_model_id,
        "model": "BLIP baseline (BlipForQuestionAnswering at MVaEMa's sizes)" if args.baseline else "MVaEMa",
        "train_caption_protocol": args.caption_protocol,
        "split": split.summary(),
        **vqa_metrics,
        "zero_shot_classification": zero_shot,
        "best_val_loss": loop.early_stopping.best if math.isfinite(loop.early_stopping.best) else None,
        "epochs": round(state.global_step / loop.steps_per_epoch, 3),
        "steps_per_epoch": loop.steps_per_epoch,
        "optimizer_steps": state.global_step,
        "recipe": args.recipe,
        "decoding": decoding,
        "vision_pretraining": vision_pretraining,
        "train_seconds": round(time.time() - started, 1),
        "process_cpu_seconds": round(time.process_time() - cpu_started, 1),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "parameters": total,
        "history": state.history,
    }
    results = vqa_results(vqa_metrics) + (classification_results(zero_shot, key_prefix="zero_shot_") if zero_shot else [])
    card = build_model_card(
        "mvaema",
        **({"extra_limitations": BASELINE_CARD_NOTE} if args.baseline else {}),
        repo_id=args.hub_model_id or Path(args.output_dir).name,
        provenance=provenance,
        training_procedure=training_procedure_markdown(args, state, accelerator.num_processes, loop.steps_per_epoch, base=base, details=[
            "- Losses: answer language modelling only (BLIP's VQA head)" if args.baseline else
            "- Losses: " + ", ".join(name for name, used in (
                ("image-text contrastive (ITC)", getattr(eval_model.config, "use_itc", False)),
                ("image-text matching (ITM, hard negatives)", getattr(eval_model.config, "use_itm", False)),
                ("answer-only language modelling (LM)", True)) if used)
            + ("" if getattr(eval_model.config, "use_itm", True) else " (the paper's ITM loss left out: `--itm` adds it)")
            + ("; the texts are the class captions, so every image of a class is a positive for ITC" if labels_template else "")
            + (f"; plus an auxiliary class cross-entropy (weight {eval_model.config.image_label_loss_weight:g}) on the image encoder's [CLS]: "
               "supervised on the training images' labels (not one of the paper's losses; no label is read at prediction time)"
               if with_labels else "")
            + (f"; the base model's auxiliary class loss left out: {class_loss_note}" if class_loss_note else ""),
            f"- Recipe `{args.recipe}`: " + ("one question per training image per epoch (Basics drawn "
            f"{args.basics_weight:g}x as often)" if args.sampling == "image" and not args.streaming else "every QA row once per epoch")
            + ("; training images flipped/rotated and brightness/contrast-jittered" if args.augment else ""),
            *(["- Training prompts: caption naming the true category + question (the paper's protocol)"] if args.caption_protocol else []),
            f"- Decoding: {'beam search, ' + str(args.num_beams) + ' beams' if args.num_beams > 1 else 'greedy'}, repetition penalty "
            f"{args.repetition_penalty:g}" + (f" (the best ROUGE-L of {', '.join(map(str, PENALTY_CANDIDATES))} on "
            f"{decoding['num_validation_pairs']} validation-fold pairs; saved in generation_config.json)" if "validation_rougeL" in decoding else ""),
        ]),
        results=results,
        label_conditioned=label_conditioned,
        protocol_note=metrics["protocol"],
        chance_note=VQA_CHANCE_NOTE,
        base_model=base,
        examples=vqa_metrics.get("examples", []),
    )
    output_dir = save_model_folder(accelerator, model, processor, args.output_dir, card=card, metrics=metrics, split=split,
                                   lora_args=args if args.lora else None)
    accelerator.end_training()
    summary = " ".join(f"{k}={vqa_metrics[k]:.4f}" for k in ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"))
    if "basics_category_accuracy" in vqa_metrics:
        summary += f" basics_category_accuracy={vqa_metrics['basics_category_accuracy']:.4f}"
    accelerator.print(
        f"Done in {time.time() - SCRIPT_STARTED:.0f} s wall-clock (start-up, data, training, evaluation): {summary} "
        f"zero-shot top1={zero_shot.get('top1', float('nan')):.4f} "
        f"({'synthetic data, ' if source.synthetic else ''}{'label-conditioned' if label_conditioned else 'label-free'}) -> {output_dir}"
    )
    maybe_push(accelerator, args, output_dir)
    return metrics


if __name__ == "__main__":
    run_script(main)
