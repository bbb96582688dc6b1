"""Every analysis script, run in process at the tiny scale: it writes what it records and a claim check."""

from __future__ import annotations

import json
import subprocess
import sys

import arviz as az
import pandas as pd
import pytest
import xarray as xr

from ppl_vae.reproduce import (EXPERIMENTS, ClaimCheck, default_analyses_dir, load_script, parse_settings, read_claim,
                               read_manifest, training_options)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def analyses_dir():
    return default_analyses_dir()


def _record_training(module) -> list[tuple[int, int, int]]:
    """Wrap the script's ``run_replicates``: each call's (configurations, seeds, steps) lands in the returned list."""
    calls, real = [], getattr(module, "run_replicates", None)
    if real is None:
        return calls

    def recording(configs, train, settings, *, kind="mlp", **overrides):
        steps = (training_options(settings, kind=kind) | overrides)["steps"]
        calls.append((len(configs), settings.n_seeds, steps))
        return real(configs, train, settings, kind=kind, **overrides)

    module.run_replicates = recording
    return calls


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_script_tiny_run_writes_manifest_files_and_claim(name, analyses_dir, tmp_path):
    module = load_script(name, analyses_dir)
    argv = ["--tiny", "--out", str(tmp_path), "--device", "cpu"]
    calls = _record_training(module)
    check = module.main(argv)
    if hasattr(module, "plan"):  # the cost full mode prints is what the script trains (ppl_vae.reproduce.plan)
        assert [(g.configs, g.seeds, g.steps) for g in module.plan(parse_settings(name, argv))] == calls

    assert isinstance(check, ClaimCheck)
    assert check.experiment == name and check.claim and check.rule and check.numbers
    assert read_claim(tmp_path / name) == ClaimCheck.from_dict(check.to_dict())
    entries = read_manifest(tmp_path / name)
    kinds = {entry["kind"] for entry in entries}
    assert {"figure", "table", "netcdf"} <= kinds
    for entry in entries:
        path = tmp_path / name / entry["path"]
        assert path.is_file() and entry["caption"]
        if entry["kind"] == "figure":
            assert path.read_bytes()[:8] == PNG_MAGIC
        elif entry["kind"] == "table":
            assert len(pd.read_csv(path)) > 0
        elif entry["format"] == "InferenceData":
            assert {"collapse", "metrics"} <= set(az.from_netcdf(str(path)).groups())
        else:
            assert len(xr.load_dataset(path).data_vars) > 0
    json.dumps(check.to_dict())  # machine-readable


def test_script_refuses_existing_output_without_overwrite(analyses_dir, tmp_path):
    (tmp_path / "theorem_checks").mkdir()
    (tmp_path / "theorem_checks" / "keep.txt").write_text("mine")
    module = load_script("theorem_checks", analyses_dir)
    with pytest.raises(FileExistsError, match="--overwrite"):
        module.main(["--tiny", "--out", str(tmp_path)])
    assert (tmp_path / "theorem_checks" / "keep.txt").read_text() == "mine"


def test_script_runs_standalone_and_full_mode_without_mnist_says_so(analyses_dir, tmp_path):
    script = analyses_dir / "cvae_mlp_beta_eta.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--mnist-dir", str(tmp_path / "none"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "MNIST" in proc.stderr and "--quick" in proc.stderr
