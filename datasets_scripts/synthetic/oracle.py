"""The oracle teacher: answers and class descriptions derived from the synthetic generator's parameters.

ORACLE ANSWERS FOR SYNTHETIC IMAGES. Nothing here looks at pixels or calls a model. Every answer
restates what ``generator.generate_micrograph`` recorded when it drew the image (sizes in nm
from the magnification and the pixel size, counts, arrangement, aggregation, roughness, pore
fraction, detector, beam energy, ...), in varied wording chosen by a seeded generator, so a
vision-language model can be trained and checked against answers that are exactly right. Rows
built from them say ``teacher="oracle-synthetic"``.

- ``oracle_answer(metadata, question_id)`` / ``oracle_answers(metadata)``: the ten prompt families of
  the MVaEMa paper (``emvision.vocabulary.PROMPT_FAMILIES``), one to three sentences each.
- ``oracle_class_descriptions(per_class)``: HNF class descriptions from the generator's parameter
  ranges (``specs.CLASS_SPECS``), answering ``emvision.vocabulary.class_description_prompt``.

Application and function sentences (families 9 and 10) are the usual uses of each category, written
by hand per category and variant; everything else comes from the parameters.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping

from emvision.datasets_scripts.storage import ORACLE_TEACHER
from emvision.vocabulary import FAMILY_BY_ID, SEM_CATEGORIES, class_description_prompt

from .specs import CLASS_SPECS, format_length

__all__ = ["CATEGORY_NAMES", "ORACLE_TEACHER", "oracle_answer", "oracle_answers", "oracle_basics_sentences", "oracle_class_descriptions", "size_phrase"]

# How an answer names the category (family 1) and the class descriptions name it.
CATEGORY_NAMES = {
    "Biological": "biological material",
    "Fibres": "fibres",
    "Films_Coated_Surface": "a film (coated surface)",
    "MEMS_devices_and_electrodes": "MEMS devices and electrodes",
    "Nanowires": "nanowires",
    "Particles": "particles",
    "Patterned_surface": "a patterned surface",
    "Porous_Sponge": "a porous sponge",
    "Powder": "a powder",
    "Tips": "a tip",
}
_PLURAL_NAMES = {
    "Biological": "biological samples",
    "Fibres": "fibres",
    "Films_Coated_Surface": "films and coated surfaces",
    "MEMS_devices_and_electrodes": "MEMS devices and electrodes",
    "Nanowires": "nanowires",
    "Particles": "particles",
    "Patterned_surface": "patterned surfaces",
    "Porous_Sponge": "porous sponges",
    "Powder": "powders",
    "Tips": "tips",
}
_SUBJECT = {  # what the counted objects are called in running text (plural)
    "Biological": {"cells": "cells", "bacteria": "bacteria", "tissue": "tissue folds"},
    "Fibres": "fibres",
    "Films_Coated_Surface": {"polycrystalline": "grains", "faceted": "crystallites", "cracked": "islands", "coating": "nodules"},
    "MEMS_devices_and_electrodes": "device structures",
    "Nanowires": "nanowires",
    "Particles": "nanoparticles",
    "Patterned_surface": "pattern elements",
    "Porous_Sponge": "pores",
    "Powder": {"granular": "grains", "agglomerates": "grains", "flakes": "flakes"},
    "Tips": "tip",
}


def _subject(md: Mapping) -> str:
    subject = _SUBJECT[md["category"]]
    return subject[md["variant"]] if isinstance(subject, dict) else subject


_ARRANGEMENT_PHRASES = {  # structure["arrangement"] -> how a sentence says it
    "random": "scattered at random over the substrate",
    "clustered": "gathered in clusters",
    "close-packed": "in a close-packed monolayer",
    "densely packed": "densely packed across the whole field",
    "agglomerated clumps": "clumped into agglomerates",
    "vertically aligned array": "standing in a vertically aligned array",
    "randomly oriented, lying on the substrate": "lying on the substrate in random orientations",
    "parallel bundles": "grouped in parallel bundles",
    "random nonwoven mat": "forming a random nonwoven mat",
    "aligned": "aligned along one direction",
    "woven bundles": "woven together in bundles",
    "interconnected random network": "forming an interconnected random network",
    "random, partly merged pores": "placed at random and partly merged",
    "isolated random pores": "isolated and randomly placed",
    "space-filling grains": "filling the surface completely",
    "islands separated by a crack network": "separated by a network of cracks",
    "scattered nodules on a continuous coating": "scattered over a continuous coating",
    "periodic line grating": "repeating as a periodic grating",
    "lithographically defined layout": "in a lithographically defined layout",
    "single isolated tip": "alone in the field of view",
    "isolated cells": "as isolated cells",
    "scattered cells": "scattered over the substrate",
    "clustered colonies": "gathered in colonies",
    "scattered small clusters": "in small scattered clusters",
    "continuous tissue": "forming a continuous tissue",
}


def _arrangement(md: Mapping) -> str:
    arrangement = md["structure"]["arrangement"]
    if arrangement.endswith(" lattice"):
        return f"ordered on a {arrangement}"
    return _ARRANGEMENT_PHRASES.get(arrangement, f"arranged as {arrangement}")

_VARIANT_DESCRIPTION = {
    ("Biological", "cells"): "adherent cells spread on a flat substrate, with thin membrane protrusions (filopodia)",
    ("Biological", "bacteria"): "bacterial cells on a substrate",
    ("Biological", "tissue"): "a folded, wrinkled tissue surface",
    ("Fibres", "nonwoven"): "a nonwoven mat of long, randomly oriented fibres, like an electrospun membrane",
    ("Fibres", "aligned"): "long fibres aligned roughly parallel to one another",
    ("Fibres", "woven"): "fibre bundles woven in an over-and-under pattern",
    ("Films_Coated_Surface", "polycrystalline"): "a polycrystalline film of equiaxed grains",
    ("Films_Coated_Surface", "faceted"): "a film of faceted crystallites",
    ("Films_Coated_Surface", "cracked"): "a continuous coating broken up by a network of cracks",
    ("Films_Coated_Surface", "coating"): "a smooth continuous coating with scattered nodules",
    ("MEMS_devices_and_electrodes", "interdigitated"): "interdigitated comb electrodes with contact pads",
    ("MEMS_devices_and_electrodes", "pads_and_leads"): "a device with bond pads and fan-out leads",
    ("MEMS_devices_and_electrodes", "comb_drive"): "a suspended comb-drive actuator with release holes and folded springs",
    ("MEMS_devices_and_electrodes", "serpentine"): "a meandering (serpentine) metal line between two contact pads",
    ("Nanowires", "forest"): "a vertically aligned nanowire array viewed with the stage tilted",
    ("Nanowires", "lying"): "randomly oriented nanowires lying on a substrate",
    ("Nanowires", "bundled"): "nanowires gathered into parallel bundles",
    ("Particles", "spheres"): "spherical nanoparticles",
    ("Particles", "cubes"): "cubic nanocrystals",
    ("Particles", "faceted"): "faceted polyhedral nanoparticles",
    ("Particles", "rods"): "short rod-shaped nanoparticles (nanorods)",
    ("Patterned_surface", "pillars"): "a periodic array of pillars",
    ("Patterned_surface", "holes"): "a periodic array of holes",
    ("Patterned_surface", "dots"): "a periodic array of raised dots",
    ("Patterned_surface", "gratings"): "a line grating of parallel ridges",
    ("Porous_Sponge", "foam"): "an open foam of rounded cells and holes",
    ("Porous_Sponge", "bicontinuous"): "a sponge-like, interconnected porous network",
    ("Porous_Sponge", "membrane"): "a flat membrane pierced by round pores",
    ("Powder", "granular"): "a densely packed powder of irregular grains",
    ("Powder", "agglomerates"): "powder grains clumped into agglomerates",
    ("Powder", "flakes"): "a powder of thin, plate-like flakes",
    ("Tips", "needle"): "a single sharp conical needle tip",
    ("Tips", "pyramid"): "a pyramidal probe tip at the end of a cantilever",
    ("Tips", "etched_wire"): "a wire that tapers to a sharp, etched tip",
}

_FUNCTION = {  # family 9: what is functionally distinct in the field of view
    "Biological": "The cell bodies and their membrane protrusions are the distinct regions: the protrusions are how cells anchor to and sense the substrate.",
    "Fibres": "The fibres themselves and the open spaces between them are the functional regions: the network of voids makes the mat permeable, as in filters and scaffolds.",
    "Films_Coated_Surface": "The film surface is the functional region; grain boundaries, cracks and pinholes are the features that set its barrier, electrical and mechanical behaviour.",
    "MEMS_devices_and_electrodes": "The metal lines, pads and electrodes are the functional elements: they carry signals or drive the device, while the substrate between them insulates.",
    "Nanowires": "Each nanowire is a one-dimensional conduction path with a large surface-to-volume ratio; their free tips and sidewalls are the active regions.",
    "Particles": "The particle surfaces are the functional regions (large surface area for reactions or optical effects); the bare substrate between them is passive.",
    "Patterned_surface": "The periodic pattern elements are the functional features: their regular pitch is what gives patterned surfaces their optical, wetting or templating behaviour.",
    "Porous_Sponge": "The pores and the thin walls between them are the functional features: together they give a large internal surface and paths for fluids.",
    "Powder": "The exposed grain surfaces are the functional regions, and the voids between grains set how the powder packs and flows.",
    "Tips": "The apex of the tip is the functional region: its radius sets the resolution of probing, or the field enhancement in emission.",
}

_APPLICATIONS = {  # family 10: usual applications per category
    "Biological": ("cell biology, biocompatibility tests of materials", "studies of cell adhesion on nanostructured substrates"),
    "Fibres": ("filtration membranes", "tissue-engineering scaffolds", "composite reinforcement"),
    "Films_Coated_Surface": ("protective and functional coatings", "thin-film electronics", "catalytic or optical layers"),
    "MEMS_devices_and_electrodes": ("sensors and actuators", "microelectronic test structures", "electrochemical electrodes"),
    "Nanowires": ("nanoelectronics and sensors", "field emission", "energy devices such as batteries and solar cells"),
    "Particles": ("catalysis", "drug delivery", "plasmonic and optical materials"),
    "Patterned_surface": ("photonic structures", "lithography test patterns", "surfaces with tailored wetting or cell response"),
    "Porous_Sponge": ("filtration and separation", "catalyst supports", "lightweight insulation or tissue scaffolds"),
    "Powder": ("powder metallurgy and additive manufacturing feedstock", "catalysts", "ceramic processing"),
    "Tips": ("scanning probe microscopy (AFM/STM)", "field emission sources", "nanomanipulation"),
}


def _rng(metadata: Mapping, question_id: int, salt: str = "") -> random.Random:
    return random.Random(f"oracle-{metadata.get('seed', 0)}-{metadata.get('index', 0)}-{question_id}-{salt}")


def _fraction_words(fraction: float) -> str:
    if fraction < 0.05:
        return "almost none"
    if fraction < 0.3:
        return "a minority"
    if fraction < 0.6:
        return "about half"
    if fraction < 0.9:
        return "most"
    return "nearly all"


def _a(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _percent(fraction: float) -> str:
    return f"{round(100 * fraction):d}%"


def size_phrase(metadata: Mapping) -> str:
    """The size statement every size-related answer uses: '<kind> of about X (range A to B)'."""
    structure, kind = metadata["structure"], metadata["size_kind"]
    size = structure["size_nm"]
    if size["max"] > size["min"] * 1.05:
        return f"{kind} of about {format_length(size['mean'])} (range {format_length(size['min'])} to {format_length(size['max'])})"
    return f"{kind} of about {format_length(size['mean'])}"


def _uniformity(metadata: Mapping) -> str:
    cv = metadata["structure"].get("size_cv")
    if cv is None:
        return ""
    if cv < 0.06:
        return "very uniform in size and shape"
    if cv < 0.2:
        return "fairly uniform in size, with mild variation"
    if cv < 0.4:
        return "moderately variable in size"
    return "highly variable in size (polydisperse)"


def _scale_sentence(metadata: Mapping, rng: random.Random) -> str:
    bar, imaging = metadata["info_bar"], metadata["imaging"]
    pixel = format_length(metadata["pixel_size_nm"])
    width = metadata["stored_size"][0]
    hfw = format_length(imaging["hfw_nm"])
    if bar.get("top_row") is None:
        return rng.choice((
            f"There is no scale bar, but at this magnification one pixel corresponds to about {pixel}, so the {width}-pixel-wide field spans about {hfw}.",
            f"No data bar is shown; the field of view is about {hfw} wide, roughly {pixel} per pixel.",
        ))
    label, bar_px = bar["scale_bar_label"], bar["scale_bar_px"]
    return rng.choice((
        f"The scale bar reads {label} and spans about {bar_px:.0f} pixels, so one pixel corresponds to about {pixel} and the whole field is about {hfw} wide.",
        f"Scale: the {label} bar is about {bar_px:.0f} pixels long, so roughly {pixel} per pixel; the field of view is about {hfw} across.",
        f"The image scale is about {pixel} per pixel: the {label} scale bar covers about {bar_px:.0f} pixels, and the field width is about {hfw} at {imaging['magnification']:g}x magnification.",
    ))


def _basics_sentences(category: str, variant: str) -> tuple[str, str, str]:
    name, what = CATEGORY_NAMES[category], _VARIANT_DESCRIPTION[(category, variant)]
    return (
        f"The image shows {name}: {what}.",
        f"This micrograph shows {name}, specifically {what}.",
        f"The nanomaterial is {name}; the micrograph shows {what}.",
    )


def oracle_basics_sentences(category: str) -> list[str]:
    """Every first sentence the oracle's Basics answer can open with for ``category`` (each variant, each form):
    texts that name the class the way the synthetic set's answers do, for zero-shot classification."""
    return [sentence for (c, variant) in _VARIANT_DESCRIPTION if c == category for sentence in _basics_sentences(c, variant)]


def _family_1(md, rng):
    first = rng.choice(_basics_sentences(md["category"], md["variant"]))
    return f"{first} {_scale_sentence(md, rng)}"


def _family_2(md, rng):
    s = md["structure"]
    shape, arrangement = s["shape"], _arrangement(md)
    verb = "appears" if md["category"] == "Tips" else "appear"
    first = rng.choice((
        f"The {_subject(md)} {verb} as {shape}, {arrangement}.",
        f"Morphologically, the sample consists of {shape}, {arrangement}.",
        f"The structures are {shape}, {arrangement}.",
    ))
    phases = _phases(md)
    uniform = _uniformity(md)
    second = f"{phases} They are {uniform}." if uniform else phases
    return f"{first} {second}"


def _phases(md) -> str:
    category, variant, s = md["category"], md["variant"], md["structure"]
    if category == "Porous_Sponge":
        return f"Two phases are visible: the bright solid walls and the dark pores, which take up about {_percent(s['pore_fraction'])} of the field."
    if category == "Films_Coated_Surface":
        if variant == "cracked":
            return f"The film forms one continuous layer, divided into about {s['count']} islands by dark cracks."
        if variant == "coating":
            return "One continuous coating layer is visible, with raised nodules as a second, distinct feature."
        return f"The layer is divided into about {s['count']} distinct grains (domains) separated by boundaries."
    if category == "Powder":
        return "Several layers of grains overlap, the deeper ones appearing darker."
    if category == "Nanowires" and variant == "forest":
        return "The wires stand on a rough base layer that appears darker below them."
    if category == "MEMS_devices_and_electrodes":
        return "Two distinct regions are visible: the brighter patterned metal layer and the darker substrate."
    if category == "Patterned_surface":
        return "The surface shows a single patterned layer with no separate phases."
    if category == "Biological":
        return "The soft biological material stands out from the flatter, smoother substrate."
    if category == "Tips":
        return "The tip is a single solid body against a featureless background."
    coverage = s.get("coverage")
    if coverage is not None:
        return f"They form one layer on the substrate, covering about {_percent(coverage)} of the visible area."
    return "No separate layers or phases are visible."


def _distribution(md) -> str:
    """Evenly spaced, clustered or random (family 3's wording)."""
    arrangement = md["structure"]["arrangement"]
    if any(word in arrangement for word in ("lattice", "grating", "lithograph")):
        return "regular and evenly spaced"
    if any(word in arrangement for word in ("cluster", "agglomerat", "bundle", "colon")):
        return "clustered"
    if any(word in arrangement for word in ("close-packed", "densely", "space-filling", "continuous", "crack")):
        return "dense, filling the whole field"
    if "aligned" in arrangement:
        return "aligned in a common direction"
    return "random"


def _family_3(md, rng):
    category, s = md["category"], md["structure"]
    subject = _subject(md)
    size = size_phrase(md)
    if "length_nm" in s:
        size += f", and a length of about {format_length(s['length_nm']['mean'])}"
    first = rng.choice((
        f"The {subject} have {_a(size)}." if category != "Tips" else f"The tip has {_a(size)}.",
        f"Size: {_a(size)}.",
        f"I estimate {_a(size)} for the {subject}.",
    ))
    if category == "Tips":
        return f"{first} There is one tip, isolated in the field of view, so distribution and aggregation do not apply."
    count, distribution = s.get("count", 0), _distribution(md)
    second = rng.choice((
        f"About {count} are visible and their distribution is {distribution}",
        f"Roughly {count} can be counted; the distribution is {distribution}",
    ))
    aggregation = s.get("aggregation")
    if category == "Porous_Sponge":
        second += ("; the pores are interconnected throughout the network" if md["variant"] == "bicontinuous" else
                   f"; {_fraction_words(aggregation)} of the pores merge with or touch a neighbour ({_percent(aggregation)})")
    elif category == "Powder":
        second += f"; the {subject} are aggregated, touching one another over about {_percent(aggregation)} of the field"
    elif "bundle" in s["arrangement"]:
        second += f"; the {subject} are bundled side by side"
    elif md["variant"] == "tissue":
        second += "; the tissue is one continuous sheet, so there is no aggregation of separate objects"
    elif category == "Patterned_surface":
        missing = s.get("missing_elements", 0)
        second += f"; there is no aggregation, and {missing} elements are missing from the pattern" if missing else "; there is no aggregation and no element is missing"
    elif aggregation is not None and category not in ("Films_Coated_Surface", "MEMS_devices_and_electrodes"):
        second += f"; {_fraction_words(aggregation)} of them touch or cross a neighbour ({_percent(aggregation)})"
    return f"{first} {second}."


def _family_4(md, rng):
    category, variant, s, imaging = md["category"], md["variant"], md["structure"], md["imaging"]
    parts = []
    if "roughness_nm" in s:
        parts.append(rng.choice((f"The surface has a fine texture with an RMS roughness of about {format_length(s['roughness_nm'])}.",
                                 f"The surface is finely textured (roughness about {format_length(s['roughness_nm'])} RMS).")))
    elif category in ("Particles", "Nanowires", "Tips", "MEMS_devices_and_electrodes", "Patterned_surface"):
        first = rng.choice(("The surfaces look smooth, with crisp edges", "Surfaces are smooth and featureless apart from the edges"))
        if "substrate_roughness_nm" in s and category != "Tips":
            first += f"; the substrate has a fine texture of about {format_length(s['substrate_roughness_nm'])} RMS roughness"
        parts.append(first + ".")
    elif category == "Powder":
        parts.append("The surface is rough and granular, made up of many small grains.")
    elif category == "Fibres":
        parts.append("The fibre surfaces are smooth; the texture of the sample comes from the crossing fibres.")
    elif category == "Biological":
        parts.append("The biological surfaces look soft and slightly bumpy, unlike the smooth substrate.")
    elif category == "Porous_Sponge":
        parts.append("The walls are slightly rough and the surface is dominated by pores.")
    defects = []
    if category == "Porous_Sponge":
        defects.append(f"pores covering about {_percent(s['pore_fraction'])} of the area")
    if s.get("cracks") and variant == "cracked":
        defects.append(f"cracks about {format_length(s['crack_width_nm'])} wide")
    if s.get("pinholes"):
        defects.append(f"{s['pinholes']} small pinholes")
    if s.get("missing_elements"):
        defects.append(f"{s['missing_elements']} missing pattern elements")
    if s.get("beads"):
        defects.append(f"{s['beads']} bead-like thickenings on fibres")
    if s.get("debris"):
        defects.append(f"{s['debris']} small debris particles")
    if defects:
        parts.append(f"Visible imperfections: {', '.join(defects)}.")
    else:
        parts.append(rng.choice(("No obvious defects or impurities are visible.", "I see no clear defects, pores or impurities.")))
    if imaging["charging"]["present"]:
        parts.append("Bright streaks along some scan lines are charging artefacts, not surface features.")
    return " ".join(parts[:3])


def _family_5(md, rng):
    imaging = md["imaging"]
    category = md["category"]
    subject = _subject(md)
    if imaging["detector_kind"] == "backscatter":
        first = f"This backscattered-electron image shows compositional (atomic-number) contrast: the brighter {subject} are likely richer in heavier elements than the darker background."
    elif category in ("MEMS_devices_and_electrodes",):
        first = "The brighter metal layer and the darker substrate differ in brightness, which suggests two different materials (metal on an insulating substrate)."
    elif category == "Porous_Sponge":
        first = "Brightness differences come mostly from topography: pores are dark because fewer electrons escape from them, not because of a different composition."
    else:
        first = rng.choice((
            f"Brightness differences between the {subject} and the background mainly reflect topography and edge effects in the secondary-electron signal; there is no clear sign of distinct compositions.",
            "The grayscale contrast is mostly topographic (edges and raised features are brighter); it gives no clear evidence of different compositions.",
        ))
    second = rng.choice((
        "There are no labels or markers identifying specific elements or compounds; the data bar only lists imaging settings, and an elemental analysis such as EDS would be needed.",
        "No element labels or markers are present; identifying the composition would require a spectroscopic measurement such as EDS.",
    ))
    return f"{first} {second}"


def _family_6(md, rng):
    category, variant, s, imaging = md["category"], md["variant"], md["structure"], md["imaging"]
    aggregation = s.get("aggregation", 0.0)
    if category == "Films_Coated_Surface":
        first = ("The islands are separated by distinct cracks." if variant == "cracked" else
                 "The grains are fused into a continuous film, meeting at grain boundaries." if variant != "coating" else
                 "The nodules sit on and are fused with the continuous coating.")
    elif category in ("Patterned_surface", "MEMS_devices_and_electrodes"):
        first = "The structures are separate, defined elements with regular gaps between them."
    elif category == "Tips":
        first = "The tip is a single body, separate from its surroundings."
    elif category == "Porous_Sponge":
        first = ("Neighbouring pores merge into one another through the thin walls." if variant != "membrane" else
                 f"The pores are mostly separate; {_fraction_words(aggregation)} of them touch a neighbour.")
    elif category == "Powder":
        first = f"The {_subject(md)} touch and are partly fused into larger clusters."
    elif md["variant"] == "tissue":
        first = "The folds are parts of one continuous, fused sheet of tissue."
    else:
        if aggregation > 0.6:
            first = f"Most of the {_subject(md)} touch or overlap their neighbours ({_percent(aggregation)})."
        elif aggregation > 0.2:
            first = f"Some of the {_subject(md)} touch or cross each other ({_percent(aggregation)}), while the rest are separate."
        else:
            first = f"The {_subject(md)} are mostly separate from one another."
    sharp = imaging["defocus_px"] < 0.2
    second = rng.choice((
        "Boundaries between structures are sharp and well defined." if sharp else "Boundaries are visible but slightly soft, as the image is a little out of focus.",
        "The borders are clearly distinguishable." if sharp else "The borders can be distinguished, although slight defocus blurs them.",
    ))
    return f"{first} {second}"


def _family_7(md, rng):
    category, s = md["category"], md["structure"]
    debris = s.get("debris", 0)
    if category in ("Particles", "Nanowires", "Biological"):
        first = "The objects rest on a flat substrate; there is no sign of a surrounding solvent or polymer matrix."
    elif category == "MEMS_devices_and_electrodes":
        first = "The metal structures sit on a substrate" + (", partly over an etched trench" if md["variant"] == "comb_drive" else "") + "; no solvent or polymer is visible."
    elif category == "Tips":
        first = "The tip stands against an empty, featureless background; no surrounding medium is visible."
    elif category == "Fibres" and md["variant"] != "woven":
        first = "The fibres lie over a dark, deeper background; no solvent or polymer matrix is visible around them."
    else:
        first = "The material fills the field; no interaction with solvents, polymers or other media is visible."
    items = []
    if debris:
        items.append(f"{debris} small debris particles")
    if md["info_bar"].get("top_row") is not None:
        items.append("the instrument's data bar along the bottom with the scale bar and imaging settings")
    second = f"Non-nanomaterial objects: {' and '.join(items)}." if items else "No non-nanomaterial objects are present."
    return f"{first} {second}"


def _family_8(md, rng):
    imaging = md["imaging"]
    kv = f"{imaging['accelerating_voltage_kv']:g} kV"
    mag = f"{imaging['magnification']:,.0f}x"
    detector = f"{_DETECTOR_WORDS[imaging['detector_kind']]} ({imaging['detector']})"
    first = rng.choice((
        f"This is a scanning electron microscopy (SEM) image recorded with the {detector} at {kv}, a working distance of {imaging['working_distance_mm']:g} mm and a magnification of {mag}.",
        f"The technique is SEM: an image from the {detector} taken at {kv} accelerating voltage and {mag} magnification (working distance {imaging['working_distance_mm']:g} mm).",
    ))
    details = ["It is a grayscale image with no false colouring or 3D rendering"]
    if imaging["tilt_deg"]:
        details.append(f"the stage is tilted by {imaging['tilt_deg']:g} degrees")
    if imaging["charging"]["present"]:
        details.append("bright streaks show sample charging")
    elif imaging["scan_line_noise"] > 0.008:
        details.append("faint horizontal scan-line noise is visible")
    return f"{first} {'; '.join(details)}."


_DETECTOR_WORDS = {
    "inlens": "in-lens secondary-electron detector",
    "everhart_thornley": "Everhart-Thornley secondary-electron detector",
    "backscatter": "backscattered-electron detector",
}


def _family_9(md, rng):
    category = md["category"]
    first = _FUNCTION[category]
    second = rng.choice((
        "The image is a static snapshot; no dynamic process is shown.",
        "It is primarily static: nothing indicates a process in progress.",
    ))
    if md["imaging"]["charging"]["present"]:
        second += " The bright streaks are charging under the beam, an imaging artefact rather than a property of the material."
    return f"{first} {second}"


def _family_10(md, rng):
    category = md["category"]
    uses = list(_APPLICATIONS[category])
    rng.shuffle(uses)
    listed = ", ".join(uses[:-1]) + " and " + uses[-1] if len(uses) > 1 else uses[0]
    first = rng.choice((
        f"Materials like this are typically used for {listed}.",
        f"Likely applications include {listed}.",
    ))
    second = ("It is presented as an experimental SEM micrograph of a sample, not a schematic or simulation rendering; "
              "this particular image is synthetic, generated procedurally from known parameters.")
    return f"{first} {second}"


_FAMILIES = {1: _family_1, 2: _family_2, 3: _family_3, 4: _family_4, 5: _family_5, 6: _family_6, 7: _family_7, 8: _family_8, 9: _family_9, 10: _family_10}


def _as_metadata(metadata: Mapping | str) -> Mapping:
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    missing = [key for key in ("category", "variant", "structure", "imaging", "info_bar", "size_kind") if key not in metadata]
    if missing:
        raise ValueError(f"metadata is not from the synthetic generator: missing {', '.join(missing)}")
    if metadata["category"] not in SEM_CATEGORIES:
        raise ValueError(f"metadata has unknown category {metadata['category']!r}")
    return metadata


def oracle_answer(metadata: Mapping | str, question_id: int) -> str:
    """The oracle's answer to prompt family ``question_id`` (1-10) about one synthetic image.

    ``metadata`` is the image's generating parameters (the dict, or the JSON stored in the
    dataset's ``metadata`` column). The wording is chosen by a generator seeded with the image's
    seed, index and the family, so the same image always gets the same answer.
    """
    if question_id not in FAMILY_BY_ID:
        raise ValueError(f"question_id must be one of {sorted(FAMILY_BY_ID)}, got {question_id}")
    md = _as_metadata(metadata)
    return _FAMILIES[question_id](md, _rng(md, question_id))


def oracle_answers(metadata: Mapping | str) -> dict[int, str]:
    """Answers to all ten prompt families, keyed by question_id."""
    md = _as_metadata(metadata)
    return {qid: _FAMILIES[qid](md, _rng(md, qid)) for qid in sorted(FAMILY_BY_ID)}


# ---------------------------------------------------------------------------------------------
# Class descriptions for HNF, from the generator's parameter ranges
# ---------------------------------------------------------------------------------------------

# (the look-alike category, what this category shows, what the look-alike shows instead)
_LOOK_ALIKES = {
    "Biological": ("Particles", "look soft, with textured surfaces and thin protrusions", "particles have hard, smooth outlines"),
    "Fibres": ("Nanowires", "are thicker, longer and more curved, often forming mats or woven bundles", "nanowires are thin, straight and uniform"),
    "Films_Coated_Surface": ("Porous_Sponge", "form a continuous layer whose defects are thin cracks, grain boundaries or pinholes", "a sponge is a skeleton around rounded pores"),
    "MEMS_devices_and_electrodes": ("Patterned_surface", "are larger, non-repeating layouts of pads, leads, combs and beams", "a patterned surface repeats one element at a constant pitch"),
    "Nanowires": ("Fibres", "are straight and thin, with very high aspect ratios, often standing in aligned arrays", "fibres are thicker and curve across the field"),
    "Particles": ("Powder", "are discrete objects with regular shapes on a visible substrate", "a powder covers the field with irregular, aggregated grains"),
    "Patterned_surface": ("MEMS_devices_and_electrodes", "repeat one element with a constant pitch over the whole field", "a device shows pads, leads and other non-repeating parts"),
    "Porous_Sponge": ("Films_Coated_Surface", "consist of rounded dark pores in a continuous skeleton", "a cracked film shows thin dark cracks between flat islands"),
    "Powder": ("Particles", "fill the field with irregular, polydisperse grains in several overlapping layers", "particles sit apart on a visible substrate"),
    "Tips": ("Nanowires", "are single tapered objects that narrow to a sharp apex", "nanowires are populations of uniform wires"),
}

_VARIANT_NAMES = {
    "Biological": {"cells": "adherent cells with filopodia", "bacteria": "rod-shaped or spherical bacteria in colonies", "tissue": "folded tissue surfaces"},
    "Fibres": {"nonwoven": "nonwoven (electrospun-like) mats", "aligned": "aligned fibres", "woven": "woven bundles"},
    "Films_Coated_Surface": {"polycrystalline": "polycrystalline grains", "faceted": "faceted crystallites", "cracked": "cracked coatings", "coating": "smooth coatings with nodules and pinholes"},
    "MEMS_devices_and_electrodes": {"interdigitated": "interdigitated electrodes", "pads_and_leads": "bond pads and leads", "comb_drive": "comb-drive actuators", "serpentine": "serpentine heaters and resistors"},
    "Nanowires": {"forest": "vertically aligned arrays seen at a tilt", "lying": "randomly oriented wires on a substrate", "bundled": "bundles"},
    "Particles": {"spheres": "spheres (dispersed, clustered or close-packed)", "cubes": "cubes", "faceted": "faceted polyhedra", "rods": "short rods"},
    "Patterned_surface": {"pillars": "pillar arrays", "holes": "hole arrays", "dots": "dot arrays", "gratings": "line gratings"},
    "Porous_Sponge": {"foam": "open foams", "bicontinuous": "bicontinuous sponges", "membrane": "porous membranes"},
    "Powder": {"granular": "granular powders", "agglomerates": "agglomerates", "flakes": "flake powders"},
    "Tips": {"needle": "conical needles", "pyramid": "pyramidal AFM-style tips", "etched_wire": "etched wire tips"},
}


def oracle_class_descriptions(per_class: int = 5, seed: int = 0) -> list[dict]:
    """``per_class`` descriptions of each category, written from the generator's parameter ranges.

    Rows follow ``schema.class_descriptions_features()``: ``label``, ``name``, ``description``,
    ``source="oracle-synthetic"``, ``prompt`` (the class-description prompt they answer).
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rows = []
    for label, category in enumerate(SEM_CATEGORIES):
        spec = CLASS_SPECS[category]
        name = _PLURAL_NAMES[category]
        low, high = spec.size_nm_range()
        size = f"{spec.size_kind} from about {format_length(low)} to {format_length(high)}"
        measure = spec.size_kind if spec.size_kind.startswith(spec.feature) else f"{spec.feature} {spec.size_kind}"
        mags = f"{spec.magnification[0]:g}x to {spec.magnification[1]:g}x"
        variants = ", ".join(_VARIANT_NAMES[category][v] for v in spec.variants)
        other, this_cue, other_cue = _LOOK_ALIKES[category]
        other_name = _PLURAL_NAMES[other]
        for k in range(per_class):
            rng = random.Random(f"class-description-{seed}-{category}-{k}")
            main = spec.variants[rng.randrange(len(spec.variants))]
            others = ", ".join(_VARIANT_NAMES[category][v] for v in spec.variants if v != main)
            opening = rng.choice((
                f"In SEM images, {name} often appear as {_VARIANT_DESCRIPTION[(category, main)]}; other forms are {others}.",
                f"{name[0].upper() + name[1:]} seen by scanning electron microscopy take several forms: {variants}.",
                f"The category of {name} covers {variants}.",
            ))
            scale = rng.choice((
                f"The characteristic {spec.feature} has {_a(size)}, imaged at magnifications of {mags}.",
                f"Typical images are taken at {mags}, where the {measure} ranges from {format_length(low)} to {format_length(high)}.",
            ))
            contrast = rng.choice((
                "Secondary-electron contrast makes edges and raised features bright and recesses dark.",
                "Edges appear bright from the secondary-electron edge effect, and deep regions appear dark.",
            ))
            distinction = rng.choice((
                f"They can be confused with {other_name}, but {name} {this_cue}, whereas {other_cue}.",
                f"Unlike {other_name}, {name} {this_cue}.",
                f"What sets them apart from {other_name} is that they {this_cue}; {other_cue}.",
            ))
            sentences = [opening, scale, contrast, distinction]
            if spec.insulating:
                sentences.append("Being poorly conducting, such samples may show charging streaks unless coated.")
            rows.append({"label": label, "name": category, "description": " ".join(sentences), "source": ORACLE_TEACHER,
                         "prompt": class_description_prompt(category)})
    return rows
