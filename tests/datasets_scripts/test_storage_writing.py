"""The one subset writer (staging folder, then a move into place) and the one lock that the three builders share."""

import multiprocessing
import time
from pathlib import Path

import pytest
from datasets import load_from_disk

from emvision.datasets_scripts.storage import (
    LockBusyError,
    class_descriptions_features,
    file_lock,
    replace_path,
    save_subset,
    staged_write,
)

ROWS = [
    {"label": 0, "name": "Biological", "description": "Hand-written test text: cells.", "source": "human", "prompt": ""},
    {"label": 9, "name": "Tips", "description": "Hand-written test text: a sharp apex.", "source": "human", "prompt": ""},
]


def _rows(count):
    yield from ROWS[:count]


def test_save_subset_from_a_list_a_generator_or_nothing(tmp_path):
    features = class_descriptions_features()
    assert save_subset(tmp_path / "listed", features, ROWS, description="written by the test") == 2
    assert save_subset(tmp_path / "streamed", features, generator=_rows, gen_kwargs={"count": 2}, fingerprint="test-streamed") == 2
    assert save_subset(tmp_path / "empty", features) == 0
    listed, streamed = load_from_disk(str(tmp_path / "listed")), load_from_disk(str(tmp_path / "streamed"))
    assert list(listed) == list(streamed) == [{**row} for row in ROWS]
    assert listed.features == streamed.features == features and listed.info.description == "written by the test"
    empty = load_from_disk(str(tmp_path / "empty"))
    assert len(empty) == 0 and empty.features == features
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "listed", "streamed"]  # no cache folders left


def test_named_outputs_replace_their_namesakes_and_only_them(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "vqa").mkdir()
    (target / "vqa" / "old.txt").write_text("previous run")
    (target / "rejects.jsonl").write_text("previous run\n")
    (target / "cache.sqlite").write_text("another tool's file")
    with staged_write(target, ("vqa", "rejects.jsonl", "README.md"), prefix="test") as staging:
        assert staging.parent == target and staging.name.startswith(".test-")
        (staging / "vqa").mkdir()
        (staging / "vqa" / "new.txt").write_text("this run")
        (staging / "README.md").write_text("card")
        assert (target / "vqa" / "old.txt").exists(), "nothing moves before the block ends"
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "cache.sqlite", "vqa"]  # rejects.jsonl: not written, removed
    assert [p.name for p in (target / "vqa").iterdir()] == ["new.txt"]


def test_a_failed_write_leaves_the_previous_output_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "images").mkdir()
    (target / "images" / "data.arrow").write_text("previous run")
    with pytest.raises(RuntimeError, match="disk full"), staged_write(target, ("images",)) as staging:
        (staging / "images").mkdir()
        raise RuntimeError("disk full")
    assert [p.name for p in target.iterdir()] == ["images"]
    assert (target / "images" / "data.arrow").read_text() == "previous run"

    whole = tmp_path / "whole"
    with pytest.raises(RuntimeError), staged_write(whole) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert not whole.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_whole_folder_replaces_the_previous_one_in_one_rename(tmp_path):
    target = tmp_path / "set"
    target.mkdir()
    (target / "stale.txt").write_text("previous run")
    with staged_write(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".set.tmp-")
        (staging / "synthesis.json").write_text("{}")
    assert [p.name for p in target.iterdir()] == ["synthesis.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no staging or old copy left beside it


@pytest.mark.parametrize("new_is_dir", [False, True])
@pytest.mark.parametrize("final_is_dir", [False, True, None])
def test_replace_path_any_kind_over_any_kind(tmp_path, new_is_dir, final_is_dir):
    new, final = tmp_path / "new", tmp_path / "final"
    if new_is_dir:
        new.mkdir()
        (new / "inside.txt").write_text("new")
    else:
        new.write_text("new")
    if final_is_dir:
        final.mkdir()
        (final / "inside.txt").write_text("old")
    elif final_is_dir is False:
        final.write_text("old")
    replace_path(new, final)
    assert ((final / "inside.txt") if new_is_dir else final).read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def _hold(path, seconds, ready):
    with file_lock(path):
        ready.set()
        time.sleep(seconds)
        (Path(path).parent / "released").write_text("")  # the last thing done under the lock


def test_file_lock_excludes_other_processes(tmp_path):
    lock = tmp_path / ".out.lock"
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(str(lock), 1.0, ready))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(LockBusyError, match="writing to out"):
            with file_lock(lock, wait=False, busy_message="another run is writing to out"):
                pass
        with file_lock(lock):  # waits for the holder
            assert (tmp_path / "released").exists()
    finally:
        holder.join(30)
    assert holder.exitcode == 0
    with file_lock(lock, wait=False):  # released with its process; the file stays for the next one
        assert lock.is_file()
    assert issubclass(LockBusyError, RuntimeError)


@pytest.mark.parametrize("kernel_request", [True, False], ids=["prctl", "watching-thread"])
def test_a_worker_ends_with_the_process_that_started_it(tmp_path, kernel_request):
    """A worker of a process pool started with exit_with_parent ends when its parent is SIGKILLed, by either mechanism."""
    import signal
    import subprocess
    import sys

    import psutil

    patch = "" if kernel_request else "locking._kill_with_parent = lambda: False\n"
    parent_code = (
        "import os, sys, time\nfrom concurrent.futures import ProcessPoolExecutor\n"
        "from emvision.datasets_scripts.storage import locking\n" + patch +
        "pool = ProcessPoolExecutor(1, initializer=locking.exit_with_parent, initargs=(os.getpid(),))\n"
        "print(pool.submit(os.getpid).result(), flush=True)\ntime.sleep(120)\n"
    )  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        worker = psutil.Process(int(parent.stdout.readline()))
        assert worker.ppid() == parent.pid
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    _, alive = psutil.wait_procs([worker], timeout=10)
    assert not alive, "the worker outlived its parent"
