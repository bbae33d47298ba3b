"""The pieces of MVaEMa's fast recipe and its evaluation: the Basics category check, the image-level
question sampler, the recipes' defaults, and the model card's example rows."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from emvision.datasets_scripts.synthetic.oracle import oracle_answers, oracle_basics_sentences
from emvision.train.evaluation.basics import CategoryNamer, basics_category_accuracy
from emvision.vocabulary import BASICS_ANSWER_TEMPLATES, SEM_CATEGORIES

FILMS, PARTICLES, POWDER = (SEM_CATEGORIES.index(c) for c in ("Films_Coated_Surface", "Particles", "Powder"))


@pytest.mark.parametrize("answer, named", [
    ("The image shows a film (coated surface): a polycrystalline film of equiaxed grains.", FILMS),  # the oracle's words
    ("The nanomaterial is films coated surface; the micrograph shows grains.", FILMS),  # the display name
    ("This micrograph shows particles, specifically short rod-shaped nanoparticles (nanorods).", PARTICLES),
    ("The image shows a powder: particles clumped into agglomerates.", POWDER),  # a second name after the first clause
    ("The image shows nanoparticles: spheres.", None),  # "nanoparticles" is not the category "particles"
    ("The image shows particles and a powder: grains.", None),  # two categories named: none
    ("The image shows a film: grains.", None),  # "a film" alone is not "a film (coated surface)"
    ("the visible. the image from the image recorded with the visible.", None),
])
def test_the_namer_reads_the_category_of_the_first_clause(answer, named):
    assert CategoryNamer(SEM_CATEGORIES)(answer) == named


def test_every_oracle_basics_answer_opens_with_a_template_and_names_its_category():
    from emvision.datasets_scripts.synthetic.generator import generate_micrograph

    answers, labels = [], []
    for index in range(40):
        micrograph = generate_micrograph(index, seed=5, short_side=96)
        answers.append(oracle_answers(micrograph.metadata)[1])
        labels.append(micrograph.label)
    assert basics_category_accuracy(answers, labels, SEM_CATEGORIES) == 1.0
    prefixes = [re.escape(t).replace(r"\{\}", ".+?") for t in BASICS_ANSWER_TEMPLATES]
    assert all(any(re.match(p, a) for p in prefixes) for a in answers)
    assert all(any(a.startswith(s) for s in oracle_basics_sentences(SEM_CATEGORIES[l])) for a, l in zip(answers, labels))
    # shuffled labels: wrong answers count as wrong
    assert basics_category_accuracy(answers, labels[1:] + labels[:1], SEM_CATEGORIES) < 0.5
    with pytest.raises(ValueError, match="2 answers but 1 labels"):
        basics_category_accuracy(answers[:2], labels[:1], SEM_CATEGORIES)


def test_image_sampler_draws_each_image_once_per_epoch_and_favours_basics():
    from emvision.train.loop.reproducibility import ImageQuestionSampler

    image_ids = [f"img{i}" for i in range(50) for _ in range(10)]
    question_ids = [q for _ in range(50) for q in range(1, 11)]
    sampler = ImageQuestionSampler(image_ids, question_ids, seed=3, question_weights={1: 4.0})
    assert len(sampler) == 50
    counts = Counter()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        rows = list(sampler)
        assert sorted(image_ids[r] for r in rows) == sorted(set(image_ids))  # every image once
        counts.update(question_ids[r] for r in rows)
    assert counts[1] / sum(counts.values()) == pytest.approx(4 / 13, abs=0.04)  # 4 : 1 x 9
    sampler.set_epoch(7)
    again = ImageQuestionSampler(image_ids, question_ids, seed=3, question_weights={1: 4.0})
    again.set_epoch(7)
    assert list(sampler) == list(again)  # depends only on (seed, epoch): resumable


def test_recipes_default_fast_and_paper_is_named_and_explicit_options_win():
    from emvision.train.vqa import parse_args

    fast = parse_args(["--output_dir", "/tmp/x"])
    assert (fast.recipe, fast.optimizer, fast.lr_scheduler, fast.sampling, fast.augment) == ("fast", "adamw", "cosine", "image", True)
    assert fast.learning_rate == 3e-3 and parse_args(["--learning_rate", "5e-4", "--output_dir", "/tmp/x"]).learning_rate == 5e-4
    assert fast.image_label_loss_weight > 0 and fast.warmup_steps > 0 and fast.vision_pretrain_steps > 0
    paper = parse_args(["--recipe", "paper", "--output_dir", "/tmp/x"])
    assert (paper.optimizer, paper.learning_rate, paper.lr_scheduler, paper.sampling, paper.augment) == ("adam", 1e-3, "plateau", "rows", False)
    assert paper.image_label_loss_weight == 0 and paper.vision_pretrain_steps == 0 and paper.max_train_steps == 150
    mixed = parse_args(["--recipe", "paper", "--optimizer", "adamw", "--output_dir", "/tmp/x"])
    assert mixed.optimizer == "adamw" and mixed.lr_scheduler == "plateau"
    # ITM: left out by the fast recipe, kept by the paper's, and --itm / --no-itm win over either
    assert (fast.itm, paper.itm, fast.max_train_steps) == (False, True, 650)
    assert parse_args(["--itm", "--output_dir", "/tmp/x"]).itm and not parse_args(["--recipe", "paper", "--no-itm", "--output_dir", "/tmp/x"]).itm
    # decoding: the fast recipe chooses the repetition penalty on validation, the paper's decodes plainly
    assert (fast.repetition_penalty, paper.repetition_penalty) == ("auto", 1.0)
    assert parse_args(["--repetition_penalty", "1.2", "--output_dir", "/tmp/x"]).repetition_penalty == 1.2
    with pytest.raises(SystemExit):
        parse_args(["--repetition_penalty", "0", "--output_dir", "/tmp/x"])


@pytest.mark.parametrize("flags, has_itm", [([], False), (["--itm"], True), (["--recipe", "paper"], True)])
def test_the_built_model_trains_itm_only_when_asked(flags, has_itm):
    from emvision.train.vqa import build_model_and_processor, parse_args

    model, _ = build_model_and_processor(parse_args([*flags, "--output_dir", "/tmp/x"]), ["what is shown", "a powder of grains"])
    assert model.config.use_itm is has_itm and (model.itm_head is not None) is has_itm


@pytest.mark.parametrize(
    "flags, stem, label_token",
    [([], True, True), (["--recipe", "paper"], False, False), (["--patch_embedding", "linear", "--no-image_label_token"], False, False),
     (["--image_label_loss_weight", "0", "--vision_pretrain_steps", "0"], True, False)],
    ids=["fast", "paper", "explicit-off", "no-class-head"],
)
def test_the_recipe_chooses_the_stem_and_the_class_token(flags, stem, label_token):
    from emvision.train.vqa import build_model_and_processor, parse_args

    model, _ = build_model_and_processor(parse_args([*flags, "--output_dir", "/tmp/x"]), ["what is shown", "a powder of grains"])
    assert (model.config.vision_config.patch_embedding == "conv_stem") is stem
    assert (model.vision_model.embeddings.conv_stem is not None) is stem
    assert model.config.image_label_token is label_token and (model.image_label_embeddings is not None) is label_token


def test_a_new_models_classes_are_its_datasets():
    from emvision.train.vqa import build_model_and_processor, parse_args

    model, _ = build_model_and_processor(parse_args(["--output_dir", "/tmp/x"]), ["a clean wafer"], ["Clean", "Defect"])
    assert model.config.id2label == {0: "Clean", 1: "Defect"} and model.config.label2id == {"Clean": 0, "Defect": 1}
    assert model.image_label_head.out_features == 2 and model.image_label_embeddings.shape[0] == 2
    default, _ = build_model_and_processor(parse_args(["--output_dir", "/tmp/x"]), ["a clean wafer"])
    assert len(default.config.id2label) == 10 and default.image_label_head.out_features == 10


def test_options_of_a_new_model_are_refused_beside_a_trained_model(capsys):
    from emvision.train.classify import parse_args as classify_args
    from emvision.train.vqa import parse_args

    trained = ["--model_name_or_path", "released/mvaema", "--output_dir", "/tmp/x"]
    assert parse_args(trained).model_name_or_path == "released/mvaema"  # the recipe's own values are not "given"
    assert not parse_args(trained).image_label_loss_weight_given
    for given, named in [(["--itm"], "--itm describes"), (["--no-image_label_token"], "--image_label_token describes"),
                         (["--patch_emb", "linear", "--config_overrides", "use_itc=false"], "--config_overrides, --patch_embedding describe"),
                         (["--vision_pretrain_steps", "500"], "--vision_pretrain_steps describes")]:
        with pytest.raises(SystemExit) as stopped:
            parse_args([*trained, *given])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert named in error and "--model_name_or_path released/mvaema keeps the architecture" in error, error
    # the class-loss weight is the one training option a trained model takes from the command line (see test_training.py)
    assert parse_args([*trained, "--image_label_loss_weight", "0"]).image_label_loss_weight_given
    with pytest.raises(SystemExit):
        classify_args([*trained, "--paper_protocol"])
    assert "--paper_protocol describes a new model" in capsys.readouterr().err
    assert classify_args(trained).model_name_or_path == "released/mvaema"


def test_card_shows_test_answers_beside_their_references():
    from emvision.train.publishing.model_card import DataProvenance, Result, build_model_card

    examples = [{"question": f"Q{i}?", "prediction": f"answer | {i}", "reference": f"ref\n{i}"} for i in range(5)]
    card = build_model_card(
        "mvaema", repo_id="x/y", provenance=DataProvenance.from_rows("synthetic", image_sources=["synthetic"], teachers=["oracle-synthetic"]),
        training_procedure="-", results=[Result("basics_category_accuracy", 0.5, "100 test Basics answers", 0.1)], examples=examples,
    ).content
    assert "| Basics answer names the category | 0.5000 | 100 test Basics answers | 0.1000 |" in card
    assert "| question | generated answer | reference |" in card
    for i in range(5):
        assert f"| Q{i}? | answer \\| {i} | ref {i} |" in card
