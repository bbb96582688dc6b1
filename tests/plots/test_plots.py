import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from ppl_vae import plots


def fake_collapse(d=4, sites=("z",), seed=0):
    rng = np.random.default_rng(seed)
    eps = np.logspace(-4, 0, 9)
    out = {}
    for s in sites:
        kl = rng.exponential(0.5, size=(20, d))
        kl[:, -1] = 1e-5
        out[f"{s}_kl_mean"] = (f"{s}_dim", kl.mean(0))
        out[f"{s}_collapse_fraction"] = ("epsilon", np.array([(kl < e).mean() for e in eps]))
        out[f"{s}_active_units"] = ((), d - 1)
    ds = xr.Dataset(out, coords={"epsilon": eps})
    return ds.assign_coords({f"{s}_dim": np.arange(d) for s in sites}).assign_attrs(collapse_epsilon=0.01)


def runs(datasets, betas):
    return xr.concat(datasets, dim="run", join="outer").assign_coords(run=[f"r{i}" for i in range(len(betas))],
                                                        beta=("run", betas))


def test_collapse_curves_one_line_per_run_and_one_panel_per_site():
    fig = plots.collapse_curves(runs([fake_collapse(seed=i, sites=("z1", "z2")) for i in range(3)], [0.1, 1, 2]))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert all(len(ax.get_lines()) == 3 + 1 for ax in fig.axes)  # three runs and the epsilon marker
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["r0 (beta=0.1)", "r1 (beta=1)", "r2 (beta=2)"]
    assert fig.axes[0].get_xscale() == "log"


def test_kl_bars_for_one_run_mark_collapsed_dimensions():
    fig = plots.kl_per_dimension(fake_collapse(d=5))
    (ax,) = fig.axes
    bars = ax.patches
    assert len(bars) == 5
    assert bars[-1].get_facecolor() != bars[0].get_facecolor()  # the collapsed dimension stands out


def test_kl_heatmap_over_runs():
    fig = plots.kl_per_dimension(runs([fake_collapse(seed=i) for i in range(3)], [0.5, 1.0, 2.0]))
    heat = fig.axes[0].collections[0]
    assert heat.get_array().size == 3 * 4


def test_singular_values_draws_theory_and_learned():
    theory = xr.Dataset({"decoder_sv": ("mode", [2.0, 1.0, 0.0]), "learned_decoder_sv": ("mode", [1.9, 1.1, 0.1]),
                         "encoder_std": ("mode", [0.3, 0.5, 1.0])}, coords={"mode": [0, 1, 2]})
    fig = plots.singular_values(theory)
    (ax,) = fig.axes
    series = {line.get_label(): line.get_ydata().tolist() for line in ax.get_lines()}
    assert series == {"theory": [2.0, 1.0, 0.0], "learned": [1.9, 1.1, 0.1]}
    mh = xr.Dataset({"z1_encoder_sv": ("mode", [1.0, 0.0]), "z2_decoder_sv": ("mode", [0.5, 0.0])},
                    coords={"mode": [0, 1]}, attrs={"prediction": "linear-model prediction"})
    fig = plots.singular_values(mh)
    assert len(fig.axes) == 2 and "linear-model" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="_sv"):
        plots.singular_values(xr.Dataset({"theta": ("mode", [1.0])}))


def test_metrics_vs_beta_sorted_by_beta():
    collapse = runs([fake_collapse(d=d) for d in (4, 2, 3)], [2.0, 0.1, 0.5])
    collapse["z_active_units"] = ("run", [1, 4, 2])
    metrics = xr.Dataset({"iw_log_likelihood": ("run", [-30.0, -10.0, -20.0]),
                          "iw_log_likelihood_se": ("run", [0.1, 0.1, 0.1])},
                         coords={"run": collapse.run, "beta": collapse.beta})
    fig = plots.metrics_vs_hyperparameter(collapse, metrics, "beta")
    au_ax, nll_ax = fig.axes
    assert au_ax.get_lines()[0].get_xdata().tolist() == [0.1, 0.5, 2.0]
    assert au_ax.get_lines()[0].get_ydata().tolist() == [4, 2, 1]
    assert nll_ax.get_lines()[0].get_ydata().tolist() == [10.0, 20.0, 30.0]
    with pytest.raises(ValueError, match="eta_dec"):
        plots.metrics_vs_hyperparameter(collapse, metrics, "eta_dec")


def test_metrics_vs_beta_never_joins_runs_of_different_models():
    collapse = runs([fake_collapse() for _ in range(4)], [0.5, 2.0, 0.5, 2.0])
    collapse = collapse.assign_coords(arch=("run", ["linear", "linear", "mlp", "mlp"]),
                                      eta_dec=("run", [0.5, 0.5, 0.5, 0.5]))
    collapse["z_active_units"] = ("run", [9, 1, 5, 0])
    metrics = xr.Dataset({"iw_log_likelihood": ("run", [-17.8, -18.0, -15.0, -15.1])},
                         coords={"run": collapse.run, "beta": collapse.beta})
    au_ax, nll_ax = plots.metrics_vs_hyperparameter(collapse, metrics, "beta").axes
    lines = {line.get_label(): line.get_ydata().tolist() for line in au_ax.get_lines()}
    assert lines == {"z linear": [9, 1], "z mlp": [5, 0]}
    assert sorted(line.get_ydata().tolist() for line in nll_ax.get_lines()) == [[15.0, 15.1], [17.8, 18.0]]


def test_loss_curves_one_line_per_run():
    loss = xr.DataArray([[5.0, 3.0, 2.0], [6.0, 4.0, 1.0]], dims=("run", "step"),
                        coords={"run": ["a", "b"], "step": [0, 10, 20]})
    fig = plots.loss_curves(loss)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="step"):
        plots.loss_curves({"a": xr.DataArray([1.0], dims="epoch")})


def test_completion_grid_puts_given_quadrant_and_completions_in_place():
    n, h = 3, 4  # 8x8 images, quadrant split: x is 16 pixels, y is 48
    x = xr.DataArray(np.full((n, 16), 0.25), dims=("obs", "x_dim"))
    y = xr.DataArray(np.full((n, 48), 0.75), dims=("obs", "y_dim"))
    completions = xr.DataArray(np.full((1, 5, n, 48), 1.0), dims=("chain", "draw", "obs", "y_dim"))
    fig = plots.completion_grid(x, y, completions, (8, 8), "quadrant", n_completions=2)
    assert len(fig.axes) == n * 4
    given = fig.axes[1].get_images()[0].get_array()
    assert given.mask.sum() == 48 and float(given[h:, :h].mean()) == 0.25  # bottom-left given, rest hidden
    completed = fig.axes[2].get_images()[0].get_array()
    assert float(completed[:h, :].mean()) == 1.0 and float(completed[h:, :h].mean()) == 0.25


def test_reconstruction_grid_shapes():
    observed = xr.DataArray(np.random.default_rng(0).random((4, 64)), dims=("obs", "x_dim"))
    recon = xr.DataArray(np.zeros((1, 2, 4, 64)), dims=("chain", "draw", "obs", "x_dim"))
    fig = plots.reconstruction_grid(observed, recon, (8, 8), n_obs=3)
    assert len(fig.axes) == 3 * 3
    np.testing.assert_allclose(fig.axes[0].get_images()[0].get_array(), observed.values[0].reshape(8, 8))
    png = plots.to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_kl_schedule_draws_one_line_per_configuration_and_the_free_bits_floor():
    from ppl_vae.inference.schedules import schedule_curve

    curve = schedule_curve(40, warmup_steps=[10, 0, 0], cycle_steps=[0, 12, 0], cycle_ratio=0.5)
    fig = plots.plot_kl_schedule(curve.assign_attrs(free_bits=0.5))
    ax, floor_ax = fig.axes
    assert len(ax.get_lines()) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["warm-up W=10", "cyclical P=12, R=0.5", "constant"]
    assert [line.get_label() for line in floor_ax.get_lines()] == ["free bits = 0.5 nats"]
    assert floor_ax.get_lines()[0].get_ydata()[0] == 0.5
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), curve.isel(config=1).values)


def test_kl_schedule_single_curve_on_given_axes_without_floor():
    from ppl_vae.inference.schedules import schedule_curve

    fig = Figure()
    ax = fig.subplots()
    returned = plots.plot_kl_schedule(xr.Dataset({"kl_weight": schedule_curve(20, warmup_steps=5)}), ax=ax)
    assert returned is fig and len(fig.axes) == 1  # no floor: no second axis
    assert len(ax.get_lines()) == 1 and ax.get_legend() is None
    with pytest.raises(ValueError, match="curve must be over 'step'"):
        plots.plot_kl_schedule(xr.DataArray(np.ones(3), dims=("epoch",)))


# ---------------------------------------------------------------- issue 21: since when, learned vs predicted, prior
def history(steps=(0, 1, 10, 100, 1000), d=3):
    kl = np.tile(np.array([1.0, 0.5, 0.2]), (len(steps), 1))
    kl[2:, 2] = 1e-3  # dimension 2 collapses at step 10 and stays there
    kl[3, 1] = 1e-3  # dimension 1 dips below once, then recovers: not collapsed
    return xr.Dataset({"z_kl": (("step", "z_dim"), kl, {"units": "nats"})},
                      coords={"step": np.asarray(steps, dtype=np.int64), "z_dim": np.arange(d)},
                      attrs={"rows": "held-out", "source": "fit", "collapse_epsilon": 0.01})


def test_collapse_onset_is_the_start_of_the_final_stay_below_epsilon():
    onset = plots.collapse_onset(history()["z_kl"], 0.01)
    assert np.isnan(onset.values[0]) and np.isnan(onset.values[1])
    assert onset.values[2] == 10


def test_kl_history_greys_collapsed_dimensions_on_log_axes():
    fig = plots.kl_history(history())
    (ax, *_) = fig.axes
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 5]
    assert len(lines) == 3
    assert [line.get_linestyle() for line in lines] == ["-", "-", "--"]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "symlog"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2 (collapsed)"]
    with pytest.raises(ValueError, match="kl_history"):
        plots.kl_history(xr.Dataset({"loss": ("step", [1.0])}))


def test_learned_vs_predicted_sorts_the_learned_kl_and_marks_the_predicted_count():
    collapse = fake_collapse(d=4)
    predicted = xr.Dataset({"z_kl": ("z_rank", [2.0, 1.0, 0.0, 0.0]), "z_n_active": 2},
                           attrs={"prediction": "closed form"})
    fig = plots.learned_vs_predicted(collapse, predicted)
    (ax,) = fig.axes
    learned = ax.get_lines()[0].get_ydata()
    assert np.all(np.diff(learned) <= 0)
    assert sorted(learned) == sorted(np.clip(collapse.z_kl_mean.values, 1e-6, None))
    assert any(t.get_text() == "theory: 2 active" for t in ax.get_legend().get_texts())
    assert all(float(t) == int(t) for t in ax.get_xticks())  # integer ranks only


def test_prior_vs_posterior_shows_the_least_and_the_most_active_dimension():
    rng = np.random.default_rng(0)
    dims = {"chain": 1, "draw": 20, "obs": 30, "z_dim": 3}
    shape = tuple(dims.values())
    posterior = xr.DataArray(rng.normal(size=shape) * [0.2, 1.0, 1.0] + [[[[3.0, 0.0, 0.0]]]], dims=list(dims),
                             coords={"z_dim": np.arange(3)})
    prior = xr.DataArray(rng.normal(size=shape), dims=list(dims), coords={"z_dim": np.arange(3)})
    kl_mean = xr.DataArray([2.0, 0.5, 1e-4], dims=["z_dim"], coords={"z_dim": np.arange(3)}, name="z_kl_mean")
    assert plots.pick_dimensions(kl_mean) == {"collapsed": 2, "active": 0}
    fig = plots.prior_vs_posterior(posterior, prior, kl_mean)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("collapsed: z[2]") and titles[1].startswith("active: z[0]")


def test_kl_heatmaps_share_one_colour_scale():
    combined = runs([fake_collapse(seed=i, sites=("z1", "z2")) for i in range(3)], [0.1, 1, 2])
    combined["z2_kl_mean"] = combined["z2_kl_mean"] * 100  # a site with much larger KL
    fig = plots.kl_per_dimension(combined)
    from matplotlib.collections import QuadMesh

    meshes = [c for ax in fig.axes for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) >= 2  # two panels (and the one colour bar)
    assert len({mesh.get_clim() for mesh in meshes}) == 1
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 1


def test_loss_curves_use_a_log_step_axis():
    loss = xr.DataArray(np.linspace(120, 1, 200), dims="step", coords={"step": np.arange(200)})
    (ax,) = plots.loss_curves(loss).axes
    assert ax.get_xscale() == "symlog"


def test_no_nan_hyperparameters_in_sweep_labels():
    from ppl_vae.plots.sweep import _series_labels

    collapse = fake_collapse().expand_dims(run=3).assign_coords(
        run=["a", "b", "c"], beta=("run", [1.0, 2.0, 1.0]), eta_dec=("run", [np.nan, 0.5, 1.0]))
    assert not any("nan" in label for label in _series_labels(collapse, "beta"))
