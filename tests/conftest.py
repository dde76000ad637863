import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message=".*init_weights.*")


def pytest_configure(config):
    """One intra-op thread per xdist worker: two workers on two cores otherwise oversubscribe."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
