"""The same-size baselines behind ``--baseline blip`` (train/vqa.py) and ``--baseline vit`` (train/classify.py).

Each is built at a tiny size and driven the way the scripts drive it: the scripts' collators, one
training step of the shared loop's kind, evaluation's ``generate`` + ``batch_decode``, and a saved
folder that plain transformers classes load back with identical outputs.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from PIL import Image
from transformers import BlipForQuestionAnswering, ViTForImageClassification

from emvision.modeling import HNFConfig
from tiny_models import one_layer_mvaema_config
from emvision.processing import MVaEMaProcessor
from emvision.processing.image_processing_micrograph import MicrographImageProcessor
from emvision.processing.tokenization_micrograph import train_wordpiece_tokenizer
from emvision.train.baselines import BlipBaselineProcessor, BlipTrainingCollator, build_blip_baseline, build_vit_baseline, load_blip_baseline
from emvision.train.classify import parse_args as classify_args
from emvision.train.data.collators import ImageCollator
from emvision.train.evaluation.vqa import generate_answers
from emvision.train.vqa import parse_args as vqa_args

QUESTIONS = ["What is shown in this micrograph?", "Describe the particle size distribution."]
ANSWERS = ["Porous sponge with open pores of about 2 um.", "Round particles, 50 to 80 nm, well dispersed."]


@pytest.fixture(scope="module")
def rows(real_sem_images):
    images = [Image.open(path).convert("L") for path in real_sem_images[:2]]
    return [{"image": image, "question": q, "answer": a, "caption": "a micrograph", "label": i}
            for i, (image, q, a) in enumerate(zip(images, QUESTIONS, ANSWERS))]


def test_blip_baseline_trains_generates_and_reloads(rows, tmp_path):
    tokenizer = train_wordpiece_tokenizer(QUESTIONS + ANSWERS, vocab_size=300)
    mvaema_processor = MVaEMaProcessor(MicrographImageProcessor(size={"height": 64, "width": 64}), tokenizer)
    processor = BlipBaselineProcessor.from_mvaema_processor(mvaema_processor)
    torch.manual_seed(0)
    model = build_blip_baseline(one_layer_mvaema_config(len(tokenizer)), tokenizer)
    assert model.config.text_config.sep_token_id == tokenizer.eos_token_id  # BLIP's decoder stops at [EOS]

    batch = BlipTrainingCollator(processor, with_captions=False)(rows)
    assert batch["decoder_input_ids"][0, 0].item() == tokenizer.bos_token_id
    assert (batch["labels"] == -100).sum() == (batch["decoder_attention_mask"] == 0).sum()  # padding never trained
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    answers = generate_answers(Accelerator(cpu=True), model, processor, rows, with_captions=False, max_new_tokens=6)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, reloaded_processor = load_blip_baseline(tmp_path)
    assert isinstance(reloaded, BlipForQuestionAnswering)
    prompt = reloaded_processor(images=[r["image"] for r in rows], text=QUESTIONS)
    model.eval()
    expected = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(reloaded.eval().generate(**prompt, max_new_tokens=6, do_sample=False), expected)
    assert reloaded_processor.batch_decode(expected) == processor.batch_decode(expected)


def test_vit_baseline_trains_and_reloads(rows, tmp_path):
    config = HNFConfig(image_size=64, patch_sizes=[16, 32], num_neighbors=[4, 2], id2label={0: "Powder", 1: "Tips"},
                       label2id={"Powder": 0, "Tips": 1})
    torch.manual_seed(0)
    model = build_vit_baseline(config)
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.patch_size) == (64, 2, 16)
    assert model.config.id2label == {0: "Powder", 1: "Tips"}
    batch = ImageCollator(MicrographImageProcessor(size={"height": 64, "width": 64}))(rows)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.save_pretrained(tmp_path)
    model.eval()
    reloaded = ViTForImageClassification.from_pretrained(tmp_path, use_kernels=False).eval()  # (transformers >= 5.25: no Hub kernels)
    torch.testing.assert_close(reloaded(pixel_values=batch["pixel_values"]).logits, model(pixel_values=batch["pixel_values"]).logits)


def test_baseline_flags():
    assert vqa_args(["--baseline", "blip"]).baseline == "blip"
    assert vqa_args([]).baseline is None
    assert classify_args(["--baseline", "vit"]).baseline == "vit"
    with pytest.raises(SystemExit):
        vqa_args(["--baseline", "blip", "--lora"])
    with pytest.raises(SystemExit):
        classify_args(["--baseline", "vit", "--paper_protocol"])
    with pytest.raises(SystemExit):
        classify_args(["--baseline", "blip"])


def test_blip_pretraining_baseline_computes_itc_itm_and_lm_on_mvaema_batches():
    """The timing baseline of MVaEMa's full objective: LAVIS's three losses from transformers' BLIP modules."""
    from emvision.train.baselines import build_blip_pretraining_baseline

    tokenizer = train_wordpiece_tokenizer(QUESTIONS + ANSWERS, vocab_size=300)
    torch.manual_seed(0)
    model = build_blip_pretraining_baseline(one_layer_mvaema_config(len(tokenizer)), tokenizer)
    encoder, decoder = model.text_encoder, model.text_decoder.bert
    assert decoder.embeddings is encoder.embeddings  # LAVIS ties everything but the decoder's self-attention
    assert decoder.encoder.layer[0].crossattention is encoder.encoder.layer[0].crossattention
    assert decoder.encoder.layer[0].attention is not encoder.encoder.layer[0].attention
    assert model.text_decoder.cls.predictions.decoder.weight is encoder.embeddings.word_embeddings.weight

    batch_size, generator = 4, torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, len(tokenizer), (batch_size, 12), generator=generator)
    input_ids[:, 0] = tokenizer.bos_token_id
    labels = input_ids.clone()
    labels[:, :5] = -100
    itc_input_ids = torch.randint(10, len(tokenizer), (batch_size, 8), generator=generator)
    itc_input_ids[:, 0] = tokenizer.cls_token_id
    batch = dict(pixel_values=torch.randn(batch_size, 3, 64, 64, generator=generator), input_ids=input_ids,
                 attention_mask=torch.ones_like(input_ids), labels=labels, itc_input_ids=itc_input_ids,
                 itc_attention_mask=torch.ones_like(itc_input_ids))
    calls = []
    model.itm_head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        out = model(**batch)
        assert torch.allclose(out.loss, out.loss_itc + out.loss_itm + out.loss_lm)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    assert calls[0] == 3 * batch_size  # positives, a negative image per text, a negative text per image
    assert losses[-1] < losses[0]
