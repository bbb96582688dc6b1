"""Train the tiny test models on one CPU thread.

Their steps are a few small matrix products: extra OpenMP threads only
spin-wait, and under ``pytest -n 2`` they oversubscribe the machine.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
