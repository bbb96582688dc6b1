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
