import base64
import io
import re

import matplotlib.image as mpimg
import pytest
import torch

from ppl_vae.data import load
from ppl_vae.diagnostics import load as load_diagnostics
from ppl_vae.inference import CHECKPOINT_NAME
from ppl_vae.report.runs import DIAGNOSTICS_NAME, diagnose_run, held_out_split, run_names, write_report

from report_testing import FAST


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_diagnose_run_writes_and_reuses_its_cache(cvae_runs):
    run = cvae_runs[0]
    first = diagnose_run(run, **FAST)
    cache = run / DIAGNOSTICS_NAME
    stamp = cache.stat().st_mtime_ns
    again = diagnose_run(run, **FAST)
    assert cache.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert again.collapse.identical(first.collapse)
    assert load_diagnostics(cache).metrics.identical(first.metrics)
    # a different K is a different computation: the cache is replaced
    other = diagnose_run(run, **{**FAST, "iw_samples": 9})
    assert other.attrs["iw_samples"] == 9 and load_diagnostics(cache).attrs["iw_samples"] == 9


def test_stale_cache_from_another_checkpoint_is_recomputed(cvae_runs, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(cvae_runs[1], run)
    before = diagnose_run(run, **FAST)
    state = torch.load(run / CHECKPOINT_NAME, weights_only=True)
    for name, tensor in state["model_state"].items():
        if "decoder" in name and tensor.is_floating_point():
            tensor.zero_()  # decoder with no z-branch: every latent dimension carries nothing
    torch.save(state, run / CHECKPOINT_NAME)
    after = diagnose_run(run, **FAST)
    assert after.attrs["checkpoint_sha256"] != before.attrs["checkpoint_sha256"]
    assert not after.posterior_predictive.identical(before.posterior_predictive)


def test_report_page_has_headlines_table_and_decodable_figures(report_page):
    page = report_page.read_text()
    assert page.count('class="headline"') >= 3
    assert re.search(r"\d+ of 6 latent dimensions collapsed; theory predicted \d+", page)
    assert re.search(r"z1: \d+ of 4 latent dimensions collapsed; theory predicted \d+ \(linear-model prediction\) \| z2",
                     page)
    assert '<table' in page and ">IW log-lik</th>" in page and ">K</th>" in page and '">8</td>' in page
    assert "not drawn" not in page
    images = embedded_images(page)
    # across runs: 2 curves/KL + AU/NLL vs beta + losses; each CVAE: 5 (+ completions); MHVAE: 5 with reconstructions
    assert len(images) >= 3 + 6 + 6 + 5
    for png in images:
        assert mpimg.imread(io.BytesIO(png), format="png").shape[0] > 50
    assert "conditional completions" in page and "reconstructions" in page
    # the MHVAE run alone has a KL schedule and a floor: one schedule figure, with its floor
    assert page.count("<figcaption>KL weight over training per latent level") == 1
    assert "free-bits floor 0.1 nats per dimension" in page


def test_report_refuses_to_overwrite(cvae_runs, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_report(cvae_runs[:1], out, **FAST)
    assert out.read_text() == "keep me"
    write_report(cvae_runs[:1], out, overwrite=True, **FAST)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_held_out_split_follows_the_training_options():
    bundle = load("digits", paired=True, classes=[0])
    train, test = held_out_split(bundle, {"test_fraction": 0.25, "split_seed": 1})
    assert train.n + test.n == bundle.n and test.n == pytest.approx(bundle.n / 4, abs=1)
    same, none = held_out_split(bundle, {})
    assert same is bundle and none is None


def test_run_names_are_distinct(tmp_path):
    assert run_names([tmp_path / "a" / "run", tmp_path / "b" / "run"]) != ["run", "run"]
    assert run_names([tmp_path / "x", tmp_path / "y"]) == ["x", "y"]


@pytest.mark.parametrize("damage", [b"", b"CDF\x01 truncated", b"\x89HDF\r\n\x1a\n" + bytes(64)])
def test_an_unreadable_cache_is_recomputed(cvae_runs, tmp_path, damage):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(cvae_runs[0], run)
    (run / DIAGNOSTICS_NAME).write_bytes(damage)
    idata = diagnose_run(run, **FAST)
    assert idata.attrs["iw_samples"] == FAST["iw_samples"]
    assert load_diagnostics(run / DIAGNOSTICS_NAME).attrs["checkpoint_sha256"] == idata.attrs["checkpoint_sha256"]


@pytest.mark.parametrize(("attr", "value"), [("ppl_vae_version", "0.0.1"), ("data_split", '{"test_fraction": 0.5}'),
                                             ("iw_samples", 3)])
def test_a_cache_made_otherwise_is_recomputed(cvae_runs, tmp_path, attr, value):
    import shutil

    from ppl_vae.diagnostics import save

    run = tmp_path / "copy"
    shutil.copytree(cvae_runs[0], run)
    first = diagnose_run(run, **FAST)
    first.attrs[attr] = value
    save(first, run / DIAGNOSTICS_NAME)
    again = diagnose_run(run, **FAST)
    assert str(again.attrs[attr]) != str(value)  # made anew with this report's settings and version
    assert str(load_diagnostics(run / DIAGNOSTICS_NAME).attrs[attr]) == str(again.attrs[attr])


def test_the_cache_records_the_held_out_split(cvae_runs):
    import json

    idata = diagnose_run(cvae_runs[0], **FAST)
    assert json.loads(idata.attrs["data_split"]) == {"test_fraction": 0.0, "split_seed": None, "max_points": None}


def test_a_config_that_does_not_match_the_checkpoint_is_refused(cvae_runs, tmp_path):
    import json
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(cvae_runs[0], run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["beta"] = 7.0
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json does not match .*checkpoint.pt: the model config differs in "
                                         r"beta \(e.g. beta is 7.0 in config.json, 0.5 in the checkpoint\)"):
        diagnose_run(run, **FAST)
