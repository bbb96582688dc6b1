"""Suite-wide pytest set-up."""

import os

import pytest
import torch

# Tests run as `pytest -n 2` on two cores: a second torch thread per worker only
# oversubscribes the machine (tiny models gain nothing from intra-op threads).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Skip ``@pytest.mark.slow`` tests unless ``PPL_VAE_SLOW=1`` asks for them."""
    if os.environ.get("PPL_VAE_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow check; set PPL_VAE_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
