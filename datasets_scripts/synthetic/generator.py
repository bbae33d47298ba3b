"""Procedural synthetic SEM micrographs of the ten nanomaterial categories, with their generating parameters.

SYNTHETIC DATA: nothing here is a real micrograph. The images imitate what a scanning electron
microscope shows (secondary-electron edge brightening and shading, shot and scan-line noise, a
burned-in information bar with a scale bar) so that pipelines can be developed and tested without
the real archive, and so that an oracle teacher can answer questions about them exactly, from the
parameters that drew them (see ``oracle.py``).

How one image is made (``generate_micrograph``):

1. Scene. A class renderer draws the sample as a height map and a material map (the
   secondary-electron yield of each phase) and returns what it drew as measurements: sizes in nm,
   counts, arrangement, coverage, aggregation, ... Vector shapes (particles, wires, pores, device
   layouts, info-bar text) are drawn at the "microscope" size, ``render_scale`` x the stored size
   (682x512 for the default 341x256), and box-filtered down, which anti-aliases every edge; smooth
   fields (grains, sponges, weaves, lattices, tips) are computed directly on the stored-size grid.
   Sizes are fractions of the horizontal field width (HFW), so a scene is the same physical scene
   at any resolution; the magnification sets the HFW and hence every length in nm.
2. Detector (on the stored grid). The signal is material x (topographic yield ~ 1/cos(slope),
   saturating) plus an edge effect that widens with the beam energy (convex rims bright, recesses
   dark), plus directional shading for side-mounted Everhart-Thornley detectors; backscatter
   detectors favour material contrast over topography.
3. Acquisition. Brightness/contrast/gamma, optional defocus, Poisson-like shot noise, scan-line
   jitter and, for insulating samples, charging streaks; stored as 8-bit grayscale, 4:3, 256 px
   short side by default.
4. Information bar. Drawn at the microscope size (scale bar whose length matches the
   magnification, EHT/HV, WD, magnification, detector), box-filtered down and burned into the
   bottom rows; ``metadata["info_bar"]["top_row"]`` is its first row.

Every random choice comes from one ``numpy`` generator seeded by ``(seed, index)``, so an image
depends only on its index and the seed: not on how many images are made or how many processes
make them. ``GENERATOR_VERSION`` changes whenever the output for a given seed would change.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from emvision.vocabulary import SEM_CATEGORIES

from .acquisition import acquire, detector_signal, sample_imaging
from .fields import choice, round_significant
from .info_bar import draw_info_bar
from .renderers import RENDERERS
from .scene import Scene
from .specs import CLASS_SPECS, stored_size

GENERATOR_NAME = "emvision.synthetic_sem"  # recorded in every image's metadata and in the cache key: kept when the module was split
GENERATOR_VERSION = "1.0"


@dataclass(frozen=True)
class SyntheticMicrograph:
    """One synthetic micrograph: the stored 8-bit grayscale image and everything that made it."""

    image: Image.Image  # mode "L", stored size, information bar burned in
    category: str
    metadata: dict  # JSON-serialisable generating parameters (see ``generate_micrograph``)

    @property
    def label(self) -> int:
        return SEM_CATEGORIES.index(self.category)

    def png_bytes(self) -> bytes:
        """Deterministic PNG encoding (no timestamps or text chunks)."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", compress_level=6)
        return buffer.getvalue()

    def metadata_json(self) -> str:
        return json.dumps(self.metadata, sort_keys=True, ensure_ascii=False)


def category_for_index(index: int, seed: int = 0) -> str:
    """Balanced category schedule: every block of ten consecutive indices holds each class once."""
    block, position = divmod(index, len(SEM_CATEGORIES))
    order = np.random.default_rng(np.random.SeedSequence([seed, block, 0xC1A55])).permutation(len(SEM_CATEGORIES))
    return SEM_CATEGORIES[int(order[position])]


def generate_micrograph(index: int, seed: int = 0, *, category: str | None = None, short_side: int = 256,
                        render_scale: int = 2) -> SyntheticMicrograph:
    """Draw synthetic micrograph number ``index`` of the stream defined by ``seed``.

    The category comes from ``category_for_index`` unless given. The scene is drawn at
    ``render_scale`` x the stored size (the "microscope" frame; default 682x512 for a 341x256
    stored image) and downsampled. The metadata holds ``category``, ``variant``, ``imaging``
    (magnification, HFW, kV, WD, detector, noise levels ...), ``info_bar`` (its rows in the stored
    image, the scale bar), ``structure`` (what the scene drew: sizes in nm, counts, arrangement,
    coverage, aggregation, pore fraction, roughness, ... depending on the class) and ``pixel_size_nm``
    of the stored image.
    """
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    if short_side < 32:
        raise ValueError(f"short_side must be at least 32 pixels, got {short_side}")
    if render_scale not in (1, 2, 3, 4):
        raise ValueError(f"render_scale must be 1, 2, 3 or 4, got {render_scale}")
    category = category if category is not None else category_for_index(index, seed)
    if category not in CLASS_SPECS:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(SEM_CATEGORIES)}")
    spec = CLASS_SPECS[category]
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0x5E3]))
    variant = choice(rng, spec.variants, spec.variant_weights)
    width, height = stored_size(short_side)
    render_w, render_h = width * render_scale, height * render_scale
    imaging = sample_imaging(rng, spec)
    bar_rows = int(round(height * rng.uniform(0.07, 0.11)))
    bar_top = height - bar_rows
    bar_style = choice(rng, ("dark", "light"), (0.7, 0.3))
    nm_per_px = imaging["hfw_nm"] / width
    nm_per_render_px = nm_per_px / render_scale

    scene = Scene(width, height, render_scale, bar_top, nm_per_px, rng)
    structure = RENDERERS[category](scene, variant, spec)
    if scene.substrate_roughness_nm is not None:
        structure.setdefault("substrate_roughness_nm", scene.substrate_roughness_nm)
    imaging["tilt_deg"] = float(structure.get("tilt_deg", 0.0))
    height_map, material_map = scene.arrays()
    signal = detector_signal(height_map, material_map, imaging, nm_per_px)
    frame, charging = acquire(signal, imaging, bar_top, rng, spec.insulating)

    bar_render, bar_info = draw_info_bar(render_w, bar_rows * render_scale, imaging, nm_per_render_px, bar_style, rng)
    frame[bar_top:] = np.asarray(bar_render.resize((width, bar_rows), Image.BOX))
    imaging["charging"] = charging
    metadata = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "synthetic": True,
        "seed": seed,
        "index": index,
        "category": category,
        "variant": variant,
        "feature": spec.feature,
        "size_kind": structure.pop("size_kind", spec.size_kind),
        "pixel_size_nm": round_significant(nm_per_px, 4),
        "render_size": [render_w, render_h],
        "stored_size": [width, height],
        "imaging": imaging,
        "info_bar": {
            "style": bar_style,
            "layout": imaging["vendor_style"],
            "top_row": bar_top,
            "rows": bar_rows,
            **{k: v for k, v in bar_info.items() if k != "scale_bar_render_px"},
            "scale_bar_px": round(bar_info["scale_bar_render_px"] / render_scale, 1),
        },
        "structure": structure,
    }
    return SyntheticMicrograph(image=Image.fromarray(frame, mode="L"), category=category, metadata=metadata)
