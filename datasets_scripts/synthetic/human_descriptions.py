"""Hand-written technical descriptions of the ten SEM categories (``source="human"``).

HAND-WRITTEN TEXT, NOT MODEL OUTPUT. HNF's text branch is trained on class descriptions that the
paper obtained from LLMs with ``emvision.vocabulary.class_description_prompt``; these paragraphs answer the same
brief (structure and morphology, synthesis, properties, applications, how SEM shows the category
and what tells it apart), written by the project as general background knowledge about each
category. They are a stand-in and a complement for teacher-written descriptions, and every row
built from them says ``source="human"``.
"""

from __future__ import annotations

from emvision.datasets_scripts.storage import HUMAN_SOURCE
from emvision.vocabulary import SEM_CATEGORIES, class_description_prompt

HUMAN_DESCRIPTIONS: dict[str, str] = {
    "Biological": (
        "Biological samples in SEM are cells, bacteria, tissues and biofilms, usually fixed, dehydrated "
        "(critical-point or freeze drying) and sputter-coated with a thin metal layer so that they conduct. "
        "Adherent cells appear as flattened bodies tens of micrometres across with a raised nucleus region, "
        "ruffled membranes and thin filopodia or lamellipodia reaching over the substrate; bacteria appear as "
        "rods (bacilli), spheres (cocci) or spirals about one micrometre in size, often in colonies embedded "
        "in extracellular matrix; tissues show folds, villi and cell boundaries. Their surfaces look soft and "
        "textured, with irregular, organic outlines rather than crystal facets. Such images are used to study "
        "cell adhesion on nanostructured surfaces, biocompatibility of implants, infection and biofilm growth. "
        "Because they are poorly conducting, uncoated samples charge and show bright streaks; they are told "
        "apart from inorganic particles by their irregular, membrane-like shapes and fine protrusions."
    ),
    "Fibres": (
        "Fibres are long, continuous, flexible filaments, from about a hundred nanometres (electrospun polymer "
        "or ceramic fibres) to tens of micrometres (textile, glass or carbon fibres). Electrospinning gives "
        "nonwoven mats of randomly oriented, gently curved fibres that cross in several layers, sometimes with "
        "bead defects; drawing and spinning give aligned fibres; weaving and braiding give bundles that pass "
        "over and under one another. Their large surface area and open porosity make fibre mats useful as "
        "filtration membranes, battery separators, tissue-engineering scaffolds and composite reinforcement. "
        "In SEM each fibre shows bright edges from the edge effect and a rounded, cylindrical shading; the "
        "voids between fibres look dark. Fibres differ from nanowires by being thicker, longer and more "
        "curved, and by forming entangled mats or woven structures rather than arrays of straight wires."
    ),
    "Films_Coated_Surface": (
        "Films and coated surfaces are continuous layers, from a few nanometres to micrometres thick, deposited "
        "on a substrate by sputtering, evaporation, chemical vapour deposition, atomic layer deposition, "
        "electroplating, sol-gel or spin coating. Seen from above, a polycrystalline film shows equiaxed or "
        "faceted grains separated by grain boundaries, whose size depends on temperature and thickness; "
        "coatings may be smooth with scattered nodules, droplets and pinholes, and brittle or stressed films "
        "crack into polygonal islands, like dried mud. Films are used as protective, optical, catalytic and "
        "barrier coatings and in thin-film electronics and solar cells, and their grain size, roughness and "
        "defects decide their performance. SEM reveals grain morphology, cracks, delamination and surface "
        "roughness; a cracked film is distinguished from a porous material by thin dark cracks between flat "
        "islands instead of rounded pores in a continuous skeleton."
    ),
    "MEMS_devices_and_electrodes": (
        "MEMS devices and electrodes are micro-fabricated structures made by photolithography, thin-film "
        "deposition and etching on silicon, glass or polymer substrates: interdigitated electrodes, bond pads "
        "with fan-out leads, serpentine heaters and resistors, and released mechanical parts such as "
        "cantilevers, membranes, comb-drive actuators and springs perforated with etch-release holes. Their "
        "features are typically one to hundreds of micrometres, so they are imaged at low magnification. "
        "They act as sensors, actuators, microelectrodes for electrochemistry and test structures for "
        "microelectronics. In SEM, metal layers look brighter than the substrate, straight edges and right "
        "angles dominate, and etched trenches look dark. They differ from patterned surfaces by being "
        "non-repeating layouts with pads, leads and functional parts rather than one element repeated at a "
        "constant pitch."
    ),
    "Nanowires": (
        "Nanowires are one-dimensional crystals with diameters of about ten to a few hundred nanometres and "
        "lengths of micrometres, so aspect ratios of tens to thousands. They are grown by vapour-liquid-solid "
        "growth from catalyst droplets, by hydrothermal or electrochemical methods, or by etching (for silicon), "
        "and include semiconductors (Si, ZnO, GaN), metals (Ag, Cu) and oxides. Grown on a substrate they form "
        "vertically aligned forests, imaged with the stage tilted so their length shows, with bright tips; "
        "dispersed on a surface they lie in random orientations and cross one another, sometimes in bundles. "
        "Their high surface-to-volume ratio and conduction along one dimension are used in nanoelectronics, "
        "gas and biosensors, field emitters, transparent electrodes and battery anodes. In SEM they appear as "
        "thin, straight, uniform lines with bright edges; they differ from fibres by being thinner and straighter."
    ),
    "Particles": (
        "Nanoparticles are discrete objects from a few nanometres to a few micrometres in size: spheres "
        "(silica, polystyrene, gold), cubes and other faceted crystals (metal and oxide nanocrystals), and "
        "short rods. They are made by wet-chemical precipitation, sol-gel (Stoeber) synthesis, seed-mediated "
        "growth, flame spray or laser ablation, and their size, shape and size distribution control their "
        "optical, catalytic and magnetic properties. For SEM they are usually dispersed on a flat substrate, "
        "where they may be isolated, clustered, or self-assembled into close-packed monolayers. Typical uses "
        "are catalysis, drug delivery, plasmonic sensing and colloidal crystals. SEM gives the size "
        "distribution and shape directly; particles show bright rims from the edge effect against a darker "
        "substrate. They differ from powders by being separate, regular objects on a visible substrate rather "
        "than irregular aggregated grains filling the field."
    ),
    "Patterned_surface": (
        "Patterned surfaces carry a regular, periodic topography made by electron-beam or optical lithography, "
        "nanoimprint, interference lithography, self-assembly (block copolymers, colloidal masks) or anodisation "
        "followed by etching or deposition: arrays of pillars, holes or dots on square or hexagonal lattices, "
        "and line gratings, with pitches from about a hundred nanometres to tens of micrometres. The pattern's "
        "pitch, fill factor and element height define photonic crystals, anti-reflection and superhydrophobic "
        "surfaces, templates for growth and lithography test structures. In SEM, top views show the lattice "
        "directly and tilted views show the height of pillars; missing or deformed elements reveal process "
        "defects. Patterned surfaces differ from MEMS devices by repeating one element at a constant pitch "
        "over the whole field instead of showing a layout of pads, leads and functional parts."
    ),
    "Porous_Sponge": (
        "Porous sponges and foams are solids permeated by pores, from nanometre-scale mesopores to micrometre "
        "cells: open-cell foams, bicontinuous sponges made by dealloying or phase separation, aerogels, "
        "porous polymers, track-etched and anodic membranes. They are made with templates, foaming agents, "
        "selective dissolution or freeze casting, and are characterised by pore size, pore fraction "
        "(porosity) and connectivity. High internal surface area and permeability make them useful for "
        "filtration and separation, catalyst supports, batteries, thermal insulation and tissue scaffolds. In "
        "SEM, pores look dark because few electrons escape from them, while the walls between them look "
        "bright, often with deeper layers visible through the openings. They differ from cracked films by "
        "their rounded pores within a continuous skeleton rather than thin cracks between flat islands."
    ),
    "Powder": (
        "Powders are collections of many small solid grains, from tens of nanometres to tens of micrometres, "
        "produced by milling, spray drying, precipitation, atomisation or calcination: metal and ceramic "
        "powders, pharmaceutical and battery materials, pigments and catalysts. Grains are often irregular, "
        "polydisperse and agglomerated into clumps held together by van der Waals or capillary forces; some "
        "powders consist of plate-like flakes. Grain size, shape, agglomeration and packing govern how a powder "
        "flows, sinters and reacts, which matters in powder metallurgy, additive manufacturing and ceramic "
        "processing. In SEM a powder fills the field with rough, granular texture in several overlapping layers, "
        "the deeper grains darker; insulating powders may charge. Powders differ from nanoparticle samples by "
        "their irregular, aggregated grains covering the whole field rather than separate, regular particles "
        "on a visible substrate."
    ),
    "Tips": (
        "Tips are sharp, tapered objects ending in an apex a few nanometres to a few hundred nanometres in "
        "radius: conical needles and electrochemically etched tungsten or platinum-iridium wires for scanning "
        "tunnelling microscopy and field emission, and pyramidal silicon or silicon-nitride tips at the end of "
        "atomic force microscopy cantilevers. They are made by electrochemical etching, anisotropic wet etching "
        "of silicon, focused-ion-beam milling or growth, and are sometimes coated or carry a nanowire or "
        "particle at the apex. The apex radius and cone angle set the resolution of probing and the electric "
        "field enhancement in emission. SEM is the standard way to inspect tip shape and wear: the tip appears "
        "as a single bright tapered body against a dark, featureless background. Tips differ from nanowires by "
        "being single objects that narrow continuously to a point."
    ),
}
assert tuple(sorted(HUMAN_DESCRIPTIONS)) == SEM_CATEGORIES


def human_class_description_rows() -> list[dict]:
    """One row per category (``schema.class_descriptions_features()``), ``source="human"``."""
    return [
        {"label": label, "name": category, "description": HUMAN_DESCRIPTIONS[category], "source": HUMAN_SOURCE,
         "prompt": class_description_prompt(category)}
        for label, category in enumerate(SEM_CATEGORIES)
    ]
