"""MVaEMa's tokenizer and MVaEMaProcessor: vocabulary, text layout, images, decoding, save/load."""

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer, BertTokenizer

from emvision.modeling import MVaEMaConfig
from emvision.vocabulary import MVAEMA_SPECIAL_TOKENS, special_token_ids
from emvision.processing import (
    MVaEMaProcessor,
    build_default_processor,
    build_default_tokenizer,
    prepare_tokenizer,
    tidy_spacing,
    train_wordpiece_tokenizer,
)
from emvision.processing.image_processing_micrograph import MicrographImageProcessor
from emvision.processing.tokenization_micrograph import domain_texts


@pytest.fixture(scope="module")
def processor():
    return build_default_processor()


@pytest.fixture(scope="module")
def tokenizer(processor):
    return processor.tokenizer


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------------
# Tokenizer


def test_default_tokenizer_matches_the_default_config(tokenizer):
    text = MVaEMaConfig().text_config
    assert len(tokenizer) == text.vocab_size == 2048
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(8)] == list(MVAEMA_SPECIAL_TOKENS.values())
    ids = special_token_ids(tokenizer)
    assert ids == {name: getattr(text, name) for name in ids}
    assert tokenizer("nanowires")["input_ids"][0] == tokenizer.cls_token_id  # [CLS] text [SEP]


def test_default_tokenizer_is_the_same_every_time(tokenizer):
    # the trainer breaks ties by symbol ids; without reserving them they follow hash-map order
    assert build_default_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_domain_vocabulary_keeps_domain_words_whole(tokenizer):
    for word in ("nanowires", "micrograph", "morphology", "porous", "electrodes", "nm"):
        assert len(_ids(tokenizer, word)) == 1, word
    assert tokenizer.unk_token_id not in _ids(tokenizer, "Zr-doped TiO2 @ 3.5 µm ± 0.2 (~45°)")
    assert any("What type of nanomaterial" in text for text in domain_texts())


def test_train_wordpiece_tokenizer_on_own_texts():
    texts = ["silicon nanowires grow from gold droplets", "porous alumina membranes"] * 5
    small = train_wordpiece_tokenizer(texts, vocab_size=300)
    assert len(small) <= 300
    assert small.decode(_ids(small, "porous silicon membranes")) == "porous silicon membranes"
    assert small.convert_tokens_to_ids("[EOS]") == 7
    with pytest.raises(ValueError, match="non-empty"):
        train_wordpiece_tokenizer(["", "  "])
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece_tokenizer(texts, vocab_size=50)


def test_any_tokenizer_can_be_prepared(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "tip", "is", "sharp"]
    bert = BertTokenizer(vocab={word: index for index, word in enumerate(words)})
    prepare_tokenizer(bert)
    assert len(bert) == len(words) + 3
    ids = special_token_ids(bert)
    assert (ids["cls_token_id"], ids["sep_token_id"], ids["pad_token_id"]) == (2, 3, 0)
    assert bert.convert_ids_to_tokens([ids["enc_token_id"], ids["bos_token_id"], ids["eos_token_id"]]) == ["[ENC]", "[DEC]", "[EOS]"]
    bert.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert special_token_ids(reloaded) == ids
    assert prepare_tokenizer(reloaded) is reloaded and len(reloaded) == len(bert)  # idempotent
    with pytest.raises(ValueError, match="prepare_tokenizer"):
        special_token_ids(BertTokenizer(vocab={word: index for index, word in enumerate(words)}))


# ---------------------------------------------------------------------------------------------------
# Text layout


def test_training_layout_and_labels(processor, tokenizer):
    questions = ["What type of nanomaterial is shown in this image?", "Describe the surface."]
    answers = ["Nanowires.", "The surface is rough, with pores of 50 nm."]
    batch = processor(text=questions, answers=answers)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "itc_input_ids", "itc_attention_mask"}
    bos, sep, eos, pad, cls = 6, 3, 7, 0, 2
    for row, (question, answer) in enumerate(zip(questions, answers)):
        prompt = [bos, *_ids(tokenizer, question), sep]
        target = [*_ids(tokenizer, answer), eos]
        length = len(prompt) + len(target)
        assert batch["input_ids"][row, :length].tolist() == prompt + target
        assert batch["input_ids"][row, length:].eq(pad).all()  # right padding for training
        assert batch["attention_mask"][row].sum() == length
        assert batch["labels"][row].tolist() == [-100] * len(prompt) + target + [-100] * (batch["labels"].shape[1] - length)
        itc = [cls, *_ids(tokenizer, answer), sep]
        assert batch["itc_input_ids"][row, : len(itc)].tolist() == itc


def test_generation_prompts_are_left_padded(processor, tokenizer):
    batch = processor(text=["Short?", "A much longer question about the pores in the film?"])
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"][0, 0] == tokenizer.pad_token_id and batch["attention_mask"][0, 0] == 0
    assert (batch["input_ids"][:, -1] == tokenizer.sep_token_id).all()


def test_captions_are_opt_in_and_go_before_the_question(processor, tokenizer):
    caption = "This is a scanning electron micrograph of nanowires."
    with_caption = processor(text="Describe it.", answers="Wires.", captions=caption)
    without = processor(text="Describe it.", answers="Wires.")
    expected = [6, *_ids(tokenizer, caption), *_ids(tokenizer, "Describe it."), 3]
    assert with_caption["input_ids"][0, : len(expected)].tolist() == expected
    assert without["input_ids"].shape[1] == with_caption["input_ids"].shape[1] - len(_ids(tokenizer, caption))


def test_control_tokens_in_user_text_are_just_text(processor):
    batch = processor(text="Is [SEP] a token?", answers="[EOS] no")
    ids = batch["input_ids"][0].tolist()
    assert ids.count(3) == 1 and ids.count(7) == 1  # only the processor's own [SEP] and [EOS]


def test_truncation_keeps_the_prompt_and_drops_eos_of_cut_answers(tokenizer):
    processor = MVaEMaProcessor(MicrographImageProcessor(), tokenizer, max_length=16, max_prompt_length=8, itc_max_length=6)
    long_question = " ".join(["nanowires"] * 20)
    long_answer = " ".join(["particles"] * 30)
    batch = processor(text=long_question, answers=long_answer)
    ids = batch["input_ids"][0].tolist()
    assert len(ids) == 16 and ids[7] == 3  # prompt cut to 8 tokens, ending with [SEP]
    assert 7 not in ids  # the cut answer gets no [EOS]
    assert batch["itc_input_ids"].shape[1] == 6 and batch["itc_input_ids"][0, -1] == 3
    short = processor(text="Why?", answers="Because.")
    assert short["input_ids"][0].tolist()[-1] == 7


def test_mismatched_inputs_are_refused(processor, real_sem_images):
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        processor(images=[str(p) for p in real_sem_images[:2]], text="What is it?")
    with pytest.raises(ValueError, match="answers"):
        processor(text=["a?", "b?"], answers=["only one"])
    with pytest.raises(ValueError, match="pass text="):
        processor(answers="orphan answer")
    with pytest.raises(TypeError, match=r"text\[1\]"):
        processor(text=["fine?", 3])


# ---------------------------------------------------------------------------------------------------
# Images and decoding


def test_real_and_synthetic_micrographs_become_pixel_values(processor, real_sem_images):
    synthetic = (np.indices((300, 400)).sum(0) % 64 * 4).astype(np.uint8)  # a synthetic ramp pattern
    images = [str(real_sem_images[0]), str(real_sem_images[-1]), synthetic]
    batch = processor(images=images, text=["What is this?"] * 3)
    assert batch["pixel_values"].shape == (3, 3, 224, 224)
    assert batch["pixel_values"].min() >= -1.0 and batch["pixel_values"].max() <= 1.0


def test_a_corrupt_file_names_itself(processor, tmp_path):
    broken = tmp_path / "broken_micrograph.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    with pytest.raises(ValueError, match="broken_micrograph.jpg"):
        processor(images=[str(broken)], text=["What is this?"])


def test_batch_decode_returns_the_answers(processor, tokenizer):
    answers = ["The wires are 3.5 µm long (on average).", "Porous."]
    prompts = processor(text=["Q one?", "Second question?"])["input_ids"]
    generated = []
    for row, answer in zip(prompts.tolist(), answers):
        generated.append(row + _ids(tokenizer, answer) + [7, 0, 0])
    decoded = processor.batch_decode(torch.tensor([g + [0] * (40 - len(g)) for g in generated]))
    assert decoded == ["the wires are 3.5 µm long (on average).", "porous."]
    full = processor.batch_decode([generated[1]], answers_only=False)
    assert full == ["second question? porous."]
    assert tidy_spacing("size 3. 5 nm ( see fig. 2 ) and / or") == "size 3.5 nm (see fig. 2) and/or"


def test_a_verbatim_answer_decodes_to_its_written_form_and_scores_as_one(processor, tokenizer):
    """Decoding puts spaces around punctuation ('close - packed', 'field :'); scored word by word against the
    written reference, a model that answers exactly would lose n-grams to them."""
    from emvision.datasets_scripts.synthetic.generator import generate_micrograph
    from emvision.datasets_scripts.synthetic.oracle import oracle_answers
    from emvision.train.metrics.vqa_loader import load_vqa_metric

    written = "A close-packed layer; field: 5 µm (20% of the frame), x-ray at 10:30, ratio 1:2."
    prompt = processor(text=["Describe it."])["input_ids"][0].tolist()
    assert processor.decode(prompt + _ids(tokenizer, written) + [7]) == written.lower()
    references = [answer for index in range(12)
                  for answer in oracle_answers(generate_micrograph(index, seed=2, short_side=96).metadata).values()]
    decoded = [processor.decode(prompt + _ids(tokenizer, answer) + [7]) for answer in references]
    exact = sum(d == r.lower() for d, r in zip(decoded, references))
    assert exact >= 0.9 * len(references), [(d, r) for d, r in zip(decoded, references) if d != r.lower()][:3]
    scores = load_vqa_metric().compute(predictions=decoded, references=references)
    assert scores["bleu4"] > 0.98 and scores["meteor"] > 0.99, scores  # before: BLEU-4 0.82, METEOR 0.94 on such answers


def test_save_and_load_with_auto_processor(processor, tmp_path, real_sem_images):
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, MVaEMaProcessor) and isinstance(reloaded.image_processor, MicrographImageProcessor)
    assert (reloaded.max_length, reloaded.max_prompt_length, reloaded.itc_max_length) == (512, 128, 32)
    inputs = dict(images=[str(real_sem_images[1])], text=["Describe the pores."], answers=["Round pores."])
    first, second = processor(**inputs), reloaded(**inputs)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
