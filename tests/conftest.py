import os
import warnings

import pytest
import torch

# exports round dense widths to the CPU's vector width by default; the tests pin it to 1 so
# that the shapes they assert do not depend on the machine (tests/test_widths.py sets its own)
os.environ["CHANPRUNE_WIDTH_QUANTUM"] = "1"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message=".*init_weights.*")


def pytest_configure(config):
    """One intra-op thread per xdist worker: two workers on two cores otherwise oversubscribe."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
