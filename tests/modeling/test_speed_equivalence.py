"""The speed work (issue 13) restructured MVaEMa's and HNF's computation without changing what they compute.

Each test runs the current code beside a frozen copy of the implementation before that work
(tests/modeling/reference/) with the same weights and the same random draws, and checks that the losses,
outputs, gradients and generated tokens agree.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from emvision.modeling import MVaEMaForQuestionAnswering
from tiny_models import tiny_mvaema_config

REFERENCE = Path(__file__).resolve().parent / "reference"
PAD, CLS, SEP, ENC, DEC, EOS = 0, 2, 3, 5, 6, 7


def _load_reference(name: str):
    spec = importlib.util.spec_from_file_location(f"reference_{name}", REFERENCE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference_mvaema():
    return _load_reference("mvaema_before_speed")


def _pair(reference_module, **overrides):
    torch.manual_seed(0)
    current = MVaEMaForQuestionAnswering(tiny_mvaema_config(**overrides))
    previous = reference_module.MVaEMaForQuestionAnswering(current.config)
    previous.load_state_dict(current.state_dict())
    return current, previous


def _training_batch(batch_size=5, seed=0, vocab=64):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(8, vocab, (batch_size, 16), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (question, length) in enumerate([(5, 16), (7, 14), (4, 11), (6, 15), (9, 13)][:batch_size]):
        input_ids[row, 0], input_ids[row, question] = DEC, SEP
        input_ids[row, length - 1] = EOS
        input_ids[row, length:] = PAD
        attention_mask[row, length:] = 0
        labels[row, question + 1 : length] = input_ids[row, question + 1 : length]
    itc_input_ids = torch.randint(8, vocab, (batch_size, 9), generator=generator)
    itc_input_ids[:, 0], itc_input_ids[:, -1] = CLS, SEP
    itc_attention_mask = torch.ones_like(itc_input_ids)
    itc_attention_mask[1, 6:] = 0
    return dict(
        pixel_values=torch.randn(batch_size, 3, 32, 32, generator=generator),
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        itc_input_ids=itc_input_ids,
        itc_attention_mask=itc_attention_mask,
        image_ids=torch.tensor([0, 1, 2, 2, 3][:batch_size]),
    )


def _losses_and_gradients(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same ITM negatives
    out = model(**batch)
    out.loss.backward()
    losses = {name: getattr(out, name) for name in ("loss", "loss_itc", "loss_itm", "loss_lm") if getattr(out, name) is not None}
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return losses, grads, out


@pytest.mark.parametrize(
    "overrides",
    [{}, {"use_itc": False, "use_itm": False}, {"use_itc": False}, {"use_self_attention": False},
     {"use_cross_attention": False}, {"use_causal_self_attention": False}],
    ids=["paper", "lm-only", "no-itc", "no-self-attention", "no-cross-attention", "no-causal"],
)
def test_mvaema_training_step_equals_the_previous_implementation(reference_mvaema, overrides):
    current, previous = _pair(reference_mvaema, **overrides)
    batch = _training_batch()
    losses, grads, out = _losses_and_gradients(current, batch)
    expected_losses, expected_grads, expected = _losses_and_gradients(previous, batch)
    assert losses.keys() == expected_losses.keys()
    for name in losses:
        assert torch.allclose(losses[name], expected_losses[name], atol=1e-6), name
    if expected.itm_logits is not None:
        assert torch.allclose(out.itm_logits, expected.itm_logits, atol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], expected_grads[name], atol=1e-6, rtol=1e-4), name


def test_mvaema_encoders_and_recorded_outputs_equal_the_previous_implementation(reference_mvaema):
    current, previous = _pair(reference_mvaema)
    batch = _training_batch()
    current.eval(), previous.eval()
    with torch.no_grad():
        for method in ("get_text_features",):
            assert torch.allclose(getattr(current, method)(batch["itc_input_ids"], batch["itc_attention_mask"]),
                                  getattr(previous, method)(batch["itc_input_ids"], batch["itc_attention_mask"]), atol=1e-6)
        args = dict(input_ids=batch["itc_input_ids"], attention_mask=batch["itc_attention_mask"], pixel_values=batch["pixel_values"])
        assert torch.allclose(current.image_text_matching(**args), previous.image_text_matching(**args), atol=1e-6)
        decoder = {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask")}
        out = current(**decoder, output_hidden_states=True, output_attentions=True)
        expected = previous(**decoder, output_hidden_states=True, output_attentions=True)
        real = batch["attention_mask"].bool()
        assert torch.allclose(out.logits[real], expected.logits[real], atol=1e-5)
        for name in ("hidden_states", "attentions", "cross_attentions", "vision_hidden_states"):
            for mine, theirs in zip(getattr(out, name), getattr(expected, name), strict=True):
                assert torch.allclose(mine, theirs, atol=1e-5), name
        last = current(**decoder, logits_to_keep=1).logits
        assert torch.allclose(last, expected.logits[:, -1:], atol=1e-5)


def _prompts():
    input_ids = torch.tensor([[PAD, PAD, DEC, 10, 11, SEP], [DEC, 12, 13, 14, 15, SEP], [PAD, DEC, 16, 17, 18, SEP]])
    return input_ids, (input_ids != PAD).long()


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(num_beams=3), dict(do_sample=True, top_k=20), dict(use_cache=False), dict(max_new_tokens=9, min_new_tokens=0),
     dict(repetition_penalty=1.3), dict(num_beams=2, num_return_sequences=2)],
    ids=["greedy", "beam", "sample", "no-cache", "eos", "repetition-penalty", "beams-returned"],
)
def test_mvaema_generate_equals_the_previous_implementation(reference_mvaema, settings):
    current, previous = _pair(reference_mvaema)
    current.eval(), previous.eval()
    input_ids, attention_mask = _prompts()
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    common = dict(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=7, min_new_tokens=7)
    common.update(settings)
    torch.manual_seed(3)
    generated = current.generate(**common)
    torch.manual_seed(3)
    expected = previous.generate(**common)
    assert torch.equal(generated, expected)


@pytest.mark.parametrize("repetition_penalty", [None, 3.0])
@pytest.mark.parametrize("min_new_tokens", [0, 3, 12])
@pytest.mark.parametrize("padded", [True, False])
def test_fast_greedy_loop_equals_the_generation_mixin_loop(min_new_tokens, padded, repetition_penalty):
    """The short greedy loop against GenerationMixin's, on a model whose [EOS] comes early (biased LM head), with and
    without a repetition penalty."""
    torch.manual_seed(0)
    model = MVaEMaForQuestionAnswering(tiny_mvaema_config()).eval()
    with torch.no_grad():
        model.lm_head.bias[EOS] += 3.0  # some rows stop early: padding after [EOS], early exit when all stop
        if repetition_penalty:
            model.lm_head.bias[30] += 0.5  # a token the model would repeat unless penalised
    input_ids, attention_mask = _prompts()
    if not padded:
        input_ids, attention_mask = input_ids[1:2].repeat(3, 1), attention_mask[1:2].repeat(3, 1)
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    common = dict(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=12,
                  min_new_tokens=min_new_tokens)
    if repetition_penalty:
        common["repetition_penalty"] = repetition_penalty
    assert model._plain_greedy({k: v for k, v in common.items() if k in ("max_new_tokens", "min_new_tokens", "repetition_penalty")})
    fast, slow = model.generate(**common), model.generate(**common, fast_greedy=False)
    assert torch.equal(fast, slow)
    if repetition_penalty and min_new_tokens:  # the penalty changed the answers (so the comparison above covered it)
        assert not torch.equal(fast, model.generate(**{**common, "repetition_penalty": 1.0}))
    if min_new_tokens == 0:
        assert (fast == PAD).any() or fast.shape[1] < input_ids.shape[1] + 12  # [EOS] did end some rows


def test_fast_greedy_breaks_ties_as_the_generation_mixin_loop_does():
    """Two vocabulary rows with the same weights and bias always tie for the maximum: both loops take the first."""
    torch.manual_seed(0)
    model = MVaEMaForQuestionAnswering(tiny_mvaema_config()).eval()
    with torch.no_grad():
        model.lm_head.weight[41] = model.lm_head.weight[40]
        model.lm_head.bias[40] = model.lm_head.bias[41] = model.lm_head.bias.max() + 50.0
    input_ids, attention_mask = _prompts()
    common = dict(pixel_values=torch.randn(3, 3, 32, 32), input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=4)
    fast, slow = model.generate(**common), model.generate(**common, fast_greedy=False)
    assert torch.equal(fast, slow) and (fast[:, input_ids.shape[1]:] == 40).all()


def test_greedy_ids_are_ordinary_tensors_that_a_training_step_can_use():
    """The short loop runs under inference mode; the ids it returns must still serve as the input of a training step
    (answers generated for self-training, say): autograd saves the ids of an embedding lookup, and refuses
    inference tensors."""
    torch.manual_seed(0)
    model = MVaEMaForQuestionAnswering(tiny_mvaema_config()).eval()
    input_ids, attention_mask = _prompts()
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    generated = model.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=5,
                               min_new_tokens=5)
    assert generated.shape == (3, input_ids.shape[1] + 5) and not generated.is_inference()
    model.train()
    mask = torch.cat([attention_mask, torch.ones(3, 5, dtype=attention_mask.dtype)], dim=1)
    labels = torch.full_like(generated, -100)
    labels[:, input_ids.shape[1]:] = generated[:, input_ids.shape[1]:]
    model(pixel_values=pixel_values, input_ids=generated, attention_mask=mask, labels=labels).loss.backward()
    assert model.text_model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_fast_greedy_step_logits_are_bit_identical_to_the_forward_pass():
    torch.manual_seed(0)
    model = MVaEMaForQuestionAnswering(tiny_mvaema_config()).eval()
    input_ids, attention_mask = _prompts()
    image_embeds = model.vision_model(torch.randn(3, 3, 32, 32))
    from emvision.modeling.modeling_mvaema import new_mvaema_cache

    with torch.no_grad():
        caches = [new_mvaema_cache(20), new_mvaema_cache(20)]
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        for cache in caches:
            model(image_embeds=image_embeds, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  cache=cache, use_cache=True, logits_to_keep=1)
        bias = torch.zeros(3, 1, 1, 20).masked_fill_(torch.nn.functional.pad(attention_mask == 0, (0, 14))[:, None, None], float("-inf"))
        tokens, mask = torch.tensor([20, 21, 22]), attention_mask
        for step in range(4):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
            positions = position_ids[:, -1] + 1 + step
            expected = model(image_embeds=image_embeds, input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                             cache=caches[0], use_cache=True).logits[:, -1]
            hidden = model.text_model.decode_step(tokens, positions, caches[1], bias)
            assert torch.equal(model.lm_head(model.lm_transform(hidden))[:, -1], expected)
            tokens = expected.argmax(-1)


def test_non_greedy_settings_and_lora_style_wrappers_take_the_generation_mixin_loop():
    torch.manual_seed(0)
    model = MVaEMaForQuestionAnswering(tiny_mvaema_config()).eval()
    assert model._plain_greedy({"max_new_tokens": 4})
    for kwargs in ({"num_beams": 2}, {"do_sample": True}, {"no_repeat_ngram_size": 2}, {"output_scores": True}):
        assert not model._plain_greedy({"max_new_tokens": 4, **kwargs})
    model.generation_config.no_repeat_ngram_size = 2
    assert not model._plain_greedy({"max_new_tokens": 4})
    model.generation_config.no_repeat_ngram_size = None
    layer = model.text_model.layers[0].causal_self_attention.attention

    class Wrapped(torch.nn.Linear):
        pass

    wrapped = Wrapped(layer.qkv.in_features, layer.qkv.out_features)
    layer.qkv = wrapped
    assert not model._plain_greedy({"max_new_tokens": 4})


@pytest.fixture(scope="module")
def reference_hnf_ode():
    return _load_reference("hnf_ode_before_speed")


@pytest.mark.parametrize("method,steps", [("rk4", 1), ("rk4", 2), ("midpoint", 1), ("midpoint", 3), ("euler", 1), ("euler", 2), ("dopri5", 1)])
@pytest.mark.parametrize("keep", [slice(None), slice(-1, None), -1])
def test_hnf_ode_equals_the_previous_implementation(reference_hnf_ode, method, steps, keep):
    """Batched directions and the pruned last stage: same end states and gradients as torchdiffeq on two fields."""
    from tiny_models import tiny_hnf_config

    from emvision.modeling.hnf_ode import HNFBidirectionalODE

    config = tiny_hnf_config(ode_method=method, ode_steps=steps, ode_rtol=1e-6, ode_atol=1e-6)
    torch.manual_seed(0)
    current = HNFBidirectionalODE(config)
    with torch.no_grad():  # non-trivial time vectors and norms
        for parameter in current.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    previous = reference_hnf_ode.HNFBidirectionalODE(config)
    previous.load_state_dict(current.state_dict())
    tokens = torch.randn(3, 17, config.hidden_size)
    results = []
    for ode in (current, previous):
        ode.train()
        inputs = tokens.clone().requires_grad_()
        out = ode(inputs, keep=keep)
        out.square().sum().backward()
        grads = {name: p.grad for name, p in ode.named_parameters()}
        results.append((out.detach(), inputs.grad, grads))
    (out, input_grad, grads), (expected, expected_input_grad, expected_grads) = results
    tolerance = dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out, expected, **tolerance)
    torch.testing.assert_close(input_grad, expected_input_grad, **tolerance)
    for name in expected_grads:
        torch.testing.assert_close(grads[name], expected_grads[name], **tolerance, msg=name)


def test_hnf_model_outputs_and_gradients_equal_the_previous_ode(reference_hnf_ode, monkeypatch):
    """The whole classifier with the current ODE against the same weights with the previous one."""
    from tiny_models import tiny_hnf_config

    from emvision.modeling import HNFForImageClassification
    from emvision.modeling import modeling_hnf

    config = tiny_hnf_config()
    pixel_values, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    results = []
    for ode_class in (modeling_hnf.HNFBidirectionalODE, reference_hnf_ode.HNFBidirectionalODE):
        monkeypatch.setattr(modeling_hnf, "HNFBidirectionalODE", ode_class)
        torch.manual_seed(0)
        model = HNFForImageClassification(config).train()
        out = model(pixel_values=pixel_values, labels=labels, output_hidden_states=True)
        out.loss.backward()
        results.append((out, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}))
    (out, grads), (expected, expected_grads) = results
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-4)
    for mine, theirs in zip(out.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], atol=1e-5, rtol=1e-4, msg=name)
