"""The convergence gate of the verdicts and the run-length learning-rate decay (issue 22)."""

from __future__ import annotations

import dataclasses

import pytest

from ppl_vae.data import synthetic_pairs
from ppl_vae.models import CVAEConfig
from ppl_vae.reproduce import ClaimCheck, Settings, Verdict, gate, run_replicates, training_options
from ppl_vae.reproduce.analysis import fit_options
from ppl_vae.reproduce.verdicts import Check


def _verdict(ok: bool = True) -> Verdict:
    return Verdict("a rule", (Check("a check", 1.0, 0.1, "> 0", ok),), 2)


@dataclasses.dataclass
class _Sweep:  # the fields of a SweepResult that gate.record reads
    configs: tuple
    seeds: tuple
    convergence: tuple
    diverged: dict = dataclasses.field(default_factory=dict)


def _sweep(*converged):
    config = CVAEConfig(4, 4, 2, beta=0.5)
    records = tuple({"converged": c, "reason": "settled" if c else "the loss was still falling"} for c in converged)
    return _Sweep((config,) * len(converged), tuple(range(len(converged))), records)


def test_an_unconverged_run_turns_any_verdict_into_not_converged():
    for agrees in (True, False):
        with gate.ledger():
            gate.record(_sweep(True, False, True))
            check = ClaimCheck.from_verdict("x", "claim", _verdict(agrees))
        assert check.status == "not converged" and check.agrees is agrees
        assert check.convergence["n_not_converged"] == 1 and "still falling" in check.convergence["not_converged"][0]
        assert ClaimCheck.from_dict(check.to_dict()).status == "not converged"


def test_converged_and_unjudged_runs_leave_the_rule_s_verdict():
    with gate.ledger():
        gate.record(_sweep(True, None))
        assert ClaimCheck.from_verdict("x", "claim", _verdict(True)).status == "agrees"
        assert ClaimCheck.from_verdict("x", "claim", _verdict(False)).status == "disagrees"
    assert gate.current_records() is None  # closed with the block
    assert ClaimCheck.from_verdict("x", "claim", _verdict(True)).convergence == {}


def test_a_diverged_run_counts_as_not_converged():
    sweep = _sweep(True, True)
    sweep.diverged = {1: 57}
    records = gate.record(sweep)
    assert records[1]["converged"] is False and "diverged at step 57" in records[1]["reason"]


@pytest.mark.parametrize("kind", ["linear", "mlp", "mhvae"])
def test_changing_the_steps_rescales_the_learning_rate_decay(kind, tmp_path):
    """The final rate is the same fraction of the initial one whatever steps an experiment or a flag sets."""
    settings = Settings(scale="quick", out=tmp_path)
    base = training_options(settings, kind=kind)
    finals = []
    for steps in (base["steps"], 4 * base["steps"], 317):
        options = fit_options(base | {"steps": steps})
        finals.append(options["lr_decay"] ** (steps - 1))
    assert finals == pytest.approx([base["final_lr_fraction"]] * 3, rel=1e-9)
    capped = Settings(scale="quick", out=tmp_path, max_steps=50)  # the --max-steps flag
    options = fit_options(training_options(capped, kind=kind))
    assert options["steps"] == 50 and options["lr_decay"] ** 49 == pytest.approx(base["final_lr_fraction"])
    with pytest.raises(ValueError, match="not both"):
        fit_options(base | {"lr_decay": 0.99})


def test_run_replicates_passes_the_rescaled_decay_and_records_each_run(tmp_path, monkeypatch):
    import ppl_vae.sweep

    settings = Settings(scale="quick", out=tmp_path, n_seeds=2)
    seen = {}

    def fake_sweep(base, configs, data, *, seeds, **options):
        seen.update(options)
        return _Sweep(tuple(configs), tuple(seeds), ({"converged": True, "reason": "settled"},) * len(configs))

    monkeypatch.setattr(ppl_vae.sweep, "run_sweep", fake_sweep)
    with gate.ledger() as records:
        run_replicates([CVAEConfig(4, 4, 2, arch="mlp", hidden_dims=(8,))], None, settings, steps=6000)
    assert seen["steps"] == 6000 and "final_lr_fraction" not in seen
    assert seen["lr_decay"] ** 5999 == pytest.approx(training_options(settings)["final_lr_fraction"])
    assert [r["converged"] for r in records] == [True, True] and records[1]["run"].endswith("seed=1")


def test_a_real_sweep_carries_a_convergence_record_per_run(tmp_path):
    pairs = synthetic_pairs(200, 4, correlation="noise_1_2", seed=0)
    settings = Settings(scale="tiny", out=tmp_path, n_seeds=2)
    with gate.ledger() as records:
        run_replicates([CVAEConfig(4, 4, 2, arch="mlp", hidden_dims=(8,))], pairs, settings, steps=120)
    assert len(records) == 2 and all(r["converged"] is not None and r["param_rel_change"] > 0 for r in records)


def test_the_authors_objective_halves_the_kl_weights_and_clips_and_reports_the_stated_beta(tmp_path, monkeypatch):
    """||y - mu||^2 / eta^2 + beta KL = 2 x (-ELBO at KL weight beta / 2); clip 0.01 on it = 0.005 on ours."""
    import ppl_vae.sweep
    from ppl_vae.models import MHVAEConfig, build_model

    seen = {}

    def fake_sweep(base, configs, data, *, seeds, **options):
        seen["configs"], seen["options"] = list(configs), options
        return ppl_vae.sweep.SweepResult(tuple(configs), tuple(seeds), tuple(build_model(c) for c in configs),
                                         None, "separate", 0.0, convergence=(None,) * len(configs))

    monkeypatch.setattr(ppl_vae.sweep, "run_sweep", fake_sweep)
    settings = Settings(scale="quick", out=tmp_path, n_seeds=1, objective="authors")
    stated = MHVAEConfig(8, (2, 2), arch="mlp", hidden_dims=(4,), beta1=2.0, beta2=0.5)
    result = run_replicates([stated], None, settings, kind="mhvae")
    trained = seen["configs"][0]
    assert (trained.beta1, trained.beta2) == (1.0, 0.25) and seen["options"]["clip_norm"] == 0.005
    assert result.configs[0] == stated and result.models[0].config == stated  # tables read the authors' beta
    linear = CVAEConfig(4, 4, 2, beta=0.5)
    run_replicates([linear], None, settings, kind="linear")
    assert seen["configs"][0].beta == 0.5 and seen["options"].get("clip_norm") is None  # linear: standard ELBO
    standard = Settings(scale="quick", out=tmp_path, n_seeds=1)
    run_replicates([stated], None, standard, kind="mhvae")
    assert seen["configs"][0] == stated and seen["options"]["clip_norm"] == 100.0
    with pytest.raises(ValueError, match="objective"):
        Settings(scale="quick", out=tmp_path, objective="paper")


def test_runs_the_verdict_does_not_read_are_reported_but_do_not_gate():
    sweep = _sweep(True, False)
    with gate.ledger():
        gate.record(sweep, judged=lambda config: False)
        gate.record(_sweep(True))
        check = ClaimCheck.from_verdict("x", "claim", _verdict(True))
    assert check.status == "agrees"
    assert check.convergence["n_unused"] == 2 and check.convergence["n_unused_not_converged"] == 1
    assert "1 of them did not converge" in gate.describe(check.convergence)


def test_the_measured_schedules_apply_where_they_were_measured(tmp_path):
    """Quick mode: the MHVAE trains MHVAE_SCHEDULE, mlp_schedule gives MLP_SCHEDULE; full mode keeps its own."""
    from ppl_vae.reproduce.analysis import MHVAE_SCHEDULE, MLP_SCHEDULE, mlp_schedule

    quick, full = Settings(scale="quick", out=tmp_path), Settings(scale="full", out=tmp_path)
    mhvae = training_options(quick, kind="mhvae")
    assert (mhvae["lr"], mhvae["final_lr_fraction"]) == (MHVAE_SCHEDULE["lr"], MHVAE_SCHEDULE["final_lr_fraction"])
    assert training_options(full, kind="mhvae")["lr"] == training_options(full, kind="mlp")["lr"]
    assert mlp_schedule(quick) == MLP_SCHEDULE and mlp_schedule(full) == {}
    options = fit_options(training_options(quick, kind="mlp") | mlp_schedule(quick))
    assert options["lr"] == MLP_SCHEDULE["lr"]
    assert options["lr_decay"] ** (options["steps"] - 1) == pytest.approx(MLP_SCHEDULE["final_lr_fraction"])
