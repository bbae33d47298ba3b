"""The ten classes as the synthetic generator draws them, and the physical units shared by renderers, info bar and oracle.

Each :class:`ClassSpec` holds the ranges a class's scenes are drawn from; sizes are fractions of the
horizontal field width (HFW), so the magnification (``hfw_nm``) turns them into nanometres. The
oracle's class descriptions are written from the same ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

from emvision.vocabulary import SEM_CATEGORIES

from .fields import round_significant

# Magnification -> horizontal field width: HFW = REFERENCE_DISPLAY_WIDTH_MM / magnification.
# Measured on the ZEISS micrographs in shared/real_sem: 20.00 K X with a 2 um bar of 108 px out of
# 1024 and 3.56 K X with a 10 um bar of 96 px both give a reference width of about 380 mm.
REFERENCE_DISPLAY_WIDTH_MM = 380.0
ASPECT_RATIO = 4 / 3  # stored and rendered frames are 4:3 like the 1024x768 originals

# ---------------------------------------------------------------------------------------------
# Class specifications: the parameter ranges that both the renderers and the oracle's class
# descriptions use. Sizes are fractions of the HFW; physical ranges follow from the magnifications.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSpec:
    """Ranges a class's scenes are drawn from (sizes as fractions of the horizontal field width)."""

    category: str
    feature: str  # what one object is called ("nanoparticle", "pore", ...)
    size_kind: str  # what the principal size measures ("diameter", "pitch", ...)
    size_fraction: tuple[float, float]  # principal size / HFW
    magnification: tuple[float, float]
    variants: tuple[str, ...]
    variant_weights: tuple[float, ...]
    insulating: bool = False  # prone to charging artefacts

    def size_nm_range(self) -> tuple[float, float]:
        """Physical range of the principal size over the class's magnifications."""
        low_mag, high_mag = self.magnification
        return (self.size_fraction[0] * hfw_nm(high_mag), self.size_fraction[1] * hfw_nm(low_mag))


CLASS_SPECS: dict[str, ClassSpec] = {
    spec.category: spec
    for spec in (
        ClassSpec("Biological", "cell", "diameter", (0.03, 0.45), (500, 20_000),
                  ("cells", "bacteria", "tissue"), (0.4, 0.35, 0.25), insulating=True),
        ClassSpec("Fibres", "fibre", "diameter", (0.008, 0.04), (150, 20_000),
                  ("nonwoven", "aligned", "woven"), (0.45, 0.25, 0.3), insulating=True),
        ClassSpec("Films_Coated_Surface", "grain", "grain size", (0.015, 0.12), (3_000, 100_000),
                  ("polycrystalline", "faceted", "cracked", "coating"), (0.3, 0.2, 0.3, 0.2)),
        ClassSpec("MEMS_devices_and_electrodes", "electrode line", "line width", (0.008, 0.05), (40, 5_000),
                  ("interdigitated", "pads_and_leads", "comb_drive", "serpentine"), (0.3, 0.3, 0.2, 0.2)),
        ClassSpec("Nanowires", "nanowire", "diameter", (0.003, 0.012), (5_000, 100_000),
                  ("forest", "lying", "bundled"), (0.45, 0.35, 0.2)),
        ClassSpec("Particles", "nanoparticle", "diameter", (0.015, 0.09), (5_000, 150_000),
                  ("spheres", "cubes", "faceted", "rods"), (0.4, 0.22, 0.23, 0.15)),
        ClassSpec("Patterned_surface", "array element", "pitch", (0.035, 0.15), (1_000, 60_000),
                  ("pillars", "holes", "dots", "gratings"), (0.3, 0.25, 0.25, 0.2)),
        ClassSpec("Porous_Sponge", "pore", "pore diameter", (0.015, 0.12), (2_000, 100_000),
                  ("foam", "bicontinuous", "membrane"), (0.4, 0.4, 0.2)),
        ClassSpec("Powder", "grain", "grain size", (0.01, 0.04), (1_000, 50_000),
                  ("granular", "agglomerates", "flakes"), (0.4, 0.35, 0.25), insulating=True),
        ClassSpec("Tips", "tip", "apex radius", (0.0005, 0.01), (500, 50_000),
                  ("needle", "pyramid", "etched_wire"), (0.45, 0.3, 0.25)),
    )
}
assert tuple(sorted(CLASS_SPECS)) == SEM_CATEGORIES


def hfw_nm(magnification: float) -> float:
    """Horizontal field width in nm at a displayed magnification."""
    return REFERENCE_DISPLAY_WIDTH_MM * 1e6 / magnification


def stored_size(short_side: int) -> tuple[int, int]:
    """(width, height) of a stored 4:3 image with the given short side, e.g. 256 -> (341, 256)."""
    return int(short_side * ASPECT_RATIO), short_side


def format_length(nm: float) -> str:
    """A length the way a scale bar or an answer writes it: '850 nm', '1.2 µm', '2 mm'."""
    if nm < 1:
        return f"{nm:.2g} nm"
    if nm < 1000:
        return f"{round_significant(nm, 2 if nm < 100 else 3):g} nm"
    if nm < 1_000_000:
        return f"{round_significant(nm / 1000, 2 if nm < 100_000 else 3):g} µm"
    return f"{round_significant(nm / 1_000_000, 2):g} mm"
