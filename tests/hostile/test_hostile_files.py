"""File-level refusals the case table cannot stage as root: an unreadable checkpoint is not a "corrupted" one."""

from __future__ import annotations

import errno

import pytest
import torch

from ppl_vae.inference import checkpoint
from ppl_vae.inference.checkpoint import CheckpointError, check_state, load_checkpoint


def test_a_permission_denied_checkpoint_is_not_called_corrupted(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model_state": {}, "step": 1}, path)

    def denied(name, *args, **kwargs):  # what a non-root user gets for a 0o000 file (root reads anything)
        raise PermissionError(errno.EACCES, "Permission denied", str(name))

    monkeypatch.setattr(checkpoint, "open", denied, raising=False)
    with pytest.raises(PermissionError, match=rf"Permission denied: '{path}'") as caught:
        load_checkpoint(path)
    assert "corrupted" not in str(caught.value)


def test_a_diverged_configuration_of_a_batched_run_may_hold_nan_the_others_may_not(tmp_path):
    weights = torch.zeros(3, 2)
    weights[1] = float("nan")
    state = {"model_state": {"w": weights}, "step": 4, "stopped": torch.tensor([False, True, False])}
    assert check_state(state, tmp_path / "c.pt") == 4  # configuration 1 diverged and was stopped
    state["stopped"] = torch.tensor([False, False, False])
    with pytest.raises(CheckpointError, match="'w' holds NaN"):
        check_state(state, tmp_path / "c.pt")
