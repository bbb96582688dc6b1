"""Checkpoints load as weights only: a planted code-carrying file is refused unread; bad files get clear errors."""

import os
import pickle

import pytest
import torch

from ppl_vae.data import synthetic_gaussian
from ppl_vae.inference import fit, load_run
from ppl_vae.inference.checkpoint import CheckpointError, load_checkpoint
from ppl_vae.models import VAEConfig, build_model


class _Planted:
    """Unpickling this runs ``os.system`` (writes a marker file): what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    torch.manual_seed(0)
    fit(build_model(VAEConfig(4, 2)), synthetic_gaussian(50, 4, seed=0), steps=3, run_dir=run, progress=False,
        device="cpu")
    return run


def test_a_planted_code_executing_checkpoint_is_refused_and_nothing_runs(run_dir, tmp_path):
    marker = tmp_path / "code-ran"
    state = load_checkpoint(run_dir / "checkpoint.pt")
    state["model_state"]["evil"] = _Planted(marker)
    torch.save(state, run_dir / "checkpoint.pt")  # the planted object pickles its os.system call
    with pytest.raises(CheckpointError, match="refused unread"):
        load_run(run_dir, device="cpu")
    with pytest.raises(CheckpointError, match="refused unread"):
        fit(build_model(VAEConfig(4, 2)), synthetic_gaussian(50, 4, seed=0), steps=6, run_dir=run_dir,
            resume=True, progress=False, device="cpu")
    assert not marker.exists()
    # an unrestricted unpickling of the planted object does run code: the threat is real
    pickle.loads(pickle.dumps(_Planted(marker)))
    assert marker.exists()


@pytest.mark.parametrize("damage, match", [
    (lambda path: path.write_bytes(b""), "is empty"),
    (lambda path: path.write_bytes(path.read_bytes()[:100]), "truncated or corrupted"),
    (lambda path: path.write_bytes(b"not a checkpoint at all" * 10), "truncated or corrupted"),
    (lambda path: torch.save({"weights": torch.zeros(2)}, path), "not a ppl_vae checkpoint"),
])
def test_damaged_checkpoints_get_one_clear_error_naming_the_file(run_dir, damage, match):
    path = run_dir / "checkpoint.pt"
    damage(path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
