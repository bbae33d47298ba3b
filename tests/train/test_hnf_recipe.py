"""classify.py's --recipe (fast default, paper) and the training-only augmentation (train/data/augmentation.py)."""

from __future__ import annotations

import torch

from emvision.train.data.augmentation import augment_micrographs
from emvision.train.data.collators import ImageCollator


def _dihedral(image: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(image.flip(-1) if flip else image, turn, dims=(-2, -1)) for flip in (0, 1) for turn in range(4)]


def test_augmentation_moves_pixels_by_a_symmetry_of_the_square_and_jitters_within_range():
    images = torch.rand(16, 3, 8, 8) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    moved = augment_micrographs(images, generator, jitter=0.0)
    used = set()
    for original, out in zip(images, moved):
        matches = [index for index, candidate in enumerate(_dihedral(original)) if torch.equal(candidate, out)]
        assert matches, "every augmented image is an exact flip/rotation of its input"
        used.add(matches[0])
    assert len(used) > 2, "different images get different symmetries"
    jittered = augment_micrographs(images, torch.Generator().manual_seed(0), jitter=0.15)
    assert jittered.shape == images.shape and jittered.min() >= -1 and jittered.max() <= 1
    assert not torch.equal(jittered, moved)
    # the same symmetries, then contrast about each image's mean and a brightness shift, as documented
    generator = torch.Generator().manual_seed(0)
    torch.randint(0, 2, (16,), generator=generator), torch.randint(0, 4, (16,), generator=generator)
    contrast = 1 + 0.15 * (2 * torch.rand(16, 1, 1, 1, generator=generator) - 1)
    brightness = 0.15 * (2 * torch.rand(16, 1, 1, 1, generator=generator) - 1)
    mean = moved.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(jittered, ((moved - mean) * contrast + mean + brightness).clamp(-1, 1))


def test_the_collator_augments_only_when_asked_and_keeps_the_labels():
    from emvision.processing.image_processing_micrograph import MicrographImageProcessor
    from PIL import Image

    rows = [{"image": Image.fromarray((torch.rand(64, 64) * 255).to(torch.uint8).numpy()), "label": label} for label in (3, 7, 1)]
    processor = MicrographImageProcessor(size={"height": 32, "width": 32})
    plain, again = ImageCollator(processor)(rows), ImageCollator(processor)(rows)
    torch.manual_seed(1)
    augmented = ImageCollator(processor, augment=True)(rows)
    assert torch.equal(plain["pixel_values"], again["pixel_values"]), "evaluation batches are deterministic"
    assert torch.equal(augmented["labels"], plain["labels"]) and augmented["labels"].tolist() == [3, 7, 1]
    assert not torch.equal(augmented["pixel_values"], plain["pixel_values"])


def test_the_fast_recipe_is_the_default_and_the_paper_recipe_restores_the_papers_protocol():
    from emvision.train.classify import RECIPE_MODEL_CONFIGS, parse_args

    fast = parse_args(["--output_dir", "unused"])
    assert (fast.recipe, fast.optimizer, fast.lr_scheduler, fast.learning_rate, fast.weight_decay) == ("fast", "adamw", "cosine", 2e-3, 0.05)
    assert fast.augment is True and fast.warmup_steps == 100 and fast.synthetic_num_images == 3500 and fast.max_train_steps == 1400
    paper = parse_args(["--recipe", "paper", "--output_dir", "unused"])
    assert (paper.optimizer, paper.lr_scheduler, paper.learning_rate, paper.weight_decay, paper.warmup_steps) == ("adam", "plateau", 1e-3, 0.0, 0)
    assert paper.augment is False and paper.synthetic_num_images == 1000 and paper.max_train_steps == 60
    assert RECIPE_MODEL_CONFIGS["paper"] == {"ode_method": "rk4"}, "the paper recipe: HNFConfig's defaults with the paper's RK4 solver"
    explicit = parse_args(["--learning_rate", "5e-4", "--no-augment", "--lr_scheduler", "plateau", "--output_dir", "unused"])
    assert (explicit.learning_rate, explicit.augment, explicit.lr_scheduler, explicit.optimizer) == (5e-4, False, "plateau", "adamw")
    assert parse_args(["--dataset", "data/sem", "--output_dir", "unused"]).max_train_steps is None, "a real dataset gets the full schedule"


def test_the_recipe_chooses_the_model_config():
    from emvision.train.classify import build_model, parse_args

    names = ["a", "b"]
    fast, _ = build_model(parse_args(["--output_dir", "unused", "--config_overrides", "hidden_size=16,fusion_num_heads=2,num_attention_heads=2"]),
                          names, None, None)
    assert fast.config.ode_method == "euler" and fast.config.use_text_branch is False
    assert fast.config.patch_embedding == "conv_stem" and fast.hnf.image_encoder.conv_stem is not None
    assert fast.config.image_size == 192 and fast.config.patch_sizes == [16, 24, 32]
    paper, _ = build_model(parse_args(["--recipe", "paper", "--output_dir", "unused", "--config_overrides",
                                       "hidden_size=16,fusion_num_heads=2,num_attention_heads=2"]), names, None, None)
    assert paper.config.ode_method == "rk4" and paper.config.use_text_branch is True
    assert paper.config.patch_embedding == "linear" and paper.hnf.image_encoder.conv_stem is None
    assert paper.config.image_size == 224 and paper.config.patch_sizes == [16, 28, 32]
    conditioned, _ = build_model(parse_args(["--paper_protocol", "--output_dir", "unused", "--config_overrides",
                                             "hidden_size=16,fusion_num_heads=2,num_attention_heads=2"]), names, None, None)
    assert conditioned.config.use_text_branch is True and conditioned.label_conditioned
    # the processor makes images of the size the model reads, an overridden size too
    smaller, processor = build_model(parse_args(["--output_dir", "unused", "--config_overrides",
                                                 "image_size=160,patch_sizes=[16,20,32],hidden_size=16,fusion_num_heads=2,num_attention_heads=2"]),
                                     names, None, None)
    pixels = processor(torch.rand(1, 300, 300).numpy(), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 160, 160) and smaller(pixel_values=pixels).logits.shape == (1, 2)
