import json

import arviz as az
import numpy as np
import xarray as xr

from ppl_vae.report import headline, level_summaries, metrics_table


def hand_made(sites=(("z", 5, 2),), theory_vars=None, prediction="closed form for this (linear) model"):
    collapse = {}
    for site, dims, collapsed in sites:
        flags = np.arange(dims) >= dims - collapsed
        collapse[f"{site}_collapsed"] = (f"{site}_dim", flags)
        collapse[f"{site}_n_collapsed"] = ((), int(flags.sum()))
        collapse[f"{site}_active_units"] = ((), dims - collapsed)
    groups = {
        "collapse": xr.Dataset(collapse, attrs={"latent_sites": " ".join(s for s, _, _ in sites)}),
        "metrics": xr.Dataset({"iw_log_likelihood": -12.5, "elbo": -13.0, "elbo_beta": -14.0,
                               "reconstruction_mse": 0.1}, coords={"eval_obs": np.arange(7)},
                              attrs={"iw_samples": 50}),
    }
    if theory_vars is not None:
        groups["theory"] = xr.Dataset({k: ("mode", v) for k, v in theory_vars.items()}, attrs={"prediction": prediction})
    attrs = {"model_config": json.dumps({"family": "cvae", "arch": "linear"}),
             "hyperparameters": json.dumps({"beta": 2.0, "eta_dec": 0.5}), "metrics_data": "test"}
    return az.InferenceData(attrs=attrs, **groups)


def test_headline_for_one_level():
    idata = hand_made(theory_vars={"collapsed": [False, False, True, True, True]})
    assert headline(idata) == "2 of 5 latent dimensions collapsed; theory predicted 3"


def test_headline_says_when_the_prediction_is_the_linear_models():
    idata = hand_made(theory_vars={"collapsed": [False, True]}, prediction="linear-model prediction (...)")
    assert headline(idata).endswith("theory predicted 1 (linear-model prediction)")


def test_headline_without_theory():
    assert headline(hand_made()) == "2 of 5 latent dimensions collapsed; no theory prediction"


def test_headline_per_level_for_the_mhvae():
    idata = hand_made(sites=(("z1", 4, 1), ("z2", 3, 3)),
                      theory_vars={"z1_collapsed": [False, True, True, False], "z2_collapsed": [True, True, True, False]})
    assert headline(idata) == ("z1: 1 of 4 latent dimensions collapsed; theory predicted 2 | "
                               "z2: 3 of 3 latent dimensions collapsed; theory predicted 3")
    assert [level.active_units for level in level_summaries(idata)] == [3, 0]


def test_metrics_table_one_row_per_run():
    table = metrics_table({"a": hand_made(), "b": hand_made(sites=(("z", 5, 0),))})
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "collapsed (theory)"] == "2/5 (-)"
    assert table.loc["b", "active units"] == "5"
    assert table.loc["a", "IW log-lik"] == -12.5 and table.loc["a", "K"] == 50
    assert table.loc["a", "hyper-parameters"] == "beta=2, eta_dec=0.5"
    assert table.loc["a", "evaluated on"] == "test (7 points)"


def test_the_headline_counts_low_information_dimensions_and_gives_the_convergence_flag():
    idata = hand_made()
    collapse = idata.collapse
    collapse["z_n_low_information"] = collapse["z_n_collapsed"] * 0 + 2
    collapse.attrs["low_information_share"] = 0.05
    assert headline(idata) == ("2 of 5 latent dimensions collapsed, 2 more carry under 5% of the KL; "
                               "no theory prediction")
    collapse["z_n_low_information"] = collapse["z_n_collapsed"] * 0
    idata.attrs["converged"] = 0
    assert headline(idata).endswith("no theory prediction (did not converge: counts not final)")
    assert headline(idata, convergence=False).endswith("no theory prediction")
    idata.attrs["converged"] = 1
    assert headline(idata).endswith("(converged)")
