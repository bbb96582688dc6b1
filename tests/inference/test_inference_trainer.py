"""fit(): loss history, minibatches, resume bit for bit, divergence, run directories, load_run, CUDA."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from ppl_vae._io import RunDirectoryExistsError
from ppl_vae.data import synthetic_gaussian, synthetic_pairs
from ppl_vae.inference import ConfigBatches, TrainingDivergedError, fit, load_run
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs(200, 4, correlation="noise_1_2", seed=1)


@pytest.fixture(scope="module")
def gaussian():
    return synthetic_gaussian(200, 4, seed=1)


def _model(config, seed=0):
    torch.manual_seed(seed)
    return build_model(config)


def test_loss_history_is_per_sample_and_decreases(pairs):
    result = fit(_model(CVAEConfig(4, 4, 2)), pairs, steps=300, lr=0.02, progress=False, device="cpu")
    assert isinstance(result.loss, xr.DataArray) and result.loss.dims == ("step",)
    assert result.steps == 300 and result.loss.sizes["step"] == 300
    assert np.all(np.isfinite(result.loss.values))
    assert result.loss[-50:].mean() < result.loss[:10].mean()
    assert result.final_loss == pytest.approx(float(result.loss[-100:].mean()))
    # per sample: a few nats per dimension, not hundreds of times that
    assert 0 < result.final_loss < 20 * 4
    assert result.device == "cpu" and result.run_dir is None


def test_minibatch_epochs_cover_every_row_once_per_epoch_in_each_configurations_own_order():
    sampler = ConfigBatches(10, 4, seeds=[3, 3, 4], device=torch.device("cpu"))
    assert sampler.steps_per_epoch == 3
    rows = torch.cat([sampler.indices(step) for step in range(3)], dim=1)  # (K, 10)
    for k in range(3):
        assert sorted(rows[k].tolist()) == list(range(10))
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])  # the seed decides the order
    next_epoch = torch.cat([sampler.indices(step) for step in range(3, 6)], dim=1)
    assert sorted(next_epoch[0].tolist()) == list(range(10)) and not torch.equal(rows[0], next_epoch[0])


def test_epochs_set_the_number_of_steps(gaussian):
    result = fit(_model(VAEConfig(4, 2)), gaussian, epochs=2, batch_size=64, progress=False, device="cpu")
    assert result.steps == 2 * 4  # ceil(200 / 64) = 4 steps per epoch


@pytest.mark.parametrize("options", [{}, {"steps": 1, "epochs": 1}, {"steps": 0}, {"steps": 5, "lr": -1.0},
                                     {"steps": 5, "optimizer": "sgd"}, {"steps": 5, "lr_decay": 1.5},
                                     {"steps": 5, "batch_size": 0}])
def test_bad_options_raise_value_error(gaussian, options):
    with pytest.raises(ValueError):
        fit(_model(VAEConfig(4, 2)), gaussian, progress=False, device="cpu", **options)


@pytest.mark.parametrize(("config_factory", "batch_size", "optimizer"), [
    (lambda: CVAEConfig(4, 4, 2, arch="mlp", hidden_dims=(8,)), 48, "adam"),
    (lambda: MHVAEConfig(4, (2, 2)), None, "clipped_adam"),
])
def test_resume_continues_bit_for_bit(tmp_path, pairs, gaussian, config_factory, batch_size, optimizer):
    bundle = pairs if config_factory().family == "cvae" else gaussian
    options = {"batch_size": batch_size, "lr": 0.01, "lr_decay": 0.999, "optimizer": optimizer, "seed": 5,
               "progress": False, "device": "cpu", "checkpoint_every": 30}
    straight = fit(_model(config_factory()), bundle, steps=70, **options)
    fit(_model(config_factory()), bundle, steps=35, run_dir=tmp_path / "run", **options)
    resumed = fit(_model(config_factory(), seed=99), bundle, steps=70, run_dir=tmp_path / "run", resume=True,
                  **options)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(straight.loss.values, resumed.loss.values)


def test_resume_refuses_changed_options(tmp_path, gaussian):
    fit(_model(VAEConfig(4, 2)), gaussian, steps=5, lr=0.01, run_dir=tmp_path / "run", progress=False, device="cpu")
    with pytest.raises(ValueError, match="lr"):
        fit(_model(VAEConfig(4, 2)), gaussian, steps=10, lr=0.02, run_dir=tmp_path / "run", resume=True,
            progress=False, device="cpu")
    with pytest.raises(ValueError, match="config"):
        fit(_model(VAEConfig(4, 2, beta=2.0)), gaussian, steps=10, lr=0.01, run_dir=tmp_path / "run",
            resume=True, progress=False, device="cpu")


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, gaussian):
    run_dir = tmp_path / "run"
    model = _model(VAEConfig(4, 2))
    poisoned_at = 23

    fit(model, gaussian, steps=20, lr=0.01, run_dir=run_dir, checkpoint_every=10, progress=False, device="cpu")
    good = {k: v.clone() for k, v in model.state_dict().items()}
    # An infinite gradient in the step before makes the decoder weight, and so the loss of step
    # `poisoned_at`, non-finite; the resumed run must stop at that step. (A hook, not a patched
    # forward: the loss's operations are recorded once, its gradients flow through autograd.)
    backward_calls = {"n": 20}

    def exploding_gradient(grad):
        backward_calls["n"] += 1
        return grad * float("inf") if backward_calls["n"] == poisoned_at else grad

    decoder_weight = next(p for name, p in model.named_parameters() if name.startswith("decoder"))
    decoder_weight.register_hook(exploding_gradient)
    with pytest.raises(TrainingDivergedError, match=f"step {poisoned_at}") as info:
        fit(model, gaussian, steps=40, lr=0.01, run_dir=run_dir, resume=True, checkpoint_every=10,
            progress=False, device="cpu")
    assert info.value.step == poisoned_at
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 20  # nothing from the diverged stretch was written
    for name, value in good.items():
        assert torch.equal(state["model_state"][name], value)


def test_huge_learning_rate_diverges(gaussian):
    with pytest.raises(TrainingDivergedError, match="diverged at step"):
        fit(_model(VAEConfig(4, 2, eta_dec=0.01)), gaussian, steps=400, lr=1e6, progress=False, device="cpu")


def test_existing_run_directory_is_protected(tmp_path, gaussian):
    run_dir = tmp_path / "run"
    fit(_model(VAEConfig(4, 2)), gaussian, steps=3, run_dir=run_dir, progress=False, device="cpu")
    before = (run_dir / "checkpoint.pt").read_bytes()
    with pytest.raises(RunDirectoryExistsError):
        fit(_model(VAEConfig(4, 2)), gaussian, steps=3, run_dir=run_dir, progress=False, device="cpu")
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    fit(_model(VAEConfig(4, 2), seed=1), gaussian, steps=3, run_dir=run_dir, overwrite=True, progress=False,
        device="cpu")
    assert (run_dir / "checkpoint.pt").read_bytes() != before


def test_run_directory_layout_and_load_run_round_trip(tmp_path, pairs):
    run_dir = tmp_path / "run"
    config = CVAEConfig(4, 4, 2, beta=0.5)
    result = fit(_model(config), pairs, steps=40, lr=0.01, seed=2, run_dir=run_dir, progress=False, device="cpu")
    info = json.loads((run_dir / "config.json").read_text())
    assert set(info) == {"model", "data", "train", "seed", "version", "device"}
    assert info["model"] == config.to_dict() and info["data"] == pairs.attrs["spec"]
    assert info["seed"] == 2 and info["train"]["steps"] == 40 and info["device"] == "cpu"
    # provenance: the estimator actually used, the seeds, K and the data split
    train = info["train"]
    assert train["estimator"] == "TraceMeanField_ELBO" and train["site_estimators"] == {"z": "analytic"}
    assert train["seeds"] == [2] and train["n_configs"] == 1
    assert (train["test_fraction"], train["n_train"], train["n_test"]) == (0.0, pairs.n, 0)
    history = xr.load_dataset(run_dir / "loss_history.nc")
    np.testing.assert_allclose(history["loss"].values, result.loss.values)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["final_loss"] == pytest.approx(result.final_loss)
    assert metrics["theory"]["n_collapsed_predicted"] >= 0 and "max_rel_error_active_decoder_sv" in metrics["theory"]

    model, bundle, run_info = load_run(run_dir, device="cpu")
    assert model.config == config and run_info["step"] == 40 and run_info["metrics"]["steps"] == 40
    assert torch.equal(bundle.x, pairs.x) and torch.equal(bundle.y, pairs.y)
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)


def test_load_run_needs_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run(tmp_path, device="cpu")


def test_callbacks_see_the_running_loss(gaussian):
    seen = []
    fit(_model(VAEConfig(4, 2)), gaussian, steps=120, progress=False, device="cpu",
        callbacks=[lambda step, loss, model: seen.append((step, loss))])
    assert [step for step, _ in seen] == [50, 100, 120] and all(np.isfinite(loss).all() for _, loss in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_keeps_data_and_parameters_on_the_gpu(tmp_path, pairs):
    config = CVAEConfig(4, 4, 2, arch="mlp", hidden_dims=(16,))
    result = fit(_model(config), pairs, steps=60, batch_size=64, device="cuda", run_dir=tmp_path / "run",
                 progress=False)
    assert result.device.startswith("cuda")
    assert all(p.is_cuda for p in result.model.parameters())
    straight = fit(_model(config), pairs, steps=60, batch_size=64, device="cuda", progress=False)
    np.testing.assert_array_equal(straight.loss.values, result.loss.values)  # seeded on the device too
    model, _, _ = load_run(tmp_path / "run", device="cuda")
    assert all(p.is_cuda for p in model.parameters())


def test_test_fraction_holds_rows_out_and_is_recorded(pairs, tmp_path):
    from ppl_vae.data import train_test_split
    from ppl_vae.report.runs import held_out_split

    run_dir = tmp_path / "held_out"
    fit(_model(CVAEConfig(4, 4, 2)), pairs, steps=5, test_fraction=0.25, split_seed=3, run_dir=run_dir,
        progress=False, device="cpu")
    train = json.loads((run_dir / "config.json").read_text())["train"]
    assert train["test_fraction"] == 0.25 and train["split_seed"] == 3 and train["n_train"] == 150
    _, bundle, info = load_run(run_dir, device="cpu")
    # The report's split of the reloaded data gives back exactly the rows fit did not train on.
    fitted, held_out = held_out_split(bundle, info["train"])
    expected_train, expected_test = train_test_split(pairs, 0.25, seed=3)
    assert torch.equal(fitted.x, expected_train.x) and torch.equal(held_out.y, expected_test.y)
    assert held_out.n == 50


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_bad_test_fraction_names_the_parameter(pairs, fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        fit(_model(CVAEConfig(4, 4, 2)), pairs, steps=1, test_fraction=fraction, progress=False, device="cpu")


def test_data_that_does_not_fit_the_model_is_refused_before_training(pairs, gaussian):
    from ppl_vae.data import DataBundle

    with pytest.raises(ValueError, match=r"data x must have shape \(n, 5\)"):
        fit(_model(CVAEConfig(5, 4, 2)), pairs, steps=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="must hold x and y for a cvae model"):
        fit(_model(CVAEConfig(4, 4, 2)), gaussian, steps=1, progress=False, device="cpu")
    with_nan = DataBundle("with_nan", pairs.x.clone(), pairs.y.clone())
    with_nan.y[3, 1] = float("nan")
    with pytest.raises(ValueError, match="data y contains 1 NaN"):
        fit(_model(CVAEConfig(4, 4, 2)), with_nan, steps=1, progress=False, device="cpu")


def test_an_interrupted_resume_leaves_no_stale_results_beside_the_newer_checkpoint(tmp_path, gaussian):
    run_dir = tmp_path / "run"
    fit(_model(VAEConfig(4, 2)), gaussian, steps=50, lr=0.01, run_dir=run_dir, progress=False, device="cpu")
    assert (run_dir / "metrics.json").is_file() and (run_dir / "loss_history.nc").is_file()

    def interrupt(step, losses, model):
        if step >= 150:  # after the checkpoint of step 100, before that of step 150
            raise KeyboardInterrupt  # as Ctrl-C or a kill between checkpoints

    with pytest.raises(KeyboardInterrupt):
        fit(_model(VAEConfig(4, 2)), gaussian, steps=200, lr=0.01, run_dir=run_dir, resume=True,
            checkpoint_every=50, progress=False, device="cpu", callbacks=[interrupt])
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 100
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "loss_history.nc").exists()

    fit(_model(VAEConfig(4, 2)), gaussian, steps=200, lr=0.01, run_dir=run_dir, resume=True, checkpoint_every=50,
        progress=False, device="cpu")
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 200
    resumed = json.loads((run_dir / "config.json").read_text())["train"]["resumed"]
    assert resumed == [{"from_step": 50, "steps": 200}, {"from_step": 100, "steps": 200}]


def test_overwrite_removes_the_old_checkpoint_before_the_new_run_writes(tmp_path, gaussian):
    run_dir = tmp_path / "run"
    fit(_model(VAEConfig(4, 2)), gaussian, steps=20, lr=0.01, run_dir=run_dir, progress=False, device="cpu")
    with pytest.raises(TrainingDivergedError, match="no checkpoint had been written yet"):
        fit(_model(VAEConfig(4, 2, eta_dec=0.01)), gaussian, steps=400, lr=1e6, run_dir=run_dir, overwrite=True,
            progress=False, device="cpu")
    assert not (run_dir / "checkpoint.pt").exists()  # never the old model beside the new config
    assert json.loads((run_dir / "config.json").read_text())["model"]["eta_dec"] == 0.01
