"""Data files' declared sizes are checked against the memory budget before they are read."""

import numpy as np
import pytest

from ppl_vae.data import load
from ppl_vae.data.files import DataFileError
from ppl_vae.data.sizes import check_declared_size


def test_an_npz_that_inflates_past_the_budget_is_refused_before_reading(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((250_000, 4), np.float32))  # 4 MB of zeros in a few kB
    assert path.stat().st_size < 100_000
    with pytest.raises(DataFileError, match=r"bomb.npz \(its 1 arrays decompressed\) needs 3.8 MiB, more than"):
        check_declared_size(path, budget=1 << 20)
    check_declared_size(path, budget=8 << 20)  # within the budget: accepted


def test_a_npy_header_claiming_more_than_the_budget_is_refused_by_name(tmp_path, monkeypatch):
    path = tmp_path / "claims.npy"
    np.save(path, np.ones((1000, 8), np.float64))
    with pytest.raises(DataFileError, match=r"claims.npy \(declared shape \(1000, 8\), float64\) needs 62.5 KiB"):
        check_declared_size(path, budget=10_000)
    monkeypatch.setenv("PPL_VAE_MEMORY_BUDGET", "10K")  # the budget of load() comes from the environment
    with pytest.raises(DataFileError, match=r"PPL_VAE_MEMORY_BUDGET"):
        load(str(path))
    monkeypatch.setenv("PPL_VAE_MEMORY_BUDGET", "1M")
    assert load(str(path)).n == 1000
