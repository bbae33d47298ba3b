"""Schema version 2: images stored as the models read them, read back exactly; version-1 folders converted.

The micrographs here are SYNTHETIC (the project's generator) except where the real smoke images are named.
"""

import io
import json

import numpy as np
import pytest
import torch
from datasets import Image as DatasetImage
from datasets import load_from_disk
from PIL import Image

from emvision.datasets_scripts.storage import MODEL_IMAGE_SIZE, SCHEMA_VERSION, schema_version
from emvision.datasets_scripts.storage.convert import convert_v1, main as convert_main
from emvision.datasets_scripts.storage.model_image import decode_image, encode_png, find_scale_bar, prepare_model_image
from emvision.datasets_scripts.synthetic import generate_micrograph
from emvision.processing.image_processing_micrograph import MicrographImageProcessor
from emvision.processing.micrograph import detect_info_bar_in_array, to_working_array
from emvision.train.data.collators import ImageCollator
from emvision.train.data.images import PixelValues
from v1_datasets import write_v1_dataset


def test_model_image_size_is_the_processors():
    assert MicrographImageProcessor().size == {"height": MODEL_IMAGE_SIZE, "width": MODEL_IMAGE_SIZE}


def test_stored_png_reads_back_exactly_and_by_any_reader():
    rng = np.random.default_rng(0)
    for pixels in (rng.integers(0, 256, (224, 224), dtype=np.uint8), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)):
        data = encode_png(pixels)
        np.testing.assert_array_equal(decode_image(data), pixels)  # the fast path: one inflate, a reshape
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)  # any PNG reader
        assert len(data) < pixels.size + 1_000  # no compression: a copy to read back
    # PNGs from elsewhere (row filters, compression) go through Pillow, with the same result
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    np.testing.assert_array_equal(decode_image(buffer.getvalue()), pixels)


def test_sixteen_bit_micrographs_are_the_processors_values_within_rounding(tmp_path):
    """A 16-bit file is resized in floats by the processor; stored as 8 bits it differs by at most half a level:
    1/255 after normalisation to [-1, 1] (documented in model_image.py)."""
    rng = np.random.default_rng(1)
    field = (np.cumsum(rng.normal(size=(300, 400)), axis=1) * 900 + 30_000).clip(0, 65535).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(field).save(path)
    processor = MicrographImageProcessor()
    stored = prepare_model_image(Image.open(path))
    assert stored.pixels.dtype == np.uint8 and stored.pixels.shape == (224, 224)
    ours = PixelValues(processor)([encode_png(stored.pixels)], model_ready=True)
    theirs = processor(str(path), return_tensors="pt")["pixel_values"]
    assert (ours - theirs).abs().max().item() <= 1 / 255 + 1e-6


def test_scale_bar_length_is_measured_in_the_information_bar():
    """Synthetic frames know their scale bar's length; the measurement (no OCR) finds most of them to 3 px."""
    errors, missed = [], 0
    for index in range(40):
        frame = generate_micrograph(index, seed=0)
        array = to_working_array(frame.image)
        measured = find_scale_bar(array, detect_info_bar_in_array(array))
        if measured is None:
            missed += 1
        else:
            errors.append(abs(measured - frame.metadata["info_bar"]["scale_bar_px"]))
    assert missed <= 2 and np.mean(np.array(errors) <= 3) >= 0.85, (missed, sorted(errors)[-5:])
    assert find_scale_bar(np.full((100, 100), 128, np.uint8), None) is None


def test_a_version_1_folder_converts_and_reads_as_it_trained(tmp_path, capsys):
    old = write_v1_dataset(tmp_path / "v1", num_images=12)
    assert schema_version(load_from_disk(str(old / "vqa")), "vqa") == 1
    assert schema_version(load_from_disk(str(old / "images")), "images") == 1

    assert convert_main([str(old), str(tmp_path / "v2")]) == 0
    assert "schema version 2, 12 images rows, 36 vqa rows, 10 class_descriptions rows" in capsys.readouterr().out
    images, vqa = load_from_disk(str(tmp_path / "v2" / "images")), load_from_disk(str(tmp_path / "v2" / "vqa"))
    assert "image" not in vqa.column_names and len(vqa) == 36
    assert schema_version(images, "images") == schema_version(vqa, "vqa") == SCHEMA_VERSION
    assert "Converted to schema version 2" in (tmp_path / "v2" / "README.md").read_text()
    old_images = load_from_disk(str(old / "images")).cast_column("image", DatasetImage(decode=False))
    for row, old_row in zip(images, old_images):
        metadata = json.loads(row["metadata"])
        assert row["image"].size == (224, 224) and (row["width"], row["height"]) == (682, 512)
        stored_bar = detect_info_bar_in_array(to_working_array(Image.open(io.BytesIO(old_row["image"]["bytes"]))))
        assert row["crop_box"] == [0, 0, 682, round(stored_bar * 512 / 256)]  # found in the 256 px image, in original pixels
        assert row["magnification"] == metadata["imaging"]["magnification"] and row["detector"] == metadata["imaging"]["detector"]
    # the converted images are what a version-1 run computed from the stored ones at every read
    processor = MicrographImageProcessor()
    converted = ImageCollator(processor)(list(images.cast_column("image", DatasetImage(decode=False))))["pixel_values"]
    on_read = ImageCollator(processor)(list(old_images))["pixel_values"]  # version-1 rows: the processor's full path
    assert torch.equal(converted, on_read)

    with pytest.raises(ValueError, match="already in the version-2 layout"):
        convert_v1(tmp_path / "v2", tmp_path / "v3")
    assert convert_main([str(old), str(tmp_path / "v2")]) == 2 and "--overwrite" in capsys.readouterr().err
