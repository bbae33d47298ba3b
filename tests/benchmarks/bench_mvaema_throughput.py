"""MVaEMa's paper config beside transformers' BlipForQuestionAnswering built at the same sizes.

Both models get the same batches: 224x224 images, a question from the paper's ten prompt families and
an answer of `--answer_tokens` tokens (random ids of the default vocabulary: only lengths matter here).
BLIP: patch 32, hidden 64, 4 heads, intermediate 256 and the same depths (its question encoder and
answer decoder each get MVaEMa's text depth), vocabulary = the default MVaEMa tokenizer's.

Training: forward + backward + Adam step, images/s (ITC/ITM text: the processor's default opening of the
answer); models alternate step by step so background load
hits both alike; medians over the timed steps. MVaEMa is timed with all three losses (ITC + ITM + LM)
and with the LM loss only (BLIP's VQA head trains the LM loss only), beside a same-size BLIP pretraining step
(ITC + ITM + LM, train/baselines.py: build_blip_pretraining_baseline). Generation: greedy answers of
exactly `--new_tokens` tokens with the KV cache, answers/s.

    python tests/benchmarks/bench_mvaema_throughput.py                  # batch 48, 5 timed steps
    python tests/benchmarks/bench_mvaema_throughput.py --threads 2 --steps 10 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tqdm.auto import tqdm
from transformers import BlipForQuestionAnswering

from emvision.vocabulary import PROMPT_FAMILIES
from emvision.modeling import MVaEMaConfig, MVaEMaForQuestionAnswering
from emvision.processing import build_default_tokenizer
from emvision.processing.processing_mvaema import DEFAULT_ITC_MAX_LENGTH
from emvision.train.baselines import blip_config_like, build_blip_pretraining_baseline, count_parameters


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=48)
    parser.add_argument("--answer_tokens", type=int, default=64, help="answer length in tokens (default 64)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model (default 5)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5: see run_all.py --warmup_steps)")
    parser.add_argument("--new_tokens", type=int, default=32, help="generated tokens per answer (default 32)")
    parser.add_argument("--generate_rounds", type=int, default=3, help="timed generate() calls per model (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_batches(tokenizer, args, vocab_size: int):
    """One batch in both layouts: MVaEMa's prefix-LM sequence and BLIP's question / answer pair."""
    generator = torch.Generator().manual_seed(args.seed)
    batch_size, n_answer = args.batch_size, args.answer_tokens
    questions = [PROMPT_FAMILIES[i % len(PROMPT_FAMILIES)].question for i in range(batch_size)]
    question_ids = tokenizer(questions, add_special_tokens=False)["input_ids"]
    answers = torch.randint(8, vocab_size, (batch_size, n_answer), generator=generator).tolist()
    pixel_values = torch.randn(batch_size, 3, 224, 224, generator=generator)
    bos, sep, eos, cls, pad = 6, 3, 7, 2, 0

    def pad_right(rows, value):
        longest = max(map(len, rows))
        return torch.tensor([row + [value] * (longest - len(row)) for row in rows])

    def pad_left(rows, value):
        longest = max(map(len, rows))
        return torch.tensor([[value] * (longest - len(row)) + row for row in rows])

    sequences = [[bos, *q, sep, *a, eos] for q, a in zip(question_ids, answers)]
    labels = [[-100] * (len(q) + 2) + [*a, eos] for q, a in zip(question_ids, answers)]
    prompts = [[bos, *q, sep] for q in question_ids]
    mvaema = dict(
        pixel_values=pixel_values,
        input_ids=pad_right(sequences, pad),
        attention_mask=pad_right([[1] * len(s) for s in sequences], 0),
        labels=pad_right(labels, -100),
        itc_input_ids=torch.tensor([[cls, *a[: DEFAULT_ITC_MAX_LENGTH - 2], sep] for a in answers]),
    )
    mvaema["itc_attention_mask"] = torch.ones_like(mvaema["itc_input_ids"])
    mvaema_prompt = dict(
        pixel_values=pixel_values,
        input_ids=pad_left(prompts, pad),
        attention_mask=pad_left([[1] * len(p) for p in prompts], 0),
    )
    questions_blip = [[cls, *q, sep] for q in question_ids]
    blip = dict(
        pixel_values=pixel_values,
        input_ids=pad_right(questions_blip, pad),
        attention_mask=pad_right([[1] * len(q) for q in questions_blip], 0),
        labels=torch.tensor([[bos, *a, eos] for a in answers]),  # no padding: every answer has the same length
    )
    blip_prompt = {key: blip[key] for key in ("pixel_values", "input_ids", "attention_mask")}
    return mvaema, mvaema_prompt, blip, blip_prompt


def to_device(batch, device):
    return {key: value.to(device) for key, value in batch.items()}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    tokenizer = build_default_tokenizer()
    config = MVaEMaConfig()
    assert config.text_config.vocab_size == len(tokenizer)
    models = {
        "MVaEMa (ITC+ITM+LM)": MVaEMaForQuestionAnswering(config),
        "MVaEMa (LM only)": MVaEMaForQuestionAnswering(MVaEMaConfig(use_itc=False, use_itm=False)),
        "BLIP VQA (LM)": BlipForQuestionAnswering(blip_config_like(config)),
        "BLIP pretraining (all)": build_blip_pretraining_baseline(config, tokenizer),
    }
    mvaema_batch, mvaema_prompt, blip_batch, blip_prompt = make_batches(tokenizer, args, config.text_config.vocab_size)
    batches = {name: to_device(blip_batch if name.startswith("BLIP VQA") else mvaema_batch, device) for name in models}
    optimizers = {}
    for name, model in models.items():
        model.to(device).train()
        optimizers[name] = torch.optim.Adam(model.parameters(), lr=1e-3)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = {name: [] for name in models}
    cpu_times = {name: [] for name in models}
    total = (args.warmup + args.steps) * len(models)
    with tqdm(total=total, desc="train steps") as progress:
        for step in range(args.warmup + args.steps):
            for name, model in models.items():
                sync()
                start, cpu_start = time.perf_counter(), time.process_time()
                loss = model(**batches[name]).loss
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[name].step()
                sync()
                if step >= args.warmup:
                    times[name].append(time.perf_counter() - start)
                    cpu_times[name].append(time.process_time() - cpu_start)
                progress.update()

    generate_inputs = {"MVaEMa": to_device(mvaema_prompt, device), "BLIP": to_device(blip_prompt, device)}
    generators = {"MVaEMa": models["MVaEMa (ITC+ITM+LM)"], "BLIP": models["BLIP VQA (LM)"]}
    generate_times = {name: [] for name in generators}
    lengths = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, num_beams=1)
    with tqdm(total=(args.generate_rounds + 1) * 2, desc="generate") as progress:
        for round_index in range(args.generate_rounds + 1):
            for name, model in generators.items():
                model.eval()
                sync()
                start = time.perf_counter()
                with torch.no_grad():
                    model.generate(**generate_inputs[name], **lengths)
                sync()
                if round_index > 0:
                    generate_times[name].append(time.perf_counter() - start)
                progress.update()

    batch_size = args.batch_size
    print(f"\nbatch {batch_size}, answer {args.answer_tokens} tokens, threads {torch.get_num_threads()}, device {device}")
    print(f"{'model':<22} {'parameters':>11} {'train img/s':>12} {'ms/step':>9} {'CPU ms/step':>12}")
    rates = {}
    for name, model in models.items():
        median = statistics.median(times[name])
        rates[name] = batch_size / median
        cpu = 1000 * statistics.median(cpu_times[name])
        print(f"{name:<22} {count_parameters(model):>11,} {rates[name]:>12.1f} {1000 * median:>9.1f} {cpu:>12.1f}")
    answers = {name: batch_size / statistics.median(values) for name, values in generate_times.items()}
    print(f"\n{'generate (greedy, KV cache)':<28} {'answers/s':>10} {'ms/answer':>10}")
    for name, rate in answers.items():
        print(f"{name:<28} {rate:>10.1f} {1000 / rate:>10.2f}")
    blip = rates["BLIP VQA (LM)"]
    print(
        f"\nratios: train {rates['MVaEMa (ITC+ITM+LM)'] / rates['BLIP pretraining (all)']:.2f}x vs BLIP pretraining (all losses), "
        f"{rates['MVaEMa (LM only)'] / blip:.2f}x vs BLIP VQA (LM only); generate {answers['MVaEMa'] / answers['BLIP']:.2f}x"
    )


if __name__ == "__main__":
    main()
