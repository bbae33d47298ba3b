"""MVaEMa's zero-shot classification methods and its auxiliary image-label loss, on tiny configs."""

import pytest
import torch
import torch.nn.functional as F

from emvision.modeling import MVaEMaForQuestionAnswering
from emvision.vocabulary import BASICS_ANSWER_TEMPLATES, BASICS_QUESTION
from tiny_models import tiny_mvaema_config
from test_mvaema_model import CLS, DEC, SEP, PAD, _WordTokenizer


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return MVaEMaForQuestionAnswering(tiny_mvaema_config(**overrides)).eval()


def test_default_zero_shot_is_itc_retrieval_against_class_text_prototypes():
    model, tokenizer = tiny_model(), _WordTokenizer()
    pixel_values = torch.randn(3, 3, 32, 32)
    texts = [["a powder of grains", "the image shows a powder"], ["long fibres", "a mat of fibres"], ["round pores in a film"]]
    probs = model.classify(pixel_values, tokenizer, class_texts=texts)
    # by hand: mean of the normalised [CLS] text ... [SEP] features per class, cosine / temperature, softmax
    with torch.no_grad():
        prototypes = []
        for class_texts in texts:
            features = [model.get_text_features(torch.tensor([[CLS, *tokenizer(t)["input_ids"], SEP]])) for t in class_texts]
            prototypes.append(F.normalize(torch.cat(features).mean(0), dim=-1))
        image = model.get_image_features(pixel_values)
        expected = (image @ torch.stack(prototypes).t() / model.itc_temperature).softmax(-1)
    assert torch.allclose(probs, expected, atol=1e-5)
    reranked = model.classify(pixel_values, tokenizer, class_texts=texts, rerank_top_k=2)
    assert torch.allclose(reranked.sum(-1), torch.ones(3)) and ((reranked > 0).sum(-1) == 2).all()
    # a model without ITM (the fast recipe's) retrieves through ITC alone, and says so when asked to re-rank
    no_itm = tiny_model(use_itm=False)
    assert no_itm.classify(pixel_values, tokenizer, class_texts=texts).shape == (3, 3)
    with pytest.raises(ValueError, match="use_itm=False"):
        no_itm.classify(pixel_values, tokenizer, class_texts=texts, rerank_top_k=2)


def test_without_itc_zero_shot_scores_the_names_inside_the_basics_answer_openings():
    model, tokenizer = tiny_model(use_itc=False, use_itm=False), _WordTokenizer()
    pixel_values = torch.randn(2, 3, 32, 32)
    names = ["a powder", "fibres", "a tip"]
    probs = model.classify(pixel_values, tokenizer, candidates=names)
    assert torch.allclose(probs, model.classify(pixel_values, tokenizer, candidates=names, method="answer_form"))
    # by hand: log of the summed likelihood of every opening after [DEC] Basics question [SEP]
    question = tokenizer(BASICS_QUESTION)["input_ids"]
    scores = torch.zeros(2, len(names), len(BASICS_ANSWER_TEMPLATES))
    for c, name in enumerate(names):
        for t, template in enumerate(BASICS_ANSWER_TEMPLATES):
            opening = tokenizer(template.format(name))["input_ids"]
            ids = torch.tensor([[DEC, *question, SEP, *opening]]).expand(2, -1)
            with torch.no_grad():
                logprobs = model(pixel_values=pixel_values, input_ids=ids).logits.log_softmax(-1)
            start = len(question) + 2
            scores[:, c, t] = logprobs[:, start - 1 : -1].gather(-1, ids[:, start:, None]).squeeze(-1).sum(-1)
    assert torch.allclose(probs, scores.logsumexp(-1).softmax(-1), atol=1e-5)
    with pytest.raises(ValueError, match="unknown classify method 'nearest'"):
        model.classify(pixel_values, tokenizer, candidates=names, method="nearest")
    with pytest.raises(ValueError, match="use_itc=False"):
        model.classify(pixel_values, tokenizer, candidates=names, method="retrieval")


def test_image_label_loss_teaches_the_image_cls_the_training_classes():
    model = tiny_model(image_label_loss_weight=2.0).train()
    pixel_values = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    first = model(pixel_values=pixel_values, image_labels=labels)
    assert first.loss.item() == pytest.approx(2.0 * first.loss_image_label.item())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(pixel_values=pixel_values, image_labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model.image_label_head(model.get_image_embeds(pixel_values)[:, 0]).argmax(-1)
    assert torch.equal(predicted, labels)
    # the paper's model has no head and ignores image_labels
    plain = tiny_model()
    assert plain.image_label_head is None and plain(pixel_values=pixel_values, image_labels=labels).loss_image_label is None
    with pytest.raises(ValueError, match="image_label_loss_weight must be >= 0"):
        tiny_mvaema_config(image_label_loss_weight=-1.0)
