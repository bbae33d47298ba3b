"""CPU threads of a training process: `accelerate launch`'s one-thread default is lifted, anything else is kept."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from emvision.train.loop.trainer import set_cpu_threads

CPU = SimpleNamespace(device=torch.device("cpu"), num_processes=1)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _launched_by_accelerate(monkeypatch, **env):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what `accelerate launch` sets without --cpu or a config
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_a_one_process_launch_gets_every_core(monkeypatch):
    _launched_by_accelerate(monkeypatch)
    torch.set_num_threads(1)
    assert set_cpu_threads(CPU, None) == CORES == torch.get_num_threads()


def test_processes_on_one_machine_share_the_cores(monkeypatch):
    _launched_by_accelerate(monkeypatch, LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(CORES + 1)  # a count the sharing must replace
    assert set_cpu_threads(SimpleNamespace(device=torch.device("cpu"), num_processes=2), None) == max(1, CORES // 2)


def test_an_explicit_request_wins(monkeypatch):
    _launched_by_accelerate(monkeypatch)
    assert set_cpu_threads(CPU, 1) == 1 == torch.get_num_threads()


def test_a_run_not_started_by_the_launcher_keeps_its_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # e.g. a user's own choice for `python train/classify.py`
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    torch.set_num_threads(1)
    assert set_cpu_threads(CPU, None) == 1


def test_an_accelerator_off_the_cpu_is_left_alone():
    assert set_cpu_threads(SimpleNamespace(device=torch.device("cuda", 0), num_processes=1), None) is None
