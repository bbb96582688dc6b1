"""Full mode (the authors' settings, MNIST) runs end to end on a small IDX fixture.

MNIST is not on this machine and full training needs a GPU, so the test
shrinks only the training (``--max-steps``), the diagnostics' sample counts
(``--max-draws``: full mode's 1,000 importance samples and 100 predictive
draws of 784 pixels per run took minutes to compute and write) and the
number of seeds; widths, latent sizes, eta values, grids, data shapes
(28 x 28) and the other diagnostics options are those of full mode. The
numbers are meaningless; the plumbing is the real one.
"""

from __future__ import annotations

import numpy as np
import pytest

from ppl_vae.reproduce import EXPERIMENTS, Settings, read_claim, run_experiments

IMAGES_PER_CLASS = {"train": 6, "t10k": 2}


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_fixture(tmp_path_factory):
    """MNIST-shaped IDX files: 28 x 28 strokes, a few images of each of the 10 classes."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:28, 0:28]
    for prefix, per_class in IMAGES_PER_CLASS.items():
        labels = np.repeat(np.arange(10), per_class)
        images = []
        for label in labels:  # a blurred diagonal stroke whose angle depends on the class
            angle = np.pi * label / 10 + rng.normal(0, 0.1)
            distance = np.abs((cols - 14) * np.sin(angle) - (rows - 14) * np.cos(angle))
            images.append(255 * np.exp(-distance ** 2 / 8) * (np.hypot(rows - 14, cols - 14) < 11))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", np.stack(images))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_runs_in_full_mode_on_the_fixture(name, mnist_fixture, tmp_path):
    settings = Settings(scale="full", out=tmp_path / "full", mnist_dir=mnist_fixture, device="cpu", n_seeds=2,
                        max_steps=2, max_draws=4)
    (outcome,) = run_experiments(settings, [name], progress=False)
    assert outcome.status != "failed", outcome.error
    check = read_claim(settings.out / name)
    assert check is not None and check.n_seeds == 2 and check.evidence
