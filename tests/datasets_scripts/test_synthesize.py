"""The synthetic SEM generator, its oracle teacher and the synthesize.py CLI / cache.

Everything checked here is synthetic by construction: images from the procedural generator,
answers from the oracle that reads the generator's parameters.
"""

import json
import multiprocessing
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from emvision.datasets_scripts import synthesize as cli
from emvision.datasets_scripts import synthetic as synth
from emvision.datasets_scripts.synthetic import cache as synthetic_cache
from emvision.datasets_scripts.synthetic.oracle import CATEGORY_NAMES, oracle_answer, oracle_answers, oracle_class_descriptions
from emvision.vocabulary import FAMILY_BY_ID, PROMPT_VERSION, caption_for, class_description_prompt
from emvision.datasets_scripts.storage import class_descriptions_features, images_features, schema_version, sha256_bytes, vqa_features
from emvision.datasets_scripts.synthetic import (
    CLASS_SPECS,
    REFERENCE_DISPLAY_WIDTH_MM,
    category_for_index,
    format_length,
    generate_micrograph,
)
from emvision.processing.micrograph import detect_info_bar
from emvision.vocabulary import SEM_CATEGORIES

CLI_IMAGES, CLI_FOLDS, CLI_SEED = 20, 2, 3


@pytest.fixture(scope="module")
def one_per_class():
    return {category: generate_micrograph(index, seed=11, category=category) for index, category in enumerate(SEM_CATEGORIES)}


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory, repo_root):
    """The CLI, run the way a user runs it, on a small set."""
    out = tmp_path_factory.mktemp("synthetic") / "set"
    result = subprocess.run(
        [sys.executable, str(repo_root / "datasets_scripts" / "synthesize.py"), "--output", str(out), "--num_images", str(CLI_IMAGES),
         "--seed", str(CLI_SEED), "--num_folds", str(CLI_FOLDS), "--num_workers", "2", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"synthesized {CLI_IMAGES} images" in result.stdout
    return out


def test_same_seed_gives_the_same_bytes_and_workers_do_not_matter():
    first = generate_micrograph(7, seed=5)
    again = generate_micrograph(7, seed=5)
    assert first.png_bytes() == again.png_bytes()
    assert first.metadata_json() == again.metadata_json()
    assert generate_micrograph(7, seed=6).png_bytes() != first.png_bytes()
    serial = synth.render_images(9, seed=2, num_workers=1, progress=False)
    parallel = synth.render_images(9, seed=2, num_workers=2, progress=False)
    assert [r["image_id"] for r in serial] == [r["image_id"] for r in parallel]
    assert serial[3]["image_id"] == sha256_bytes(generate_micrograph(3, seed=2).png_bytes())


def test_category_schedule_is_balanced():
    counts = Counter(category_for_index(i, seed=4) for i in range(50))
    assert counts == Counter({category: 5 for category in SEM_CATEGORIES})


def test_every_class_is_an_sem_frame_with_a_consistent_info_bar(one_per_class):
    for category, micrograph in one_per_class.items():
        md = micrograph.metadata
        image = np.asarray(micrograph.image)
        assert micrograph.image.mode == "L" and micrograph.image.size == (341, 256) and md["stored_size"] == [341, 256]
        assert md["category"] == category and md["synthetic"] and md["variant"] in CLASS_SPECS[category].variants
        imaging, bar = md["imaging"], md["info_bar"]
        # magnification -> field width -> pixel size -> scale bar length all agree
        assert imaging["hfw_nm"] == pytest.approx(REFERENCE_DISPLAY_WIDTH_MM * 1e6 / imaging["magnification"], rel=1e-3)
        assert md["pixel_size_nm"] == pytest.approx(imaging["hfw_nm"] / 341, rel=1e-3)
        assert bar["scale_bar_px"] == pytest.approx(bar["scale_bar_nm"] / md["pixel_size_nm"], rel=0.01)
        assert bar["scale_bar_label"] == format_length(bar["scale_bar_nm"])
        # the bar is a band of its own background at the bottom, with ink on it
        band = image[bar["top_row"]:].astype(float)
        background = np.median(band)
        assert (background < 40) if bar["style"] == "dark" else (background > 215)
        assert np.abs(band - background).max() > 120, f"{category}: no glyphs in the info bar"
        micrograph_rows = image[: bar["top_row"]].astype(float)
        assert micrograph_rows.std() > 10, f"{category}: the micrograph is blank"
        measured = _scale_bar_length(band, background, bar["layout"])
        assert measured == pytest.approx(bar["scale_bar_px"], abs=3), f"{category}: drawn bar {measured} px, metadata {bar['scale_bar_px']}"


def _scale_bar_length(band: np.ndarray, background: float, layout: str) -> int:
    """Longest horizontal run of ink in the bar, ignoring the frame lines of a light bar."""
    ink = np.abs(band - background) > 60
    best = 0
    for row in ink:
        if row.mean() > 0.8:  # the frame
            continue
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))))[::2]
        best = max(best, int(runs.max()) if runs.size else 0)
    return best


def test_oracle_answers_are_grounded_in_the_parameters(one_per_class):
    for category, micrograph in one_per_class.items():
        md = micrograph.metadata
        answers = oracle_answers(md)
        assert sorted(answers) == list(range(1, 11))
        assert all(1 <= len(re.findall(r"[.!?](?:\s|$)", answer)) <= 3 for answer in answers.values()), answers
        # Basics: the category and the scale
        assert CATEGORY_NAMES[category] in answers[1]
        assert md["info_bar"]["scale_bar_label"] in answers[1]
        assert format_length(md["pixel_size_nm"]) in answers[1]
        # Size: the first length stated is the mean size drawn, then the range
        size = md["structure"]["size_nm"]
        lengths = re.findall(r"(\d+(?:\.\d+)?) (nm|µm|mm)", answers[3])
        assert f"{lengths[0][0]} {lengths[0][1]}" == format_length(size["mean"])
        assert _nm(*lengths[0]) == pytest.approx(size["mean"], rel=0.05)
        if size["max"] > size["min"] * 1.05:
            assert format_length(size["min"]) in answers[3] and format_length(size["max"]) in answers[3]
        if category != "Tips":
            assert f"{md['structure']['count']} " in answers[3]
        # Technique: SEM, beam energy, detector as recorded
        imaging = md["imaging"]
        assert "SEM" in answers[8] and f"{imaging['accelerating_voltage_kv']:g} kV" in answers[8] and imaging["detector"] in answers[8]
        if category == "Porous_Sponge":
            assert f"{round(100 * md['structure']['pore_fraction'])}%" in answers[2]
        # the answers say where they come from when asked whether the sample is real
        assert "synthetic" in answers[10]


def _nm(value: str, unit: str) -> float:
    return float(value) * {"nm": 1.0, "µm": 1e3, "mm": 1e6}[unit]


def test_oracle_wording_varies_but_is_seeded():
    micrographs = [generate_micrograph(i, seed=0, category="Particles") for i in range(12)]
    openings = {oracle_answer(m.metadata, 3).split(" ")[0] for m in micrographs}
    assert len(openings) > 1, "one template for every answer"
    assert oracle_answer(micrographs[0].metadata_json(), 3) == oracle_answer(micrographs[0].metadata, 3)


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        synth.synthesize(tmp_path / "x", 0)
    with pytest.raises(ValueError, match="category"):
        generate_micrograph(0, category="Graphene")
    with pytest.raises(ValueError, match="question_id"):
        oracle_answer(generate_micrograph(0).metadata, 11)
    with pytest.raises(ValueError, match="synthetic generator"):
        oracle_answer({"category": "Powder"}, 1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="busy"):
        synth.synthesize(tmp_path / "busy", 10)


@pytest.mark.parametrize("args, message", [(["--num_images", "0"], "--num_images"), (["--num_images", "many"], "--num_images"),
                                           (["--num_images", "5", "--num_folds", "-1"], "--num_folds")])
def test_cli_rejects_bad_arguments(tmp_path, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["--output", str(tmp_path / "o"), *args])
    assert exit_info.value.code == 2


def test_cli_output_has_the_schema_and_provenance(cli_dataset):
    import datasets

    images = datasets.load_from_disk(str(cli_dataset / "images"))
    vqa = datasets.load_from_disk(str(cli_dataset / "vqa"))
    descriptions = datasets.load_from_disk(str(cli_dataset / "class_descriptions"))
    assert images.features == images_features() and vqa.features == vqa_features() and descriptions.features == class_descriptions_features()
    assert len(images) == CLI_IMAGES and len(vqa) == 10 * CLI_IMAGES
    assert "image" not in vqa.column_names  # schema 2: the image is stored once, in images
    for subset in (images, vqa, descriptions):
        assert str(subset.info.version) == "2.0.0" and schema_version(subset, "vqa") == 2
    raw = images.cast_column("image", datasets.Image(decode=False))
    for row, raw_row in zip(images, raw):
        assert raw_row["image"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
        assert row["source"] == "synthetic"
        metadata = json.loads(row["metadata"])
        assert metadata["category"] == SEM_CATEGORIES[row["label"]] and metadata["seed"] == CLI_SEED
        frame = generate_micrograph(metadata["index"], seed=CLI_SEED)
        assert row["image_id"] == sha256_bytes(frame.png_bytes())  # the generated frame's file
        # stored as the models read it: bar cut, 224x224 gray; the frame's size, crop box and bar text kept
        assert (row["width"], row["height"]) == (341, 256) and row["image"].size == (224, 224) and row["image"].mode == "L"
        bar_row = detect_info_bar(frame.image)  # as the processor finds it (the generator's top_row, almost always)
        assert row["crop_box"] == [0, 0, 341, 256 if bar_row is None else bar_row]
        assert row["scale_bar_px"] == metadata["info_bar"]["scale_bar_px"] and row["scale_bar_nm"] == metadata["info_bar"]["scale_bar_nm"]
        assert row["magnification"] == metadata["imaging"]["magnification"] and row["detector"] == metadata["imaging"]["detector"]
        assert row["accelerating_voltage_kv"] == metadata["imaging"]["accelerating_voltage_kv"]
        assert row["pixel_size_nm"] == metadata["pixel_size_nm"]
    ids = set(images["image_id"])
    per_image = Counter(vqa["image_id"])
    assert set(per_image) == ids and set(per_image.values()) == {10}
    label_of = dict(zip(images["image_id"], images["label"]))
    for row in vqa:
        assert row["teacher"] == "oracle-synthetic" and row["prompt_version"] == PROMPT_VERSION
        assert row["question"] == FAMILY_BY_ID[row["question_id"]].question
        assert row["label"] == label_of[row["image_id"]] and row["caption"] == caption_for(SEM_CATEGORIES[row["label"]])
        assert row["answer"]
    assert set(descriptions["source"]) == {"oracle-synthetic", "human"}
    for row in descriptions:
        assert row["prompt"] == class_description_prompt(SEM_CATEGORIES[row["label"]]) and row["name"] == SEM_CATEGORIES[row["label"]]
    card = (cli_dataset / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in card.lower() and "oracle" in card.lower()
    assert json.loads((cli_dataset / "synthesis.json").read_text())["options"]["num_images"] == CLI_IMAGES


def test_cli_folds_are_stratified(cli_dataset):
    import datasets

    images = datasets.load_from_disk(str(cli_dataset / "images")).remove_columns("image")
    vqa = datasets.load_from_disk(str(cli_dataset / "vqa"))
    per_class = Counter(zip(images["label"], images["fold"]))
    for label in set(images["label"]):
        counts = [per_class[(label, fold)] for fold in range(CLI_FOLDS)]
        assert max(counts) - min(counts) <= 1, counts
    fold_of = dict(zip(images["image_id"], images["fold"]))
    assert all(fold_of[i] == f for i, f in zip(vqa["image_id"], vqa["fold"]))


def test_class_descriptions_follow_the_generator_ranges():
    rows = oracle_class_descriptions(per_class=3, seed=1)
    assert Counter(row["label"] for row in rows) == Counter({label: 3 for label in range(10)})
    for row in rows:
        spec = CLASS_SPECS[row["name"]]
        low, high = spec.size_nm_range()
        assert row["source"] == "oracle-synthetic" and row["prompt"] == class_description_prompt(row["name"])
        assert format_length(low) in row["description"] and format_length(high) in row["description"]
    assert len({row["description"] for row in rows}) == len(rows)


def test_stored_images_give_the_processors_pixel_values_to_the_bit(cli_dataset, tmp_path):
    """What training reads from the stored image equals what MicrographImageProcessor makes of the generated file."""
    import datasets
    import torch

    from emvision.processing.image_processing_micrograph import MicrographImageProcessor
    from emvision.train.data.collators import ImageCollator
    from emvision.train.data.images import undecoded

    processor = MicrographImageProcessor()
    rows = list(undecoded(datasets.load_from_disk(str(cli_dataset / "images"))))
    files = []
    for row in rows:
        metadata = json.loads(row["metadata"])
        files.append(tmp_path / f"frame_{metadata['index']}.png")
        files[-1].write_bytes(generate_micrograph(metadata["index"], seed=CLI_SEED).png_bytes())
    collated = ImageCollator(processor)(rows)["pixel_values"]
    assert torch.equal(collated, processor([str(f) for f in files], return_tensors="pt")["pixel_values"])


def test_default_synthetic_set_is_small_on_disk(cli_dataset):
    """1,000 images must stay under 80 MB: per image, what the CLI set stores stays under 80 kB (measured: 56 MB for 1,000)."""
    per_image = synthetic_cache.folder_size(cli_dataset) / CLI_IMAGES
    assert per_image < 80_000, f"{per_image:.0f} bytes per image"
    images_bytes = synthetic_cache.folder_size(cli_dataset / "images") / CLI_IMAGES
    assert images_bytes < 1.1 * 224 * 224  # one uncompressed 8-bit 224x224 image, its row and a share of the files


def test_cache_says_where_it_lies_and_how_large_it_is(tmp_path, capsys):
    folder = synth.load_or_create_synthetic(num_images=3, seed=4, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    err = capsys.readouterr().err
    assert f"synthetic set cached at {folder} (" in err and " MB on disk" in err and "EMVISION_CACHE" in err
    synth.load_or_create_synthetic(num_images=3, seed=4, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    assert "cached at" not in capsys.readouterr().err  # said once, when made


def test_cache_is_reused_and_never_half_written(tmp_path, monkeypatch):
    monkeypatch.setenv("EMVISION_CACHE", str(tmp_path / "env-cache"))
    assert synth.default_cache_dir() == tmp_path / "env-cache" / "synthetic"
    cache = tmp_path / "cache"
    # two processes ask for the same set at once: one builds, the other waits for it
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        paths = pool.starmap(_load_quietly, [(str(cache),), (str(cache),)])
    assert paths[0] == paths[1]
    folder = synth.load_or_create_synthetic(num_images=5, seed=1, cache_dir=cache, num_workers=1, progress=False)
    assert str(folder) == paths[0]
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [folder.name]  # no temp or stale folders
    marker = folder / "synthesis.json"
    built_at = marker.stat().st_mtime_ns

    def must_not_build(*args, **kwargs):
        raise AssertionError("a complete cache entry was rebuilt")

    monkeypatch.setattr(synthetic_cache, "synthesize", must_not_build)
    assert synth.load_or_create_synthetic(num_images=5, seed=1, cache_dir=cache, num_workers=1, progress=False) == folder
    assert marker.stat().st_mtime_ns == built_at
    monkeypatch.undo()
    # an entry missing its marker (a crash outside the atomic rename, a manual edit) is rebuilt
    marker.unlink()
    assert synth.load_or_create_synthetic(num_images=5, seed=1, cache_dir=cache, num_workers=1, progress=False) == folder
    import datasets

    assert len(datasets.load_from_disk(str(folder / "images"))) == 5
    # other options, other entry
    other = synth.load_or_create_synthetic(num_images=5, seed=2, cache_dir=cache, num_workers=1, progress=False)
    assert other != folder


def _load_quietly(cache: str) -> str:
    return str(synth.load_or_create_synthetic(num_images=5, seed=1, cache_dir=cache, num_workers=1, progress=False))


def test_a_run_killed_while_rendering_leaves_no_worker_and_no_held_lock(tmp_path):
    """SIGKILL a process building the cache on 2 rendering processes: the workers end with it, and the next caller builds."""
    import signal
    import time

    import psutil

    from emvision.datasets_scripts.storage import LockBusyError, file_lock

    cache = tmp_path / "cache"
    build = ("import sys\nfrom emvision.datasets_scripts import synthetic\n"
             "synthetic.load_or_create_synthetic(num_images=2000, seed=5, cache_dir=sys.argv[1], num_workers=2, progress=False)")
    killed = subprocess.Popen([sys.executable, "-c", build, str(cache)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent, deadline = psutil.Process(killed.pid), time.monotonic() + 120
    while len(workers := parent.children(recursive=True)) < 2:
        assert killed.poll() is None, killed.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the rendering processes never started"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"rendering processes outlived the killed run: {alive}"
    (lock,) = cache.glob(".*.lock")
    try:
        with file_lock(lock, wait=False):  # free: a caller would not wait for ever on a killed run's workers
            pass
    except LockBusyError:
        pytest.fail(f"{lock.name} is still held after the run that took it was killed")
    folder = synth.load_or_create_synthetic(num_images=20, seed=5, cache_dir=cache, num_workers=1, progress=False)
    assert (folder / "synthesis.json").is_file()
