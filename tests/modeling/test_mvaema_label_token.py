"""MVaEMa's class token (`image_label_token`): the class head's own prediction as one more image token for the
text side; it follows the prediction, is trained by the answer loss without moving the head, survives saving, and
is refused without a class head."""

import pytest
import torch

from emvision.modeling import MVaEMaConfig, MVaEMaForQuestionAnswering
from tiny_models import tiny_mvaema_config


def label_token_model() -> MVaEMaForQuestionAnswering:
    torch.manual_seed(0)
    return MVaEMaForQuestionAnswering(tiny_mvaema_config(image_label_loss_weight=1.0, image_label_token=True))


def test_the_class_token_is_the_predicted_mixture_of_class_embeddings():
    model = label_token_model().eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = model.get_image_embeds(pixels)
        patches = model.vision_model(pixels)
        assert tokens.shape == (3, patches.shape[1] + 1, patches.shape[2])
        assert torch.equal(tokens[:, :-1], patches)  # [CLS] and patches untouched, class token last
        probabilities = model.image_label_head(patches[:, 0]).softmax(-1)
        torch.testing.assert_close(tokens[:, -1], probabilities @ model.image_label_embeddings)
        # a head that is sure of class 4 gives exactly class 4's embedding
        model.image_label_head.weight.zero_()
        model.image_label_head.bias.fill_(-30.0)[4] = 30.0
        torch.testing.assert_close(model.get_image_embeds(pixels)[:, -1], model.image_label_embeddings[4].expand(3, -1))


def test_the_answer_loss_trains_the_class_embeddings_but_not_the_head():
    model = label_token_model().train()
    config = model.config.text_config
    input_ids = torch.tensor([[config.bos_token_id, 7, 8, config.sep_token_id, 9, 10, config.eos_token_id]] * 2)
    labels = input_ids.clone()
    labels[:, :4] = -100
    output = model(pixel_values=torch.randn(2, 3, 32, 32), input_ids=input_ids, labels=labels)
    output.loss_lm.backward()
    assert model.image_label_embeddings.grad is not None and model.image_label_embeddings.grad.abs().sum() > 0
    assert model.image_label_head.weight.grad is None  # the head learns from its class loss alone
    assert output.image_embeds.shape[1] == 1 + 16 + 1


def test_generation_paths_agree_and_the_token_is_saved(tmp_path):
    model = label_token_model().eval()
    pixels = torch.randn(2, 3, 32, 32)
    config = model.config.text_config
    prompt = torch.tensor([[config.bos_token_id, 5, 6, config.sep_token_id]] * 2)
    fast = model.generate(pixel_values=pixels, input_ids=prompt, max_new_tokens=6)
    slow = model.generate(pixel_values=pixels, input_ids=prompt, max_new_tokens=6, fast_greedy=False)
    assert torch.equal(fast, slow)
    model.save_pretrained(tmp_path)
    reloaded = MVaEMaForQuestionAnswering.from_pretrained(tmp_path).eval()
    assert reloaded.config.image_label_token
    assert torch.equal(reloaded.image_label_embeddings, model.image_label_embeddings)
    assert torch.equal(reloaded.generate(pixel_values=pixels, input_ids=prompt, max_new_tokens=6), fast)


def test_the_class_token_needs_a_class_head():
    with pytest.raises(ValueError, match="image_label_token reads the class head's prediction"):
        MVaEMaConfig(image_label_token=True)


def test_the_class_condition_reaches_every_decoder_input_and_both_decoding_loops_agree():
    torch.manual_seed(0)
    model = MVaEMaForQuestionAnswering(tiny_mvaema_config(image_label_loss_weight=1.0, image_label_token=True,
                                                          image_label_condition=True)).eval()
    config = model.config.text_config
    pixels = torch.randn(3, 3, 32, 32)
    prompt = torch.tensor([[0, config.bos_token_id, 5, config.sep_token_id]] + [[config.bos_token_id, 5, 6, config.sep_token_id]] * 2)
    mask = (prompt != 0).long()  # the first prompt is left-padded
    for penalty in (1.0, 1.3):
        fast = model.generate(pixel_values=pixels, input_ids=prompt, attention_mask=mask, max_new_tokens=8, repetition_penalty=penalty)
        slow = model.generate(pixel_values=pixels, input_ids=prompt, attention_mask=mask, max_new_tokens=8, repetition_penalty=penalty,
                              fast_greedy=False)
        assert torch.equal(fast, slow)
    # the condition changes what the decoder sees: with its projection zeroed the logits move
    with torch.no_grad():
        before = model(pixel_values=pixels, input_ids=prompt, attention_mask=mask).logits
        model.image_label_condition.weight.zero_()
        model.image_label_condition.bias.zero_()
        after = model(pixel_values=pixels, input_ids=prompt, attention_mask=mask).logits
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match="image_label_condition adds the class token"):
        MVaEMaConfig(image_label_loss_weight=1.0, image_label_condition=True)
