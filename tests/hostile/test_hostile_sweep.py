"""A sweep's own records decide what it may delete or resume: damaged group checkpoints are discarded, not retried."""

from __future__ import annotations

import json

import pytest
import torch

from ppl_vae._provenance import discard_damaged_group, foreign_sweep_entries, identity_changes


def _group(tmp_path, checkpoint: bytes | None, config: str = '{"models": [], "seeds": []}'):
    folder = tmp_path / "groups" / "0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(config)
    if checkpoint is not None:
        (folder / "checkpoint.pt").write_bytes(checkpoint)
    return folder


@pytest.mark.parametrize("checkpoint, config", [(b"", '{"models": []}'), (b"PK\x03\x04 cut", '{"models": []}'),
                                                (None, "[1, 2]"), (None, "{")])
def test_a_damaged_group_checkpoint_is_discarded_with_a_warning_naming_it(tmp_path, checkpoint, config):
    folder = _group(tmp_path, checkpoint, config)
    with pytest.warns(UserWarning, match=rf"group checkpoint {folder} is damaged .*discarded"):
        assert discard_damaged_group(folder)
    assert not folder.exists()


def test_a_group_checkpoint_missing_entries_is_discarded_and_a_sound_one_kept(tmp_path):
    folder = _group(tmp_path, None)
    torch.save({"model_state": {"w": torch.zeros(2)}, "step": 3}, folder / "checkpoint.pt")  # no optimiser, ...
    with pytest.warns(UserWarning, match="lacks optimizer_state"):
        assert discard_damaged_group(folder)
    sound = _group(tmp_path, None)
    torch.save({"model_state": {"w": torch.zeros(2)}, "optimizer_state": {}, "step": 3,
                "loss_history": torch.zeros(3, 1), "sampler_state": {}, "noise_state": {},
                "stopped": torch.zeros(1, dtype=torch.bool), "diverged": {}, "configs": [{}], "train": {}},
               sound / "checkpoint.pt")
    assert not discard_damaged_group(sound) and sound.is_dir()
    assert not discard_damaged_group(None) and not discard_damaged_group(tmp_path / "absent")


def test_overwrite_accounts_only_for_what_the_sweeps_records_name(tmp_path):
    saved = {"identity": {}, "grid_order": ["beta"],
             "spec": {"model": "vae", "arch": "linear", "data": {"name": "synthetic", "n": 20, "dim": 3},
                      "model_options": {"latent_dim": 1}, "grid": {"beta": [1, 2]}, "train": {"steps": 1}}}
    out = tmp_path / "sweep"
    for name in ("beta=1", "beta=2"):
        (out / "runs" / name).mkdir(parents=True)
        (out / "runs" / name / "metrics.json").write_text("{}")
    (out / "spec.json").write_text(json.dumps(saved))
    assert foreign_sweep_entries(out, saved) == []
    (out / "runs" / "beta=3").mkdir()  # not a point of the saved grid
    (out / "runs" / "beta=1" / "notes.md").write_text("mine")  # not a run file
    (out / "report.html").write_text("mine")
    assert foreign_sweep_entries(out, saved) == ["report.html", "runs/beta=1", "runs/beta=3"]


def test_a_data_digest_is_compared_unless_the_record_predates_it():
    assert identity_changes({"model": "vae", "data_sha256": "a"}, {"model": "vae", "data_sha256": "b"}) == \
        ["data_sha256"]
    assert identity_changes({"model": "vae"}, {"model": "vae", "data_sha256": "b"}) == []
    assert identity_changes({"model": "cvae"}, {"model": "vae"}) == ["model"]
