"""MVaEMaForQuestionAnswering on tiny configs: losses, ablations, generation, classification, init, checkpointing."""

import pytest
import torch
import torch.nn.functional as F

from emvision.modeling import MVaEMaConfig, MVaEMaForQuestionAnswering
from emvision.modeling.configuration_mvaema import MVaEMaTextConfig, MVaEMaVisionConfig
from emvision.vocabulary import CLASSIFICATION_QUESTION
from emvision.modeling.losses import contrastive_loss
from tiny_models import MVAEMA_TINY_VOCAB, tiny_mvaema_config

PAD, CLS, SEP, ENC, DEC, EOS = 0, 2, 3, 5, 6, 7
VOCAB = MVAEMA_TINY_VOCAB


def tiny_model(seed=0, **overrides) -> MVaEMaForQuestionAnswering:
    torch.manual_seed(seed)
    return MVaEMaForQuestionAnswering(tiny_mvaema_config(**overrides))


def training_batch(batch_size=4, seed=0):
    """Synthetic token ids laid out the way MVaEMaProcessor lays them out (right padding)."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, 32, 32, generator=generator)
    input_ids = torch.randint(8, VOCAB, (batch_size, 14), generator=generator)
    input_ids[:, 0], input_ids[:, 6] = DEC, SEP
    attention_mask = torch.ones_like(input_ids)
    for row, length in enumerate([14, 12, 10, 13][:batch_size]):
        input_ids[row, length - 1] = EOS
        input_ids[row, length:] = PAD
        attention_mask[row, length:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :7] = -100  # [DEC] question [SEP] are not predicted
    itc_input_ids = torch.randint(8, VOCAB, (batch_size, 9), generator=generator)
    itc_input_ids[:, 0], itc_input_ids[:, -1] = CLS, SEP
    return dict(
        pixel_values=pixel_values,
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        itc_input_ids=itc_input_ids,
        itc_attention_mask=torch.ones_like(itc_input_ids),
    )


def test_paper_defaults():
    config = MVaEMaConfig()
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.num_channels, vision.patch_size, vision.num_patches) == (224, 3, 32, 49)
    assert vision.hidden_size == text.hidden_size == 64
    assert vision.num_attention_heads == text.num_attention_heads == 4
    assert vision.hidden_size // vision.num_attention_heads == 16
    assert config.classification_question == CLASSIFICATION_QUESTION
    assert [config.id2label[i] for i in range(10)][:2] == ["Biological", "Fibres"]

    model = MVaEMaForQuestionAnswering(config).eval()
    with torch.no_grad():
        image_tokens = model.vision_model(torch.zeros(1, 3, 224, 224))
    assert image_tokens.shape == (1, 50, 64)
    attention = model.text_model.layers[0].cross_attention.attention
    assert (attention.num_heads, attention.head_dim) == (4, 16)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="text_config.hidden_size"):
        MVaEMaTextConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="vision_config.image_size"):
        MVaEMaVisionConfig(image_size=100, patch_size=32)
    with pytest.raises(ValueError, match="text_config.enc_token_id"):
        MVaEMaTextConfig(vocab_size=5)
    with pytest.raises(ValueError, match="itc_temperature"):
        MVaEMaConfig(itc_temperature=2.0)


def test_forward_returns_every_loss_and_their_sum():
    model = tiny_model()
    out = model(**training_batch())
    assert list(out.keys())[:4] == ["loss", "loss_itc", "loss_itm", "loss_lm"]
    assert out.to_tuple()[0] is out.loss
    assert torch.allclose(out.loss, out.loss_itc + out.loss_itm + out.loss_lm)
    assert out.logits is None  # with labels, the LM head only runs on answer positions
    assert out.logits_per_image.shape == (4, 4)
    assert out.itm_logits.shape == (12,) and out.itm_labels.tolist() == [1.0] * 4 + [0.0] * 8
    out.loss.backward()
    assert model.itc_temperature.grad is not None and model.itm_head.weight.grad is not None


def test_lm_loss_is_next_token_cross_entropy_on_the_answer_only():
    model = tiny_model()
    batch = training_batch()
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss_lm = model(**batch).loss_lm
    labels = batch["labels"]
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(loss_lm, expected, atol=1e-6)
    # changing a question token or padding does not change which positions are scored
    assert int((labels[:, 1:] != -100).sum()) == sum(length - 7 for length in [14, 12, 10, 13])


def test_itc_in_forward_is_the_contrastive_formula_on_the_model_features():
    model = tiny_model()
    batch = training_batch()
    out = model(**batch)
    with torch.no_grad():
        image_embeds = model.vision_model(batch["pixel_values"])
        image = F.normalize(model.vision_projection(image_embeds[:, 0]), dim=-1)
        text = F.normalize(model.text_projection(model.text_model(batch["itc_input_ids"])[:, 0]), dim=-1)
        logits = image @ text.t() / 0.07
        targets = torch.arange(4)
        by_hand = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    assert torch.allclose(out.loss_itc, by_hand, atol=1e-6)
    assert torch.allclose(out.loss_itc, contrastive_loss(image, text, 0.07).loss, atol=1e-6)


def test_temperature_is_learnable_and_clamped():
    model = tiny_model(itc_temperature_min=0.05)
    with torch.no_grad():
        model.itc_temperature.fill_(0.001)
    batch = training_batch()
    out = model(**batch)
    image, text = out.image_features, out.text_features
    assert torch.allclose(out.logits_per_image, image @ text.t() / 0.05, atol=1e-5)


def test_itm_never_pairs_rows_that_share_an_image():
    model = tiny_model()
    batch = training_batch()
    image_ids = torch.tensor([0, 0, 1, 1])
    grounded_inputs = []

    def record(module, args, kwargs):
        if kwargs.get("image_embeds") is not None and not kwargs.get("causal"):
            grounded_inputs.append((args[0], kwargs["image_embeds"]))

    handle = model.text_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for seed in range(5):
            torch.manual_seed(seed)
            out = model(**batch, image_ids=image_ids)
    finally:
        handle.remove()
    assert out.itm_labels.tolist() == [1.0] * 4 + [0.0] * 8
    image_embeds = out.image_embeds
    enc_ids = batch["itc_input_ids"].clone()
    enc_ids[:, 0] = ENC
    for texts, images in grounded_inputs:
        assert texts.shape[0] == 12
        for row in range(12):
            text_row = next(i for i in range(4) if torch.equal(texts[row], enc_ids[i]))
            image_row = next(i for i in range(4) if torch.equal(images[row], image_embeds[i]))
            if row < 4:
                assert text_row == image_row == row
            else:
                assert image_ids[text_row] != image_ids[image_row]

    out = model(**batch, image_ids=torch.tensor([5, 5, 5, 5]))  # a single image: no negative exists
    assert out.itm_labels.tolist() == [1.0] * 4
    assert torch.isfinite(out.loss)


# ---------------------------------------------------------------------------------------------------
# Ablations


def _decoder_logits(model, pixel_values, input_ids):
    with torch.no_grad():
        return model(pixel_values=pixel_values, input_ids=input_ids).logits


def test_without_itc_and_without_itm():
    full = tiny_model()
    no_itc = tiny_model(use_itc=False)
    no_itm = tiny_model(use_itm=False)
    assert no_itc.vision_projection is None and no_itc.itc_temperature is None
    assert no_itm.itm_head is None
    assert sum(p.numel() for p in no_itc.parameters()) < sum(p.numel() for p in full.parameters())
    batch = training_batch()
    out = no_itc(**batch)
    assert out.loss_itc is None and out.loss_itm is not None  # ITM negatives then come uniformly
    assert torch.allclose(out.loss, out.loss_itm + out.loss_lm)
    out = no_itm(**batch)
    assert out.loss_itm is None and out.loss_itc is not None
    assert torch.allclose(out.loss, out.loss_itc + out.loss_lm)


def test_without_self_attention_text_tokens_do_not_mix():
    batch = training_batch()
    ids = batch["itc_input_ids"]
    changed = ids.clone()
    changed[:, 3] = (changed[:, 3] + 1 - 8) % (VOCAB - 8) + 8
    for use_self_attention, mixes in ((True, True), (False, False)):
        model = tiny_model(use_self_attention=use_self_attention).eval()
        with torch.no_grad():
            before, after = model.text_model(ids)[:, 0], model.text_model(changed)[:, 0]
        assert (not torch.allclose(before, after)) == mixes
    assert all(layer.self_attention is None for layer in tiny_model(use_self_attention=False).text_model.layers)


def test_without_cross_attention_the_decoder_ignores_the_image():
    batch = training_batch()
    other_images = torch.randn_like(batch["pixel_values"])
    for use_cross_attention, sees_image in ((True, True), (False, False)):
        model = tiny_model(use_cross_attention=use_cross_attention).eval()
        first = _decoder_logits(model, batch["pixel_values"], batch["input_ids"])
        second = _decoder_logits(model, other_images, batch["input_ids"])
        assert (not torch.allclose(first, second)) == sees_image
    model = tiny_model(use_cross_attention=False)
    assert all(layer.cross_attention is None for layer in model.text_model.layers)


def test_without_causal_self_attention_positions_do_not_see_earlier_tokens():
    batch = training_batch()
    ids = batch["input_ids"]
    changed = ids.clone()
    changed[:, 2] = (changed[:, 2] + 1 - 8) % (VOCAB - 8) + 8
    for use_causal, sees_past in ((True, True), (False, False)):
        model = tiny_model(use_causal_self_attention=use_causal).eval()
        first = _decoder_logits(model, batch["pixel_values"], ids)[:, 4]
        second = _decoder_logits(model, batch["pixel_values"], changed)[:, 4]
        assert (not torch.allclose(first, second)) == sees_past


def test_the_decoder_is_causal():
    model = tiny_model().eval()
    batch = training_batch()
    ids = batch["input_ids"]
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1 - 8) % (VOCAB - 8) + 8
    first = _decoder_logits(model, batch["pixel_values"], ids)
    second = _decoder_logits(model, batch["pixel_values"], changed)
    assert torch.allclose(first[:, :8], second[:, :8], atol=1e-6)
    assert not torch.allclose(first[:, 8:], second[:, 8:])


# ---------------------------------------------------------------------------------------------------
# Generation and classification


def _prompts():
    """Two left-padded prompts of different lengths: [DEC] question [SEP]."""
    input_ids = torch.tensor([[PAD, PAD, DEC, 10, 11, SEP], [DEC, 12, 13, 14, 15, SEP]])
    return input_ids, (input_ids != PAD).long()


def test_generate_with_cache_equals_generate_without():
    model = tiny_model().eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    input_ids, attention_mask = _prompts()
    common = dict(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=6, min_new_tokens=6)
    greedy = model.generate(**common)
    assert greedy.shape == (2, 12) and torch.equal(greedy[:, :6], input_ids)
    assert torch.equal(greedy, model.generate(**common, use_cache=False))
    beams = model.generate(**common, num_beams=3)
    assert torch.equal(beams, model.generate(**common, num_beams=3, use_cache=False))
    torch.manual_seed(3)
    sampled = model.generate(**common, do_sample=True, top_k=20)
    torch.manual_seed(3)
    assert torch.equal(sampled, model.generate(**common, do_sample=True, top_k=20, use_cache=False))


def test_cached_decoding_matches_the_full_forward_pass():
    model = tiny_model().eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    input_ids, attention_mask = _prompts()
    continuation = torch.tensor([[20, 21, 22, 23, 24], [30, 31, 32, 33, 34]])
    full_ids = torch.cat([input_ids, continuation], 1)
    full_mask = torch.cat([attention_mask, torch.ones_like(continuation)], 1)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, input_ids=full_ids, attention_mask=full_mask).logits
        image_embeds = model.vision_model(pixel_values)
        out = model(image_embeds=image_embeds, input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        steps = [out.logits]
        cache = out.past_key_values  # `cache` from transformers 5.24; the old name still reads it
        for index in range(continuation.shape[1]):  # one token at a time, as generate() does
            length = input_ids.shape[1] + index + 1
            out = model(image_embeds=image_embeds, input_ids=full_ids[:, length - 1 : length], attention_mask=full_mask[:, :length], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
    real = full_mask.bool()
    assert torch.allclose(torch.cat(steps, 1)[real], expected[real], atol=1e-5)


@pytest.mark.parametrize(
    "ablation",
    [{"use_self_attention": False}, {"use_cross_attention": False}, {"use_causal_self_attention": False}, {"use_itc": False, "use_itm": False}],
)
def test_every_ablation_generates_and_classifies(ablation):
    model = tiny_model(**ablation).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    input_ids, attention_mask = _prompts()
    common = dict(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=4, min_new_tokens=4)
    assert torch.equal(model.generate(**common), model.generate(**common, use_cache=False))
    assert model.generate(**common, num_beams=2).shape == (2, 10)
    assert model.classify(pixel_values, _WordTokenizer()).shape == (2, 10)


def test_generate_continues_the_prompt_like_the_forward_pass():
    model = tiny_model().eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    input_ids, attention_mask = _prompts()
    generated = model.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=1, min_new_tokens=1)
    with torch.no_grad():
        logits = model(pixel_values=pixel_values[1:], input_ids=input_ids[1:], attention_mask=attention_mask[1:]).logits
    assert generated[1, -1].item() == logits[0, -1].argmax().item()
    # left padding does not change the answer of the short prompt
    with torch.no_grad():
        alone = model(pixel_values=pixel_values[:1], input_ids=input_ids[:1, 2:]).logits
    assert generated[0, -1].item() == alone[0, -1].argmax().item()


class _WordTokenizer:
    """A stand-in tokenizer: one id per word, from a fixed table (hand-made, for the test only)."""

    def __init__(self):
        self.ids = {}

    def __call__(self, text, add_special_tokens=False):
        def encode(sentence):
            return [8 + self.ids.setdefault(word, len(self.ids)) % (VOCAB - 8) for word in sentence.split()]

        return {"input_ids": encode(text) if isinstance(text, str) else [encode(t) for t in text]}


def test_classify_likelihood_ranks_candidates_by_length_normalised_likelihood():
    model = tiny_model().eval()
    tokenizer = _WordTokenizer()
    pixel_values = torch.randn(2, 3, 32, 32)
    probs = model.classify(pixel_values, tokenizer, method="likelihood")
    assert probs.shape == (2, 10) and torch.allclose(probs.sum(-1), torch.ones(2))

    # brute force: every full sequence through the plain forward pass, no cache
    question = tokenizer(CLASSIFICATION_QUESTION)["input_ids"]
    names = [model.config.id2label[i].replace("_", " ").lower() for i in range(10)]
    scores = torch.zeros(2, 10)
    for index, answer in enumerate(tokenizer(names)["input_ids"]):
        target = answer + [EOS]
        ids = torch.tensor([[DEC, *question, SEP, *target]]).expand(2, -1)
        with torch.no_grad():
            logprobs = model(pixel_values=pixel_values, input_ids=ids).logits.log_softmax(-1)
        start = len(question) + 2
        picked = logprobs[:, start - 1 : -1].gather(-1, ids[:, start:, None]).squeeze(-1)
        scores[:, index] = picked.mean(-1)
    assert torch.allclose(probs, scores.softmax(-1), atol=1e-5), (probs - scores.softmax(-1)).abs().max()


# ---------------------------------------------------------------------------------------------------
# Gradient checkpointing and initialisation from pre-trained components


def test_gradient_checkpointing_gives_the_same_gradients():
    batch = training_batch()
    grads = []
    for checkpointing in (False, True):
        model = tiny_model()
        model.train()
        if checkpointing:
            # transformers >= 5.?: activation_checkpointing_enable (gradient_checkpointing_enable is its deprecated alias)
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
            assert all(layer.gradient_checkpointing for layer in model.text_model.layers)
        torch.manual_seed(1)  # same ITM negatives
        model(**batch).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A tiny ViTModel and a tiny BertModel + BERT tokenizer, saved locally the way the Hub stores them."""
    from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48), add_pooling_layer=False)
    vit.save_pretrained(root / "vit")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += "the of what type is this nanomaterial nanowires particles fibres powder tips ? .".split()
    words += [chr(c) for c in range(97, 123)] + ["##" + chr(c) for c in range(97, 123)]
    tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(words)})
    tokenizer.save_pretrained(root / "bert")
    bert = BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40, max_position_embeddings=40), add_pooling_layer=False)
    bert.save_pretrained(root / "bert")
    return root, vit.eval(), bert.eval(), len(words)


def test_initialisation_from_vit_and_bert_checkpoints(tiny_checkpoints):
    root, vit, bert, bert_vocab_size = tiny_checkpoints
    model = MVaEMaForQuestionAnswering.from_pretrained_components(
        vision_model_name_or_path=str(root / "vit"),
        text_model_name_or_path=str(root / "bert"),
        vision_config={"image_size": 32},  # the checkpoint's own resolution: outputs must match exactly
    ).eval()
    assert model.config.vision_config.hidden_size == 24 and model.config.text_config.hidden_size == 32
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.vision_model(pixel_values), vit(pixel_values).last_hidden_state, atol=1e-5)
        ids = torch.tensor([[2, 8, 9, 10, 3, 0], [2, 11, 12, 13, 14, 3]])  # [CLS] ... [SEP], right-padded
        mask = (ids != 0).long()
        ours = model.text_model(ids, mask)
        theirs = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.allclose(ours[mask.bool()], theirs[mask.bool()], atol=1e-5)
        # the decoder's causal self-attention starts from the same BERT weights
        layer = model.text_model.layers[0]
        assert torch.equal(layer.causal_self_attention.attention.qkv.weight, layer.self_attention.attention.qkv.weight)

    text = model.config.text_config
    assert text.vocab_size == bert_vocab_size + 3  # BERT vocabulary + [ENC], [DEC], [EOS]
    assert (text.cls_token_id, text.sep_token_id, text.pad_token_id) == (2, 3, 0)
    assert len({text.enc_token_id, text.bos_token_id, text.eos_token_id}) == 3 and min(text.enc_token_id, text.bos_token_id, text.eos_token_id) >= bert_vocab_size
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()

    model.train()
    batch = training_batch(batch_size=2)
    batch["pixel_values"] = pixel_values
    batch = {k: v[:2] for k, v in batch.items()}
    for key in ("input_ids", "itc_input_ids"):
        batch[key] = batch[key].clamp(max=text.vocab_size - 1)
    batch["input_ids"][:, 0] = text.bos_token_id
    model(**batch).loss.backward()


def test_vit_positions_are_resized_to_the_processor_resolution(tiny_checkpoints):
    root, vit, _, _ = tiny_checkpoints
    model = MVaEMaForQuestionAnswering.from_pretrained_components(vision_model_name_or_path=str(root / "vit")).eval()
    assert model.config.vision_config.image_size == 224 and model.config.vision_config.patch_size == 8
    positions = model.vision_model.embeddings.position_embedding
    assert positions.shape == (1, 1 + 28 * 28, 24)
    assert torch.equal(positions[:, 0], vit.embeddings.position_embeddings[:, 0])  # [CLS] kept
    with torch.no_grad():
        assert model.vision_model(torch.randn(1, 3, 224, 224)).shape == (1, 785, 24)


def test_bad_inputs_get_clear_errors():
    model = tiny_model()
    batch = training_batch()
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        model(pixel_values=torch.randn(2, 3, 64, 64), input_ids=batch["input_ids"][:2])
    with pytest.raises(ValueError, match="labels must have the same shape"):
        model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], labels=batch["labels"][:, :5])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(pixel_values=batch["pixel_values"], input_ids=torch.full((4, 60), 9))
    with pytest.raises(ValueError, match="3 images"):
        model(pixel_values=batch["pixel_values"][:3], input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="use_itc=False"):
        tiny_model(use_itc=False).get_image_features(batch["pixel_values"])


def test_hidden_states_and_attentions_follow_transformers_conventions():
    model = tiny_model().eval()
    batch = training_batch()
    prompt = {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask")}
    with torch.no_grad():
        plain = model(**prompt)
        recorded = model(**prompt, output_hidden_states=True, output_attentions=True)
    assert plain.hidden_states is plain.attentions is plain.cross_attentions is None
    assert torch.allclose(recorded.logits, plain.logits, atol=1e-5)  # explicit weights give SDPA's result
    layers, length = model.config.text_config.num_hidden_layers, batch["input_ids"].shape[1]
    assert len(recorded.hidden_states) == layers + 1 and recorded.hidden_states[0].shape == (4, length, 32)
    assert len(recorded.attentions) == len(recorded.cross_attentions) == layers
    self_attention, cross_attention = recorded.attentions[0], recorded.cross_attentions[0]
    assert self_attention.shape == (4, 2, length, length) and cross_attention.shape == (4, 2, length, 1 + 16)
    assert torch.allclose(self_attention.sum(-1), torch.ones(4, 2, length)) and torch.allclose(cross_attention.sum(-1), torch.ones(4, 2, length))
    assert self_attention[..., 0, 1:].abs().max() == 0  # causal: the first position sees only itself
    assert self_attention[1, :, :12, 12:].abs().max() == 0  # row 1 is padded from 12: no real token attends there
    assert len(recorded.vision_hidden_states) == 3 and recorded.vision_hidden_states[-1].shape == (4, 17, 24)
    assert recorded.vision_attentions[0].shape == (4, 2, 17, 17)

    generated = model.generate(**prompt, max_new_tokens=3, output_attentions=True, return_dict_in_generate=True)
    assert len(generated.attentions) == generated.sequences.shape[1] - length  # one entry per generated token
    assert generated.attentions[-1][0].shape[-2:] == (1, generated.sequences.shape[1] - 1)  # a cached step's query


def test_output_attentions_with_image_embeds_records_only_the_decoder():
    model = tiny_model().eval()
    batch = training_batch()
    with torch.no_grad():
        image_embeds = model.get_image_embeds(batch["pixel_values"])
        out = model(image_embeds=image_embeds, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
    assert out.vision_attentions is None and len(out.cross_attentions) == 2
