"""PlainDiagnostics holds what an InferenceData of the same groups and attributes holds, without ArviZ."""

import pickle

import numpy as np
import pytest
import xarray as xr

from ppl_vae.diagnostics import combine
from ppl_vae.diagnostics.core import build_inference_data
from ppl_vae.diagnostics.plain import PlainDiagnostics, is_diagnostics, is_inference_data


def _groups():
    return {"metrics": xr.Dataset({"elbo": ((), 1.5)}),
            "posterior": xr.Dataset({"z": (("chain", "draw"), np.ones((1, 2)))}),
            "constant_data": xr.Dataset(),  # no variables: ArviZ leaves it out
            "collapse": xr.Dataset({"z_collapsed": ("z_dim", [True, False])}),
            "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"), np.zeros((1, 1, 3)))})}


def test_it_lists_and_holds_the_groups_an_inference_data_would():
    plain = PlainDiagnostics(_groups(), {"family": "cvae", "seed": 3})
    idata = build_inference_data(_groups(), {"family": "cvae", "seed": 3})
    assert plain.groups() == idata.groups() == ["posterior", "log_likelihood", "metrics", "collapse"]
    for group in idata.groups():
        xr.testing.assert_identical(plain[group], idata[group])
    xr.testing.assert_identical(plain.collapse, idata.collapse)
    assert plain.attrs == dict(idata.attrs)
    back = plain.to_inference_data()
    assert is_inference_data(back) and back.groups() == idata.groups() and dict(back.attrs) == plain.attrs
    with pytest.raises(AttributeError):
        plain.constant_data
    sent = pickle.loads(pickle.dumps(plain))  # as a Ray worker sends a task's results back
    assert sent.groups() == plain.groups() and sent.attrs == plain.attrs
    xr.testing.assert_identical(sent["collapse"], plain["collapse"])


def test_combine_gives_the_same_groups_for_plain_runs_and_for_inference_data():
    runs = [PlainDiagnostics(_groups(), {"hyperparameters": f'{{"beta": {b}}}', "family": "cvae"}) for b in (1, 2)]
    as_plain = combine(runs, run_names=["a", "b"], as_inference_data=False)
    as_idata = combine([run.to_inference_data() for run in runs], run_names=["a", "b"])
    assert isinstance(as_plain, PlainDiagnostics) and is_diagnostics(as_idata)
    assert as_plain.groups() == as_idata.groups()
    for group in as_idata.groups():
        xr.testing.assert_identical(as_plain[group], as_idata[group])
    assert as_plain.attrs == dict(as_idata.attrs)
    assert list(as_plain["metrics"].beta.values) == [1.0, 2.0]
