"""Domain pre-training of HNF's small text encoder: masked language modelling on class descriptions.

The paper's recipe: pre-train a small BERT on the LLM-written class descriptions with MLM, then fine-tune it
inside HNF. The output folder (BertForMaskedLM weights as safetensors, its tokenizer, a run summary) is what
`HNFConfig(text_model_name_or_path=...)` loads.

    python train/pretrain_text_mlm.py DATA/class_descriptions --output_dir runs/sem-mlm
    python train/pretrain_text_mlm.py descriptions.txt --output_dir runs/sem-mlm --num_train_epochs 50
    accelerate launch train/pretrain_text_mlm.py DATA/class_descriptions --output_dir runs/sem-mlm

The input is a `class_descriptions` subset saved with `save_to_disk` (or a dataset folder holding one), or a
UTF-8 text file with one description per non-empty line.
"""

from __future__ import annotations

import argparse
import json
import math
import string
from pathlib import Path

import torch
from tqdm.auto import tqdm

from emvision.train.loop.arguments import ScriptArgumentParser, positive_int
from emvision.train.loop.preflight import InputError, MissingInputError, check_model_path, check_output_dir, run_script

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
# Characters every vocabulary keeps, so numbers, units and punctuation never become [UNK].
BASE_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation + "µμ°±×≈≤≥Å·"


def build_parser() -> argparse.ArgumentParser:
    parser = ScriptArgumentParser(
        description="Pre-train HNF's text encoder (a small BERT) with MLM on class descriptions.",
    )
    parser.add_argument("descriptions", help="class_descriptions folder, or a text file: one description a line")
    parser.add_argument("--output_dir", required=True, metavar="DIR", help="folder to write (HNF's text_model_name_or_path)")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace an earlier run in --output_dir")
    parser.add_argument("--tokenizer_name_or_path", metavar="PATH", help="reuse this tokenizer (default: train a WordPiece one)")
    parser.add_argument("--vocab_size", type=positive_int, default=2000, metavar="N", help="WordPiece vocabulary bound (default: 2000)")
    model = parser.add_argument_group("model (defaults: HNF's text encoder, 2 layers x 64 wide, 4 heads, MLP 256)")
    model.add_argument("--hidden_size", type=positive_int, default=64, metavar="N", help="width of every layer")
    model.add_argument("--num_hidden_layers", type=positive_int, default=2, metavar="N", help="transformer layers")
    model.add_argument("--num_attention_heads", type=positive_int, default=4, metavar="N", help="heads; must divide the width")
    model.add_argument("--intermediate_size", type=positive_int, default=256, metavar="N", help="MLP width")
    train = parser.add_argument_group("training")
    train.add_argument("--max_length", type=positive_int, default=256, metavar="N", help="tokens per sequence, longer texts split (default: 256)")
    train.add_argument("--mlm_probability", type=float, default=0.15, metavar="P", help="masked fraction (default: 0.15)")
    train.add_argument("--num_train_epochs", type=positive_int, default=50, metavar="N", help="passes over the descriptions (default: 50)")
    train.add_argument("--max_train_steps", type=positive_int, metavar="N", help="stop after N optimizer steps (overrides epochs)")
    train.add_argument("--batch_size", type=positive_int, default=16, metavar="N", help="sequences per step (default: 16)")
    train.add_argument("--learning_rate", type=float, default=1e-3, metavar="LR", help="AdamW, linear warm-up and decay (default: 1e-3)")
    train.add_argument("--weight_decay", type=float, default=0.01, metavar="W", help="AdamW weight decay (default: 0.01)")
    train.add_argument("--warmup_ratio", type=float, default=0.1, metavar="R", help="share of the steps spent warming up (default: 0.1)")
    train.add_argument("--seed", type=int, default=0, metavar="N", help="seed of weights, masks and order (default: 0)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def read_descriptions(path: str | Path) -> tuple[list[str], list[str]]:
    """The description texts and their sources, from a `class_descriptions` dataset folder or a text file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(
            f"{path}: no such class_descriptions folder or text file; datasets_scripts/generate_qa.py writes DIR/class_descriptions, "
            "or give a text file with one description per line"
        )
    if path.is_file():
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        sources = [f"file:{path.name}"]
    else:
        from datasets import load_from_disk

        if (path / "class_descriptions").is_dir():
            path = path / "class_descriptions"
        dataset = load_from_disk(str(path))
        if "description" not in dataset.column_names:
            raise InputError(f"{path}: no 'description' column (columns: {dataset.column_names}); expected a class_descriptions subset")
        texts = [text.strip() for text in dataset["description"] if text and text.strip()]
        sources = sorted(set(dataset["source"])) if "source" in dataset.column_names else []
    if not texts:
        raise InputError(f"{path}: no non-empty descriptions")
    return texts, sources


def train_mlm_tokenizer(texts: list[str], vocab_size: int, model_max_length: int):
    """A lowercasing BERT WordPiece tokenizer trained on `texts`, with [PAD]=0 ... [MASK]=4 (BERT's roles only).

    `vocab_size` is raised to the special tokens plus the alphabet when it is smaller.
    """
    from emvision.processing.tokenization_micrograph import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(
        texts, vocab_size, model_max_length=model_max_length, special_tokens=SPECIAL_TOKENS, alphabet=BASE_ALPHABET,
        grow_vocab_size=True,
    )


def masked_lm_loss(model, batches) -> tuple[float, float]:
    """Mean MLM loss and masked-token accuracy over fixed, pre-masked batches."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches:
            output = model(**batch)
            masked = batch["labels"] != -100
            total_loss += output.loss.item() * int(masked.sum())
            correct += int((output.logits.argmax(-1)[masked] == batch["labels"][masked]).sum())
            count += int(masked.sum())
    model.train()
    return total_loss / max(count, 1), correct / max(count, 1)


def main(argv=None) -> dict:
    args = parse_args(argv)
    texts, sources = read_descriptions(args.descriptions)  # before anything is written
    check_output_dir(args)
    check_model_path(args.tokenizer_name_or_path, "--tokenizer_name_or_path", "save a tokenizer there with `save_pretrained`")
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling
    from transformers import get_linear_schedule_with_warmup

    from emvision.train.loop.trainer import set_cpu_threads

    accelerator = Accelerator()
    set_cpu_threads(accelerator, None)  # both cores of a one-process `accelerate launch` on a CPU
    set_seed(args.seed)
    if args.tokenizer_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name_or_path)
        if tokenizer.mask_token is None:
            raise ValueError(f"--tokenizer_name_or_path {args.tokenizer_name_or_path}: the tokenizer has no mask token")
    else:
        tokenizer = train_mlm_tokenizer(texts, args.vocab_size, args.max_length)

    # Long descriptions become several sequences, so no text is lost to truncation.
    encoded = tokenizer(texts, truncation=True, max_length=args.max_length, return_overflowing_tokens=True, stride=16)
    examples = [{"input_ids": ids} for ids in encoded["input_ids"]]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability)
    generator = torch.Generator().manual_seed(args.seed)
    probe = [collator(examples[i : i + args.batch_size]) for i in range(0, len(examples), args.batch_size)]
    loader = DataLoader(examples, batch_size=args.batch_size, shuffle=True, collate_fn=collator, generator=generator)

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=max(512, args.max_length),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)
    total_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    probe = [{key: value.to(accelerator.device) for key, value in batch.items()} for batch in probe]

    loss_before, accuracy_before = masked_lm_loss(model, probe)
    model.train()
    step = 0
    progress = tqdm(total=total_steps, desc="MLM pre-training", disable=not accelerator.is_local_main_process)
    while step < total_steps:
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
            if step >= total_steps:
                break
    progress.close()
    loss_after, accuracy_after = masked_lm_loss(model, probe)

    summary = {
        "descriptions": str(args.descriptions),
        "description_sources": sources,
        "num_descriptions": len(texts),
        "num_sequences": len(examples),
        "vocab_size": len(tokenizer),
        "steps": step,
        "mlm_loss_before": loss_before,
        "mlm_loss_after": loss_after,
        "masked_accuracy_before": accuracy_before,
        "masked_accuracy_after": accuracy_after,
        "note": "loss and accuracy on the training descriptions themselves (fixed masks): a fit check, not a held-out score",
    }
    if accelerator.is_main_process:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(output_dir, safe_serialization=True)
        tokenizer.save_pretrained(output_dir)
        (output_dir / "mlm_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(
            f"MLM on {len(texts)} descriptions ({', '.join(sources) or 'unknown source'}), {step} steps: "
            f"loss {loss_before:.3f} -> {loss_after:.3f}, masked accuracy {accuracy_before:.1%} -> {accuracy_after:.1%}; "
            f"saved to {output_dir}"
        )
    return summary


if __name__ == "__main__":
    run_script(main)
