"""The synthetic set's dataset card: YAML metadata and a plain statement that everything in it is synthetic."""

from __future__ import annotations


def dataset_card(summary: dict) -> str:
    """The dataset card: YAML metadata and a plain statement that everything here is synthetic."""
    from huggingface_hub import DatasetCard, DatasetCardData

    options = summary["options"]
    n = summary["num_images"]
    card_data = DatasetCardData(
        license="apache-2.0",
        pretty_name="emvision synthetic SEM micrographs with oracle QA (synthetic data)",
        task_categories=["image-classification", "visual-question-answering"],
        tags=["synthetic", "electron-microscopy", "sem", "nanomaterials", "emvision", "oracle-answers"],
        size_categories=["n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "n>100K"],
        emvision={key: summary[key] for key in ("generator", "generator_version", "cache_key", "options", "class_counts", "teacher", "prompt_version")},
    )
    counts = "\n".join(f"| {name} | {count} |" for name, count in summary["class_counts"].items())
    body = f"""# Synthetic SEM micrographs with oracle answers (emvision)

**Everything in this dataset is synthetic.** The images are procedural renderings made by
`{summary['generator']}` version {summary['generator_version']}, not micrographs of real samples, and
the question-answer pairs and the `oracle-synthetic` class descriptions were written by an *oracle*
that reads the parameters the generator drew the image with, not by a person or a model looking at
the image. Use it to develop and test pipelines and as auxiliary training data; never report
accuracy on it as if it were accuracy on real micrographs.

## How it was made

```
python datasets_scripts/synthesize.py --output DIR --num_images {n} --seed {options['seed']} --num_folds {options['num_folds']} \\
    --short_side {options['short_side']} --render_scale {options['render_scale']} --descriptions_per_class {options['descriptions_per_class']}{'' if options['human_descriptions'] else ' --no_human_descriptions'}
```

Each image is drawn at {options['render_scale']}x its stored size (the "microscope" frame) as a height
map and a material map of one of the ten categories of Aversa et al. (2018), imaged with a model of
the secondary-electron signal (edge brightening, shading, beam energy, detector), given shot and
scan-line noise (and charging for insulating samples), made an 8-bit grayscale frame with a
{options['short_side']} px short side (4:3), with an information bar burned into the bottom rows
(scale bar whose length matches the magnification, kV, WD, detector). What is stored is what the models
read from that frame: the information bar detected and cut off as `MicrographImageProcessor` does it,
resized to 224x224 (bicubic, aspect ratio not kept), 8-bit `L`, as an uncompressed PNG (schema version
{summary.get('schema_version', 2)}). The same seed gives the same bytes; image `i` depends only on `(seed, i)`.

## Subsets

- `images`: {n} rows. `source` is `"synthetic"`; `metadata` is the JSON of the generating parameters
  (category, variant, magnification, pixel size, detector, info-bar rows, and what was drawn:
  sizes in nm, counts, arrangement, coverage, aggregation, pore fraction, roughness, ...);
  `image_id` is the sha256 of the generated frame's PNG; `width`/`height` are the frame's size and
  `crop_box` the part of it that `image` shows; `scale_bar_px` (in frame pixels), `scale_bar_nm`,
  `pixel_size_nm`, `magnification`, `accelerating_voltage_kv`, `working_distance_mm` and `detector`
  are what the burned-in bar says, taken from the generator's parameters (exact, unlike a real
  image's, where only the scale bar's length in pixels is measured);
  `fold` is a stratified fold (0..{options['num_folds'] - 1}).
- `vqa`: {summary['num_qa_pairs']} rows, one per image and prompt family of the MVaEMa paper
  (`question_id` 1-10), `teacher="oracle-synthetic"`, `prompt_version="{summary['prompt_version']}"`;
  text only, joined to `images` by `image_id`.
  The `caption` names the true category: this is the paper's label-conditioned training protocol and
  must not be fed to a model at evaluation time.
- `class_descriptions`: {summary['num_class_descriptions']} rows for HNF's text branch:
  `source="oracle-synthetic"` rows are written from the generator's parameter ranges; `source="human"`
  rows are hand-written general descriptions of each category.

Load a subset with `datasets.load_from_disk("DIR/images")`.

## Class counts

| category | images |
|---|---|
{counts}
"""
    return str(DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}"))
