"""Small saved models for the lab tools: a 32-px HNF and a 32-px MVaEMa, each with its processor."""

import pytest
import torch

from emvision.modeling import HNFForImageClassification
from emvision.processing import MicrographImageProcessor, build_default_processor
from lab_models import tiny_mvaema
from tiny_models import tiny_hnf_config

SIZE_32 = {"height": 32, "width": 32}


@pytest.fixture(autouse=True, scope="module")
def _apps_tests_run_single_threaded(single_thread):
    """Tiny models only: one intra-op thread is fastest."""


@pytest.fixture(scope="session")
def hnf_folder(tmp_path_factory):
    """An untrained 32-px HNF saved with its image processor, as train/classify.py writes one."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hnf")
    HNFForImageClassification(tiny_hnf_config()).save_pretrained(folder)
    MicrographImageProcessor(size=SIZE_32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def mvaema_processor():
    return build_default_processor(MicrographImageProcessor(size=SIZE_32))


@pytest.fixture(scope="session")
def mvaema_folder(tmp_path_factory, mvaema_processor):
    """An untrained 32-px MVaEMa saved with its processor, as train/vqa.py writes one."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mvaema")
    tiny_mvaema().save_pretrained(folder)
    mvaema_processor.save_pretrained(folder)
    return folder
