import numpy as np
import pytest
import torch
import xarray as xr

from ppl_vae.inference.schedules import (StepWeights, check_schedule, kl_weight, lr_decay_for, predicted_end_point,
                                         schedule_curve)
from ppl_vae.theory import linear_vae


def test_no_schedule_is_one_everywhere():
    weight = kl_weight(torch.arange(50))
    assert weight.shape == (50,)
    assert torch.all(weight == 1.0)


@pytest.mark.parametrize("warmup", [1, 7, 100])
def test_warmup_is_positive_increasing_and_reaches_one_at_step_w_minus_1(warmup):
    weight = kl_weight(torch.arange(3 * warmup), warmup_steps=warmup, dtype=torch.float64)
    assert torch.all(weight > 0) and torch.all(weight <= 1)
    assert weight[0] == pytest.approx(1.0 / warmup)
    assert torch.all(weight[1:] >= weight[:-1])
    first_one = int(torch.nonzero(weight == 1.0)[0])
    assert first_one == warmup - 1
    assert torch.all(weight[warmup - 1:] == 1.0)


@pytest.mark.parametrize("period,ratio", [(10, 0.5), (8, 1.0), (9, 0.3)])
def test_cyclical_is_periodic_and_ramps_over_ratio_times_period(period, ratio):
    weight = kl_weight(torch.arange(4 * period), cycle_steps=period, cycle_ratio=ratio, dtype=torch.float64)
    assert torch.all(weight > 0) and torch.all(weight <= 1)
    cycles = weight.reshape(4, period)
    assert torch.equal(cycles, cycles[:1].expand(4, -1))
    ramp = np.ceil(ratio * period)  # first tau with (tau + 1) >= R P
    assert int(torch.nonzero(cycles[0] == 1.0)[0]) == ramp - 1
    assert cycles[0, 0] == pytest.approx(1.0 / (ratio * period))
    assert cycles[0, -1] == 1.0


def test_per_configuration_tensors_broadcast_over_k():
    warmup = torch.tensor([[0], [5], [0]])
    cycle = torch.tensor([[0], [0], [4]])
    ratio = torch.tensor([[0.5], [0.5], [0.5]])
    weight = kl_weight(torch.arange(12), warmup, cycle, ratio, dtype=torch.float64)
    assert weight.shape == (3, 12)
    assert torch.equal(weight[0], kl_weight(torch.arange(12), dtype=torch.float64))
    assert torch.equal(weight[1], kl_weight(torch.arange(12), warmup_steps=5, dtype=torch.float64))
    assert torch.equal(weight[2], kl_weight(torch.arange(12), cycle_steps=4, cycle_ratio=0.5, dtype=torch.float64))



@pytest.mark.parametrize("schedule", [
    (torch.tensor([[50.0], [0.0], [0.0], [3.0]]), torch.tensor([[0.0], [40.0], [7.0], [0.0]]),
     torch.tensor([[0.5], [0.3], [0.77], [0.5]])),  # K configurations, as the batched engine has them
    (100, 0, 0.5), (0, 37, 0.3), (0, 0, 0.5),  # one model's numbers
])
@pytest.mark.parametrize("first", [0, 7, 999_950])  # a fresh run, a resumed one, a long one
def test_step_weights_are_each_steps_kl_weight_bit_for_bit(schedule, first):
    # The trainer takes a run's weights from StepWeights; any difference from the per-step
    # kl_weight call it replaced would change a scheduled run's numbers.
    weights = StepWeights({"z1": schedule, "z2": (0, 5, 0.5)}, block=64)
    for step in range(first, first + 300):  # several blocks, and a block starting mid-way
        at = weights.at(step)
        for site, own in (("z1", schedule), ("z2", (0, 5, 0.5))):
            expected = kl_weight(step, *own, validate=False)
            assert at[site].shape == expected.shape and at[site].dtype == expected.dtype
            assert torch.equal(at[site], expected), (site, step)


def test_step_weights_without_schedules_are_empty():
    assert StepWeights({}).at(12) == {}

def test_scalar_step_gives_scalar_and_default_dtype():
    weight = kl_weight(3, warmup_steps=10)
    assert weight.shape == () and weight.dtype == torch.get_default_dtype()
    assert float(weight) == pytest.approx(0.4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(warmup_steps=-1), "warmup_steps must be an integer >= 0"),
    (dict(warmup_steps=2.5), "warmup_steps must be an integer >= 0"),
    (dict(cycle_steps=-3), "cycle_steps must be an integer >= 0"),
    (dict(cycle_steps=10, cycle_ratio=0.0), r"cycle_ratio must lie in \(0, 1\]"),
    (dict(cycle_steps=10, cycle_ratio=1.5), r"cycle_ratio must lie in \(0, 1\]"),
    (dict(warmup_steps=5, cycle_steps=10), "cannot both be > 0"),
    (dict(warmup_steps=torch.tensor([[5], [0]]), cycle_steps=torch.tensor([[10], [0]])), "cannot both be > 0"),
    (dict(warmup_steps="many"), "warmup_steps must be a number"),
])
def test_bad_schedules_are_refused_naming_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kl_weight(0, **kwargs)


def test_bad_step_is_refused():
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        kl_weight(-1)


def test_check_schedule_accepts_valid_mixed_configurations():
    check_schedule(np.array([0, 5, 0]), np.array([0, 0, 4]), np.array([0.5, 0.5, 1.0]))


def test_schedule_curve_is_a_dataarray_over_step_and_config():
    single = schedule_curve(20, warmup_steps=4)
    assert isinstance(single, xr.DataArray) and single.dims == ("step",)
    assert single.sel(step=3).item() == 1.0 and single.attrs["warmup_steps"] == 4.0
    many = schedule_curve(20, warmup_steps=[4, 0], cycle_steps=[0, 6], cycle_ratio=0.5)
    assert many.dims == ("config", "step") and many.shape == (2, 20)
    np.testing.assert_array_equal(many.sel(config=0).values, single.values)
    assert many["cycle_steps"].values.tolist() == [0.0, 6.0]
    with pytest.raises(ValueError, match="share one length"):
        schedule_curve(5, warmup_steps=[1, 2], cycle_steps=[0, 0, 0])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        schedule_curve(0)


def test_predicted_end_point_is_the_closed_form_at_the_final_weight():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * np.array([2.0, 1.0, 0.4])
    kwargs = dict(x=x, latent_dim=2, eta_enc=1.0, eta_dec=0.7)
    full = predicted_end_point(linear_vae, beta=1.5, steps=100, warmup_steps=30, **kwargs)
    assert full.attrs["final_kl_weight"] == 1.0 and full.attrs["steps_at_full_weight"] == 71
    xr.testing.assert_identical(full.drop_attrs(), linear_vae(beta=1.5, **kwargs).drop_attrs())
    cut = predicted_end_point(linear_vae, beta=1.5, steps=12, cycle_steps=10, cycle_ratio=0.5, **kwargs)
    assert cut.attrs["final_kl_weight"] == pytest.approx(0.4) and cut.attrs["steps_at_full_weight"] == 0
    assert cut.attrs["beta"] == pytest.approx(0.6)


def test_a_config_schedule_has_one_curve_per_latent_level_and_carries_the_floor():
    from ppl_vae.inference.schedules import config_schedule
    from ppl_vae.models import CVAEConfig, MHVAEConfig

    assert config_schedule(CVAEConfig(3, 3, 2).to_dict(), 100) is None
    curve = config_schedule(MHVAEConfig(4, (2, 2), kl_warmup1=10, kl_cycle2=20, free_bits2=0.3).to_dict(), 100)
    assert curve.dims == ("level", "step") and list(curve.level.values) == ["z1", "z2"]
    assert curve.sel(level="z1", step=9).item() == 1.0 and curve.sel(level="z1", step=0).item() == 0.1
    assert curve.sel(level="z2", step=20).item() == curve.sel(level="z2", step=0).item() < 1.0
    assert curve.attrs["free_bits"] == 0.3


@pytest.mark.parametrize("steps", [1, 2, 37, 1500, 6000, 62500])
def test_lr_decay_for_ends_at_the_same_fraction_at_any_step_count(steps):
    """Issue 22: the final rate is the stated fraction of the initial one however long the run is."""
    decay = lr_decay_for(steps, 0.1)
    final = 0.1 if steps > 1 else 1.0
    assert decay ** (steps - 1) == pytest.approx(final, rel=1e-9) and 0.0 < decay <= 1.0


def test_lr_decay_for_refuses_a_bad_fraction():
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="final_fraction"):
            lr_decay_for(100, bad)
    with pytest.raises(ValueError, match="steps"):
        lr_decay_for(0, 0.1)
