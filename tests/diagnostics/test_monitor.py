"""CollapseMonitor: readings equal the diagnostics', no side effect on the loop, the KL history contract."""

from __future__ import annotations

import contextlib

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from torch import nn

import ppl_vae.diagnostics.monitor as monitor_module
from ppl_vae.diagnostics import CollapseMonitor, diagnose
from ppl_vae.diagnostics.collapse import collapse_dataset, latent_statistics
from ppl_vae.diagnostics.io import load, save
from ppl_vae.diagnostics.monitor import nan_variance
from pyro_style_models import CVAE, BernoulliVAE, laplace_guide, laplace_model


class NoisyVAE(nn.Module):
    """A Gaussian VAE whose encoder has BatchNorm and Dropout: its mode and running statistics matter."""

    def __init__(self, x_dim: int = 6, z_dim: int = 3, hidden: int = 8):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.2),
                                     nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Linear(z_dim, x_dim)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def rows(n: int, dim: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def svi_loop(every: int | None, steps: int = 30):
    """Losses and final state of SVI + Trace_ELBO on minibatches from the global RNG, with or without a monitor."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = NoisyVAE()
    x, held_out = rows(64), rows(40, seed=1)
    pyro.set_rng_seed(1)
    monitor = None if every is None else CollapseMonitor(vae.model, vae.guide, held_out, every=every,
                                                         rows="held-out", kl_samples=2)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), loss=pyro.infer.Trace_ELBO())
    losses = []
    for _ in range(steps):
        losses.append(svi.step(x[torch.randperm(64)[:16]]))
        if monitor is not None:
            monitor()
    state = {name: value.clone() for name, value in vae.state_dict().items()}
    return losses, state, monitor, vae


def test_a_loop_with_the_monitor_gives_exactly_the_losses_without_it():
    plain_losses, plain_state, _, _ = svi_loop(None)
    losses, state, monitor, vae = svi_loop(every=3)
    assert len(monitor.readings) == 10
    assert losses == plain_losses
    assert state.keys() == plain_state.keys()
    for name, value in plain_state.items():  # weights and BatchNorm running statistics
        assert torch.equal(state[name], value), name
    assert vae.training and all(module.training for module in vae.modules())


def test_the_same_loop_diverges_when_the_reading_is_not_isolated(monkeypatch):
    """Counterfactual: without untouched() the guide runs in train mode and BatchNorm's statistics move."""
    plain_losses, plain_state, _, _ = svi_loop(None, steps=12)
    monkeypatch.setattr(monitor_module, "untouched", lambda modules: contextlib.nullcontext())
    losses, state, _, _ = svi_loop(every=3, steps=12)
    assert losses != plain_losses
    assert not torch.equal(state["encoder.1.running_mean"], plain_state["encoder.1.running_mean"])


def test_a_reading_restores_every_rng_and_each_submodule_mode():
    torch.manual_seed(0)
    vae = NoisyVAE()
    vae.decoder.eval()  # a mixed state: must come back as it was, not all-train
    monitor = CollapseMonitor(vae.model, vae.guide, rows(30))
    states = (torch.get_rng_state(), np.random.get_state()[1].copy())
    monitor.measure(0)
    assert torch.equal(torch.get_rng_state(), states[0]) and np.array_equal(np.random.get_state()[1], states[1])
    assert vae.encoder.training and vae.encoder[1].training and not vae.decoder.training
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in vae.parameters())


def test_the_parameter_store_keeps_exactly_its_entries():
    pyro.clear_param_store()
    x = rows(20, dim=4)
    monitor = CollapseMonitor(laplace_model, laplace_guide, x)  # parameters only in Pyro's store
    monitor.measure(0)
    assert list(pyro.get_param_store().keys()) == []  # nothing registered before the user's first step
    svi = pyro.infer.SVI(laplace_model, laplace_guide, pyro.optim.Adam({"lr": 1e-2}), loss=pyro.infer.Trace_ELBO())
    svi.step(x)
    before = pyro.get_param_store().get_state()["params"]
    snapshot = {name: value.detach().clone() for name, value in before.items()}
    monitor.measure(1)
    after = pyro.get_param_store().get_state()["params"]
    assert after.keys() == before.keys()
    for name, value in after.items():
        assert value is before[name] and torch.equal(value, snapshot[name]), name
    assert monitor.last.kl["z"] and all(np.isfinite(monitor.last.kl["z"]))  # a Monte Carlo KL: still read


def test_readings_equal_the_analytic_kl_and_diagnose(exact_vae, gaussian_bundle):
    model, (_, eta_enc, _) = exact_vae
    monitor = CollapseMonitor(model, gaussian_bundle)  # a suite-style model carries its guide
    reading = monitor.measure(5)
    x = gaussian_bundle.x
    q = torch.distributions.Normal(x @ model.W.detach().T, model.s.detach())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, eta_enc)).mean(0)
    np.testing.assert_allclose(reading.kl["z"], expected.numpy(), rtol=1e-5, atol=1e-7)
    assert reading.collapsed == {"z": [2]} and reading.n_collapsed == {"z": 1}  # U's third column is zero
    collapse = diagnose(model, gaussian_bundle, n_obs=2, n_draws=2, iw_samples=2, theory=False,
                        progress=False).collapse
    np.testing.assert_allclose(reading.kl["z"], collapse.z_kl_mean.values, rtol=1e-6)
    assert reading.active_units["z"] == int(collapse.z_active_units)
    assert reading.n_collapsed["z"] == int(collapse.z_n_collapsed)
    assert isinstance(reading.kl["z"][0], float) and isinstance(reading.active_units["z"], int)
    assert reading.kl_total["z"] == pytest.approx(sum(reading.kl["z"]))
    assert "1 of 3 collapsed" in str(reading)


def test_a_two_level_reading_is_the_diagnostics_collapse_group(mhvae, gaussian_bundle):
    monitor = CollapseMonitor(mhvae, gaussian_bundle, kl_samples=4, seed=3, au_threshold=0.05,
                              collapse_epsilon=0.02)
    reading = monitor.measure(0)
    statistics = latent_statistics(monitor.target, gaussian_bundle, num_samples=4, seed=3)
    collapse = collapse_dataset(statistics, ("z1", "z2"), au_threshold=0.05, collapse_epsilon=0.02)
    for site in ("z1", "z2"):
        np.testing.assert_allclose(reading.kl[site], collapse[f"{site}_kl_mean"].values, rtol=1e-12)
        assert reading.active_units[site] == int(collapse[f"{site}_active_units"])
        assert reading.collapsed[site] == np.flatnonzero(collapse[f"{site}_collapsed"].values).tolist()


def test_a_cvae_takes_its_positional_arguments_and_the_kl_is_against_its_learned_prior():
    torch.manual_seed(0)
    cvae = CVAE(x_dim=3, y_dim=5, z_dim=2, hidden=8)
    x, y = rows(40, dim=3), rows(40, dim=5, seed=1)
    reading = CollapseMonitor(cvae.model, cvae.guide, (x, y), rows="training").measure(0)
    with torch.no_grad():
        q = torch.distributions.Normal(*cvae.encoder(torch.cat([x, y], dim=-1)))
        p = torch.distributions.Normal(*cvae.prior_net(x))
        expected = torch.distributions.kl_divergence(q, p).mean(0)
    np.testing.assert_allclose(reading.kl["z"], expected.numpy(), rtol=1e-5)


def masked_model(x):
    """A latent observed only on the first half of the rows (poutine.mask): the rest stays out of the KL."""
    weight = pyro.param("w", torch.eye(x.shape[1], 2))
    keep = torch.arange(x.shape[0]) < x.shape[0] // 2
    with pyro.plate("data", x.shape[0]), pyro.poutine.mask(mask=keep):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ weight.T, 0.5).to_event(1), obs=x)


def masked_guide(x):
    keep = torch.arange(x.shape[0]) < x.shape[0] // 2
    with pyro.plate("data", x.shape[0]), pyro.poutine.mask(mask=keep):
        pyro.sample("z", dist.Normal(x[:, :2] * torch.tensor([1.0, 0.0]), 0.5).to_event(1))


def test_masked_rows_stay_out_of_a_reading_as_out_of_the_collapse_group():
    pyro.clear_param_store()
    x = rows(40, dim=3)
    monitor = CollapseMonitor(masked_model, masked_guide, x)
    reading = monitor.measure(0)
    collapse = collapse_dataset(latent_statistics(monitor.target, x, num_samples=8), ("z",))
    np.testing.assert_allclose(reading.kl["z"], collapse.z_kl_mean.values, rtol=1e-12)
    assert reading.active_units["z"] == int(collapse.z_active_units)
    assert np.isfinite(reading.kl["z"]).all()


class SubsampledVAE(NoisyVAE):
    """The same VAE with Pyro's own minibatching: ``pyro.plate(..., subsample_size=8)`` over the full data."""

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0], subsample_size=8) as index:
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(index), self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x[index])

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], subsample_size=8) as index:
            loc, log_scale = self.encoder(x[index]).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def test_a_subsampling_program_is_read_on_every_monitored_row():
    torch.manual_seed(0)
    subsampled, plain = SubsampledVAE(), NoisyVAE()
    plain.load_state_dict(subsampled.state_dict())
    x = rows(30)
    reading = CollapseMonitor(subsampled.model, subsampled.guide, x).measure(0)
    np.testing.assert_allclose(reading.kl["z"], CollapseMonitor(plain.model, plain.guide, x).measure(0).kl["z"],
                               rtol=1e-6)


def test_nan_variance_is_numpys_nanvar_with_one_degree_of_freedom():
    values = rows(12, dim=4).double()
    values[::3, 1] = float("nan")
    values[1:, 3] = float("nan")  # one value left: undefined
    expected = np.nanvar(values.numpy()[:, :3], axis=0, ddof=1)
    np.testing.assert_allclose(nan_variance(values)[:3].numpy(), expected, rtol=1e-12)
    assert nan_variance(values)[3].isnan()


def test_every_counts_calls_and_steps_label_the_readings():
    vae = NoisyVAE()
    monitor = CollapseMonitor(vae.model, vae.guide, rows(30), every=3)
    taken = [monitor() for _ in range(7)]
    assert [r is not None for r in taken] == [False, False, True, False, False, True, False]
    assert [r.step for r in monitor.readings] == [3, 6]
    assert monitor.step() is None  # the 8th call
    assert monitor.step().step == 9
    assert monitor(100) is None and monitor(200, force=True).step == 200
    with pytest.raises(ValueError, match="step must increase"):
        monitor.measure(150)
    with pytest.raises(ValueError, match="step must be"):
        monitor.measure(-1)


def test_bad_options_are_refused_by_name():
    vae = NoisyVAE()
    for options, match in (({"every": 0}, "every must be >= 1"), ({"rows": "test"}, "rows must be one of"),
                           ({"max_rows": 1}, "max_rows must be >= 2"), ({"collapse_epsilon": 0}, "collapse_epsilon"),
                           ({"writer": object(), "log_dir": "tb"}, "writer or log_dir")):
        with pytest.raises(ValueError, match=match):
            CollapseMonitor(vae.model, vae.guide, rows(10), **options)
    with pytest.raises(ValueError, match="at least 2 rows"):
        CollapseMonitor(vae.model, vae.guide, rows(1))
    with pytest.raises(ValueError, match="needs the guide"):
        CollapseMonitor(vae.model, rows(10))


def test_the_rows_are_a_fixed_seeded_subset():
    vae = BernoulliVAE(x_dim=6, z_dim=2, hidden=4)
    x = rows(500)
    first, again = (CollapseMonitor(vae.model, vae.guide, x, max_rows=50, seed=1) for _ in range(2))
    other = CollapseMonitor(vae.model, vae.guide, x, max_rows=50, seed=2)
    assert first.data.n == 50 and torch.equal(first.data.args[0], again.data.args[0])
    assert not torch.equal(first.data.args[0], other.data.args[0])
    assert CollapseMonitor(vae.model, vae.guide, x[:40], max_rows=50).data.n == 40


def trained_monitor(every: int = 2, calls: int = 6, **options) -> CollapseMonitor:
    vae = NoisyVAE()
    monitor = CollapseMonitor(vae.model, vae.guide, rows(30), every=every, rows="held-out", **options)
    for _ in range(calls):
        with torch.no_grad():
            vae.encoder[0].weight.mul_(0.5)  # shrink the encoder: the KL moves between readings
        monitor()
    return monitor


def test_the_history_has_the_shared_contract_form():
    monitor = trained_monitor(collapse_epsilon=0.05)
    history = monitor.history
    assert list(history.data_vars) == ["z_kl"]
    assert history.z_kl.dims == ("step", "z_dim") and history.z_kl.dtype == np.float64
    assert history.z_kl.attrs["units"] == "nats"
    assert history.step.dtype == np.int64 and history.step.values.tolist() == [2, 4, 6]
    assert history.z_dim.values.tolist() == [0, 1, 2]
    assert dict(history.attrs) == {"rows": "held-out", "source": "monitor", "collapse_epsilon": 0.05}
    np.testing.assert_array_equal(history.z_kl.values, [r.kl["z"] for r in monitor.readings])
    assert not np.allclose(history.z_kl.values[0], history.z_kl.values[-1])
    empty = CollapseMonitor(NoisyVAE().model, NoisyVAE().guide, rows(10)).history
    assert empty.sizes.get("step") == 0 and not empty.data_vars


def test_save_writes_netcdf_atomically_and_never_silently_over_a_file(tmp_path):
    monitor = trained_monitor()
    path = monitor.save(tmp_path / "kl_history.nc")
    xr.testing.assert_identical(xr.load_dataset(path), monitor.history)
    assert [p.name for p in tmp_path.iterdir()] == ["kl_history.nc"]  # no temporary file left
    with pytest.raises(FileExistsError, match="overwrite"):
        monitor.save(path)
    monitor()
    monitor()
    monitor.save(path, overwrite=True)
    assert xr.load_dataset(path).sizes["step"] == 4
    with pytest.raises(ValueError, match="no reading yet"):
        CollapseMonitor(NoisyVAE().model, NoisyVAE().guide, rows(10)).save(tmp_path / "empty.nc")


def test_attach_adds_the_kl_history_group_that_survives_save_and_load(exact_vae, gaussian_bundle, tmp_path):
    model, _ = exact_vae
    idata = diagnose(model, gaussian_bundle, n_obs=2, n_draws=2, iw_samples=2, theory=False, progress=False)
    monitor = CollapseMonitor(model, gaussian_bundle)
    monitor.measure(10)
    assert monitor.attach(idata) is idata and "kl_history" in idata.groups()
    with pytest.raises(ValueError, match="already has"):
        monitor.attach(idata)
    monitor.measure(20)
    monitor.attach(idata, overwrite=True)
    loaded = load(save(idata, tmp_path / "run.nc"))
    xr.testing.assert_allclose(loaded.kl_history, monitor.history)
    assert loaded.kl_history.attrs["source"] == "monitor"


class RecordingWriter:
    """Stands in for a SummaryWriter the user owns: records what is logged."""

    def __init__(self):
        self.scalars, self.flushed, self.closed = [], 0, False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed = True


def test_a_users_writer_gets_every_scalar_and_is_not_closed():
    writer = RecordingWriter()
    with trained_monitor(every=3, writer=writer, tag="watch") as monitor:
        pass
    logged = {(tag, step): value for tag, value, step in writer.scalars}
    for reading in monitor.readings:
        for name, value in reading.scalars().items():
            assert logged[(f"watch/{name}", reading.step)] == value
    assert len(logged) == len(writer.scalars) == 2 * (3 + 3)  # total, active, collapsed + 3 dimensions
    assert writer.flushed == 1 and not writer.closed


def test_tensorboard_event_files_hold_the_readings(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with trained_monitor(log_dir=tmp_path / "tb") as monitor:
        pass
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"collapse/z/kl_total", "collapse/z/active_units", "collapse/z/n_collapsed",
            "collapse/z/kl/2"} <= set(events.Tags()["scalars"])
    logged = events.Scalars("collapse/z/kl/1")
    assert [event.step for event in logged] == [2, 4, 6]
    np.testing.assert_allclose([event.value for event in logged], [r.kl["z"][1] for r in monitor.readings],
                               rtol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_nothing_moves_and_the_cuda_rng_is_restored():
    vae = NoisyVAE().cuda()
    monitor = CollapseMonitor(vae.model, vae.guide, rows(30).cuda())
    state = torch.cuda.get_rng_state()
    reading = monitor.measure(0)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert all(p.device.type == "cuda" for p in vae.parameters())
    on_cpu = NoisyVAE()
    on_cpu.load_state_dict({k: v.cpu() for k, v in vae.state_dict().items()})
    reference = CollapseMonitor(on_cpu.model, on_cpu.guide, rows(30)).measure(0)
    np.testing.assert_allclose(reading.kl["z"], reference.kl["z"], rtol=1e-4, atol=1e-6)


def test_the_monitor_is_importable_where_the_brief_says():
    import ppl_vae.diagnostics as diagnostics

    assert diagnostics.CollapseMonitor is CollapseMonitor
