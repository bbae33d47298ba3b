"""The information bar a microscope burns into the bottom of the frame: scale bar, beam energy, working distance, detector."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .specs import format_length


def format_magnification(magnification: float, vendor: str = "zeiss") -> str:
    if vendor == "fei":
        return f"{magnification:,.0f}".replace(",", " ") + " x"
    if magnification >= 1000:
        return f"{magnification / 1000:.2f} K X"
    return f"{magnification:.0f} X"


def _scale_bar_length_nm(hfw: float) -> float:
    """The longest 1/2/5 x 10^k length that fits in a fifth of the field width."""
    best = None
    for exponent in range(0, 8):
        for mantissa in (1, 2, 5):
            length = mantissa * 10.0**exponent
            if length <= 0.2 * hfw:
                best = length
    return best if best is not None else 1.0


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, fill: int) -> None:
    """``draw.text`` that also writes "µ", which the built-in font lacks: a "u" with a descending tail."""
    x, y = xy
    for k, part in enumerate(text.split("µ")):
        if k:
            left, top, right, bottom = font.getbbox("u")
            stem = max(1, round((right - left) / 5))
            draw.text((x, y), "u", fill=fill, font=font)
            draw.line((x + left + stem / 2, y + top, x + left + stem / 2, y + bottom + 0.4 * (bottom - top)), fill=fill, width=stem)
            x += font.getlength("u")
        if part:
            draw.text((x, y), part, fill=fill, font=font)
            x += font.getlength(part)


def draw_info_bar(width: int, height: int, imaging: dict, nm_per_px: float, style: str, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """The data bar a microscope burns into the bottom of the frame, at render size."""
    background, ink = (int(rng.integers(0, 25)), int(rng.integers(225, 256))) if style == "dark" else (int(rng.integers(230, 256)), int(rng.integers(0, 30)))
    bar = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(bar)
    font = _font(max(6, int(height * 0.3)))
    vendor = imaging["vendor_style"]
    length_nm = _scale_bar_length_nm(imaging["hfw_nm"])
    bar_px = length_nm / nm_per_px
    label = format_length(length_nm)
    mag_label = format_magnification(imaging["magnification"], vendor)
    kv = imaging["accelerating_voltage_kv"]
    line_w = max(1, height // 16)
    pad = max(2, height // 8)
    if style == "light":
        draw.rectangle((0, 0, width - 1, height - 1), outline=ink, width=line_w)
    if vendor == "zeiss":
        x0, y_bar = pad * 2, int(height * 0.7)
        _draw_text(draw, (x0, pad), label, font, ink)
        draw.line((x0, y_bar, x0 + bar_px, y_bar), fill=ink, width=line_w)
        for x in (x0, x0 + bar_px):
            draw.line((x, y_bar - height * 0.12, x, y_bar + height * 0.12), fill=ink, width=line_w)
        columns = (
            (f"EHT = {kv:.2f} kV", f"Mag = {mag_label}"),
            (f"WD = {imaging['working_distance_mm']:.1f} mm", f"Signal A = {imaging['detector']}"),
            (f"Stage at T = {imaging['tilt_deg']:.1f} °", f"Frames = {imaging['frames_averaged']}"),
        )
        for k, (top, bottom) in enumerate(columns):
            x = int(width * (0.3 + 0.22 * k))
            _draw_text(draw, (x, pad), top, font, ink)
            _draw_text(draw, (x, height // 2 + pad // 2), bottom, font, ink)
        logo = (width - height - pad, pad, width - 2 * pad, height - pad)
        draw.rectangle(logo, fill=ink)
        for k in range(3):
            y = logo[1] + (logo[3] - logo[1]) * (k + 1) / 4
            draw.line((logo[0] + pad, y, logo[2] - pad, y), fill=background, width=line_w)
    else:
        cells = (f"HV {kv:.2f} kV", f"mag {mag_label}", f"WD {imaging['working_distance_mm']:.1f} mm",
                 f"det {imaging['detector']}", f"HFW {format_length(imaging['hfw_nm'])}", f"tilt {imaging['tilt_deg']:.0f} °")
        x1 = width - 3 * pad
        x0 = x1 - bar_px
        x = 2 * pad
        for text in cells:  # fields separated by rules, as long as they fit left of the scale bar
            advance = font.getlength(text) + 4 * pad
            if x + advance > x0 - 2 * pad:
                break
            _draw_text(draw, (x, height * 0.3), text, font, ink)
            draw.line((x + advance - 2 * pad, pad, x + advance - 2 * pad, height - pad), fill=ink, width=line_w)
            x += advance
        draw.rectangle((x0, height * 0.25, x1, height * 0.25 + 2 * line_w), fill=ink)
        _draw_text(draw, (x0, height * 0.45), label, font, ink)
    return bar, {"scale_bar_nm": length_nm, "scale_bar_label": label, "magnification_label": mag_label, "scale_bar_render_px": round(bar_px, 1)}
