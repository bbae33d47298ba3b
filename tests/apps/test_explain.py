"""Where the models looked: maps with the image's shape that sum to 1 and, once a model has learnt a toy task whose
answer lies in one region of the image, put most of their mass on that region.

Toy task: 32x32 grey noise with one 8x8 block (the cell at row 1, column 2 of a 4x4 grid) of vertical or horizontal
stripes; the label is the stripes' direction. Both classes have the same grey levels, so nothing but that block
tells them apart.
"""

import numpy as np
import PIL.Image
import pytest
import torch

from emvision.apps.explain import explain_answer, explain_classification, map_onto_image, overlay_heatmap
from emvision.apps.infobar import FrameInfo
from emvision.modeling import HNFForImageClassification
from lab_models import tiny_mvaema
from tiny_models import tiny_hnf_config

BLOCK = (slice(8, 16), slice(16, 24))  # rows, columns of the informative 8x8 block
BLOCK_AREA = 64 / 1024
ANSWERS = {1: "wires", 0: "lines"}  # vertical, horizontal stripes: one token each in the default vocabulary


def toy_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, 32, 32) grey levels in [0, 1] and labels (1: vertical stripes in the block, 0: horizontal)."""
    images = torch.rand(count, 32, 32, generator=generator) * 0.6 + 0.2
    labels = torch.randint(0, 2, (count,), generator=generator)
    stripes = (torch.arange(8) % 2).float()
    vertical, horizontal = stripes[None, :].expand(8, 8), stripes[:, None].expand(8, 8)
    images[:, BLOCK[0], BLOCK[1]] = torch.where(labels[:, None, None] == 1, vertical, horizontal)
    return images, labels


def to_pixel_values(images: torch.Tensor) -> torch.Tensor:
    return (images * 2 - 1)[:, None].expand(-1, 3, -1, -1).contiguous()


def cell_shares(maps: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The mean share of each map's mass on each cell of the 4x4 grid of 8x8 blocks (4, 4)."""
    maps = torch.as_tensor(np.asarray(maps))
    maps = maps[None] if maps.ndim == 2 else maps
    maps = maps / maps.sum(dim=(-2, -1), keepdim=True)
    return maps.mean(0).reshape(4, 8, 4, 8).sum(dim=(1, 3))


@pytest.fixture(scope="module")
def trained_hnf():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = HNFForImageClassification(tiny_hnf_config(use_text_branch=False))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        images, labels = toy_images(16, generator)
        loss = model(pixel_values=to_pixel_values(images), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


def test_hnf_saliency_is_a_map_per_image_that_sums_to_one(trained_hnf):
    images, _ = toy_images(4, torch.Generator().manual_seed(1))
    maps = explain_classification(trained_hnf, to_pixel_values(images))
    assert maps.shape == (4, 32, 32)
    assert bool((maps >= 0).all())
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(4), atol=1e-5)
    assert not any(p.grad is not None for p in trained_hnf.parameters()), "no gradient may reach the weights"
    assert not torch.allclose(maps[0], maps[1]), "the map depends on the image"
    again = explain_classification(trained_hnf, to_pixel_values(images), target=3)
    assert not torch.allclose(again, maps), "and on the class explained"


def test_hnf_saliency_points_at_the_informative_block_once_trained(trained_hnf):
    images, labels = toy_images(64, torch.Generator().manual_seed(2))
    pixel_values = to_pixel_values(images)
    with torch.no_grad():
        accuracy = (trained_hnf(pixel_values=pixel_values).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.95, f"the toy task was not learnt (accuracy {accuracy:.2f})"
    shares = cell_shares(explain_classification(trained_hnf, pixel_values))
    torch.manual_seed(1)
    untrained = HNFForImageClassification(tiny_hnf_config(use_text_branch=False)).eval()
    untrained_shares = cell_shares(explain_classification(untrained, pixel_values))
    share, untrained_share = shares[1, 2].item(), untrained_shares[1, 2].item()
    assert shares.argmax().item() == 1 * 4 + 2, f"the informative block is not the most salient cell:\n{shares}"
    # the block is 1/16 = 6.25% of the image
    assert share > 2.5 * BLOCK_AREA, f"{share:.1%} of the saliency on the informative block (untrained: {untrained_share:.1%})"
    assert share > 1.8 * untrained_share, f"{share:.1%} of the saliency on the informative block, untrained {untrained_share:.1%}"


@pytest.fixture(scope="module")
def trained_mvaema(mvaema_processor):
    """MVaEMa without vision blocks (each image token is its own patch, nothing mixes them) that learnt to say
    which way the block's stripes run, with two one-token answers: to answer, the decoder has to read that patch."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = tiny_mvaema(vision_layers=0, text_layers=1)
    model.config.use_itc = model.config.use_itm = False
    question = "Which way do the stripes run?"
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        images, labels = toy_images(16, generator)
        answers = [ANSWERS[label] for label in labels.tolist()]
        batch = mvaema_processor(text=[question] * 16, answers=answers)
        out = model(pixel_values=to_pixel_values(images), input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval(), question


def test_mvaema_attention_map_has_the_image_shape_and_points_at_the_block(trained_mvaema, mvaema_processor):
    model, question = trained_mvaema
    images, labels = toy_images(6, torch.Generator().manual_seed(3))
    shares, correct = [], 0
    for image, label in zip(images, labels.tolist()):
        picture = PIL.Image.fromarray((image.numpy() * 255).round().astype(np.uint8))
        answer, heatmap = explain_answer(model, mvaema_processor, picture, question, max_new_tokens=4)
        assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32
        assert (heatmap >= 0).all() and abs(float(heatmap.sum()) - 1.0) < 1e-4
        correct += answer == ANSWERS[label]
        shares.append(cell_shares(heatmap))
    assert correct == 6, "the toy task was not learnt"
    shares = torch.stack(shares).mean(0)
    assert shares.argmax().item() == 1 * 4 + 2, f"the informative block is not the cell most attended:\n{shares}"
    # one patch of sixteen; the map is bilinear, so some mass spills over the block's edges
    assert shares[1, 2] > 4 * BLOCK_AREA, f"{shares[1, 2]:.1%} of the attention on the informative block"


def test_maps_land_on_the_micrograph_above_the_bar_and_draw_over_it():
    frame = FrameInfo(width=40, height=30, bar_row=20)
    grid = np.zeros((2, 2), np.float32)
    grid[0, 0] = 1.0
    placed = map_onto_image(grid, frame)
    assert placed.shape == (30, 40) and abs(placed.sum() - 1) < 1e-5
    assert placed[20:].sum() == 0, "nothing on the information bar"
    assert placed[:10, :20].sum() > placed[10:20, 20:].sum() * 5
    picture = overlay_heatmap(np.full((30, 40), 128, np.uint8), placed)
    assert picture.size == (40, 30) and picture.mode == "RGB"
    with pytest.raises(ValueError, match="does not match"):
        overlay_heatmap(np.zeros((10, 10), np.uint8), placed)
