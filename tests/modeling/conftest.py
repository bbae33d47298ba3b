import pytest


@pytest.fixture(autouse=True, scope="module")
def _modeling_tests_run_single_threaded(single_thread):
    """Every model test here builds tiny models: one intra-op thread is fastest."""
