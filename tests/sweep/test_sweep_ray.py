"""The Ray backend on a private 2-CPU Ray instance started once for this module."""

import json
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ppl_vae.diagnostics import load  # noqa: E402
from ppl_vae.sweep.ray_backend import RayBackend  # noqa: E402
from ppl_vae.sweep.study import SweepSpec, run_group, run_study  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    """One private Ray instance for the module (tests/conftest.py already pins one torch thread)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_spec(**grid):
    return SweepSpec.from_dict({
        "model": "cvae", "arch": "linear", "data": {"name": "synthetic", "n": 120, "dim": 6},
        "model_options": {"latent_dim": 3},
        "grid": grid or {"beta": [0.5, 2.0], "seed": "0-1"},
        "train": {"steps": 25, "lr": 0.02},
        "diagnostics": {"iw_samples": 8, "n_obs": 3, "n_draws": 5, "kl_samples": 2},
        "execution": {"group_size": 2},
    })


def test_ray_backend_gives_the_local_numbers(ray_cluster, tmp_path):
    spec = tiny_spec()
    local = run_study(spec, tmp_path / "local")
    remote = run_study(spec, tmp_path / "ray", backend=RayBackend())
    assert local.counts == remote.counts == {"finished": 4, "failed": 0, "skipped": 0}
    assert remote.backend == "ray"
    a, b = load(tmp_path / "local" / "combined.nc"), load(tmp_path / "ray" / "combined.nc")
    assert list(a.collapse.run.values) == list(b.collapse.run.values)
    for group in ("collapse", "metrics"):
        for name, variable in a[group].data_vars.items():
            np.testing.assert_allclose(b[group][name].values, variable.values, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{group}.{name}")
    np.testing.assert_allclose(b.collapse.final_loss.values, a.collapse.final_loss.values, rtol=1e-5)


def test_killed_worker_and_raising_task_are_recorded_then_resumed(ray_cluster, tmp_path):
    spec = tiny_spec(beta=[0.5, 1.0, 2.0], seed=[0])
    spec = spec.with_execution(group_size=1)

    def faulty(task, bundle):
        beta = task.configs[0].beta
        if beta == 1.0:
            os._exit(1)  # the worker process dies mid-task
        if beta == 2.0:
            raise RuntimeError("injected failure")
        return run_group(task, bundle, diagnostics=spec.diagnostics)

    first = run_study(spec, tmp_path / "sweep", backend=RayBackend(), runner=faulty)
    assert first.finished == ("beta=0.5_seed=0",)
    assert set(first.failed) == {"beta=1_seed=0", "beta=2_seed=0"}
    runs = tmp_path / "sweep" / "runs"
    raised = json.loads((runs / "beta=2_seed=0" / "error.json").read_text())
    assert raised["type"] == "RuntimeError" and "injected failure" in raised["message"]
    killed = json.loads((runs / "beta=1_seed=0" / "error.json").read_text())
    assert "Worker" in killed["type"] or "worker" in killed["message"].lower()
    assert not (runs / "beta=1_seed=0" / "metrics.json").exists()

    second = run_study(spec, tmp_path / "sweep", backend=RayBackend())
    assert second.counts == {"finished": 2, "failed": 0, "skipped": 1}
    assert not (runs / "beta=2_seed=0" / "error.json").exists()
    combined = load(tmp_path / "sweep" / "combined.nc")
    assert sorted(combined.collapse.beta.values.tolist()) == [0.5, 1.0, 2.0]


def test_ray_backend_serves_run_sweep(ray_cluster):
    from ppl_vae.data import load as load_data
    from ppl_vae.models import CVAEConfig
    from ppl_vae.sweep import run_sweep

    bundle = load_data("synthetic", paired=True, n=80, dim=4)
    base = CVAEConfig(x_dim=4, y_dim=4, latent_dim=2)
    grid = {"beta": [0.5, 2.0], "seed": [0, 1]}
    local = run_sweep(base, grid, bundle, steps=10, lr=0.02, device="cpu", vectorise="never")
    remote = run_sweep(base, grid, bundle, steps=10, lr=0.02, device="cpu", vectorise="never",
                       backend=RayBackend())
    assert remote.dataset.attrs["backend"] == "ray"
    np.testing.assert_allclose(remote.dataset.loss.values, local.dataset.loss.values, rtol=1e-5)
