"""``fit`` on a user's own Pyro program: callables, PyroModules, raw arrays, params, checks before training."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule

from ppl_vae.inference import fit, load_checkpoint, load_program_state, load_run
from ppl_vae.inference.program import as_bundle, check_program

N, D, Z = 48, 5, 2


@pytest.fixture(autouse=True)
def _clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


class UserVAE(PyroModule):
    """A VAE the ordinary Pyro way: pyro.module networks, a constrained pyro.param, one data plate."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc, self.dec = torch.nn.Linear(D, Z), torch.nn.Linear(Z, D)

    def model(self, x):
        pyro.module("dec", self.dec)
        scale = pyro.param("obs_scale", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], Z), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), scale).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        q_scale = pyro.param("q_scale", torch.full((Z,), 0.5), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.enc(x), q_scale).to_event(1))


def _data(seed=0):
    return np.random.default_rng(seed).normal(size=(N, D)).astype(np.float32)


@pytest.mark.parametrize("form", ["callables", "object", "tensor"])
def test_a_users_program_trains_every_parameter_it_registers(form):
    program = UserVAE()
    before = {"obs_scale": 1.0, "enc": program.enc.weight.detach().clone()}
    data = torch.as_tensor(_data()) if form == "tensor" else _data()
    args = (program.model, program.guide, data) if form == "callables" else (program, data)
    result = fit(*args, steps=25, batch_size=16, lr=0.05, progress=False)
    # the pyro.param (optimised unconstrained, as Pyro does) and the modules' weights all moved
    trained_scale = pyro.param("obs_scale").item()
    assert trained_scale != before["obs_scale"] and trained_scale > 0
    assert not torch.equal(program.enc.weight, before["enc"])
    assert set(result.model.config.parameters) >= {"obs_scale", "q_scale", "enc$$$weight", "dec$$$bias"}
    assert result.provenance["data_source"]["shapes"] == [[N, D]]
    assert np.isfinite(result.final_loss)


def test_a_programs_run_resumes_bit_for_bit_with_checkpoints_readable_without_pickle(tmp_path):
    def run(steps, run_dir=None, resume=False):
        pyro.clear_param_store()
        program = UserVAE(seed=1)
        fit(program, _data(), steps=steps, batch_size=16, lr=0.05, progress=False, run_dir=run_dir,
            resume=resume, checkpoint_every=5, test_fraction=0.25)
        return {name: pyro.param(name).detach().clone() for name in pyro.get_param_store().keys()}

    straight = run(20)
    run(10, tmp_path / "run")
    resumed = run(20, tmp_path / "run", resume=True)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # torch.load(weights_only=True)
    assert state["train"]["n_test"] == 12 and state["configs"][0]["family"] == "program"
    assert (tmp_path / "run" / "kl_history.nc").is_file()
    with pytest.raises(ValueError, match="user's Pyro program"):
        load_run(tmp_path / "run")
    # The caller builds the program again (other initial weights); nothing in the run directory runs.
    pyro.clear_param_store()
    load_program_state(tmp_path / "run", UserVAE(seed=7), data=_data())
    assert all(torch.equal(pyro.param(k).detach(), resumed[k]) for k in resumed)


def _refused(model, guide):
    x = torch.as_tensor(_data())
    return fit(model, guide, x, steps=2, progress=False)


def test_enumeration_discrete_non_normal_and_global_latents_are_refused_before_training_by_name():
    dec = torch.nn.Linear(Z, D)
    weight = dec.weight.detach().clone()

    def model(x, kind):
        pyro.module("dec", dec)
        if kind == "global":
            w = pyro.sample("w", dist.Normal(torch.zeros(D), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            if kind == "enumerate":
                pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(x.shape[0])), infer={"enumerate": "parallel"})
            elif kind == "discrete":
                pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(x.shape[0])))
            elif kind == "gamma":
                pyro.sample("c", dist.Gamma(torch.ones(x.shape[0]), 1.0))
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], Z), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec(z) + (w if kind == "global" else 0.0), 1.0).to_event(1), obs=x)

    def guide(x, kind):
        if kind == "global":
            pyro.sample("w", dist.Normal(torch.zeros(D), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            if kind in ("discrete", "enumerate"):
                pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(x.shape[0])),
                            infer={"enumerate": "parallel"} if kind == "enumerate" else {})
            elif kind == "gamma":
                pyro.sample("c", dist.Gamma(torch.ones(x.shape[0]), 1.0))
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], Z), 1.0).to_event(1))

    for kind, message in [("enumerate", "'c' asks for enumeration"), ("discrete", "'c' .* not reparameterisable"),
                          ("gamma", "'c' is Gamma"), ("global", "'w' is outside the data plate")]:
        with pytest.raises(ValueError, match=message):
            _refused(lambda x, kind=kind: model(x, kind), lambda x, kind=kind: guide(x, kind))
    assert torch.equal(dec.weight, weight)


def test_checking_a_program_leaves_the_global_random_state_alone():
    program = UserVAE()
    x = torch.as_tensor(_data())
    state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    info = check_program(program.model, program.guide, x)
    assert torch.equal(torch.get_rng_state(), state) and np.array_equal(np.random.get_state()[1], numpy_state)
    assert info["latent_sites"] == ("z",) and info["latent_dims"] == {"z": Z} and info["observed_sites"] == ("x",)


def test_bad_data_is_refused_naming_it():
    with pytest.raises(ValueError, match="same number of rows"):
        as_bundle((np.zeros((4, 2)), np.zeros((5, 2))))
    with pytest.raises(ValueError, match=r"data\[0\]"):
        as_bundle("not data")
    with pytest.raises(ValueError, match="data is missing"):
        fit(UserVAE(), steps=2)


def test_a_subsampled_plate_trains_from_the_record_exactly_as_eagerly():
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(0))
    batch = 12

    def run(jit):
        pyro.clear_param_store()
        torch.manual_seed(0)
        enc, dec = torch.nn.Linear(D, Z), torch.nn.Linear(Z, D)

        def model(x):
            pyro.module("dec", dec)
            with pyro.plate("data", N, subsample_size=batch) as idx:
                z = pyro.sample("z", dist.Normal(torch.zeros(batch, Z), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(dec(z), 1.0).to_event(1), obs=x[idx])

        def guide(x):
            pyro.module("enc", enc)
            with pyro.plate("data", N, subsample_size=batch) as idx:
                pyro.sample("z", dist.Normal(enc(x[idx]), 0.5).to_event(1))

        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # the record is trusted: no fallback
            result = fit(model, guide, x, steps=15, lr=0.05, progress=False, jit=jit)
        return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}, result

    (traced, traced_fit), (eager, eager_fit) = run(True), run(False)
    assert all(torch.equal(traced[k], eager[k]) for k in eager)
    np.testing.assert_array_equal(traced_fit.loss.values, eager_fit.loss.values)


def test_a_sequence_of_programs_is_refused_by_name():
    with pytest.raises(ValueError, match="one at a time"):
        fit([UserVAE(), UserVAE()], _data(), steps=2, progress=False)
