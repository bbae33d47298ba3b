"""What a micrograph says about its frame: the information bar from its pixels, the pixel size from its TIFF tags."""

import numpy as np
import PIL.Image
import pytest

from emvision.apps.infobar import FEI_METADATA_TAG, ZEISS_METADATA_TAG, FrameInfo, pixel_size_from_metadata, read_frame_info
from emvision.apps.predict import decode
from emvision.processing.micrograph import to_working_array


def _tiff_with(tmp_path, tag: int, text: str):
    path = tmp_path / "scan.tif"
    PIL.Image.fromarray(np.full((40, 50), 90, np.uint8)).save(path, tiffinfo={tag: text})
    return decode(str(path), path.read_bytes())


def test_fei_and_zeiss_tiffs_give_their_pixel_size(tmp_path):
    fei = _tiff_with(tmp_path, FEI_METADATA_TAG, "[User]\r\nDate=01/02/2026\r\n[Scan]\r\nPixelWidth=2.5e-009\r\nPixelHeight=2.5e-009\r\n")
    assert pixel_size_from_metadata(fei) == (pytest.approx(2.5), f"FEI TIFF tag {FEI_METADATA_TAG}")
    zeiss = _tiff_with(tmp_path, ZEISS_METADATA_TAG, "0\r\nAP_PIXEL_SIZE\r\nImage Pixel Size = 1.25 µm\r\nAP_WD\r\nWD = 8.5 mm\r\n")
    frame = read_frame_info(to_working_array(zeiss), zeiss)
    assert frame.pixel_size_nm == pytest.approx(1250.0) and frame.field_of_view == "62.5 µm"
    assert "1.25 µm per pixel" in frame.describe()
    plain = _tiff_with(tmp_path, 270, "a description, no scale")
    assert pixel_size_from_metadata(plain) is None


def test_a_real_micrograph_has_its_bar_found_and_no_scale_claimed(real_sem_dir):
    path = real_sem_dir / "Nanowires" / "L6_0a6f18702a4a32677c74ed390f3af7af.jpg"
    image = decode(str(path), path.read_bytes())
    frame = read_frame_info(to_working_array(image), image)
    assert (frame.width, frame.height) == (1024, 768)
    assert 600 < frame.bar_row < 768 and frame.bar_height == 768 - frame.bar_row
    assert frame.crop_box == (0, 0, 1024, frame.bar_row)
    assert frame.pixel_size_nm is None and "scale: unknown" in frame.describe()


def test_a_frame_without_a_bar_is_kept_whole():
    frame = FrameInfo(width=256, height=256, bar_row=None)
    assert frame.crop_box == (0, 0, 256, 256) and frame.bar_height == 0
    assert "no information bar" in frame.describe()
